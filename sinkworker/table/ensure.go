package table

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/table"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// ErrIncompatible says the table holds a column the sink's files cannot
// agree with: a column of another type, or a required column the files
// lack. The sink must not write to it; its message names the column.
var ErrIncompatible = errors.New("the table's schema is incompatible with the sink's")

// Ensure returns the sink's table, creating it when it is missing (with the
// schema and partition spec of the sink's files, and a name mapping: the
// files carry no field IDs) and adding the columns a changed spec.schema
// added. It changes nothing else: a column whose type differs, or a
// required column the files lack, is ErrIncompatible, for the status to
// show.
func Ensure(ctx context.Context, cat catalog.Catalog, ident table.Identifier, s *config.Schema, granularity string) (*table.Table, error) {
	tbl, err := cat.LoadTable(ctx, ident)
	if errors.Is(err, catalog.ErrNoSuchTable) {
		return create(ctx, cat, ident, s, granularity)
	}
	if err != nil {
		return nil, fmt.Errorf("load table %s: %w", strings.Join(ident, "."), err)
	}
	return evolve(ctx, tbl, s)
}

func create(ctx context.Context, cat catalog.Catalog, ident table.Identifier, s *config.Schema, granularity string) (*table.Table, error) {
	sc := Schema(s)
	spec, err := PartitionSpec(s, granularity, sc)
	if err != nil {
		return nil, err
	}
	if len(ident) > 1 {
		err := cat.CreateNamespace(ctx, ident[:len(ident)-1], nil)
		if err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
			return nil, fmt.Errorf("create namespace %s: %w", strings.Join(ident[:len(ident)-1], "."), err)
		}
	}
	tbl, err := cat.CreateTable(ctx, ident, sc, catalog.WithPartitionSpec(&spec))
	if errors.Is(err, catalog.ErrTableAlreadyExists) {
		// Another worker created it meanwhile.
		return Ensure(ctx, cat, ident, s, granularity)
	}
	if err != nil {
		return nil, fmt.Errorf("create table %s: %w", strings.Join(ident, "."), err)
	}
	// The name mapping of the schema as the catalog assigned its IDs.
	return setNameMapping(ctx, tbl)
}

func setNameMapping(ctx context.Context, tbl *table.Table) (*table.Table, error) {
	mapping, err := json.Marshal(tbl.Schema().NameMapping())
	if err != nil {
		return nil, fmt.Errorf("name mapping: %w", err)
	}
	if tbl.Properties()[table.DefaultNameMappingKey] == string(mapping) {
		return tbl, nil
	}
	tx := tbl.NewTransaction()
	if err := tx.SetProperties(iceberg.Properties{table.DefaultNameMappingKey: string(mapping)}); err != nil {
		return nil, err
	}
	out, err := tx.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("set the name mapping of %s: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	return out, nil
}

// evolve adds the sink's columns the table lacks, as optional columns
// (the table's older files have none of them), and refuses what it cannot
// reconcile.
func evolve(ctx context.Context, tbl *table.Table, s *config.Schema) (*table.Table, error) {
	have := tbl.Schema()
	want := fileColumns(s)
	var missing []column
	var problems []string
	inFiles := map[string]bool{}
	for _, c := range want {
		inFiles[c.name] = true
		f, ok := have.FindFieldByName(c.name)
		switch {
		case !ok:
			missing = append(missing, c)
		case !f.Type.Equals(c.typ):
			problems = append(problems, fmt.Sprintf("column %s is %s in the table, %s in the sink's files", c.name, f.Type, c.typ))
		}
	}
	for _, f := range have.Fields() {
		if f.Required && !inFiles[f.Name] {
			problems = append(problems, fmt.Sprintf("column %s is required in the table and not in the sink's files", f.Name))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: table %s: %s", ErrIncompatible, strings.Join(tbl.Identifier(), "."), strings.Join(problems, "; "))
	}
	if len(missing) == 0 {
		return setNameMapping(ctx, tbl)
	}
	tx := tbl.NewTransaction()
	up := tx.UpdateSchema(true, false)
	for _, c := range missing {
		up = up.AddColumn([]string{c.name}, c.typ, "", false, nil)
	}
	if err := up.Commit(); err != nil {
		return nil, fmt.Errorf("add columns to %s: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	out, err := tx.Commit(ctx)
	if err != nil {
		return nil, fmt.Errorf("add columns to %s: %w", strings.Join(tbl.Identifier(), "."), err)
	}
	return setNameMapping(ctx, out)
}

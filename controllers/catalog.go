package controllers

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	corev1 "k8s.io/api/core/v1"

	jetsinkv1 "github.com/jetsink/jetsink/api/v1alpha1"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// catalogTimeout bounds the catalog check, as destinationTimeout does the
// bucket's: one tenant's dead database must not hold the reconcile queue.
const catalogTimeout = 3 * time.Second

// checkCatalog logs in to the SQL catalog's database as the workers do
// (the URI's user, the Secret's password), so a wrong password or an
// unreachable database shows on the sink rather than only in the workers'
// logs, where they wait for it without spending a delivery. It reads no
// table: creating and evolving the table is the workers' (they hold the S3
// credentials its metadata is written with).
func checkCatalog(ctx context.Context, t *config.Table, secret *corev1.Secret) *problem {
	if t == nil {
		return nil
	}
	pc, err := pgx.ParseConfig(t.URI)
	if err != nil {
		return stalled(jetsinkv1.ReasonInvalidSpec, "destination.table.catalog.uri: %v", err)
	}
	if secret != nil {
		pc.Password = string(secret.Data["password"])
	}
	pc.ConnectTimeout = catalogTimeout
	ctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err == nil {
		conn.Close(ctx)
		return nil
	}
	where := redactedURI(t.URI)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return stalled(jetsinkv1.ReasonCatalogAuthFailed,
				"the catalog database %s refused user %q (destination.table.catalog.credentialsSecretRef, key password): %s",
				where, pc.User, pgErr.Message)
		}
		return retrying(jetsinkv1.ReasonCatalogUnreachable, "the catalog database %s refused the connection: %s (SQLSTATE %s)",
			where, pgErr.Message, pgErr.Code)
	}
	return retrying(jetsinkv1.ReasonCatalogUnreachable, "cannot connect to the catalog database %s: %v", where, errors.Unwrap(err))
}

// redactedURI is the URI without its query (options may carry a client
// key's path or other details that are no business of a status).
func redactedURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(unparsable URI)"
	}
	u.RawQuery = ""
	return u.Redacted()
}

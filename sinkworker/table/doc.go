// Package table is the sink's Iceberg destination
// (spec.destination.table): a table that follows the sink's schema, and
// commits that put each event in it once. docs/iceberg-exactly-once.md is the design and
// the argument.
//
//   - Ensure creates the sink's table from its schema (the same columns,
//     the object keys' partitioning, a name mapping: the files carry no
//     field IDs), adds the columns a changed schema adds, and refuses an
//     incompatible change with ErrIncompatible.
//   - Committer commits data files the worker wrote into the table's
//     location, with the sink's committed set (SeqSet) in the same atomic
//     commit: on fresh metadata it drops what is already in the table,
//     retries conflicts on the table as it then is, and reads a commit
//     whose answer was lost back from the table's history.
//
// The worker's stage that calls them, between writing a file and ACKing
// its events, is sinkworker/tablesink.go.
package table

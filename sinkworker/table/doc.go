// Package table is the sink's Iceberg destination (issue #14, in
// progress): what a sink has committed, kept in the table so that a
// redelivered event already in it is ACKed without being written again.
// docs/iceberg-exactly-once.md is the design and the argument.
//
// So far it holds SeqSet, the committed set's representation and its text
// form in table properties; the committer that uses it is not written yet.
package table

// Package lake proves that what the sink worker writes for a declared
// schema (config.Schema) is a lake another engine reads as declared.
//
// Its test runs the worker in-process against a real JetStream server and
// a real S3 server (versitygw), publishes IoT-shaped events with poison
// among them, downloads every object under the prefix and reads the files
// back with DuckDB, an engine that shares no code with the worker: the
// columns and their types in file order, every valid event exactly once
// with the values it was published with, the Hive partition path of each
// file (escaped device value, date, hour) against the rows inside it, the
// kept or dropped unmapped fields, and each poison event on the
// dead-letter subject with the column it names. DuckDB is linked
// statically (cgo) and only this package imports it.
package lake

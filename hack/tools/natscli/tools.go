//go:build tools

// Package tools pins the natscli version the tests run.
package tools

import _ "github.com/nats-io/natscli/nats"

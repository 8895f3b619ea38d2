//go:build tools

// Package tools pins the versitygw version the tests run.
package tools

import _ "github.com/versity/versitygw/cmd/versitygw"

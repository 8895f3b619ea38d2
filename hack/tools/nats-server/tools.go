//go:build tools

// Package tools pins the nats-server version the fault matrix (hack/faults)
// runs as its own process, so it can be stopped and restarted: the same
// version as the root go.mod's in-process test server.
package tools

import _ "github.com/nats-io/nats-server/v2"

//go:build tools

// Package tools pins the toxiproxy-server version the fault matrix
// (hack/faults) puts in front of NATS and S3 for outages, timeouts and
// connection resets. In v2.5.0 the server's package is cmd/server;
// install.sh names the binary toxiproxy-server.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"

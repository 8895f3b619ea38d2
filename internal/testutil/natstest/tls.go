package natstest

import (
	"crypto/tls"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/jetsink/jetsink/internal/testutil/tlstest"
)

// TLSOptions configure StartTLS.
type TLSOptions struct {
	// VerifyClients requires a client certificate signed by the CA, as
	// `tls { verify: true }` does in a server's configuration.
	VerifyClients bool
}

// StartTLS runs a JetStream server that accepts only TLS connections, with
// a certificate from a new PKI (Server.PKI). Its ClientURL is tls://…, and
// JetStream and CreateStream connect with the PKI's CA and client
// certificate.
func StartTLS(t testing.TB, o TLSOptions) *Server {
	t.Helper()
	p := tlstest.NewPKI(t)
	cert, err := tls.X509KeyPair(p.ServerCertPEM, p.ServerKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.VerifyClients {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		tc.ClientCAs = p.Pool()
	}
	s := StartWithOptions(t, &server.Options{TLS: true, TLSVerify: o.VerifyClients, TLSConfig: tc, TLSTimeout: 5})
	s.PKI = p
	return s
}

// clientOptions are the options this package's own connections use.
func (s *Server) clientOptions(t testing.TB) []nats.Option {
	if s.PKI == nil {
		return nil
	}
	return []nats.Option{nats.Secure(s.PKI.ClientTLSConfig(t))}
}

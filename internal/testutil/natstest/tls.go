package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// PKI is a throwaway certificate authority for one test: its certificate,
// a server certificate for 127.0.0.1 and localhost, and a client
// certificate, all as PEM (what a kubernetes.io/tls Secret holds).
type PKI struct {
	CAPEM         []byte
	ServerCertPEM []byte
	ServerKeyPEM  []byte
	ClientCertPEM []byte
	ClientKeyPEM  []byte

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// NewPKI generates a CA and the server and client certificates it signs.
// Two calls give two unrelated CAs, for tests of a certificate from the
// wrong one.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "jetsink test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("natstest: CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{CAPEM: pemBlock("CERTIFICATE", der), ca: ca, caKey: key}
	p.ServerCertPEM, p.ServerKeyPEM = p.Issue(t, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	p.ClientCertPEM, p.ClientKeyPEM = p.Issue(t, "jetsink-sinkworker", x509.ExtKeyUsageClientAuth)
	return p
}

// Issue signs a certificate for cn (also its IP or DNS name, and
// localhost) with the given use, and returns it with its key as PEM.
func (p *PKI) Issue(t testing.TB, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
	}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = append(tmpl.DNSNames, cn)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("natstest: certificate for %s: %v", cn, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
}

// ClientTLSConfig trusts the CA and presents the client certificate.
func (p *PKI) ClientTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	cert, err := tls.X509KeyPair(p.ClientCertPEM, p.ClientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: p.pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func (p *PKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

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
	p := NewPKI(t)
	cert, err := tls.X509KeyPair(p.ServerCertPEM, p.ServerKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.VerifyClients {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		tc.ClientCAs = p.pool()
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

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

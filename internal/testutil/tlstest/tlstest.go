// Package tlstest makes throwaway certificate authorities for tests: a CA,
// a server certificate for 127.0.0.1 and localhost, and a client
// certificate, as the PEM a kubernetes.io/tls Secret holds. The test
// servers (natstest, s3test) serve with them; the code under test gets the
// CA and client certificate the way a user's Secret would give them.
package tlstest

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
		t.Fatalf("tlstest: CA certificate: %v", err)
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
		t.Fatalf("tlstest: certificate for %s: %v", cn, err)
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
	return &tls.Config{RootCAs: p.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Pool holds the CA alone.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
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

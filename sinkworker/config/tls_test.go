package config_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/internal/testutil/tlstest"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// valid is a configuration Validate accepts, to add TLS settings to.
func valid() config.Config {
	c := config.Default()
	c.NATSURL, c.Stream, c.Bucket = "nats://nats:4222", "EVENTS", "lake"
	return c
}

// Unusable TLS settings are refused by the variable and the Secret key a
// user has to fix, and no message quotes the PEM (a private key must not
// reach a log, an Event or a status condition).
func TestValidateRefusesUnusableTLS(t *testing.T) {
	p, other := tlstest.NewPKI(t), tlstest.NewPKI(t)
	ca, cert, key := string(p.CAPEM), string(p.ClientCertPEM), string(p.ClientKeyPEM)
	truncated := ca[:len(ca)/2] + "\n-----END CERTIFICATE-----\n"
	for _, tc := range []struct {
		name string
		set  func(*config.Config)
		want []string
	}{
		{"certificate without key", func(c *config.Config) { c.NATSTLSCert = cert },
			[]string{"JETSINK_NATS_TLS_KEY:", "tls.key", "tls.crt"}},
		{"key without certificate", func(c *config.Config) { c.NATSTLSKey = key },
			[]string{"JETSINK_NATS_TLS_CERT:", "tls.crt", "tls.key"}},
		{"key of another certificate", func(c *config.Config) { c.NATSTLSCert, c.NATSTLSKey = cert, string(other.ClientKeyPEM) },
			[]string{"JETSINK_NATS_TLS_CERT:", "tls.crt and tls.key", "does not match"}},
		{"certificate and key swapped", func(c *config.Config) { c.NATSTLSCert, c.NATSTLSKey = key, cert },
			[]string{"JETSINK_NATS_TLS_CERT:", "tls.crt and tls.key"}},
		{"CA that is not PEM", func(c *config.Config) { c.NATSTLSCA = "MIIB not pem at all" },
			[]string{"JETSINK_NATS_TLS_CA:", "ca.crt", "no PEM certificate"}},
		{"CA that is a key", func(c *config.Config) { c.NATSTLSCA = key },
			[]string{"JETSINK_NATS_TLS_CA:", "ca.crt", "PRIVATE KEY, not a CERTIFICATE"}},
		{"CA cut short", func(c *config.Config) { c.NATSTLSCA = truncated },
			[]string{"JETSINK_NATS_TLS_CA:", "ca.crt"}},
		{"S3 CA that is not PEM", func(c *config.Config) { c.S3TLSCA = "garbage" },
			[]string{"JETSINK_S3_TLS_CA:", "ca.crt", "no PEM certificate"}},
		{"S3 CA followed by a key", func(c *config.Config) { c.S3TLSCA = ca + key },
			[]string{"JETSINK_S3_TLS_CA:", "ca.crt", "block 2 is a PRIVATE KEY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.set(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			for _, pemText := range []string{c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey, c.S3TLSCA} {
				if leaked := pemBody(pemText); leaked != "" && strings.Contains(err.Error(), leaked) {
					t.Errorf("error quotes the PEM: %q", err)
				}
			}
			// The operator connects with NATSOptions; it refuses alike.
			if c.S3TLSCA == "" {
				if _, err := c.NATSOptions("test"); err == nil {
					t.Error("NATSOptions accepted it")
				}
			} else if _, err := c.S3TLSConfig(); err == nil || !strings.Contains(err.Error(), "JETSINK_S3_TLS_CA") {
				t.Errorf("S3TLSConfig: %v, want an error naming JETSINK_S3_TLS_CA", err)
			}
		})
	}
	for name, set := range map[string]func(*config.Config){
		"CA only":                  func(c *config.Config) { c.NATSTLSCA = ca },
		"client certificate only":  func(c *config.Config) { c.NATSTLSCert, c.NATSTLSKey = cert, key },
		"CA and client, S3 CA too": func(c *config.Config) { c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey, c.S3TLSCA = ca, cert, key, ca },
		"two CAs in one ca.crt":    func(c *config.Config) { c.NATSTLSCA = ca + string(other.CAPEM) },
	} {
		c := valid()
		set(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// pemBody is the first line of base64 in a PEM text, "" if it has none.
func pemBody(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 1 && strings.HasPrefix(lines[0], "-----BEGIN") && len(lines[1]) > 16 {
		return lines[1]
	}
	return ""
}

// The TLS material reaches the worker from the Secret, like a password:
// Environ never renders it, Load reads it, FromSecret (what the operator
// uses to connect) maps the Secret's keys to the same fields.
func TestTLSMaterialComesFromTheSecret(t *testing.T) {
	p := tlstest.NewPKI(t)
	c := valid()
	c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey, c.S3TLSCA = string(p.CAPEM), string(p.ClientCertPEM), string(p.ClientKeyPEM), string(p.CAPEM)
	env := map[string]string{}
	for _, v := range c.Environ() {
		if strings.Contains(v.Name, "TLS") || strings.Contains(v.Value, "-----BEGIN") {
			t.Errorf("Environ rendered %s", v.Name)
		}
		env[v.Name] = v.Value
	}
	for _, se := range append(append([]config.SecretEnv{}, config.NATSTLSSecretEnv...), config.S3TLSSecretEnv...) {
		if !strings.HasPrefix(se.Env, config.EnvPrefix) {
			t.Errorf("%s does not start with %s", se.Env, config.EnvPrefix)
		}
	}
	env["JETSINK_NATS_TLS_CA"] = string(p.CAPEM)
	env["JETSINK_NATS_TLS_CERT"] = string(p.ClientCertPEM)
	env["JETSINK_NATS_TLS_KEY"] = string(p.ClientKeyPEM)
	env["JETSINK_S3_TLS_CA"] = string(p.CAPEM)
	loaded, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if loaded.NATSTLSCA != c.NATSTLSCA || loaded.NATSTLSCert != c.NATSTLSCert || loaded.NATSTLSKey != c.NATSTLSKey || loaded.S3TLSCA != c.S3TLSCA {
		t.Error("Load did not read the TLS variables")
	}

	var fromSecret config.Config
	fromSecret.FromSecret(config.NATSTLSSecretEnv, map[string][]byte{
		"ca.crt": p.CAPEM, "tls.crt": p.ClientCertPEM, "tls.key": p.ClientKeyPEM,
	})
	fromSecret.FromSecret(config.S3TLSSecretEnv, map[string][]byte{"ca.crt": p.CAPEM})
	if fromSecret.NATSTLSCA != c.NATSTLSCA || fromSecret.NATSTLSCert != c.NATSTLSCert || fromSecret.NATSTLSKey != c.NATSTLSKey || fromSecret.S3TLSCA != c.S3TLSCA {
		t.Errorf("FromSecret: CA %t, cert %t, key %t, S3 CA %t", fromSecret.NATSTLSCA != "", fromSecret.NATSTLSCert != "",
			fromSecret.NATSTLSKey != "", fromSecret.S3TLSCA != "")
	}
	// A CA-only Secret sets the CA and nothing else.
	var caOnly config.Config
	caOnly.FromSecret(config.NATSTLSSecretEnv, map[string][]byte{"ca.crt": p.CAPEM})
	if caOnly.NATSTLSCA == "" || caOnly.NATSTLSCert != "" || caOnly.NATSTLSKey != "" {
		t.Error("FromSecret with only ca.crt")
	}
}

// S3TLSConfig is nil without a CA; with one, a certificate it signed
// verifies, and one from another CA does not.
func TestS3TLSConfig(t *testing.T) {
	c := valid()
	if tc, err := c.S3TLSConfig(); tc != nil || err != nil {
		t.Fatalf("without a CA: %v, %v; want nil, nil", tc, err)
	}
	p, other := tlstest.NewPKI(t), tlstest.NewPKI(t)
	c.S3TLSCA = string(p.CAPEM)
	tc, err := c.S3TLSConfig()
	if err != nil || tc == nil {
		t.Fatalf("S3TLSConfig: %v, %v", tc, err)
	}
	if tc.MinVersion < 0x0303 {
		t.Errorf("MinVersion %x, want at least TLS 1.2", tc.MinVersion)
	}
	verify := func(certPEM []byte) error {
		cert, err := x509.ParseCertificate(pemDER(t, certPEM))
		if err != nil {
			t.Fatal(err)
		}
		_, err = cert.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: "127.0.0.1"})
		return err
	}
	if err := verify(p.ServerCertPEM); err != nil {
		t.Errorf("certificate signed by the CA: %v", err)
	}
	if err := verify(other.ServerCertPEM); err == nil {
		t.Error("certificate from another CA verified")
	}
}

func pemDER(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
}

// NATSOptions connects to a real nats-server that requires TLS and client
// certificates (`verify: true`), with the CA and certificate from the
// Secret, whatever the URL's scheme; without them the connection fails
// with an error that says why.
func TestNATSOptionsTLS(t *testing.T) {
	s := natstest.StartTLS(t, natstest.TLSOptions{VerifyClients: true})
	s.CreateStream(t, "EVENTS", "events.>")
	other := tlstest.NewPKI(t)
	tlsURL := s.ClientURL()
	natsURL := strings.Replace(tlsURL, "tls://", "nats://", 1)
	secret := map[string][]byte{"ca.crt": s.PKI.CAPEM, "tls.crt": s.PKI.ClientCertPEM, "tls.key": s.PKI.ClientKeyPEM}

	connect := func(url string, data map[string][]byte) (*nats.Conn, error) {
		c := valid()
		c.NATSURL = url
		c.FromSecret(config.NATSTLSSecretEnv, data)
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		opts, err := c.NATSOptions("test")
		if err != nil {
			t.Fatalf("NATSOptions: %v", err)
		}
		return nats.Connect(url, append(opts, nats.Timeout(3*time.Second))...)
	}

	for _, url := range []string{tlsURL, natsURL} {
		nc, err := connect(url, secret)
		if err != nil {
			t.Fatalf("%s with CA and client certificate: %v", url, err)
		}
		if !nc.TLSRequired() {
			t.Errorf("%s: connection is not TLS", url)
		}
		roundTrip(t, nc)
		nc.Close()
	}

	for _, tc := range []struct {
		name string
		data map[string][]byte
		want []string // any of them
	}{
		{"no TLS settings", nil, []string{"certificate signed by unknown authority"}},
		{"client certificate but not the CA", map[string][]byte{"tls.crt": s.PKI.ClientCertPEM, "tls.key": s.PKI.ClientKeyPEM},
			[]string{"certificate signed by unknown authority"}},
		{"the CA of another server", map[string][]byte{"ca.crt": other.CAPEM, "tls.crt": s.PKI.ClientCertPEM, "tls.key": s.PKI.ClientKeyPEM},
			[]string{"certificate signed by unknown authority"}},
		{"CA but no client certificate", map[string][]byte{"ca.crt": s.PKI.CAPEM},
			[]string{"certificate required", "bad certificate", "closed by remote after TLS handshake"}},
		{"client certificate from another CA", map[string][]byte{"ca.crt": s.PKI.CAPEM, "tls.crt": other.ClientCertPEM, "tls.key": other.ClientKeyPEM},
			[]string{"unknown certificate authority", "bad certificate", "closed by remote after TLS handshake"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			nc, err := connect(tlsURL, tc.data)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !containsAny(err.Error(), tc.want) {
				t.Errorf("error %q says none of %q", err, tc.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("failed after %s: a TLS refusal should be immediate, not a timeout", d)
			}
		})
	}
}

// roundTrip publishes an event to the stream and consumes it with a pull
// consumer, as a worker does.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "events.tls", []byte(`{"event_id":"e1"}`))
	if err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{
		FilterSubject: "events.tls", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: ack.Sequence,
	})
	if err != nil {
		t.Fatalf("create consumer over TLS: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("fetch over TLS: %v", err)
	}
	var got int
	for msg := range batch.Messages() {
		got++
		if err := msg.DoubleAck(ctx); err != nil {
			t.Errorf("ack over TLS: %v", err)
		}
	}
	if got != 1 || batch.Error() != nil {
		t.Errorf("fetched %d messages (%v), want 1", got, batch.Error())
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

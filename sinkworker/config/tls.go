package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// NATSTLSSecretEnv lists the keys read from source.tls.secretRef, named as
// in a kubernetes.io/tls Secret (what cert-manager writes). All are
// optional: ca.crt alone trusts a private CA; tls.crt with tls.key is a
// client certificate, for a server with `verify: true`.
var NATSTLSSecretEnv = []SecretEnv{
	{Env: EnvPrefix + "NATS_TLS_CA", Key: "ca.crt", Optional: true},
	{Env: EnvPrefix + "NATS_TLS_CERT", Key: "tls.crt", Optional: true},
	{Env: EnvPrefix + "NATS_TLS_KEY", Key: "tls.key", Optional: true},
}

// S3TLSSecretEnv lists the keys read from destination.tls.secretRef: the CA
// of an S3-compatible store whose certificate no public CA signed.
var S3TLSSecretEnv = []SecretEnv{
	{Env: EnvPrefix + "S3_TLS_CA", Key: "ca.crt"},
}

// validateTLS reports the TLS settings that cannot be used, each by its
// variable and the Secret key it comes from. No message quotes the PEM: a
// private key must never reach a log or a status condition.
func (c Config) validateTLS(bad func(name, format string, args ...any)) {
	if _, err := certPool(c.NATSTLSCA); err != nil {
		bad("NATS_TLS_CA", "(Secret key ca.crt) %v", err)
	}
	if _, name, err := c.natsClientCert(); err != nil {
		bad(name, "%v", err)
	}
	if _, err := certPool(c.S3TLSCA); err != nil {
		bad("S3_TLS_CA", "(Secret key ca.crt) %v", err)
	}
}

// natsTLSConfig is the TLS configuration for NATS, or nil when neither a CA
// nor a client certificate is set (a tls:// URL or a server that requires
// TLS is then verified against the system's CAs).
func (c Config) natsTLSConfig() (*tls.Config, error) {
	if c.NATSTLSCA == "" && c.NATSTLSCert == "" && c.NATSTLSKey == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	cert, name, err := c.natsClientCert()
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", EnvPrefix, name, err)
	}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	if tc.RootCAs, err = certPool(c.NATSTLSCA); err != nil {
		return nil, fmt.Errorf("%sNATS_TLS_CA: (Secret key ca.crt) %w", EnvPrefix, err)
	}
	return tc, nil
}

// S3TLSConfig is the TLS configuration for S3 when a CA is set (nil, nil
// when not): the system's CAs plus S3TLSCA, so a store behind a public
// certificate keeps working when the Secret names only a private CA.
func (c Config) S3TLSConfig() (*tls.Config, error) {
	pool, err := certPool(c.S3TLSCA)
	if err != nil {
		return nil, fmt.Errorf("%sS3_TLS_CA: (Secret key ca.crt) %w", EnvPrefix, err)
	}
	if pool == nil {
		return nil, nil
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// natsClientCert is the client certificate, nil when none is set. An
// error comes with the variable at fault (without EnvPrefix); its text
// names the Secret keys.
func (c Config) natsClientCert() (*tls.Certificate, string, error) {
	switch {
	case c.NATSTLSCert == "" && c.NATSTLSKey == "":
		return nil, "", nil
	case c.NATSTLSKey == "":
		return nil, "NATS_TLS_KEY", errors.New("is required with a client certificate: the Secret has tls.crt but no tls.key")
	case c.NATSTLSCert == "":
		return nil, "NATS_TLS_CERT", errors.New("is required with a private key: the Secret has tls.key but no tls.crt")
	}
	// tls.X509KeyPair's errors describe the PEM ("failed to find any PEM
	// data", "private key does not match public key") but never quote it.
	cert, err := tls.X509KeyPair([]byte(c.NATSTLSCert), []byte(c.NATSTLSKey))
	if err != nil {
		return nil, "NATS_TLS_CERT", fmt.Errorf("(Secret keys tls.crt and tls.key) not a usable certificate and key: %w", err)
	}
	return &cert, "", nil
}

// certPool is the system's CAs plus the PEM certificates in caPEM, nil when
// caPEM is empty. Anything in it that is not a certificate is refused, so
// a key pasted into ca.crt by mistake is reported, not silently skipped.
func certPool(caPEM string) (*x509.CertPool, error) {
	if caPEM == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	rest, n := []byte(caPEM), 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d is not a valid certificate: %w", n, err)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, errors.New("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	return pool, nil
}

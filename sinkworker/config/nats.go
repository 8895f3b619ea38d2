package config

import (
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// FromSecret sets the credential fields named by vars from a Secret's data,
// the way the pod's environment would set them. The operator uses it to
// connect with the same credentials its workers will use.
func (c *Config) FromSecret(vars []SecretEnv, data map[string][]byte) {
	byEnv := map[string]string{}
	for _, v := range vars {
		if val, ok := data[v.Key]; ok {
			byEnv[v.Env] = string(val)
		}
	}
	eachField(c, func(name string, secret bool, v reflect.Value) {
		if val, ok := byEnv[EnvPrefix+name]; ok && secret {
			v.SetString(val)
		}
	})
}

// NATSOptions are the connection options for the configured credentials
// and TLS, shared by the worker and the operator so both authenticate
// alike. With a CA or a client certificate set the connection must be TLS
// (nats.Secure), whatever the URL's scheme.
func (c Config) NATSOptions(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.Timeout(5 * time.Second)}
	tc, err := c.natsTLSConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case c.NATSCreds != "":
		jwt, err := nkeys.ParseDecoratedJWT([]byte(c.NATSCreds))
		if err != nil {
			return nil, fmt.Errorf("%sNATS_CREDS: not a .creds file: %w", EnvPrefix, err)
		}
		kp, err := nkeys.ParseDecoratedNKey([]byte(c.NATSCreds))
		if err != nil {
			return nil, fmt.Errorf("%sNATS_CREDS: no seed in the .creds file: %w", EnvPrefix, err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, fmt.Errorf("%sNATS_CREDS: %w", EnvPrefix, err)
		}
		opts = append(opts, nats.UserJWTAndSeed(jwt, string(seed)))
	case c.NATSNKeySeed != "":
		kp, err := nkeys.FromSeed([]byte(c.NATSNKeySeed))
		if err != nil {
			return nil, fmt.Errorf("%sNATS_NKEY_SEED: not an nkey seed: %w", EnvPrefix, err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("%sNATS_NKEY_SEED: %w", EnvPrefix, err)
		}
		opts = append(opts, nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }))
	case c.NATSToken != "":
		opts = append(opts, nats.Token(c.NATSToken))
	case c.NATSUser != "":
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	return opts, nil
}

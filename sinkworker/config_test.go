package sinkworker

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// What the operator renders (Environ) is what the worker loads (Load).
func TestConfigEnvironLoadRoundTrip(t *testing.T) {
	want := config.Default()
	want.NATSURL = "nats://nats.nats:4222"
	want.Stream = "EVENTS"
	want.Consumer = "wh"
	want.FilterSubjects = []string{"events.>", "more.>"}
	want.AckWait = 3 * time.Minute
	want.DeadLetterSubject = "dlq.events"
	want.Bucket = "lake"
	want.Prefix = "events/"
	want.ForcePathStyle = true
	want.BatchMaxBytes = 32 << 20
	want.Compression = config.CompressionSnappy
	want.TimeGranularity = config.GranularityDay
	want.NATSPassword = "secret"
	env := map[string]string{}
	for _, v := range want.Environ() {
		if strings.Contains(v.Name, "PASSWORD") {
			t.Errorf("Environ rendered the secret %s", v.Name)
		}
		env[v.Name] = v.Value
	}
	env["JETSINK_NATS_PASSWORD"] = "secret" // from the Secret, as in the pod
	got, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if gs, ws := strings.Join(got.FilterSubjects, ","), strings.Join(want.FilterSubjects, ","); gs != ws {
		t.Errorf("FilterSubjects %s, want %s", gs, ws)
	}
	got.FilterSubjects, want.FilterSubjects = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

// Every invalid setting is reported by its variable's name, and New refuses
// the configuration before touching the network.
func TestConfigErrorsNameTheVariable(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{}, []string{"JETSINK_NATS_URL: is required", "JETSINK_STREAM: is required", "JETSINK_S3_BUCKET: is required"}},
		{map[string]string{"JETSINK_WORKERS": "many"}, []string{"JETSINK_WORKERS=\"many\": not a whole number"}},
		{map[string]string{"JETSINK_ACK_WAIT": "30s", "JETSINK_BATCH_MAX_AGE": "1m"}, []string{"JETSINK_ACK_WAIT", "BATCH_MAX_AGE"}},
		{map[string]string{"JETSINK_TIME_GRANULARITY": "minute"}, []string{"JETSINK_TIME_GRANULARITY"}},
		{map[string]string{"JETSINK_MAX_BUFFERED_BYTES": "1024"}, []string{"JETSINK_MAX_BUFFERED_BYTES"}},
	} {
		base := map[string]string{"JETSINK_NATS_URL": "nats://x", "JETSINK_STREAM": "S", "JETSINK_S3_BUCKET": "b"}
		if len(tc.env) == 0 {
			base = map[string]string{}
		}
		for k, v := range tc.env {
			base[k] = v
		}
		cfg, err := config.Load(func(k string) string { return base[k] })
		if err == nil {
			t.Errorf("%v: loaded", tc.env)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", tc.env, err, w)
			}
		}
		// A value that does not parse leaves the default in cfg; the rest
		// must be refused by New as well.
		if strings.Contains(err.Error(), "=\"") {
			continue
		}
		if _, nerr := New(cfg, Options{}); nerr == nil {
			t.Errorf("%v: New accepted an invalid configuration", tc.env)
		}
	}
}

// The worker authenticates with each kind of NATS credential it can be given.
func TestNATSCredentials(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	for name, tc := range map[string]struct {
		opts *server.Options
		set  func(*config.Config)
	}{
		"user": {&server.Options{Users: []*server.User{{Username: "u", Password: "p"}}},
			func(c *config.Config) { c.NATSUser, c.NATSPassword = "u", "p" }},
		"token": {&server.Options{Authorization: "tok"}, func(c *config.Config) { c.NATSToken = "tok" }},
		"nkey":  {&server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}}, func(c *config.Config) { c.NATSNKeySeed = string(seed) }},
	} {
		t.Run(name, func(t *testing.T) {
			s := natstest.StartWithOptions(t, tc.opts)
			cfg := config.Default()
			opts, err := natsOptions(cfg, testLogger(t), func() {})
			if err != nil {
				t.Fatal(err)
			}
			// Without credentials the server refuses us...
			if nc, err := nats.Connect(s.ClientURL(), append(opts, nats.RetryOnFailedConnect(false))...); err == nil {
				nc.Close()
				t.Fatal("server accepted a connection without credentials")
			}
			tc.set(&cfg)
			opts, err = natsOptions(cfg, testLogger(t), func() {})
			if err != nil {
				t.Fatal(err)
			}
			// ...and with them it lets us in.
			nc, err := nats.Connect(s.ClientURL(), append(opts, nats.RetryOnFailedConnect(false))...)
			if err != nil {
				t.Fatalf("connect with %s credentials: %v", name, err)
			}
			nc.Close()
		})
	}
	cfg := config.Default()
	cfg.NATSCreds = "not a creds file"
	if _, err := natsOptions(cfg, testLogger(t), func() {}); err == nil || !strings.Contains(err.Error(), "JETSINK_NATS_CREDS") {
		t.Errorf("bad creds file: error %v, want one naming JETSINK_NATS_CREDS", err)
	}
}

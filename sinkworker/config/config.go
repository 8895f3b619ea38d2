// Package config is the contract between the operator and the sink worker.
//
// The worker's whole configuration is the Config struct below. The worker
// loads it from its environment (Load); the operator renders a WarehouseSink
// into the same struct and turns it into the pod's environment (Environ), so
// the names of the settings are written exactly once, in the `env` tags here,
// and cannot drift between the two binaries. Credentials are not rendered:
// they reach the pod from the user's Secrets (see NATSSecretEnv,
// S3SecretEnv, NATSTLSSecretEnv and S3TLSSecretEnv) and are read by Load
// like any other variable.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts the name of every variable the worker reads, except the
// AWS SDK's own credential variables.
const EnvPrefix = "JETSINK_"

// Compression codecs accepted for Parquet files.
const (
	CompressionZstd   = "zstd"
	CompressionSnappy = "snappy"
	CompressionGzip   = "gzip"
	CompressionNone   = "none"
)

// Time granularities of the date/hour partition.
const (
	GranularityHour = "hour"
	GranularityDay  = "day"
)

// Config is everything one sink worker process needs. Every field has an
// `env` tag (the variable's name after EnvPrefix); fields tagged `secret`
// are credentials, loaded but never rendered by Environ.
type Config struct {
	// NATS JetStream source.
	NATSURL           string        `env:"NATS_URL"`
	NATSUser          string        `env:"NATS_USER" secret:"true"`
	NATSPassword      string        `env:"NATS_PASSWORD" secret:"true"`
	NATSToken         string        `env:"NATS_TOKEN" secret:"true"`
	NATSNKeySeed      string        `env:"NATS_NKEY_SEED" secret:"true"`
	NATSCreds         string        `env:"NATS_CREDS" secret:"true"`    // contents of a .creds file
	NATSTLSCA         string        `env:"NATS_TLS_CA" secret:"true"`   // PEM: CAs trusted besides the system's
	NATSTLSCert       string        `env:"NATS_TLS_CERT" secret:"true"` // PEM: client certificate (chain)
	NATSTLSKey        string        `env:"NATS_TLS_KEY" secret:"true"`  // PEM: its private key
	Stream            string        `env:"STREAM"`
	Consumer          string        `env:"CONSUMER"`
	FilterSubjects    []string      `env:"FILTER_SUBJECTS"`
	AckWait           time.Duration `env:"ACK_WAIT"`
	MaxDeliver        int           `env:"MAX_DELIVER"`
	MaxAckPending     int           `env:"MAX_ACK_PENDING"`
	FetchBatchSize    int           `env:"FETCH_BATCH_SIZE"`
	DeadLetterSubject string        `env:"DEAD_LETTER_SUBJECT"`
	// CreateConsumer lets a worker create its durable consumer when it is
	// missing (a worker run on its own). The operator sets it to false: it
	// owns the consumer, and a consumer that was removed on purpose must
	// not come back as a DeliverAll replay of the whole stream.
	CreateConsumer bool `env:"CREATE_CONSUMER"`

	// S3 destination. Credentials come from the AWS SDK's default chain
	// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity, instance role).
	Bucket         string `env:"S3_BUCKET"`
	Prefix         string `env:"S3_PREFIX"`
	Region         string `env:"S3_REGION"`
	Endpoint       string `env:"S3_ENDPOINT"`
	ForcePathStyle bool   `env:"S3_FORCE_PATH_STYLE"`
	// S3TLSCA is PEM text: CAs to trust for the endpoint besides the
	// system's (see S3TLSConfig).
	S3TLSCA string `env:"S3_TLS_CA" secret:"true"`

	// Batching and files.
	Workers          int           `env:"WORKERS"`
	BatchMaxEvents   int           `env:"BATCH_MAX_EVENTS"`
	BatchMaxBytes    int64         `env:"BATCH_MAX_BYTES"`
	BatchMaxAge      time.Duration `env:"BATCH_MAX_AGE"`
	MaxBufferedBytes int64         `env:"MAX_BUFFERED_BYTES"`
	Compression      string        `env:"COMPRESSION"`
	TimeGranularity  string        `env:"TIME_GRANULARITY"`
	// Schema declares the columns and partitions; nil is the analytics
	// envelope. Rendered only when set, so sinks without one keep the pod
	// template they had.
	Schema *Schema `env:"SCHEMA"`
	// Table, when set, commits the files to an Iceberg table
	// (spec.destination.table); nil leaves them as plain Parquet under
	// Prefix.
	Table *Table `env:"TABLE"`

	// Events. An event time outside [EventTimeMin, now+EventTimeMaxAhead]
	// is poison: a clock or unit mistake that would land in an absurd
	// partition.
	EventTimeMin      time.Time     `env:"EVENT_TIME_MIN"`
	EventTimeMaxAhead time.Duration `env:"EVENT_TIME_MAX_AHEAD"`

	// Process.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT"`
	MetricsAddr     string        `env:"METRICS_ADDR"`
}

// MetricsPort is the port of the default MetricsAddr; the operator exposes
// it on the pod and the metrics Service.
const MetricsPort = 9090

// Default returns the settings a worker uses for anything not configured.
// The WarehouseSink CRD defaults mirror these values.
func Default() Config {
	return Config{
		Consumer:          "warehouse",
		AckWait:           2 * time.Minute,
		MaxDeliver:        10,
		FetchBatchSize:    500,
		Region:            "us-east-1",
		Workers:           4,
		BatchMaxEvents:    10000,
		BatchMaxBytes:     64 << 20,
		BatchMaxAge:       60 * time.Second,
		MaxBufferedBytes:  256 << 20,
		CreateConsumer:    true,
		EventTimeMin:      time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		EventTimeMaxAhead: 24 * time.Hour,
		Compression:       CompressionZstd,
		TimeGranularity:   GranularityHour,
		ShutdownTimeout:   30 * time.Second,
		MetricsAddr:       fmt.Sprintf(":%d", MetricsPort),
	}
}

// SecretEnv says that the environment variable Env takes its value from the
// key Key of a user's Secret.
type SecretEnv struct {
	Env      string
	Key      string
	Optional bool
}

// NATSSecretEnv lists the keys read from source.credentialsSecretRef. All are
// optional; a Secret sets the ones its authentication method needs.
var NATSSecretEnv = []SecretEnv{
	{Env: EnvPrefix + "NATS_USER", Key: "user", Optional: true},
	{Env: EnvPrefix + "NATS_PASSWORD", Key: "password", Optional: true},
	{Env: EnvPrefix + "NATS_TOKEN", Key: "token", Optional: true},
	{Env: EnvPrefix + "NATS_NKEY_SEED", Key: "nkey", Optional: true},
	{Env: EnvPrefix + "NATS_CREDS", Key: "creds", Optional: true},
}

// S3SecretEnv lists the keys read from destination.credentialsSecretRef, as
// the AWS SDK's environment variables.
var S3SecretEnv = []SecretEnv{
	{Env: "AWS_ACCESS_KEY_ID", Key: "AWS_ACCESS_KEY_ID"},
	{Env: "AWS_SECRET_ACCESS_KEY", Key: "AWS_SECRET_ACCESS_KEY"},
	{Env: "AWS_SESSION_TOKEN", Key: "AWS_SESSION_TOKEN", Optional: true},
}

// EnvVar is one rendered environment variable.
type EnvVar struct {
	Name, Value string
}

// Environ renders every non-secret setting as an environment variable, in
// the struct's field order so the rendering is stable (a pod template that
// does not change does not roll).
func (c Config) Environ() []EnvVar {
	var out []EnvVar
	eachField(&c, func(name string, secret bool, v reflect.Value) {
		if secret || v.Kind() == reflect.Pointer && v.IsNil() {
			return
		}
		out = append(out, EnvVar{Name: EnvPrefix + name, Value: format(v)})
	})
	return out
}

// Load reads a Config from getenv (os.Getenv in the worker), starting from
// Default, and validates it. An error names the variable at fault.
func Load(getenv func(string) string) (Config, error) {
	c := Default()
	var errs []error
	eachField(&c, func(name string, _ bool, v reflect.Value) {
		raw := getenv(EnvPrefix + name)
		if raw == "" {
			return
		}
		if err := parse(v, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s%s=%q: %w", EnvPrefix, name, raw, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate reports every invalid setting, each by its variable name.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", EnvPrefix, name, fmt.Sprintf(format, args...)))
	}
	required := map[string]string{
		"NATS_URL": c.NATSURL, "STREAM": c.Stream, "CONSUMER": c.Consumer, "S3_BUCKET": c.Bucket,
	}
	for _, name := range []string{"NATS_URL", "STREAM", "CONSUMER", "S3_BUCKET"} {
		if required[name] == "" {
			bad(name, "is required")
		}
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"ACK_WAIT", int64(c.AckWait)}, {"MAX_DELIVER", int64(c.MaxDeliver)},
		{"FETCH_BATCH_SIZE", int64(c.FetchBatchSize)}, {"WORKERS", int64(c.Workers)},
		{"BATCH_MAX_EVENTS", int64(c.BatchMaxEvents)}, {"BATCH_MAX_BYTES", c.BatchMaxBytes},
		{"BATCH_MAX_AGE", int64(c.BatchMaxAge)}, {"MAX_BUFFERED_BYTES", c.MaxBufferedBytes},
		{"SHUTDOWN_TIMEOUT", int64(c.ShutdownTimeout)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.name, "must be greater than zero")
		}
	}
	if c.MaxAckPending < 0 {
		bad("MAX_ACK_PENDING", "must not be negative (0 sizes it from MAX_BUFFERED_BYTES)")
	}
	if c.AckWait > 0 && c.AckWait <= c.BatchMaxAge {
		bad("ACK_WAIT", "(%s) must be longer than BATCH_MAX_AGE (%s), or events are redelivered while they wait in a batch", c.AckWait, c.BatchMaxAge)
	}
	if c.BatchMaxBytes > 0 && c.MaxBufferedBytes > 0 && c.MaxBufferedBytes < c.BatchMaxBytes {
		bad("MAX_BUFFERED_BYTES", "(%d) must be at least BATCH_MAX_BYTES (%d)", c.MaxBufferedBytes, c.BatchMaxBytes)
	}
	if !slices.Contains([]string{CompressionZstd, CompressionSnappy, CompressionGzip, CompressionNone}, c.Compression) {
		bad("COMPRESSION", "%q is not one of zstd, snappy, gzip, none", c.Compression)
	}
	if c.EventTimeMin.Before(MinEventTimeFloor) {
		bad("EVENT_TIME_MIN", "(%s) must not be before %s: below it, epoch seconds and epoch milliseconds could not be told apart",
			c.EventTimeMin.Format(time.RFC3339), MinEventTimeFloor.Format(time.RFC3339))
	}
	if c.EventTimeMaxAhead < 0 {
		bad("EVENT_TIME_MAX_AHEAD", "must not be negative")
	}
	if c.TimeGranularity != GranularityHour && c.TimeGranularity != GranularityDay {
		bad("TIME_GRANULARITY", "%q is not one of hour, day", c.TimeGranularity)
	}
	if c.Schema != nil {
		c.Schema.validate(bad)
	}
	if c.Table != nil {
		c.Table.validate(c.Bucket, bad)
	}
	c.validateTLS(bad)
	return errors.Join(errs...)
}

// eachField calls fn for every tagged field of c, in declaration order.
func eachField(c *Config, fn func(name string, secret bool, v reflect.Value)) {
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if name, ok := f.Tag.Lookup("env"); ok {
			fn(name, f.Tag.Get("secret") == "true", rv.Field(i))
		}
	}
}

// MinEventTimeFloor is the earliest EventTimeMin allowed. An epoch number
// below 1e11 is read as seconds, anything above as milliseconds; 1e11
// milliseconds is 1973-03-03T09:46:40Z, so with event times no earlier than
// this, no number is a valid time in both units.
var MinEventTimeFloor = time.UnixMilli(1e11).UTC()

var (
	durationType = reflect.TypeFor[time.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
	schemaType   = reflect.TypeFor[*Schema]()
	tableType    = reflect.TypeFor[*Table]()
)

func format(v reflect.Value) string {
	switch {
	case v.Type() == schemaType:
		return v.Interface().(*Schema).render()
	case v.Type() == tableType:
		return v.Interface().(*Table).render()
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Type() == timeType:
		return v.Interface().(time.Time).UTC().Format(time.RFC3339)
	case v.Kind() == reflect.Slice:
		return strings.Join(v.Interface().([]string), ",")
	default:
		return fmt.Sprint(v.Interface())
	}
}

func parse(v reflect.Value, raw string) error {
	switch {
	case v.Type() == schemaType:
		s, err := parseSchema(raw)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(s))
	case v.Type() == tableType:
		t, err := parseTable(raw)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(t))
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("not a duration (e.g. 30s, 2m)")
		}
		v.SetInt(int64(d))
	case v.Type() == timeType:
		t, err := time.Parse(time.RFC3339, raw)
		if err != nil {
			return errors.New("not an RFC 3339 time (e.g. 2000-01-01T00:00:00Z)")
		}
		v.Set(reflect.ValueOf(t.UTC()))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("not a whole number")
		}
		v.SetInt(n)
	case v.Kind() == reflect.Slice:
		var items []string
		for s := range strings.SplitSeq(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		panic("config: unsupported field type " + v.Type().String())
	}
	return nil
}

package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/sinkworker/config"
)

// The pool's defaults. A connection lives across the lag refresher's ticks
// (30 s by default) and a burst of reconciles, and is closed once nothing
// has used it for natsIdleTimeout: a deleted sink's server or rotated
// credentials do not hold a connection for long.
const (
	natsIdleTimeout = 3 * time.Minute
	// natsBackoffBase and natsBackoffMax bound how long calls for a server
	// that refused or did not answer a connect fail at once, doubling per
	// failure: the first retry comes soon (a server restarting), a server
	// that stays down costs one connect timeout a minute, not one per
	// reconcile. The controller's own retry backoff (1 s to a minute) sits
	// on top, so a sink never retries faster than its server is tried.
	natsBackoffBase = 2 * time.Second
	natsBackoffMax  = time.Minute
	// natsPingInterval finds a connection whose server vanished without
	// closing it (a partition) within about two intervals; the default
	// (two minutes) would keep handing out a dead connection for minutes.
	natsPingInterval = 20 * time.Second
)

// natsPool shares NATS connections between the reconciler's consumer calls
// and the lag refresher's ticks: one connection per server URL and
// credentials (TLS material included), opened on first use, closed after
// an idle period. Connecting to a server that does not answer blocks for
// up to natsConnectTimeout; after such a failure the pool refuses calls for
// that server at once, with an error that says when it will try again, so
// one tenant's dead NATS cannot hold the reconcile workers the other
// tenants' sinks wait for.
//
// Its zero value is not usable: see newNATSPool. Close drops every
// connection; the pool stays usable afterwards.
type natsPool struct {
	name           string        // the connection's name, as NATS monitoring shows it
	connectTimeout time.Duration // one connect attempt
	idleTimeout    time.Duration
	backoffBase    time.Duration
	backoffMax     time.Duration

	mu    sync.Mutex
	conns map[connKey]*pooledConn
	// down holds the servers (by URL) and credentials (by connKey) whose
	// last connect failed, until their backoff passes.
	down    map[string]*natsDown
	reaping bool // an idle reaper runs
	// gen changes on Close, so a reaper started before it stops.
	gen int
}

// pooledConn is one shared connection, or the connect still under way to
// it (ready is open): callers that want it meanwhile wait for that one
// attempt instead of each dialling the same server.
type pooledConn struct {
	ready    chan struct{}
	nc       *nats.Conn
	js       jetstream.JetStream
	err      error // the connect's failure, once ready is closed
	users    int
	lastUsed time.Time
}

// natsDown is a server or credentials in backoff.
type natsDown struct {
	failures int
	until    time.Time
	err      error
}

// connKey is what two sinks must share to use one connection: the server
// URL and a digest of every NATS setting of the worker configuration (the
// credentials and TLS material NATSOptions reads), so no secret is kept as
// a map key and a field added to the configuration is part of it at once.
type connKey struct {
	url  string
	auth [sha256.Size]byte
}

func connOf(cfg config.Config) connKey {
	h := sha256.New()
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && strings.HasPrefix(f.Name, "NATS") && f.Name != "NATSURL" {
			fmt.Fprintf(h, "%s=%q;", f.Name, fmt.Sprint(v.Field(i).Interface()))
		}
	}
	k := connKey{url: cfg.NATSURL}
	h.Sum(k.auth[:0])
	return k
}

// String names the key in the down map; auth keys never collide with URLs.
func (k connKey) String() string { return fmt.Sprintf("%s#%x", k.url, k.auth[:8]) }

// natsConfigError is a configuration the options cannot be built from (a
// malformed nkey or creds file): a problem of the sink's Secret, not of
// the server.
type natsConfigError struct{ err error }

func (e *natsConfigError) Error() string { return e.err.Error() }
func (e *natsConfigError) Unwrap() error { return e.err }

// natsConnectError is a failed connect, or a call refused because the
// server (or these credentials) failed one recently.
type natsConnectError struct {
	url   string // redacted
	err   error  // the connect's own error
	retry time.Time
	// backoff is true when this call did not try to connect at all.
	backoff bool
}

func (e *natsConnectError) Error() string {
	verb := "cannot connect to"
	if e.backoff {
		verb = "not connecting yet to"
	}
	return fmt.Sprintf("%s NATS at %s: %v; next attempt in %s (at %s)", verb, e.url, e.err,
		max(time.Until(e.retry), 0).Round(100*time.Millisecond), e.retry.Format(time.TimeOnly))
}

func (e *natsConnectError) Unwrap() error { return e.err }

// defaultNATSPool is the pool of a zero consumers, so a reconciler and its
// lag refresher built without one still share connections.
var defaultNATSPool = newNATSPool("jetsink-operator")

func newNATSPool(name string) *natsPool {
	return &natsPool{
		name:           name,
		connectTimeout: natsConnectTimeout,
		idleTimeout:    natsIdleTimeout,
		backoffBase:    natsBackoffBase,
		backoffMax:     natsBackoffMax,
		conns:          map[connKey]*pooledConn{},
		down:           map[string]*natsDown{},
	}
}

// do runs fn with a JetStream context on the pool's connection for cfg.
// Errors of the connection itself are *natsConfigError or
// *natsConnectError; fn's are returned as they are.
func (p *natsPool) do(ctx context.Context, cfg config.Config, fn func(jetstream.JetStream) error) error {
	js, release, err := p.acquire(ctx, cfg)
	if err != nil {
		return err
	}
	defer release()
	return fn(js)
}

// acquire returns the connection for cfg, connecting if there is none, and
// a release to call when done with it.
func (p *natsPool) acquire(ctx context.Context, cfg config.Config) (jetstream.JetStream, func(), error) {
	key := connOf(cfg)
	for {
		p.mu.Lock()
		pc, ok := p.conns[key]
		if ok {
			select {
			case <-pc.ready:
				if pc.err == nil && !pc.nc.IsClosed() {
					pc.users++
					p.mu.Unlock()
					return pc.js, p.releaser(pc), nil
				}
				// The server went away (connections do not reconnect:
				// the next connect says why) or the connect failed.
				delete(p.conns, key)
				p.mu.Unlock()
				continue
			default:
				p.mu.Unlock()
				select {
				case <-pc.ready:
					if pc.err != nil {
						return nil, nil, pc.err
					}
					continue
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				}
			}
		}
		if err := p.backingOff(key); err != nil {
			p.mu.Unlock()
			return nil, nil, err
		}
		pc = &pooledConn{ready: make(chan struct{})}
		p.conns[key] = pc
		p.mu.Unlock()

		p.connect(key, cfg, pc)
		if pc.err != nil {
			return nil, nil, pc.err
		}
		// Loop to take it as any other caller would.
	}
}

// backingOff is the error for a server or credentials still in backoff, or
// nil. p.mu is held.
func (p *natsPool) backingOff(key connKey) error {
	now := time.Now()
	for _, k := range []string{key.url, key.String()} {
		if d := p.down[k]; d != nil && now.Before(d.until) {
			return &natsConnectError{url: redactURL(key.url), err: d.err, retry: d.until, backoff: true}
		}
	}
	return nil
}

// connect dials for pc and publishes the result, recording a failure's
// backoff or clearing a past one.
func (p *natsPool) connect(key connKey, cfg config.Config, pc *pooledConn) {
	nc, err := p.dial(cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer close(pc.ready)
	if err != nil {
		var cfgErr *natsConfigError
		if errors.As(err, &cfgErr) {
			pc.err = err
		} else {
			pc.err = p.fail(key, err)
		}
		if p.conns[key] == pc {
			delete(p.conns, key)
		}
		return
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		pc.err = err
		delete(p.conns, key)
		return
	}
	delete(p.down, key.url)
	delete(p.down, key.String())
	// Close leaves a connect under way in the map: whoever waits for it
	// gets it, and the reaper closes it once idle.
	pc.nc, pc.js, pc.lastUsed = nc, js, time.Now()
	p.startReaper()
}

// dial connects with cfg's options, a short timeout and no reconnects: a
// connection whose server goes away closes, and the next call connects
// again and says why it cannot.
func (p *natsPool) dial(cfg config.Config) (*nats.Conn, error) {
	opts, err := cfg.NATSOptions(p.name)
	if err != nil {
		return nil, &natsConfigError{err}
	}
	opts = append(opts, nats.Timeout(p.connectTimeout), nats.NoReconnect(),
		nats.PingInterval(natsPingInterval), nats.MaxPingsOutstanding(2))
	return nats.Connect(cfg.NATSURL, opts...)
}

// fail records a failed connect and returns the error callers see. A
// server that did not answer is backed off for every credential that uses
// it; one that refused these credentials (or whose certificate they do not
// trust) only for them, so one tenant's wrong password does not stop the
// others on a shared server. p.mu is held.
func (p *natsPool) fail(key connKey, err error) error {
	k := key.url
	if credentialsRefused(err) {
		k = key.String()
	}
	d := p.down[k]
	if d == nil {
		d = &natsDown{}
		p.down[k] = d
	}
	d.failures++
	wait := p.backoffMax
	if d.failures < 30 {
		wait = min(p.backoffBase<<(d.failures-1), p.backoffMax)
	}
	d.until, d.err = time.Now().Add(wait), err
	return &natsConnectError{url: redactURL(key.url), err: err, retry: d.until}
}

// credentialsRefused tells a server that answered and refused the
// connection's credentials or TLS material from one that did not answer.
func credentialsRefused(err error) bool {
	var (
		unknownCA *x509.UnknownAuthorityError
		hostname  x509.HostnameError
		certErr   *tls.CertificateVerificationError
	)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &certErr) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization") || strings.Contains(msg, "authentication") ||
		strings.Contains(msg, "tls") || strings.Contains(msg, "x509")
}

// releaser returns the release of one use of pc.
func (p *natsPool) releaser(pc *pooledConn) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			pc.users--
			pc.lastUsed = time.Now()
		})
	}
}

// startReaper runs the idle reaper unless it runs already. It stops by
// itself once the pool holds no connection. p.mu is held.
func (p *natsPool) startReaper() {
	if p.reaping {
		return
	}
	p.reaping = true
	gen := p.gen
	go func() {
		every := max(p.idleTimeout/4, 10*time.Millisecond)
		for {
			time.Sleep(every)
			if !p.reap(gen) {
				return
			}
		}
	}()
}

// reap closes the connections idle for idleTimeout and reports whether the
// reaper should go on.
func (p *natsPool) reap(gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen {
		return false
	}
	cutoff := time.Now().Add(-p.idleTimeout)
	for key, pc := range p.conns {
		select {
		case <-pc.ready:
		default:
			continue // still connecting
		}
		if pc.nc != nil && (pc.nc.IsClosed() || (pc.users == 0 && pc.lastUsed.Before(cutoff))) {
			pc.nc.Close()
			delete(p.conns, key)
		}
	}
	if len(p.conns) == 0 {
		p.reaping = false
		return false
	}
	return true
}

// open is how many connections the pool holds, connecting ones included.
func (p *natsPool) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close closes every connection, in use or not, and forgets the backoffs.
// A call after it connects anew.
func (p *natsPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, pc := range p.conns {
		select {
		case <-pc.ready:
			if pc.nc != nil {
				pc.nc.Close()
			}
			delete(p.conns, key)
		default:
			// Its connect finishes on its own; the reaper closes it later.
		}
	}
	p.down = map[string]*natsDown{}
	p.gen++
	p.reaping = false
	if len(p.conns) > 0 {
		p.startReaper()
	}
}

// Start makes the pool a manager.Runnable that closes every connection as
// the manager stops.
func (p *natsPool) Start(ctx context.Context) error {
	<-ctx.Done()
	p.Close()
	return nil
}

// NeedLeaderElection: the pool serves whoever runs, leader or not.
func (p *natsPool) NeedLeaderElection() bool { return false }

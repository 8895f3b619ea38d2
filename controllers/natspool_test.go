package controllers

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetsink/jetsink/internal/testutil/natstest"
	"github.com/jetsink/jetsink/sinkworker/config"
)

// testPool is a pool with timings a test can wait out.
func testPool(t *testing.T) *natsPool {
	t.Helper()
	p := newNATSPool("jetsink-test")
	p.connectTimeout = 500 * time.Millisecond
	p.backoffBase, p.backoffMax = 400*time.Millisecond, 2*time.Second
	t.Cleanup(p.Close)
	return p
}

func natsConfig(url string) config.Config {
	cfg := config.Default()
	cfg.NATSURL = url
	return cfg
}

// silentServer accepts TCP connections and never says a word, as a NATS
// behind a black-holing firewall or a hung process does: a connect to it
// takes the whole connect timeout.
func silentServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// A server that does not answer costs one connect timeout; the calls after
// it fail at once, saying when the server is tried again, for every
// credential on it, while other servers are unaffected. Once the backoff
// passes and the server is up, calls connect again.
func TestPoolBacksOffADeadServer(t *testing.T) {
	p := testPool(t)
	addr, stop := silentServer(t)
	dead := natsConfig("nats://" + addr)
	call := func(cfg config.Config) (time.Duration, error) {
		start := time.Now()
		err := p.do(t.Context(), cfg, func(jetstream.JetStream) error { return nil })
		return time.Since(start), err
	}

	took, err := call(dead)
	var ce *natsConnectError
	if !errors.As(err, &ce) || ce.backoff {
		t.Fatalf("first call: err = %v, want a connect failure", err)
	}
	if took < p.connectTimeout/2 {
		t.Fatalf("first call took %s: the silent server should have cost a connect timeout", took)
	}

	other := dead
	other.NATSUser, other.NATSPassword = "another-tenant", "secret"
	for _, cfg := range []config.Config{dead, other} {
		took, err = call(cfg)
		if !errors.As(err, &ce) || !ce.backoff {
			t.Fatalf("call in backoff: err = %v, want a backoff refusal", err)
		}
		if took > 50*time.Millisecond {
			t.Errorf("a call in backoff took %s, want it to fail at once", took)
		}
		if msg := err.Error(); !strings.Contains(msg, "next attempt in") || !strings.Contains(msg, addr) {
			t.Errorf("the error does not say when %s is tried again: %q", addr, msg)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("the error quotes a password: %q", err)
		}
	}

	live := natstest.Start(t)
	if _, err := call(natsConfig(live.ClientURL())); err != nil {
		t.Errorf("a live server is refused while another is backed off: %v", err)
	}

	// The server comes up where the silent one was.
	stop()
	_, port, _ := net.SplitHostPort(addr)
	opts := &server.Options{}
	if opts.Port, err = net.LookupPort("tcp", port); err != nil {
		t.Fatal(err)
	}
	natstest.StartWithOptions(t, opts)
	eventually(t, 10*time.Second, func() error {
		_, err := call(dead)
		return err
	})
	if n := p.open(); n != 2 {
		t.Errorf("the pool holds %d connections, want 2 (one per server)", n)
	}
}

// Backoffs double per failure up to the cap.
func TestPoolBackoffGrows(t *testing.T) {
	p := testPool(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsConfig("nats://" + ln.Addr().String())
	ln.Close() // refused from now on
	var waits []time.Duration
	for range 4 {
		var ce *natsConnectError
		eventually(t, 5*time.Second, func() error {
			err := p.do(t.Context(), cfg, func(jetstream.JetStream) error { return nil })
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a connect failure", err)
			}
			if ce.backoff {
				return errors.New("still backed off")
			}
			return nil
		})
		waits = append(waits, time.Until(ce.retry))
	}
	for i, want := range []time.Duration{400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second} {
		if w := waits[i]; w > want || w < want-200*time.Millisecond {
			t.Errorf("backoff after failure %d = %s, want about %s", i+1, w.Round(time.Millisecond), want)
		}
	}
}

// Connections are shared by calls with the same server and credentials,
// kept while in use, and closed once idle.
func TestPoolSharesAndClosesIdleConnections(t *testing.T) {
	p := testPool(t)
	p.idleTimeout = 300 * time.Millisecond
	srv := natstest.Start(t)
	cfg := natsConfig(srv.ClientURL())

	js1, release1, err := p.acquire(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	js2, release2, err := p.acquire(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if js1.Conn() != js2.Conn() {
		t.Error("two calls with the same server and credentials got two connections")
	}
	release2()
	other := cfg
	other.NATSToken = "a-token" // the server has no auth: any is accepted
	js3, release3, err := p.acquire(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	release3()
	if js3.Conn() == js1.Conn() {
		t.Error("calls with other credentials shared a connection")
	}

	// js1 is still in use: it stays open past the idle timeout, js3's
	// connection does not.
	eventually(t, 5*time.Second, func() error {
		if !js3.Conn().IsClosed() {
			return errors.New("the idle connection is still open")
		}
		return nil
	})
	if js1.Conn().IsClosed() {
		t.Fatal("a connection in use was closed as idle")
	}
	release1()
	eventually(t, 5*time.Second, func() error {
		if !js1.Conn().IsClosed() || p.open() != 0 {
			return errors.New("the released connection is still open")
		}
		return nil
	})

	// A call after that connects anew.
	if err := p.do(t.Context(), cfg, func(js jetstream.JetStream) error {
		if js.Conn() == js1.Conn() {
			return errors.New("got the closed connection back")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A connection whose server went away is not handed out again: the next
// call connects anew, and says so when it cannot. Close closes all.
func TestPoolReplacesClosedConnections(t *testing.T) {
	p := testPool(t)
	srv := natstest.Start(t)
	cfg := natsConfig(srv.ClientURL())
	var first jetstream.JetStream
	if err := p.do(t.Context(), cfg, func(js jetstream.JetStream) error { first = js; return nil }); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	eventually(t, 5*time.Second, func() error {
		if !first.Conn().IsClosed() {
			return errors.New("the connection has not noticed yet")
		}
		return nil
	})
	err := p.do(t.Context(), cfg, func(jetstream.JetStream) error { return nil })
	var ce *natsConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a connect failure", err)
	}

	live := natstest.Start(t)
	var js jetstream.JetStream
	if err := p.do(t.Context(), natsConfig(live.ClientURL()), func(j jetstream.JetStream) error { js = j; return nil }); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !js.Conn().IsClosed() || p.open() != 0 {
		t.Error("Close left a connection open")
	}
}

// Many calls at once for a server that does not answer make one connect
// attempt between them, not one each.
func TestPoolConnectsOnceForConcurrentCalls(t *testing.T) {
	p := testPool(t)
	addr, _ := silentServer(t)
	cfg := natsConfig("nats://" + addr)
	start := time.Now()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := p.do(t.Context(), cfg, func(jetstream.JetStream) error { return nil }); err == nil {
				t.Error("a call to a silent server succeeded")
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 3*p.connectTimeout/2 {
		t.Errorf("20 concurrent calls took %s, want about one connect timeout (%s)", took, p.connectTimeout)
	}
}

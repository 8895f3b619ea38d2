package s3test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what FaultProxy does to a matching request instead of (or
// before) passing it to the real server.
type Fault struct {
	// Status, when set, is answered without reaching the server (e.g. 503).
	Status int
	// Reset closes the connection without an answer.
	Reset bool
	// Delay holds the request this long before passing it on.
	Delay time.Duration
	// DropResponse passes the request to the server, then closes the
	// connection instead of answering: the write happened, but the client
	// cannot know.
	DropResponse bool
	// Times limits the fault to this many requests (0: until cleared).
	Times int
}

// FaultProxy is a reverse proxy in front of a real Server that injects
// faults on demand, for requests whose object key starts with a prefix.
// Everything it does not fault is served by the real server.
type FaultProxy struct {
	// URL is the endpoint to give the code under test.
	URL string

	mu     sync.Mutex
	bucket string
	rules  map[string]Fault
	faults atomic.Int64
}

// NewFaultProxy proxies to s until the test ends. bucket is the bucket
// whose keys the rules' prefixes refer to (path-style requests).
func NewFaultProxy(t testing.TB, s *Server, bucket string) *FaultProxy {
	t.Helper()
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{bucket: bucket, rules: map[string]Fault{}}
	closed := make(chan struct{})
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f, ok := p.match(r.URL.Path); ok {
			if f.DropResponse {
				p.faults.Add(1)
				rec := httptest.NewRecorder()
				rp.ServeHTTP(rec, r)
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
						return
					}
				}
				panic(http.ErrAbortHandler)
			}
			if f.Delay > 0 {
				select {
				case <-time.After(f.Delay):
				case <-r.Context().Done():
					return
				case <-closed:
					return
				}
			}
			switch {
			case f.Reset:
				p.faults.Add(1)
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
						return
					}
				}
				panic(http.ErrAbortHandler)
			case f.Status != 0:
				p.faults.Add(1)
				http.Error(w, "injected fault", f.Status)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(closed) // end held requests, or Close would wait for them
		srv.Close()
	})
	p.URL = srv.URL
	return p
}

// Set makes requests for keys starting with prefix ("" for all) fail with f.
func (p *FaultProxy) Set(prefix string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules[prefix] = f
}

// Clear removes every rule: the store is healthy again.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.rules)
}

// Faults counts the requests answered with a fault so far.
func (p *FaultProxy) Faults() int64 { return p.faults.Load() }

func (p *FaultProxy) match(path string) (Fault, bool) {
	key, ok := strings.CutPrefix(path, "/"+p.bucket+"/")
	if !ok {
		return Fault{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	best, found := "", false
	var f Fault
	for prefix, rule := range p.rules {
		if strings.HasPrefix(key, prefix) && (!found || len(prefix) > len(best)) {
			best, f, found = prefix, rule, true
		}
	}
	if found && f.Times > 0 {
		if f.Times == 1 {
			delete(p.rules, best)
		} else {
			rule := f
			rule.Times--
			p.rules[best] = rule
		}
	}
	return f, found
}

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
)

// s3Front is a reverse proxy in front of the real versitygw that answers
// S3 error statuses (500 InternalError, 503 ServiceUnavailable, 503
// SlowDown) while it is failing. It exists ONLY because toxiproxy works on
// TCP and cannot make an HTTP status: every other fault of the matrix
// (outages, resets, truncated uploads, lost responses, latency) is
// toxiproxy's or a real process stopping. While it is not failing it
// passes every request through untouched.
type s3Front struct {
	addr   string
	srv    *http.Server
	faults atomic.Int64

	mu      sync.Mutex
	failing bool
	next    int
}

// s3Errors are the answers cycled through while failing, with the XML body
// S3 sends, so the SDK sees the same error codes as from AWS.
type s3Error struct {
	status int
	code   string
}

var s3Errors = []s3Error{
	{http.StatusInternalServerError, "InternalError"},
	{http.StatusServiceUnavailable, "ServiceUnavailable"},
	{http.StatusServiceUnavailable, "SlowDown"},
}

func startS3Front(upstream string) (*s3Front, error) {
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &s3Front{addr: l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(target)
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e, ok := f.fault(); ok {
			f.faults.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(e.status)
			if r.Method != http.MethodHead {
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by hack/faults</Message><Resource>%s</Resource></Error>`,
					e.code, r.URL.Path)
			}
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = f.srv.Serve(l) }()
	return f, nil
}

func (f *s3Front) fault() (s3Error, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failing {
		return s3Error{}, false
	}
	e := s3Errors[f.next%len(s3Errors)]
	f.next++
	return e, true
}

// fail turns the error answers on or off.
func (f *s3Front) fail(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = on
}

func (f *s3Front) close() {
	if f != nil {
		_ = f.srv.Close()
	}
}

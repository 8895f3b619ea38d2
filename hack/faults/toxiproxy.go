package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"time"
)

// toxiproxy drives a toxiproxy-server through its HTTP API (plain net/http:
// its Go client module would bring its own dependency versions into the
// root go.mod). Each proxy is a TCP listener on loopback in front of one
// upstream; toxics act on one direction of every connection: "upstream"
// is what the worker sends, "downstream" what it receives.
type toxiproxy struct {
	api  string
	srv  *proc
	http *http.Client
}

func startToxiproxy(bins binaries, logs string) (*toxiproxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc("toxiproxy-server", bins.toxiproxy, []string{"-host", "127.0.0.1", "-port", fmt.Sprint(port)},
		nil, filepath.Join(logs, "toxiproxy.log"), nil)
	if err != nil {
		return nil, err
	}
	t := &toxiproxy{api: "http://" + loopback(port), srv: p, http: &http.Client{Timeout: 10 * time.Second}}
	if err := waitListening(p, loopback(port), 10*time.Second); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *toxiproxy) call(method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, t.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// proxy creates a proxy named name listening on a free loopback port in
// front of upstream, and returns its address.
func (t *toxiproxy) proxy(name, upstream string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	listen := loopback(port)
	err = t.call("POST", "/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true})
	return listen, err
}

// enable turns a proxy on or off. Off closes its listener and every
// connection through it: the upstream is unreachable (connection refused).
func (t *toxiproxy) enable(name string, on bool) error {
	return t.call("POST", "/proxies/"+name, map[string]any{"enabled": on})
}

// toxic adds a toxic to a proxy. Types used here: timeout (stop the data,
// close after attributes.timeout ms), reset_peer (TCP RST after
// attributes.timeout ms), limit_data (close after attributes.bytes),
// latency (attributes.latency ms).
func (t *toxiproxy) toxic(proxy, name, typ, stream string, attrs map[string]any) error {
	return t.call("POST", "/proxies/"+proxy+"/toxics", map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
	})
}

func (t *toxiproxy) removeToxic(proxy, name string) error {
	return t.call("DELETE", "/proxies/"+proxy+"/toxics/"+name, nil)
}

func (t *toxiproxy) stop() {
	if t != nil && t.srv != nil {
		_ = t.srv.stop(syscall.SIGTERM, 5*time.Second)
	}
}

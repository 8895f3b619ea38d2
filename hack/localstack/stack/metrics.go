package stack

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Scrape reads a Prometheus text endpoint and returns each metric's value,
// summed over its label sets (jetsink_flushes_total{reason=...} becomes one
// number).
func Scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// Endpoint is one scraped endpoint of a Service.
type Endpoint struct {
	// Pod is the endpoint's target pod; URL what was scraped.
	Pod, URL string
	Metrics  map[string]float64
}

// ScrapeService scrapes /metrics on every endpoint of a Service, found
// through its EndpointSlices as Prometheus discovers them: the real
// EndpointSlice controller's pod addresses, which the host reaches over the
// pod bridge.
func (s *Stack) ScrapeService(ctx context.Context, namespace, service string) ([]Endpoint, error) {
	var slices discoveryv1.EndpointSliceList
	if err := s.Client.List(ctx, &slices, client.InNamespace(namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return nil, err
	}
	var out []Endpoint
	for _, sl := range slices.Items {
		for _, ep := range sl.Endpoints {
			if len(ep.Addresses) == 0 || !ptr.Deref(ep.Conditions.Ready, false) {
				continue
			}
			for _, port := range sl.Ports {
				url := "http://" + net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(ptr.Deref(port.Port, 0)))) + "/metrics"
				m, err := Scrape(ctx, url)
				if err != nil {
					return nil, err
				}
				pod := ""
				if ep.TargetRef != nil {
					pod = ep.TargetRef.Name
				}
				out = append(out, Endpoint{Pod: pod, URL: url, Metrics: m})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out, nil
}

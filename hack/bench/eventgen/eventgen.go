// Package eventgen generates realistic analytics events for benchmarks,
// demos and tests: JSON envelopes of about 300 bytes in the shape the sink
// worker reads (event_id, app_id, event, timestamp, user_id, session_id,
// properties, context), from about 50 apps and 20 event names, with
// timestamps spread over one day in arrival order.
//
// A Generator is deterministic: the same seed and rate give the same events,
// byte for byte, on every run and machine, so benchmark runs compare like
// with like. Apps and event names are skewed the way real traffic is (a few
// big apps, a long tail), which is what makes partitions uneven.
package eventgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Defaults of the generated population.
const (
	Apps       = 50
	EventNames = 20
	// SubjectPrefix is prepended to the app id to make the subject.
	SubjectPrefix = "events."
)

// Day is the first day of generated timestamps (UTC).
var Day = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

var eventNames = [EventNames]string{
	"page_view", "screen_view", "click", "session_start", "session_end",
	"sign_up", "login", "logout", "search", "add_to_cart",
	"remove_from_cart", "checkout_started", "purchase", "refund", "share",
	"video_play", "video_complete", "notification_open", "error", "feature_used",
}

var (
	pages    = []string{"/", "/pricing", "/docs", "/blog", "/cart", "/checkout", "/account", "/search"}
	plans    = []string{"free", "starter", "pro", "enterprise"}
	oses     = []string{"iOS 18.2", "Android 15", "Windows 11", "macOS 15.1", "Linux"}
	locales  = []string{"en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR", "es-ES"}
	versions = []string{"4.2.1", "4.2.0", "4.1.7", "3.9.2"}
)

// Generator produces events in arrival order.
type Generator struct {
	rng     *rand.Rand
	seq     uint64
	step    float64 // nanoseconds of event time between two events
	appCDF  [Apps]float64
	nameCDF [EventNames]float64
	apps    [Apps]string
}

// New returns a generator whose timestamps advance so that perDay events
// cover one day (events past perDay run into the next day). Timestamps
// jitter by up to two minutes around that clock, as late mobile events do.
func New(seed uint64, perDay int) *Generator {
	g := &Generator{
		rng:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		step: float64(24*time.Hour) / float64(max(perDay, 1)),
	}
	zipf := func(cdf []float64, s float64) {
		sum := 0.0
		for i := range cdf {
			sum += 1 / math.Pow(float64(i+1), s)
			cdf[i] = sum
		}
		for i := range cdf {
			cdf[i] /= sum
		}
	}
	zipf(g.appCDF[:], 0.8)
	zipf(g.nameCDF[:], 1.0)
	for i := range g.apps {
		g.apps[i] = fmt.Sprintf("app-%02d", i)
	}
	return g
}

func pick(cdf []float64, r float64) int {
	for i, c := range cdf {
		if r < c {
			return i
		}
	}
	return len(cdf) - 1
}

// Event is one generated event.
type Event struct {
	// Seq is the event's position, from 0.
	Seq uint64
	// AppID is also the subject's last token.
	AppID string
	// Time is the event's timestamp.
	Time time.Time
	// Body is the JSON envelope.
	Body []byte
}

// Subject is the NATS subject the event is published on.
func (e Event) Subject() string { return SubjectPrefix + e.AppID }

// Next returns the next event. Its Body is appended to buf[:0], so a caller
// that reuses buf must copy the body before the next call.
func (g *Generator) Next(buf []byte) Event {
	r := g.rng
	seq := g.seq
	g.seq++
	app := g.apps[pick(g.appCDF[:], r.Float64())]
	name := eventNames[pick(g.nameCDF[:], r.Float64())]
	jitter := time.Duration(r.Int64N(int64(4*time.Minute))) - 2*time.Minute
	ts := Day.Add(time.Duration(float64(seq)*g.step) + jitter).Truncate(time.Millisecond)
	if ts.Before(Day) {
		ts = Day
	}
	user := r.IntN(200000)
	b := buf[:0]
	b = append(b, `{"event_id":"`...)
	b = appendUUID(b, r)
	b = append(b, `","app_id":"`...)
	b = append(b, app...)
	b = append(b, `","event":"`...)
	b = append(b, name...)
	b = append(b, `","timestamp":"`...)
	b = ts.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","user_id":"u-`...)
	b = strconv.AppendInt(b, int64(user), 10)
	b = append(b, `","session_id":"s-`...)
	b = strconv.AppendInt(b, int64(user), 36)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(ts.Hour()), 10)
	b = append(b, `","properties":{"page":"`...)
	b = append(b, pages[r.IntN(len(pages))]...)
	b = append(b, `","plan":"`...)
	b = append(b, plans[r.IntN(len(plans))]...)
	b = append(b, `","value":`...)
	b = strconv.AppendFloat(b, float64(r.IntN(100000))/100, 'f', 2, 64)
	b = append(b, `},"context":{"locale":"`...)
	b = append(b, locales[r.IntN(len(locales))]...)
	b = append(b, `","os":"`...)
	b = append(b, oses[r.IntN(len(oses))]...)
	b = append(b, `","app_version":"`...)
	b = append(b, versions[r.IntN(len(versions))]...)
	b = append(b, `"}}`...)
	return Event{Seq: seq, AppID: app, Time: ts, Body: b}
}

const hexDigits = "0123456789abcdef"

// appendUUID appends a version-4-shaped UUID drawn from r.
func appendUUID(b []byte, r *rand.Rand) []byte {
	hi, lo := r.Uint64(), r.Uint64()
	var raw [16]byte
	for i := range 8 {
		raw[i] = byte(hi >> (8 * i))
		raw[8+i] = byte(lo >> (8 * i))
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return b
}

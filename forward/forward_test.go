package forward

import (
	"encoding/base64"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/configs"
)

// TestRetries injects faults into the receiver and checks retries, drops
// and their accounting exactly.
func TestRetries(t *testing.T) {
	t.Parallel()
	type answer struct {
		code       int
		retryAfter string
		body       string
	}
	const n = 5 // samples in the window, all in one batch
	for _, tc := range []struct {
		name     string
		retry429 bool
		answers  []answer
		// want
		attempts    []string // Retry-Attempt of each request
		retried     float64
		dropReason  string // "" if delivered
		minLastWait time.Duration
		dropLogs    int
	}{
		{
			name:        "500 500 429 then 204 retried until delivered",
			retry429:    true,
			answers:     []answer{{code: 500}, {code: 500}, {code: 429, retryAfter: "1"}, {code: 204}},
			attempts:    []string{"", "1", "2", "3"},
			retried:     3 * n,
			minLastWait: time.Second,
		},
		{
			name:       "400 dropped without retry",
			retry429:   true,
			answers:    []answer{{code: 400, body: "out of order sample"}},
			attempts:   []string{""},
			dropReason: "400",
			dropLogs:   1,
		},
		{
			name:       "404 dropped without retry",
			retry429:   true,
			answers:    []answer{{code: 404}},
			attempts:   []string{""},
			dropReason: "404",
			dropLogs:   1,
		},
		{
			name:       "429 dropped when retry_on_http_429 is false",
			retry429:   false,
			answers:    []answer{{code: 429, retryAfter: "1"}},
			attempts:   []string{""},
			dropReason: "429",
			dropLogs:   1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(i int, w http.ResponseWriter, _ *http.Request) (int, string) {
				if i >= len(tc.answers) {
					t.Errorf("unexpected request %d", i)
					return http.StatusNoContent, ""
				}
				a := tc.answers[i]
				if a.retryAfter != "" {
					w.Header().Set("Retry-After", a.retryAfter)
				}
				return a.code, a.body
			})
			h := newHarness(t)
			cfg := testConfig(rc.url(), "t")
			cfg.QueueConfig.MaxShards = 1
			cfg.QueueConfig.RetryOnRateLimit = &tc.retry429
			h.apply(nil, cfg)

			h.m.Append(window(60_000, n))
			var reqs []request
			for range tc.answers {
				reqs = append(reqs, rc.next(5*time.Second))
			}
			if err := h.stop(5 * time.Second); err != nil {
				t.Fatalf("stop: %v", err)
			}
			reqs = append(reqs, rc.pending()...)

			if len(reqs) != len(tc.attempts) {
				t.Fatalf("got %d requests, want %d", len(reqs), len(tc.attempts))
			}
			delivered := 0
			for i, r := range reqs {
				if got := r.header.Get("Retry-Attempt"); got != tc.attempts[i] {
					t.Errorf("request %d: Retry-Attempt %q, want %q", i, got, tc.attempts[i])
				}
				if r.samples() != n {
					t.Errorf("request %d: %d samples, want the same batch of %d", i, r.samples(), n)
				}
				if r.accepted() {
					delivered++
				}
			}
			wantDelivered := 1
			if tc.dropReason != "" {
				wantDelivered = 0
			}
			if delivered != wantDelivered {
				t.Errorf("batch accepted %d times, want %d", delivered, wantDelivered)
			}
			if tc.minLastWait > 0 {
				if wait := reqs[len(reqs)-1].at.Sub(reqs[len(reqs)-2].at); wait < tc.minLastWait {
					t.Errorf("waited %v after Retry-After, want >= %v", wait, tc.minLastWait)
				}
			}
			if got, _ := h.metric("sluice_forward_samples_retried_total", map[string]string{"remote_name": "t"}); got != tc.retried {
				t.Errorf("samples_retried_total = %v, want %v", got, tc.retried)
			}
			if tc.dropReason != "" {
				if got := h.dropped("t", tc.dropReason); got != n {
					t.Errorf("dropped{reason=%q} = %v, want %d", tc.dropReason, got, n)
				}
			} else if got, _ := h.metric("sluice_forward_samples_sent_total", map[string]string{"remote_name": "t"}); got != n {
				t.Errorf("samples_sent_total = %v, want %d", got, n)
			}
			if got := strings.Count(h.log.String(), "dropping batch"); got != tc.dropLogs {
				t.Errorf("logged %d drops, want %d:\n%s", got, tc.dropLogs, h.log.String())
			}
			if tc.dropReason == "400" && !strings.Contains(h.log.String(), "out of order sample") {
				t.Errorf("drop log lacks the response body:\n%s", h.log.String())
			}
			if q, _ := h.metric("sluice_forward_queue_samples", map[string]string{"remote_name": "t"}); q != 0 {
				t.Errorf("queue_samples = %v after the batch was resolved, want 0", q)
			}
		})
	}
}

// TestReceiverDown: while the receiver answers 503, windows queue; once it
// is back every window arrives, in order for each series.
func TestReceiverDown(t *testing.T) {
	t.Parallel()
	const (
		series  = 10
		windows = 15
	)
	upAt := time.Now().Add(3 * time.Second)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) (int, string) {
		if time.Now().Before(upAt) {
			return http.StatusServiceUnavailable, "down"
		}
		return http.StatusNoContent, ""
	})
	h := newHarness(t)
	cfg := testConfig(rc.url(), "down")
	cfg.QueueConfig.MaxBackoff = cfg.QueueConfig.MinBackoff * 10
	h.apply(nil, cfg)

	// One window every 200 ms stands in for the aggregation interval.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for w := range windows {
		h.m.Append(window(int64(w+1)*15_000, series))
		<-tick.C
	}
	reqs := rc.nextAccepted(series*windows, 10*time.Second)

	got := map[string][]int64{}
	for _, r := range reqs {
		for _, ts := range r.v1.Timeseries {
			s := labelMap(ts.Labels)["series"]
			for _, smp := range ts.Samples {
				got[s] = append(got[s], smp.Timestamp)
			}
		}
	}
	for i := range series {
		s := strconv.Itoa(i)
		if len(got[s]) != windows {
			t.Errorf("series %s: %d samples, want %d", s, len(got[s]), windows)
			continue
		}
		for w, ts := range got[s] {
			if want := int64(w+1) * 15_000; ts != want {
				t.Errorf("series %s: sample %d at %d, want %d (order kept, none lost)", s, w, ts, want)
			}
		}
	}
	if r, _ := h.metric("sluice_forward_samples_retried_total", map[string]string{"remote_name": "down"}); r == 0 {
		t.Error("no retries counted")
	}
}

// TestDeadTargetDoesNotDelayLive: a dead target must not hold up a live
// one.
func TestDeadTargetDoesNotDelayLive(t *testing.T) {
	t.Parallel()
	const (
		series  = 20
		windows = 3
	)
	for _, tc := range []struct {
		name string
		dead func(t *testing.T) string
	}{
		{"hanging server", hangingServer},
		{"closed port", closedPort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			live := newReceiver(t, nil)
			deadURL := tc.dead(t)
			h := newHarness(t)
			dead := testConfig(deadURL, "dead")
			dead.RemoteTimeout = configs.NewRemoteWriteConfig("").RemoteTimeout // 30 s
			h.apply(nil, dead, testConfig(live.url(), "live"))

			for w := range windows {
				h.m.Append(window(int64(w+1)*15_000, series))
				live.nextAccepted(series, time.Second)
			}
			start := time.Now()
			err := h.stop(200 * time.Millisecond)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Stop took %v with a dead target and a 200 ms context", took)
			}
			if err == nil || !strings.Contains(err.Error(), "remote_write dead") || strings.Contains(err.Error(), "remote_write live") {
				t.Errorf("Stop error = %v, want one naming only the dead target", err)
			}
			if got, _ := h.metric("sluice_forward_queue_samples", map[string]string{"remote_name": "dead"}); got != series*windows {
				t.Errorf("dead target keeps %v samples in its backlog, want %d", got, series*windows)
			}
			if got := h.dropped("dead", reasonShutdown); got != 0 {
				t.Errorf("dead target dropped{shutdown} = %v, want 0", got)
			}
			if got := h.dropped("live", reasonShutdown); got != 0 {
				t.Errorf("live target dropped{shutdown} = %v, want 0", got)
			}
		})
	}
}

// TestRW1Request decodes a Remote-Write 1.0 request.
func TestRW1Request(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	h := newHarness(t)
	cfg := testConfig(rc.url(), "")
	cfg.Headers = map[string]string{"X-Scope-OrgID": "tenant-1"}
	cfg.QueueConfig.MaxShards = 1 // one request
	h.apply(map[string]string{"cluster": "eu-1", "job": "external"}, cfg)

	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:  []prompb.Label{{Name: "__name__", Value: "http_requests_total"}, {Name: "code", Value: "200"}, {Name: "job", Value: "api"}},
				Samples: []prompb.Sample{{Timestamp: 30_000, Value: 42}},
			},
			{
				Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: "fn-1"}},
				Samples: []prompb.Sample{{Timestamp: 30_000, Value: math.Float64frombits(value.StaleNaN)}},
			},
		},
		Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests", Help: "Requests served."},
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "Whether the job is up."},
			{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "not_in_window", Help: "Unused."},
		},
	}
	h.m.Append(req)
	r := rc.nextAccepted(2, time.Second)[0]

	for k, want := range map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf",
		"X-Prometheus-Remote-Write-Version": "0.1.0",
		"User-Agent":                        testUserAgent,
		"X-Scope-Orgid":                     "tenant-1",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	want := map[string]map[string]string{
		"http_requests_total": {"__name__": "http_requests_total", "code": "200", "job": "api", "cluster": "eu-1"},
		"up":                  {"__name__": "up", "instance": "fn-1", "job": "external", "cluster": "eu-1"},
	}
	if len(r.v1.Timeseries) != 2 {
		t.Fatalf("got %d series, want 2", len(r.v1.Timeseries))
	}
	for _, ts := range r.v1.Timeseries {
		got := labelMap(ts.Labels)
		w := want[got["__name__"]]
		if len(got) != len(w) {
			t.Errorf("labels %v, want %v", got, w)
		}
		for k, v := range w {
			if got[k] != v {
				t.Errorf("%s: label %s = %q, want %q", got["__name__"], k, got[k], v)
			}
		}
		if len(ts.Samples) != 1 {
			t.Fatalf("%s: %d samples", got["__name__"], len(ts.Samples))
		}
		switch got["__name__"] {
		case "up":
			if v := ts.Samples[0].Value; !value.IsStaleNaN(v) || math.Float64bits(v) != value.StaleNaN {
				t.Errorf("staleness marker arrived as %x, want %x", math.Float64bits(v), value.StaleNaN)
			}
		case "http_requests_total":
			if ts.Samples[0].Value != 42 || ts.Samples[0].Timestamp != 30_000 {
				t.Errorf("sample %+v", ts.Samples[0])
			}
		}
	}
	meta := map[string]prompb.MetricMetadata{}
	for _, md := range r.v1.Metadata {
		meta[md.MetricFamilyName] = md
	}
	if len(meta) != 2 || meta["http_requests"].Type != prompb.MetricMetadata_COUNTER || meta["up"].Help != "Whether the job is up." {
		t.Errorf("metadata %+v, want http_requests (counter) and up only", r.v1.Metadata)
	}
}

// testHistogram is an integer native histogram.
func testHistogram(ts int64) prompb.Histogram {
	return prompb.Histogram{
		Count:          &prompb.Histogram_CountInt{CountInt: 12},
		Sum:            18.4,
		Schema:         1,
		ZeroThreshold:  0.001,
		ZeroCount:      &prompb.Histogram_ZeroCountInt{ZeroCountInt: 2},
		NegativeSpans:  []prompb.BucketSpan{{Offset: 0, Length: 2}},
		NegativeDeltas: []int64{1, 1},
		PositiveSpans:  []prompb.BucketSpan{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}},
		PositiveDeltas: []int64{1, 1, -1, 0},
		ResetHint:      prompb.Histogram_NO,
		Timestamp:      ts,
	}
}

// TestRW2Request decodes a Remote-Write 2.0 request.
func TestRW2Request(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	h := newHarness(t)
	cfg := testConfig(rc.url(), "v2")
	cfg.ProtobufMessage = configs.ProtoMsgV2
	cfg.QueueConfig.MaxShards = 1 // one request
	h.apply(map[string]string{"cluster": "eu-1"}, cfg)

	hist := testHistogram(45_000)
	h.m.Append(&prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:  []prompb.Label{{Name: "__name__", Value: "jobs_total"}, {Name: "job", Value: "batch"}},
				Samples: []prompb.Sample{{Timestamp: 45_000, Value: 7}},
			},
			{
				Labels:     []prompb.Label{{Name: "__name__", Value: "duration_seconds"}, {Name: "job", Value: "batch"}},
				Histograms: []prompb.Histogram{hist},
			},
			{
				Labels:  []prompb.Label{{Name: "__name__", Value: "no_metadata"}},
				Samples: []prompb.Sample{{Timestamp: 45_000, Value: math.Float64frombits(value.StaleNaN)}},
			},
		},
		Metadata: []prompb.MetricMetadata{
			{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "jobs", Help: "Jobs run.", Unit: ""},
			{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "duration_seconds", Help: "Job duration.", Unit: "seconds"},
		},
	})
	r := rc.nextAccepted(3, time.Second)[0]

	for k, want := range map[string]string{
		"Content-Encoding":                  "snappy",
		"Content-Type":                      "application/x-protobuf;proto=io.prometheus.write.v2.Request",
		"X-Prometheus-Remote-Write-Version": "2.0.0",
		"User-Agent":                        testUserAgent,
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	syms := r.v2.Symbols
	if len(syms) == 0 || syms[0] != "" {
		t.Fatalf("symbols[0] must be \"\": %q", syms)
	}
	seen := map[string]bool{}
	for _, s := range syms {
		if seen[s] {
			t.Errorf("symbol %q not interned", s)
		}
		seen[s] = true
	}
	sb := labels.NewScratchBuilder(0)
	got := map[string]writev2.TimeSeries{}
	for _, ts := range r.v2.Timeseries {
		ls, err := ts.ToLabels(&sb, syms)
		if err != nil {
			t.Fatal(err)
		}
		if ls.Get("cluster") != "eu-1" {
			t.Errorf("%s: no external label", ls)
		}
		got[ls.Get("__name__")] = ts
	}

	jobs := got["jobs_total"]
	if len(jobs.Samples) != 1 || jobs.Samples[0].Value != 7 || jobs.Samples[0].Timestamp != 45_000 || len(jobs.Histograms) != 0 {
		t.Errorf("jobs_total: %+v", jobs)
	}
	if md, err := jobs.ToMetadata(syms); err != nil || md.Type != "counter" || md.Help != "Jobs run." {
		t.Errorf("jobs_total metadata %+v (%v)", md, err)
	}

	dur := got["duration_seconds"]
	if len(dur.Histograms) != 1 || len(dur.Samples) != 0 {
		t.Fatalf("duration_seconds: %+v", dur)
	}
	if gotH, wantH := dur.Histograms[0].ToIntHistogram(), hist.ToIntHistogram(); gotH == nil || !gotH.Equals(wantH) {
		t.Errorf("histogram %v, want %v", gotH, wantH)
	}
	if dur.Histograms[0].Timestamp != 45_000 || dur.Histograms[0].ResetHint != writev2.Histogram_RESET_HINT_NO {
		t.Errorf("histogram timestamp/reset hint: %+v", dur.Histograms[0])
	}
	if md, err := dur.ToMetadata(syms); err != nil || md.Type != "histogram" || md.Help != "Job duration." || md.Unit != "seconds" {
		t.Errorf("duration_seconds metadata %+v (%v)", md, err)
	}

	stale := got["no_metadata"]
	if len(stale.Samples) != 1 || math.Float64bits(stale.Samples[0].Value) != value.StaleNaN {
		t.Errorf("no_metadata: %+v", stale)
	}
	if stale.Metadata.Type != writev2.Metadata_METRIC_TYPE_UNSPECIFIED || stale.Metadata.HelpRef != 0 {
		t.Errorf("no_metadata got metadata %+v", stale.Metadata)
	}
	if err := h.stop(5 * time.Second); err != nil { // counters are final once stopped
		t.Fatal(err)
	}
	if v, _ := h.metric("sluice_forward_histograms_sent_total", map[string]string{"remote_name": "v2"}); v != 1 {
		t.Errorf("histograms_sent_total = %v, want 1", v)
	}
	if v, _ := h.metric("sluice_forward_samples_sent_total", map[string]string{"remote_name": "v2"}); v != 2 {
		t.Errorf("samples_sent_total = %v, want 2", v)
	}
}

// TestRW2UnconfirmedWrite: a 2xx to a Remote-Write 2.0 request whose
// written-count headers confirm nothing is a receiver that did not read
// 2.0 (a 1.0-only one that ignores Content-Type): dropped, not retried,
// as Prometheus 3 does. Any confirmation, even partial, is a send.
func TestRW2UnconfirmedWrite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		headers map[string]string // "" deletes the header
		sent    bool
	}{
		{name: "no headers (a 1.0 receiver)", headers: map[string]string{headerSamplesWritten: "", headerHistogramsWritten: "", headerExemplarsWritten: ""}},
		{name: "all zero", headers: map[string]string{headerSamplesWritten: "0", headerHistogramsWritten: "0", headerExemplarsWritten: "0"}},
		{name: "partly written", headers: map[string]string{headerSamplesWritten: "1", headerHistogramsWritten: ""}, sent: true},
		{name: "counts as sent", sent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) (int, string) {
				for k, v := range tc.headers {
					if v == "" {
						w.Header().Del(k)
					} else {
						w.Header().Set(k, v)
					}
				}
				return http.StatusNoContent, ""
			})
			h := newHarness(t)
			cfg := testConfig(rc.url(), "v2")
			cfg.ProtobufMessage = configs.ProtoMsgV2
			cfg.QueueConfig.MaxShards = 1
			h.apply(nil, cfg)
			h.m.Append(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
				{Labels: []prompb.Label{{Name: "__name__", Value: "a"}}, Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}}},
				{Labels: []prompb.Label{{Name: "__name__", Value: "b"}}, Samples: []prompb.Sample{{Timestamp: 1000, Value: 2}}},
			}})
			rc.nextAccepted(2, 5*time.Second)
			if err := h.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			sent, _ := h.metric("sluice_forward_samples_sent_total", map[string]string{"remote_name": "v2"})
			dropped := h.dropped("v2", reasonUnconfirmed)
			switch {
			case tc.sent && (sent != 2 || dropped != 0):
				t.Errorf("sent %v, dropped %v; want 2 sent", sent, dropped)
			case !tc.sent && (sent != 0 || dropped != 2):
				t.Errorf("sent %v, dropped %v as %s; want 2 dropped", sent, dropped, reasonUnconfirmed)
			}
			if n := len(rc.reqs); n != 0 {
				t.Errorf("%d more requests: an unconfirmed write must not be retried", n)
			}
		})
	}
}

// TestWriteRelabel applies write_relabel_configs.
func TestWriteRelabel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		rules       string
		wantSeries  []string // __name__ of what arrives
		wantLabel   string   // a label every series must still have
		noLabel     string   // a label no series may have
		wantDropped float64
	}{
		{
			name: "drop rule removes a series",
			rules: `
  - source_labels: [__name__]
    regex: drop_me
    action: drop`,
			wantSeries:  []string{"keep_me"},
			wantLabel:   "pod",
			wantDropped: 1,
		},
		{
			name: "labeldrop rule removes a label",
			rules: `
  - regex: pod
    action: labeldrop`,
			wantSeries: []string{"drop_me", "keep_me"},
			noLabel:    "pod",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			h := newHarness(t)
			cfg := yamlConfig(t, "url: "+rc.url()+"\nname: rl\nwrite_relabel_configs:"+tc.rules)
			h.apply(nil, cfg)
			req := &prompb.WriteRequest{}
			for _, name := range []string{"drop_me", "keep_me"} {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "pod", Value: "p-1"}},
					Samples: []prompb.Sample{{Timestamp: 1000, Value: 1}},
				})
			}
			h.m.Append(req)
			reqs := rc.nextAccepted(len(tc.wantSeries), time.Second)
			var names []string
			for _, r := range reqs {
				for _, ts := range r.v1.Timeseries {
					lm := labelMap(ts.Labels)
					names = append(names, lm["__name__"])
					if _, ok := lm[tc.noLabel]; tc.noLabel != "" && ok {
						t.Errorf("%v still has %s", lm, tc.noLabel)
					}
					if _, ok := lm[tc.wantLabel]; tc.wantLabel != "" && !ok {
						t.Errorf("%v lost %s", lm, tc.wantLabel)
					}
				}
			}
			if strings.Join(sortedCopy(names), ",") != strings.Join(tc.wantSeries, ",") {
				t.Errorf("got series %v, want %v", names, tc.wantSeries)
			}
			if got := h.dropped("rl", reasonRelabel); got != tc.wantDropped {
				t.Errorf("dropped{relabel} = %v, want %v", got, tc.wantDropped)
			}
		})
	}
}

// TestSecrets: credentials reach the receiver and nowhere else.
func TestSecrets(t *testing.T) {
	t.Parallel()
	t.Run("basic_auth password_file", func(t *testing.T) {
		t.Parallel()
		pwFile := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(pwFile, []byte("s3cret-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) (int, string) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret-pw" {
				t.Errorf("basic auth %q %q %v", u, p, ok)
				return http.StatusUnauthorized, ""
			}
			return http.StatusNoContent, ""
		})
		h := newHarness(t)
		h.apply(nil, yamlConfig(t, "url: "+rc.url()+"\nbasic_auth:\n  username: alice\n  password_file: "+pwFile))
		h.m.Append(window(1000, 1))
		rc.nextAccepted(1, time.Second)
	})

	t.Run("receiver echoes the Authorization header", func(t *testing.T) {
		t.Parallel()
		tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"0auth-T0ken-from-url","token_type":"Bearer","expires_in":3600}`)
		}))
		t.Cleanup(tokens.Close)
		rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) (int, string) {
			return http.StatusBadRequest, "bad request, echo=" + r.Header.Get("Authorization")
		})
		for name, auth := range map[string]string{
			"basic_auth": "basic_auth:\n  username: alice\n  password: s3cret-pw",
			"oauth2":     "oauth2:\n  client_id: id\n  client_secret: s3cret-client\n  token_url: " + tokens.URL,
		} {
			h := newHarness(t)
			h.apply(nil, yamlConfig(t, "url: "+rc.url()+"\n"+auth))
			h.m.Append(window(1000, 1))
			waitFor(t, 5*time.Second, "a recorded error", func() bool {
				ts := h.m.Targets()
				return len(ts) == 1 && ts[0].LastError != ""
			})
			st := h.m.Targets()[0]
			_ = h.stop(100 * time.Millisecond)
			basic := base64.StdEncoding.EncodeToString([]byte("alice:s3cret-pw"))
			for what, s := range map[string]string{"status": st.LastError, "log": h.log.String()} {
				if strings.Contains(s, basic) || strings.Contains(s, "0auth-T0ken") || strings.Contains(s, "s3cret") {
					t.Errorf("%s: %s shows a credential: %s", name, what, s)
				}
			}
			if !strings.Contains(st.LastError, "echo=") || !strings.Contains(st.LastError, "<redacted>") {
				t.Errorf("%s: last error %q does not show the redacted echo", name, st.LastError)
			}
		}
	})

	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"network error", closedPort},
		{"receiver echoes the URL in a 400", func(t *testing.T) string {
			rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) (int, string) {
				return http.StatusBadRequest, "bad request to " + r.URL.String()
			})
			return rc.url()
		}},
		{"receiver times out", hangingServer},
	} {
		t.Run("api_key never shown: "+tc.name, func(t *testing.T) {
			t.Parallel()
			u := tc.url(t) + "?api_key=secret"
			h := newHarness(t)
			cfg := testConfig(u, "")
			cfg.RemoteTimeout = configs.NewRemoteWriteConfig("").RemoteTimeout / 100 // 300 ms
			cfg.Headers = map[string]string{"X-Api-Token": "header-secret-value"}
			h.apply(nil, cfg)
			h.m.Append(window(1000, 1))
			waitFor(t, 5*time.Second, "a recorded error", func() bool {
				ts := h.m.Targets()
				return len(ts) == 1 && ts[0].LastError != ""
			})
			st := h.m.Targets()[0]
			stopErr := h.stop(100 * time.Millisecond)
			mfs, err := h.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var metrics strings.Builder
			for _, mf := range mfs {
				metrics.WriteString(mf.String())
			}
			for what, s := range map[string]string{
				"status":  st.Name + " " + st.URL + " " + st.LastError,
				"log":     h.log.String(),
				"metrics": metrics.String(),
				"stop":    errString(stopErr),
			} {
				if strings.Contains(s, "secret") {
					t.Errorf("%s shows a secret: %s", what, s)
				}
			}
			if !strings.Contains(st.LastError, "redacted") && !strings.Contains(st.LastError, "<redacted>") {
				t.Errorf("last error %q does not show where the secret was", st.LastError)
			}
			t.Logf("last error: %s", st.LastError)
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestStop drains or drops on Stop.
func TestStop(t *testing.T) {
	t.Parallel()
	t.Run("drains a queued window to a live receiver", func(t *testing.T) {
		t.Parallel()
		rc := newReceiver(t, nil)
		h := newHarness(t)
		cfg := testConfig(rc.url(), "live")
		cfg.QueueConfig.BatchSendDeadline = cfg.QueueConfig.BatchSendDeadline * 1000 // never
		h.apply(nil, cfg)
		h.m.append(window(1000, 10), false) // queued, not flushed
		if n := rc.count(); n != 0 {
			t.Fatalf("%d requests before Stop", n)
		}
		if q := h.m.Targets()[0].QueuedSamples; q != 10 {
			t.Errorf("queued %d, want 10", q)
		}
		if err := h.stop(5 * time.Second); err != nil {
			t.Fatalf("stop: %v", err)
		}
		got := 0
		for _, r := range rc.pending() {
			got += r.samples()
		}
		if got != 10 {
			t.Errorf("%d samples arrived before Stop returned, want 10", got)
		}
		sent := rc.count()
		h.m.Append(window(2000, 1)) // after Stop: ignored
		if n := rc.count(); n != sent {
			t.Errorf("%d requests after Append on a stopped Manager", n)
		}
		if err := h.m.ApplyConfig([]configs.RemoteWriteConfig{cfg}, nil); err == nil {
			t.Error("ApplyConfig after Stop succeeded")
		}
	})
	t.Run("returns when ctx expires with a dead receiver", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.apply(nil, testConfig(hangingServer(t), "dead"))
		h.m.Append(window(1000, 10))
		start := time.Now()
		err := h.stop(300 * time.Millisecond)
		if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
			t.Errorf("Stop took %v, want about 300 ms", took)
		}
		if err == nil {
			t.Error("Stop returned nil although samples were not delivered")
		}
		if got := h.dropped("dead", reasonShutdown); got != 0 {
			t.Errorf("dropped{shutdown} = %v, want 0: what is not sent stays in the backlog", got)
		}
		if got, _ := h.metric("sluice_forward_queue_samples", map[string]string{"remote_name": "dead"}); got != 10 {
			t.Errorf("queue_samples = %v after Stop, want 10 kept in the backlog", got)
		}
	})
}

// TestBatching checks when a shard sends.
func TestBatching(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		perSend   int
		deadline  time.Duration
		series    int
		flush     bool
		wantSizes []int
		minDelay  time.Duration
		maxDelay  time.Duration
	}{
		{"Append sends at once despite the 5 s deadline", 2000, 5 * time.Second, 10, true, []int{10}, 0, time.Second},
		{"window larger than max_samples_per_send is split", 10, 5 * time.Second, 25, true, []int{10, 10, 5}, 0, time.Second},
		{"full batch goes without flush", 10, time.Hour, 10, false, []int{10}, 0, time.Second},
		{"partial batch waits for batch_send_deadline", 1000, 200 * time.Millisecond, 5, false, []int{5}, 200 * time.Millisecond, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			h := newHarness(t)
			cfg := testConfig(rc.url(), "b")
			cfg.QueueConfig.MaxShards = 1
			cfg.QueueConfig.MaxSamplesPerSend = tc.perSend
			cfg.QueueConfig.BatchSendDeadline = modelDuration(tc.deadline)
			h.apply(nil, cfg)
			start := time.Now()
			h.m.append(window(1000, tc.series), tc.flush)
			for i, want := range tc.wantSizes {
				r := rc.next(tc.maxDelay)
				if took := time.Since(start); took < tc.minDelay || took > tc.maxDelay {
					t.Errorf("request %d after %v, want between %v and %v", i, took, tc.minDelay, tc.maxDelay)
				}
				if r.samples() != want {
					t.Errorf("request %d: %d samples, want %d", i, r.samples(), want)
				}
			}
		})
	}
}

// TestCapacity: queue_config.capacity bounds what a shard reads ahead from
// the backlog. A full shard makes the reader wait; nothing is dropped, and
// everything arrives, in order, in batches of at most
// max_samples_per_send (fresh windows may share one).
func TestCapacity(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	h := newHarness(t)
	cfg := testConfig(rc.url(), "full")
	cfg.QueueConfig.MaxShards = 1
	cfg.QueueConfig.Capacity = 5
	cfg.QueueConfig.MaxSamplesPerSend = 5
	cfg.QueueConfig.BatchSendDeadline = modelDuration(time.Hour)
	h.apply(nil, cfg)
	for w := range 3 {
		h.m.append(window(int64(w+1)*1000, 4), false)
	}
	if b, _ := h.metric("sluice_forward_backlog_bytes", map[string]string{"remote_name": "full"}); b <= 0 {
		t.Errorf("backlog_bytes = %v, want > 0", b)
	}
	waitFor(t, 2*time.Second, "the reader to fill the shard", func() bool {
		b, _ := h.metric("sluice_forward_queue_bytes", map[string]string{"remote_name": "full"})
		return b > 0
	})
	if err := h.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rc.pending() {
		if r.samples() > 5 {
			t.Errorf("a batch of %d samples, more than max_samples_per_send 5", r.samples())
		}
		for _, ts := range r.v1.Timeseries {
			got = append(got, strconv.FormatInt(ts.Samples[0].Timestamp, 10)+"/"+labelMap(ts.Labels)["series"])
		}
	}
	want := "1000/0,1000/1,1000/2,1000/3,2000/0,2000/1,2000/2,2000/3,3000/0,3000/1,3000/2,3000/3"
	if strings.Join(got, ",") != want {
		t.Errorf("sent %v, want %s", got, want)
	}
	for _, r := range []string{reasonBacklogFull, reasonCoalesced, reasonBacklogWrite} {
		if d := h.dropped("full", r); d != 0 {
			t.Errorf("dropped{%s} = %v, want 0", r, d)
		}
	}
	for _, g := range []string{"sluice_forward_queue_samples", "sluice_forward_queue_bytes", "sluice_forward_backlog_bytes"} {
		if v, _ := h.metric(g, map[string]string{"remote_name": "full"}); v != 0 {
			t.Errorf("%s = %v after the drain, want 0", g, v)
		}
	}
}

// TestMetricNames pins the self metric names dashboards use.
func TestMetricNames(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	h := newHarness(t)
	cfg := testConfig(rc.url(), "m")
	cfg.QueueConfig.MaxShards = 1 // one request
	h.apply(nil, cfg)
	h.m.Append(window(90_000, 3))
	rc.nextAccepted(3, time.Second)
	if err := h.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	name := map[string]string{"remote_name": "m"}
	for _, tc := range []struct {
		metric string
		labels map[string]string
		want   float64 // -1: any
	}{
		{"sluice_forward_samples_sent_total", name, 3},
		{"sluice_forward_histograms_sent_total", name, 0},
		{"sluice_forward_samples_retried_total", name, 0},
		{"sluice_forward_samples_dropped_total", map[string]string{"remote_name": "m", "reason": "coalesced"}, 0},
		{"sluice_forward_samples_dropped_total", map[string]string{"remote_name": "m", "reason": "backlog_full"}, 0},
		{"sluice_forward_samples_dropped_total", map[string]string{"remote_name": "m", "reason": "backlog_write"}, 0},
		{"sluice_forward_backlog_bytes", name, 0},
		{"sluice_forward_backlog_oldest_timestamp_seconds", name, 0},
		{"sluice_forward_queue_samples", name, 0},
		{"sluice_forward_queue_bytes", name, 0},
		{"sluice_forward_send_duration_seconds", name, 1},
		{"sluice_forward_requests_total", map[string]string{"remote_name": "m", "code": "204"}, 1},
		{"sluice_forward_highest_sent_timestamp_seconds", name, 90},
	} {
		t.Run(tc.metric, func(t *testing.T) {
			got, ok := h.metric(tc.metric, tc.labels)
			if !ok || got != tc.want {
				t.Errorf("%s%v = %v (present %v), want %v", tc.metric, tc.labels, got, ok, tc.want)
			}
		})
	}
	st := h.m.Targets()
	if len(st) != 0 {
		t.Errorf("Targets after Stop: %+v", st)
	}
}

package ingest

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

func lowLimits(c *configs.Config) {
	c.Limits.MaxBodyBytes = 4096
	c.Limits.MaxDecompressedBodyBytes = 8192
	c.Limits.MaxSeriesPerRequest = 3
	c.Limits.MaxLabelsPerSeries = 3
	c.Limits.MaxLabelNameLength = 10
	c.Limits.MaxLabelValueLength = 8
	c.Limits.MaxSeriesPerGroup = 4
	c.Limits.MaxSeries = 6
}

// TestEachLimitAnswersAndCounts exceeds every limit, over the push API and
// remote_write, and checks the status, that the message names the field,
// and sluice_limit_exceeded_total.
func TestEachLimitAnswersAndCounts(t *testing.T) {
	rw := func(ls ...string) []byte {
		return rw1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls(ls...), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}})
	}
	rwHeaders := []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "snappy"}
	cases := []struct {
		name, path string
		body       []byte
		headers    []string
		setup      []string // pushes to /metrics/job/<i> first
		want       int
		limit      string
	}{
		{name: "push body", path: "/metrics/job/f", body: []byte(strings.Repeat("a 1\n", 2000)), want: 413, limit: "max_body_bytes"},
		{name: "push decompressed body", path: "/metrics/job/f", body: gzipped(t, []byte(strings.Repeat("# x\n", 4000))), headers: []string{"Content-Encoding", "gzip"}, want: 413, limit: "max_decompressed_body_bytes"},
		{name: "push snappy stream bomb", path: "/metrics/job/f", body: snappyStream(strings.Repeat("# x\n", 4000)), headers: []string{"Content-Encoding", "snappy"}, want: 413, limit: "max_decompressed_body_bytes"},
		{name: "push series", path: "/metrics/job/f", body: []byte("a 1\nb 1\nc 1\nd 1\n"), want: 413, limit: "max_series_per_request"},
		{name: "push labels", path: "/metrics/job/f", body: []byte(`a{b="1",c="2",d="3"} 1` + "\n"), want: 413, limit: "max_labels_per_series"},
		{name: "push label name", path: "/metrics/job/f", body: []byte(`a{abcdefghijk="1"} 1` + "\n"), want: 413, limit: "max_label_name_length"},
		{name: "push label value", path: "/metrics/job/f", body: []byte(`a{b="123456789"} 1` + "\n"), want: 413, limit: "max_label_value_length"},
		{name: "push series per group", path: "/metrics/job/f", setup: []string{"/metrics/job/f:a 1\nb 1\nc 1\n"}, body: []byte("d 1\ne 1\n"), want: 429, limit: "max_series_per_group"},
		{name: "push series total", path: "/metrics/job/h", setup: []string{"/metrics/job/f:a 1\nb 1\nc 1\n", "/metrics/job/g:a 1\nb 1\nc 1\n"}, body: []byte("a 1\n"), want: 429, limit: "max_series"},
		{name: "remote_write label name", path: "/api/v1/write", body: rw("__name__", "up", "abcdefghijk", "1"), headers: rwHeaders, want: 413, limit: "max_label_name_length"},
		{name: "remote_write label value", path: "/api/v1/write", body: rw("__name__", "up", "job", "123456789"), headers: rwHeaders, want: 413, limit: "max_label_value_length"},
		{name: "remote_write labels", path: "/api/v1/write", body: rw("__name__", "up", "a", "1", "b", "2", "c", "3", "d", "4"), headers: rwHeaders, want: 413, limit: "max_labels_per_series"},
		{name: "remote_write series total", path: "/api/v1/write", setup: []string{"/metrics/job/f:a 1\nb 1\nc 1\n", "/metrics/job/g:a 1\nb 1\nc 1\n"},
			body: rw("__name__", "x", "clear_mode", "sum", "job", "r"), headers: rwHeaders, want: 400, limit: "max_series"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newHardenedEnv(t, lowLimits, nil)
			for _, s := range tc.setup {
				path, body, _ := strings.Cut(s, ":")
				if r := env.serveOne(t, "POST", path, []byte(body)); r.code != 200 {
					t.Fatalf("setup push %s: %d %q", path, r.code, r.body)
				}
			}
			r := env.serveOne(t, "POST", tc.path, tc.body, tc.headers...)
			if r.code != tc.want || !strings.Contains(r.body, "limits."+tc.limit) {
				t.Fatalf("%d %q, want %d naming limits.%s", r.code, r.body, tc.want, tc.limit)
			}
			for _, f := range limitFields {
				want := 0.0
				if f == tc.limit {
					want = 1
				}
				if got := env.metricValue(t, "sluice_limit_exceeded_total", f); got != want {
					t.Errorf("sluice_limit_exceeded_total{limit=%q} = %v, want %v", f, got, want)
				}
			}
		})
	}
}

// metricValue returns the value of the counter or gauge name{limit=limit}.
func (e *hardenedEnv) metricValue(t *testing.T, name, limit string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == limit {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{limit=%q}", name, limit)
	return 0
}

func TestLimitGaugeFollowsReload(t *testing.T) {
	env := newHardenedEnv(t, nil, nil)
	gauge := func(limit string) float64 { return env.metricValue(t, "sluice_limit", limit) }
	if got := gauge("max_series"); got != 1_000_000 {
		t.Fatalf("sluice_limit{limit=max_series} = %v", got)
	}
	next := *env.limits.Load()
	next.MaxSeries, next.MaxBodyBytes = 5000, 1
	env.limits.Store(&next)
	if got := gauge("max_series"); got != 5000 {
		t.Fatalf("after reload sluice_limit{limit=max_series} = %v, want 5000", got)
	}
	if got := gauge("max_body_bytes"); got != 16<<20 {
		t.Fatalf("max_body_bytes applies from a restart only; gauge = %v, want the running 16 MiB", got)
	}
	if got := gauge("max_inflight_requests"); got != 1024 {
		t.Fatalf("sluice_limit{limit=max_inflight_requests} = %v", got)
	}
}

// blockingAggregator holds every Apply and Write until release is closed.
type blockingAggregator struct {
	Aggregator
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAggregator) Apply(ctx context.Context, p *aggregate.Push) error {
	b.entered <- struct{}{}
	<-b.release
	return b.Aggregator.Apply(ctx, p)
}

func TestInflightLimit(t *testing.T) {
	var blk *blockingAggregator
	env := newHardenedEnv(t, func(c *configs.Config) { c.Limits.MaxInflightRequests = 2 }, func(a Aggregator) Aggregator {
		blk = &blockingAggregator{Aggregator: a, entered: make(chan struct{}, 2), release: make(chan struct{})}
		return blk
	})
	env.listen(t)
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n")).code
		}()
	}
	<-blk.entered
	<-blk.entered // two pushes are in flight now

	r := env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n"))
	if r.code != 429 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body, "limits.max_inflight_requests") {
		t.Fatalf("push over the in-flight limit: %d %q (Retry-After %q); want 429 naming limits.max_inflight_requests", r.code, r.body, r.header.Get("Retry-After"))
	}
	body := rw1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "up"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}})
	r = env.serveOne(t, "POST", "/api/v1/write", body, "Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding", "snappy")
	if r.code != 503 || r.header.Get("Retry-After") != "1" || !strings.Contains(r.body, "limits.max_inflight_requests") ||
		r.header.Get(headerSamplesWritten) != "0" {
		t.Fatalf("remote_write over the in-flight limit: %d %q %v; want 503 (never 429) with Retry-After and the 2.0 headers", r.code, r.body, r.header)
	}
	if r := env.serveOne(t, "GET", "/-/healthy", nil); r.code != 200 {
		t.Fatalf("health is not limited: %d", r.code)
	}
	if r := env.serveOne(t, "GET", "/metrics", nil); r.code != 200 || !strings.Contains(r.body, "sluice_inflight_requests 2") ||
		!strings.Contains(r.body, `sluice_limit_exceeded_total{limit="max_inflight_requests"} 2`) {
		t.Fatalf("scrape while overloaded: %d, want 200 with sluice_inflight_requests 2 and 2 rejections", r.code)
	}
	close(blk.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a push admitted before the limit finished with %d", c)
		}
	}
	if r := env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n")); r.code != 200 {
		t.Fatalf("after the load: %d %q", r.code, r.body)
	}
}

// TestDecompressionBombCostsTheLimit: a bomb refused at
// limits.max_decompressed_body_bytes allocates about the limit, not the
// 1.5-2x that growing one buffer by doubling would.
func TestDecompressionBombCostsTheLimit(t *testing.T) {
	const limit = 16 << 20
	cases := []struct {
		name, encoding string
		body           []byte
	}{
		{name: "gzip", encoding: "gzip", body: gzipBomb(t, 256<<20)},
		{name: "snappy stream", encoding: "snappy", body: snappyFramed(t, make([]byte, 64<<20))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := DecodeBody("", tc.encoding, tc.body, BodyLimits{MaxDecompressedBytes: limit})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrBodyTooLarge) {
				t.Fatalf("err = %v, want ErrBodyTooLarge", err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > limit*5/4 {
				t.Fatalf("refusing the bomb allocated %d MiB, want at most 1.25x the %d MiB limit", got>>20, limit>>20)
			}
		})
	}
}

package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// recorder is a fake Appender keeping every window.
type recorder struct{ reqs []*prompb.WriteRequest }

func (r *recorder) Append(req *prompb.WriteRequest) { r.reqs = append(r.reqs, req) }

// render prints a window as "series value@ms" lines, sorted, with STALE for
// staleness markers; push-time series are left out (clock readings).
func render(req *prompb.WriteRequest) string {
	var lines []string
	for _, ts := range req.Timeseries {
		var sb labels.ScratchBuilder
		ls := ts.ToLabels(&sb, nil)
		if n := ls.Get("__name__"); strings.HasPrefix(n, "push_") {
			continue
		}
		for _, s := range ts.Samples {
			v := formatLabelFloat(s.Value)
			if value.IsStaleNaN(s.Value) {
				v = "STALE"
			}
			lines = append(lines, ls.String()+" "+v+"@"+strconv.FormatInt(s.Timestamp, 10))
		}
		for _, h := range ts.Histograms {
			lines = append(lines, ls.String()+" native(count="+formatLabelFloat(h.ToFloatHistogram().Count)+")@"+strconv.FormatInt(h.Timestamp, 10))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestFlushWindows(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	rec := &recorder{}
	f := NewFlusher(15*time.Second, clk.now, rec, []Source{{Gatherer: s}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	clk.t = time.Unix(1_700_000_100, 0) // a multiple of 15 s and of 1 m
	if got := f.WindowEnd(clk.t); got.Unix() != 1_700_000_115 {
		t.Fatalf("window end of an aligned instant = %v, want the next boundary", got.Unix())
	}
	clk.advance(time.Second)
	mustPush(t, s, "job=f", "# TYPE req_total counter\nreq_total 1\ngauge_x 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n")
	mustPush(t, s, "job=f", "# TYPE req_total counter\nreq_total 2\nlat{clear_mode=\"mean15s\"} 10\n")
	f.Flush(f.WindowEnd(clk.t))
	want1 := strings.Join([]string{
		`{__name__="gauge_x", instance="", job="f"} 3@1700000115000`,
		`{__name__="h_bucket", instance="", job="f", le="+Inf"} 2@1700000115000`,
		`{__name__="h_bucket", instance="", job="f", le="1"} 1@1700000115000`,
		`{__name__="h_count", instance="", job="f"} 2@1700000115000`,
		`{__name__="h_sum", instance="", job="f"} 3@1700000115000`,
		`{__name__="lat", instance="", job="f"} 10@1700000115000`,
		`{__name__="req_total", instance="", job="f"} 3@1700000115000`,
	}, "\n")
	if got := render(rec.reqs[0]); got != want1 {
		t.Fatalf("window 1\n got:\n%s\nwant:\n%s", got, want1)
	}
	meta := map[string]prompb.MetricMetadata_MetricType{}
	for _, m := range rec.reqs[0].Metadata {
		meta[m.MetricFamilyName] = m.Type
	}
	if meta["req_total"] != prompb.MetricMetadata_COUNTER || meta["h"] != prompb.MetricMetadata_HISTOGRAM || meta["lat"] != prompb.MetricMetadata_GAUGE {
		t.Fatalf("metadata: %v", meta)
	}

	// Window 2: the group is deleted after a push to another group; the
	// windowed series is empty 16 s later. Both end with staleness markers.
	clk.advance(16 * time.Second)
	mustPush(t, s, "job=g", "# TYPE req_total counter\nreq_total 5\n")
	s.Delete(context.Background(), groupLabels("job=f"))
	f.Flush(f.WindowEnd(clk.t))
	want2 := strings.Join([]string{
		`{__name__="gauge_x", instance="", job="f"} STALE@1700000130000`,
		`{__name__="h_bucket", instance="", job="f", le="+Inf"} STALE@1700000130000`,
		`{__name__="h_bucket", instance="", job="f", le="1"} STALE@1700000130000`,
		`{__name__="h_count", instance="", job="f"} STALE@1700000130000`,
		`{__name__="h_sum", instance="", job="f"} STALE@1700000130000`,
		`{__name__="lat", instance="", job="f"} STALE@1700000130000`,
		`{__name__="req_total", instance="", job="f"} STALE@1700000130000`,
		`{__name__="req_total", instance="", job="g"} 5@1700000130000`,
	}, "\n")
	if got := render(rec.reqs[1]); got != want2 {
		t.Fatalf("window 2\n got:\n%s\nwant:\n%s", got, want2)
	}

	// A window at or before the last one is not emitted again.
	f.Flush(time.UnixMilli(1700000130000))
	f.Flush(time.UnixMilli(1700000115000))
	if len(rec.reqs) != 2 {
		t.Fatalf("windows emitted: %d, want 2 (timestamps never go backwards)", len(rec.reqs))
	}
	// Window 3: the stale series are not repeated.
	clk.advance(15 * time.Second)
	f.Flush(f.WindowEnd(clk.t))
	if got := render(rec.reqs[2]); got != `{__name__="req_total", instance="", job="g"} 5@1700000145000` {
		t.Fatalf("window 3:\n%s", got)
	}
}

func TestFlushSelfMetricsAndNativeHistograms(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	clk.t = time.Unix(1_700_000_100, 0)
	if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: nativeFamilies(t)}); err != nil {
		t.Fatal(err)
	}
	self := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_total", Help: "x"})
	c.Add(4)
	self.MustRegister(c)
	rec := &recorder{}
	f := NewFlusher(time.Minute, clk.now, rec, []Source{{Gatherer: s}, {Gatherer: self, Labels: map[string]string{"job": "sluice", "instance": "a"}}},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	f.Flush(f.WindowEnd(clk.t))
	got := render(rec.reqs[0])
	for _, want := range []string{
		`{__name__="sluice_test_total", instance="a", job="sluice"} 4@1700000160000`,
		`{__name__="rpc_seconds", instance="", job="f"} native(count=6)@1700000160000`,
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "rpc_seconds_count") {
		t.Fatalf("a native-only histogram must not also be sent as classic series:\n%s", got)
	}
}

// TestFlushPrevHashCollision checks that a series is emitted with its own
// labels when the previous window holds other labels under its hash: the
// previous window's labels are reused only when they are equal.
func TestFlushPrevHashCollision(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	rec := &recorder{}
	f := NewFlusher(15*time.Second, clk.now, rec, []Source{{Gatherer: s}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	clk.advance(time.Second)
	mustPush(t, s, "job=f", "gauge_x 3\n")
	f.Flush(f.WindowEnd(clk.t))
	want := labels.FromStrings("__name__", "gauge_x", "instance", "", "job", "f")
	h := want.Hash()
	if _, ok := f.prev[h]; !ok {
		t.Fatalf("series %v not in the previous window's set", want)
	}
	f.prev[h] = labels.FromStrings("__name__", "other", "job", "forged") // a colliding label set
	clk.advance(15 * time.Second)
	end := f.WindowEnd(clk.t)
	f.Flush(end)
	if got, exp := render(rec.reqs[1]), fmt.Sprintf(`{__name__="gauge_x", instance="", job="f"} 3@%d`, end.UnixMilli()); got != exp {
		t.Fatalf("window 2:\n%s\nwant\n%s", got, exp)
	}
	if !labels.Equal(f.prev[h], want) {
		t.Fatalf("previous-window set holds %v under the series' hash, want %v", f.prev[h], want)
	}
}

package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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
	if _, ok := f.seen[h]; !ok {
		t.Fatalf("series %v not in the previous window's set", want)
	}
	f.seen[h] = seenSeries{ls: labels.FromStrings("__name__", "other", "job", "forged"), gen: f.gen} // a colliding label set
	clk.advance(15 * time.Second)
	end := f.WindowEnd(clk.t)
	f.Flush(end)
	if got, exp := render(rec.reqs[1]), fmt.Sprintf(`{__name__="gauge_x", instance="", job="f"} 3@%d`, end.UnixMilli()); got != exp {
		t.Fatalf("window 2:\n%s\nwant\n%s", got, exp)
	}
	if !labels.Equal(f.seen[h].ls, want) {
		t.Fatalf("previous-window set holds %v under the series' hash, want %v", f.seen[h].ls, want)
	}
}

// borrower is a BorrowingAppender keeping a rendering of every request
// taken at the call (the flush reuses the request's memory afterwards) and
// whether each series' family had its metadata in the same request
// (staleness markers included: the tests using it end no whole family).
type borrower struct {
	windows []string
	missing []string
}

func (b *borrower) Append(req *prompb.WriteRequest) { b.AppendBorrowed(req) }

func (b *borrower) AppendBorrowed(req *prompb.WriteRequest) {
	b.windows = append(b.windows, render(req))
	meta := map[string]bool{}
	for _, m := range req.Metadata {
		meta[m.MetricFamilyName] = true
	}
	for _, ts := range req.Timeseries {
		var name string
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				name = l.Value
			}
		}
		if fam := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count"); !meta[fam] && !meta[name] {
			b.missing = append(b.missing, name)
		}
	}
}

// joined merges the renderings of requests [from, to) as render does one.
func joined(parts []string) string {
	var lines []string
	for _, p := range parts {
		if p != "" {
			lines = append(lines, strings.Split(p, "\n")...)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestFlushInBatches renders windows a few series at a time, into
// requests of a few series, and expects the same series, samples and
// staleness markers as one request per window, every series with its
// family's metadata in its own request, and reused request memory not
// to show through.
func TestFlushInBatches(t *testing.T) {
	for _, tc := range []struct {
		name         string
		chunk, batch int
	}{
		{name: "chunks of one series, requests of one", chunk: 1, batch: 1},
		{name: "chunks of two series, requests of three", chunk: 2, batch: 3},
		{name: "chunks larger than the requests", chunk: 50, batch: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			clk.advance(time.Second)
			for g := range 4 {
				mustPush(t, s, fmt.Sprintf("job=j%d", g), "# TYPE req_total counter\nreq_total{code=\"200\"} 1\nreq_total{code=\"500\"} 2\n"+
					"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\ngauge_x 3\n")
			}
			whole, parts := &recorder{}, &borrower{}
			fw := NewFlusher(15*time.Second, clk.now, whole, []Source{{Gatherer: s}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			fp := NewFlusher(15*time.Second, clk.now, parts, []Source{{Gatherer: s}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			fp.chunk, fp.batch = tc.chunk, tc.batch
			check := func(window int) {
				t.Helper()
				end := fw.WindowEnd(clk.t)
				n := len(parts.windows)
				fw.Flush(end)
				fp.Flush(end)
				if len(parts.windows)-n < 2 {
					t.Fatalf("window %d: %d requests, want several", window, len(parts.windows)-n)
				}
				if got, want := joined(parts.windows[n:]), render(whole.reqs[window]); got != want {
					t.Fatalf("window %d in batches:\n%s\nwant:\n%s", window, got, want)
				}
				if len(parts.missing) > 0 {
					t.Fatalf("window %d: series without their family's metadata in their request: %v", window, parts.missing)
				}
			}
			check(0)
			// Window 2: a group ends (staleness markers), one changes.
			clk.advance(15 * time.Second)
			s.Delete(context.Background(), groupLabels("job=j1"))
			mustPush(t, s, "job=j2", "# TYPE req_total counter\nreq_total{code=\"200\"} 5\n")
			check(1)
			if !strings.Contains(render(whole.reqs[1]), "STALE") {
				t.Fatal("window 2 has no staleness markers")
			}
		})
	}
}

// failingJournal is a Journal whose barriers fail from the n-th on.
type failingJournal struct {
	memJournal
	barriers, failFrom int
}

func (j *failingJournal) Barrier(ctx context.Context) error {
	j.barriers++
	if j.barriers >= j.failFrom {
		return errors.New("fsync: input/output error")
	}
	return nil
}

// TestFlushJournalFailure: a window whose first chunk cannot be made
// durable is not emitted at all; one that fails after a chunk was handed
// on stops there and ends no series.
func TestFlushJournalFailure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		failFrom   int // the window's barrier that fails
		wantLines  int // lines of the window emitted
		wantAppend bool
	}{
		{name: "first chunk", failFrom: 1, wantAppend: false},
		{name: "second chunk", failFrom: 2, wantLines: 1, wantAppend: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &failingJournal{failFrom: 1 << 30}
			s, clk := newWriteStore(t, j, nil)
			clk.advance(time.Second)
			for g := range 4 {
				mustPush(t, s, fmt.Sprintf("job=j%d", g), "x 1\n")
			}
			rec := &recorder{}
			reg := prometheus.NewRegistry()
			f := NewFlusher(15*time.Second, clk.now, rec, []Source{{Gatherer: Durable{Store: s, Timeout: time.Second}}}, reg, slog.New(slog.DiscardHandler))
			f.chunk, f.batch = 1, 1 // a chunk per group, a request per series
			f.Flush(f.WindowEnd(clk.t))
			first := len(rec.reqs)
			if got := joined(renderAll(rec.reqs)); strings.Count(got, "\n")+1 != 4 {
				t.Fatalf("window 1:\n%s", got)
			}
			end1 := f.WindowEnd(clk.t).UnixMilli()
			clk.advance(15 * time.Second)
			s.Delete(context.Background(), groupLabels("job=j3")) // would end with a staleness marker
			j.barriers, j.failFrom = 0, tc.failFrom
			end2 := f.WindowEnd(clk.t).UnixMilli()
			f.Flush(f.WindowEnd(clk.t))
			// A shutdown records LastEmitted so that a restart within the
			// window does not emit it again: a window not handed on at
			// all must not count (it would never be emitted).
			if want := map[bool]int64{false: end1, true: end2}[tc.wantAppend]; f.LastEmitted() != want {
				t.Fatalf("LastEmitted %d, want %d (windows %d, %d)", f.LastEmitted(), want, end1, end2)
			}
			got := joined(renderAll(rec.reqs[first:]))
			if !tc.wantAppend {
				if len(rec.reqs) != first {
					t.Fatalf("a window whose first chunk failed was emitted:\n%s", got)
				}
			} else if lines := strings.Count(got, "\n") + 1; got == "" || lines != tc.wantLines || strings.Contains(got, "STALE") {
				t.Fatalf("window cut short: got %d lines, want %d and no staleness marker:\n%s", lines, tc.wantLines, got)
			}
			if v := testutilCounter(t, reg, "sluice_flushes_skipped_total"); v != 1 {
				t.Fatalf("sluice_flushes_skipped_total = %v, want 1", v)
			}
		})
	}
}

func renderAll(reqs []*prompb.WriteRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = render(r)
	}
	return out
}

func testutilCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// gatherOnce is a Gatherer that fails while failing is set.
type gatherOnce struct{ failing *bool }

func (g gatherOnce) Gather() ([]*dto.MetricFamily, error) {
	if *g.failing {
		return nil, errors.New("cannot gather")
	}
	return nil, nil
}

// TestFlushSkippedWindowLeavesNothing: a window skipped after another
// source was rendered (not yet handed on) leaves nothing of it in the
// request buffers the next window reuses.
func TestFlushSkippedWindowLeavesNothing(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	clk.advance(time.Second)
	mustPush(t, s, "job=a", "x 1\n")
	failing := true
	out := &borrower{}
	f := NewFlusher(15*time.Second, clk.now, out, []Source{{Gatherer: s}, {Gatherer: gatherOnce{&failing}}},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	f.Flush(f.WindowEnd(clk.t))
	if len(out.windows) != 0 {
		t.Fatalf("a skipped window was emitted: %q", out.windows)
	}
	clk.advance(15 * time.Second)
	failing = false
	end := f.WindowEnd(clk.t)
	f.Flush(end)
	want := fmt.Sprintf("{__name__=\"x\", instance=\"\", job=\"a\"} 1@%d", end.UnixMilli())
	if got := joined(out.windows); got != want {
		t.Fatalf("window after a skipped one:\n%s\nwant:\n%s", got, want)
	}
}

// durableJournal is a Journal whose operations become durable only at a
// barrier; durable says whether every operation enqueued so far is.
type durableJournal struct {
	memJournal
	enq, done   int
	barrierWait time.Duration
}

func (j *durableJournal) Enqueue(typ uint8, data []byte) func(context.Context) error {
	j.mu.Lock()
	j.enq++
	j.mu.Unlock()
	return j.memJournal.Enqueue(typ, data)
}

func (j *durableJournal) Barrier(ctx context.Context) error {
	select {
	case <-time.After(j.barrierWait):
	case <-ctx.Done():
		return ctx.Err()
	}
	j.mu.Lock()
	j.done = j.enq
	j.mu.Unlock()
	return nil
}

func (j *durableJournal) durable() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done == j.enq
}

// TestFlushDurableBeforeStaleness: a window that ends series because of a
// delete is handed on only once the delete is durable, even when no chunk
// follows the delete.
func TestFlushDurableBeforeStaleness(t *testing.T) {
	j := &durableJournal{}
	s, clk := newWriteStore(t, j, nil)
	clk.advance(time.Second)
	mustPush(t, s, "job=a", "x 1\n")
	var bad []string
	out := appenderFunc(func(req *prompb.WriteRequest) {
		if !j.durable() {
			bad = append(bad, render(req))
		}
	})
	f := NewFlusher(15*time.Second, clk.now, out, []Source{{Gatherer: Durable{Store: s, Timeout: time.Second}}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	f.Flush(f.WindowEnd(clk.t))
	clk.advance(15 * time.Second)
	if err := s.Delete(context.Background(), groupLabels("job=a")); err != nil {
		t.Fatal(err)
	}
	f.Flush(f.WindowEnd(clk.t))
	if len(bad) > 0 {
		t.Fatalf("requests handed on before what they show was durable:\n%s", strings.Join(bad, "\n"))
	}
}

// TestFlushSlowAppenderKeepsStore: the time the Appender takes does not
// count against the journal's timeout; a slow forward hand-off never
// fails the Store.
func TestFlushSlowAppenderKeepsStore(t *testing.T) {
	j := &durableJournal{barrierWait: time.Millisecond}
	s, clk := newWriteStore(t, j, nil)
	clk.advance(time.Second)
	for g := range 2 {
		mustPush(t, s, fmt.Sprintf("job=j%d", g), "x 1\n")
	}
	rec := &recorder{}
	out := appenderFunc(func(req *prompb.WriteRequest) {
		time.Sleep(150 * time.Millisecond)
		rec.Append(req)
	})
	// Six requests (a series and two push-time series per group, one
	// request each) take 0.9 s, well over the timeout; each barrier
	// takes a millisecond.
	f := NewFlusher(15*time.Second, clk.now, out, []Source{{Gatherer: Durable{Store: s, Timeout: 500 * time.Millisecond}}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	f.chunk, f.batch = 1, 1
	f.Flush(f.WindowEnd(clk.t))
	if err := s.Healthy(); err != nil {
		t.Fatalf("a slow appender failed the store: %v", err)
	}
	if len(rec.reqs) != 6 {
		t.Fatalf("%d requests, want 6", len(rec.reqs))
	}
	if got := strings.Count(joined(renderAll(rec.reqs)), "\n") + 1; got != 2 {
		t.Fatalf("%d series emitted, want 2", got)
	}
}

// TestFlushStoreSourceLabels: a Store source's labels are added to its
// series, push-time series included, without a second instance.
func TestFlushStoreSourceLabels(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	clk.advance(time.Second)
	mustPush(t, s, "job=a", "x 1\n")
	rec := &recorder{}
	f := NewFlusher(15*time.Second, clk.now, rec, []Source{{Gatherer: s, Labels: map[string]string{"instance": "i", "region": "eu"}}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	f.Flush(f.WindowEnd(clk.t))
	var got []string
	for _, ts := range rec.reqs[0].Timeseries {
		var sb labels.ScratchBuilder
		ls := ts.ToLabels(&sb, nil)
		if _, dup := ls.HasDuplicateLabelNames(); dup {
			t.Fatalf("series with a duplicate label: %v", ls)
		}
		got = append(got, ls.String())
	}
	sort.Strings(got)
	want := []string{
		`{__name__="push_failure_time_seconds", instance="", job="a", region="eu"}`,
		`{__name__="push_time_seconds", instance="", job="a", region="eu"}`,
		`{__name__="x", instance="", job="a", region="eu"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// gatherOnly hides gatherChunks: the Flusher renders it through Gather
// (dto), as every window was rendered before the flush streamed.
type gatherOnly struct{ s *Store }

func (g gatherOnly) Gather() ([]*dto.MetricFamily, error) { return g.s.Gather() }

// TestFlushChunkedMatchesGather: the Store's chunks, rendered with its own
// labels, give exactly the series and values its Gather does, for every
// kind of series, grouping keys with and without instance, body labels
// the group overrides, empty label values, a deleted group and source
// labels.
func TestFlushChunkedMatchesGather(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]string
		chunk int // series per chunk; 0: the default
	}{
		{name: "no source labels"},
		{name: "a source label", extra: map[string]string{"region": "eu"}},
		{name: "source labels the series have", extra: map[string]string{"job": "x", "zone": ""}},
		{name: "a chunk per group, slices reused across shapes", chunk: 1},
		{name: "chunks of a few series", chunk: 3, extra: map[string]string{"region": "eu"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			clk.advance(time.Second)
			mustPush(t, s, "job=a", "# TYPE req_total counter\nreq_total{code=\"200\"} 1\n# TYPE g gauge\ng 2\nu 3\n"+
				"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"+
				"# TYPE sm summary\nsm{quantile=\"0.5\"} 1\nsm_sum 3\nsm_count 2\nlat{clear_mode=\"mean15s\"} 10\nlat2{clear_mode=\"max15s\"} 10\n")
			mustPush(t, s, "job=b,instance=i1", "# TYPE g gauge\ng{instance=\"zz\",job=\"body\"} 5\nu{e=\"\"} 1\n")
			mustPush(t, s, "job=c,env=p", "# TYPE g gauge\ng{env=\"q\"} 6\n")
			if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=n"), Families: nativeFamilies(t)}); err != nil {
				t.Fatal(err)
			}
			var a, b []*prompb.WriteRequest
			fa := NewFlusher(15*time.Second, clk.now, appenderFunc(func(r *prompb.WriteRequest) { a = append(a, r) }), []Source{{Gatherer: s, Labels: tc.extra}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			fb := NewFlusher(15*time.Second, clk.now, appenderFunc(func(r *prompb.WriteRequest) { b = append(b, r) }), []Source{{Gatherer: gatherOnly{s}, Labels: tc.extra}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			if tc.chunk > 0 {
				fa.chunk = tc.chunk
			}
			for w := range 3 {
				end := fa.WindowEnd(clk.t)
				fa.Flush(end)
				fb.Flush(end)
				if ga, gb := renderFull(a[len(a)-1]), renderFull(b[len(b)-1]); ga != gb {
					t.Fatalf("window %d:\nchunked:\n%s\ngathered:\n%s", w, ga, gb)
				}
				clk.advance(15 * time.Second)
				if w == 0 {
					s.Delete(context.Background(), groupLabels("job=c,env=p"))
				}
			}
		})
	}
}

// renderFull prints every series of a request, push-time series included,
// with its samples' values and its number of native histograms.
func renderFull(req *prompb.WriteRequest) string {
	var lines []string
	for _, ts := range req.Timeseries {
		var l strings.Builder
		for _, x := range ts.Labels {
			l.WriteString(x.Name + "=" + x.Value + ",")
		}
		for _, s := range ts.Samples {
			l.WriteString(" " + formatLabelFloat(s.Value))
		}
		l.WriteString(" h" + strconv.Itoa(len(ts.Histograms)))
		lines = append(lines, l.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

package forward

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/wal"
)

// collect reads accepted requests from rc until every series has a
// sample at each of the window timestamps in want (together with the
// samples in already), failing after timeout. It returns what rc sent.
func collect(t *testing.T, rc *receiver, already map[string][]prompb.Sample, series int, want []int64, timeout time.Duration) map[string][]prompb.Sample {
	t.Helper()
	complete := func(got map[string][]prompb.Sample) bool {
		for i := range series {
			s := strconv.Itoa(i)
			have := map[int64]bool{}
			for _, x := range append(slices.Clone(already[s]), got[s]...) {
				have[x.Timestamp] = true
			}
			for _, ts := range want {
				if !have[ts] {
					return false
				}
			}
		}
		return true
	}
	var reqs []request
	deadline := time.After(timeout)
	for got := seriesSamples(reqs); !complete(got); got = seriesSamples(reqs) {
		select {
		case r := <-rc.reqs:
			reqs = append(reqs, r)
		case <-deadline:
			t.Fatalf("not every window arrived within %v: before %v, after %v", timeout, already, got)
		}
	}
	return seriesSamples(append(reqs, rc.pending()...))
}

func windowTimes(n int) []int64 {
	ts := make([]int64, n)
	for i := range ts {
		ts[i] = int64(i+1) * 15_000
	}
	return ts
}

// TestRestart: windows appended while the receiver is down survive a stop
// or a kill -9 and are sent after the restart, in order for each series.
func TestRestart(t *testing.T) {
	t.Parallel()
	const (
		series  = 5
		windows = 12
	)
	for _, tc := range []struct {
		name string
		// accept is how many requests the first receiver accepts before it
		// answers 503.
		accept int
		crash  bool
		// exactlyOnce: nothing was accepted before the restart, so
		// nothing may arrive twice.
		exactlyOnce bool
	}{
		{"stopped while the receiver is down", 0, false, true},
		{"killed while the receiver is down", 0, true, true},
		{"killed while sending", 3, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			first := newReceiver(t, func(n int, _ http.ResponseWriter, _ *http.Request) (int, string) {
				if n < tc.accept {
					return http.StatusNoContent, ""
				}
				return http.StatusServiceUnavailable, "down"
			})
			h1 := newHarnessIn(t, dir)
			cfg := testConfig(first.url(), "t")
			cfg.QueueConfig.MaxShards = 2
			cfg.QueueConfig.MaxSamplesPerSend = 2 // many requests, so that some fail
			h1.apply(nil, cfg)
			for _, ts := range windowTimes(windows) {
				h1.m.Append(window(ts, series))
			}
			waitFor(t, 5*time.Second, "the first receiver to fail", func() bool { return first.count() > tc.accept })
			if tc.crash {
				crash(h1.m)
			} else if err := h1.stop(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "stay in the backlog") {
				t.Errorf("Stop = %v, want an error saying the samples stay in the backlog", err)
			}
			before := seriesSamples(first.pending())

			second := newReceiver(t, nil)
			h2 := newHarnessIn(t, dir)
			h2.apply(nil, testConfig(second.url(), "t"))
			after := collect(t, second, before, series, windowTimes(windows), 10*time.Second)
			if err := h2.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			for k, v := range seriesSamples(second.pending()) {
				after[k] = append(after[k], v...)
			}

			for i := range series {
				s := strconv.Itoa(i)
				var ts []int64
				for _, x := range after[s] {
					ts = append(ts, x.Timestamp)
				}
				if !slices.IsSorted(ts) {
					t.Errorf("series %s: out of order after the restart: %v", s, ts)
				}
				if tc.exactlyOnce && !slices.Equal(ts, windowTimes(windows)) {
					t.Errorf("series %s: got %v, want every window once: %v", s, ts, windowTimes(windows))
				}
			}
			if q, _ := h2.metric("sluice_forward_queue_samples", map[string]string{"remote_name": "t"}); q != 0 {
				t.Errorf("queue_samples = %v after the backlog was sent", q)
			}
			if !strings.Contains(h2.log.String(), "resuming the backlog") {
				t.Errorf("the restart did not say it resumed a backlog:\n%s", h2.log.String())
			}
		})
	}
}

// TestTornTail cuts the last frame of a backlog segment at every byte (the
// torn write of a crash) or garbles it: the backlog opens, is repaired,
// and the earlier windows arrive, the torn one does not.
func TestTornTail(t *testing.T) {
	t.Parallel()
	const (
		series  = 3
		windows = 4
	)
	src := t.TempDir()
	h := newHarnessIn(t, src)
	h.apply(nil, testConfig(closedPort(t), "t"))
	for _, ts := range windowTimes(windows) {
		h.m.Append(window(ts, series))
	}
	crash(h.m)
	segDir := filepath.Join(src, "t")
	entries, err := os.ReadDir(segDir)
	if err != nil {
		t.Fatal(err)
	}
	var segName string
	for _, e := range entries {
		if _, ok := wal.ParseSegmentName(e.Name()); ok {
			segName = e.Name()
		}
	}
	data, err := os.ReadFile(filepath.Join(segDir, segName))
	if err != nil {
		t.Fatal(err)
	}
	// Where the last frame starts.
	var (
		off, last int64
		hdr       [frameHeaderSize]byte
		buf       []byte
		r         = bytes.NewReader(data)
	)
	for off < int64(len(data)) {
		p, _, err := readFrame(r, off, int64(len(data)), &hdr, &buf)
		if err != nil {
			t.Fatal(err)
		}
		last = off
		off += frameHeaderSize + int64(len(p))
	}

	rc := newReceiver(t, nil)
	run := func(t *testing.T, seg []byte, damaged bool) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "t"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "t", segName), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		h := newHarnessIn(t, dir)
		h.apply(nil, testConfig(rc.url(), "t"))
		reqs := rc.nextAccepted(series*(windows-1), 5*time.Second)
		if err := h.stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		got := seriesSamples(append(reqs, rc.pending()...))
		for i := range series {
			var ts []int64
			for _, x := range got[strconv.Itoa(i)] {
				ts = append(ts, x.Timestamp)
			}
			if want := windowTimes(windows - 1); !slices.Equal(ts, want) {
				t.Errorf("series %d: got %v, want %v", i, ts, want)
			}
		}
		if logged := strings.Contains(h.log.String(), "backlog segment damaged"); logged != damaged {
			t.Errorf("damage logged %v, want %v:\n%s", logged, damaged, h.log.String())
		}
	}
	for cut := last; cut < int64(len(data)); cut++ {
		t.Run(fmt.Sprintf("cut %d bytes into the last frame of %d", cut-last, int64(len(data))-last), func(t *testing.T) {
			run(t, data[:cut], cut > last)
		})
	}
	t.Run("garbled last frame", func(t *testing.T) {
		seg := slices.Clone(data)
		seg[last+frameHeaderSize+3] ^= 0xff
		run(t, seg, true)
	})
}

// TestCoalesceBacklog: with a tiny max_backlog_bytes and the receiver down,
// 50 windows of a counter are coalesced; once the receiver is back the
// latest total arrives exactly, with fewer samples than windows, in order,
// and what was removed is counted exactly. Relay frames (AppendWire)
// coalesce alike.
func TestCoalesceBacklog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wire bool
	}{{"windows", false}, {"relay frames", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCoalesceBacklog(t, tc.wire)
		})
	}
}

func testCoalesceBacklog(t *testing.T, wire bool) {
	const windows = 50
	var up atomic.Bool
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) (int, string) {
		if !up.Load() {
			return http.StatusServiceUnavailable, "down"
		}
		return http.StatusNoContent, ""
	})
	h := newHarness(t)
	cfg := testConfig(rc.url(), "c")
	cfg.QueueConfig.MaxShards = 1
	cfg.QueueConfig.Capacity = 1
	cfg.QueueConfig.MaxSamplesPerSend = 1
	// Room for ten windows.
	enc := newFrameEncoder()
	in := convert(counterWindow(15_000, 1))
	if err := enc.addSeriesPB(in[0].lbls, nil, in[0].meta, in[0].ts.Samples, nil); err != nil {
		t.Fatal(err)
	}
	limit := int64(10 * len(enc.finish()))
	if wire {
		raw, err := counterWindow(15_000, 1).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		limit = int64(10 * len(enc.wireFrame(snappy.Encode(nil, raw), 1, 15_000)))
	}
	cfg.QueueConfig.MaxBacklogBytes = limit
	h.apply(nil, cfg)
	for w := 1; w <= windows; w++ {
		if wire {
			appendWire(t, h.m, counterWindow(int64(w)*15_000, float64(w)))
		} else {
			h.m.Append(counterWindow(int64(w)*15_000, float64(w)))
		}
	}
	name := map[string]string{"remote_name": "c"}
	// The oldest unsent sample is the first window's, in flight.
	waitFor(t, 5*time.Second, "the backlog to be coalesced under its limit, the first window the oldest", func() bool {
		b, _ := h.metric("sluice_forward_backlog_bytes", name)
		oldest, _ := h.metric("sluice_forward_backlog_oldest_timestamp_seconds", name)
		return b <= float64(limit) && h.dropped("c", reasonCoalesced) > 0 && oldest == 15
	})

	up.Store(true)
	var got []prompb.Sample
	deadline := time.After(10 * time.Second)
	for len(got) == 0 || got[len(got)-1].Timestamp != windows*15_000 {
		select {
		case r := <-rc.reqs:
			got = append(got, seriesSamples([]request{r})["requests_total"]...)
		case <-deadline:
			t.Fatalf("the last window never arrived; got %v", got)
		}
	}
	if err := h.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	got = append(got, seriesSamples(rc.pending())["requests_total"]...)

	if last := got[len(got)-1]; last.Value != windows || last.Timestamp != windows*15_000 {
		t.Errorf("last sample %+v, want the total %d at %d", last, windows, windows*15_000)
	}
	if len(got) >= windows {
		t.Errorf("%d samples arrived for %d windows: nothing was coalesced", len(got), windows)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Timestamp <= got[i-1].Timestamp || got[i].Value <= got[i-1].Value {
			t.Errorf("sample %d %+v does not follow %+v", i, got[i], got[i-1])
		}
	}
	if c := h.dropped("c", reasonCoalesced); c != float64(windows-len(got)) {
		t.Errorf("dropped{coalesced} = %v, want exactly the %d samples that did not arrive", c, windows-len(got))
	}
	if f := h.dropped("c", reasonBacklogFull); f != 0 {
		t.Errorf("dropped{backlog_full} = %v, want 0: coalescing sufficed", f)
	}
	for _, g := range []string{"sluice_forward_queue_samples", "sluice_forward_backlog_bytes", "sluice_forward_backlog_oldest_timestamp_seconds"} {
		if v, _ := h.metric(g, name); v != 0 {
			t.Errorf("%s = %v once everything was sent, want 0", g, v)
		}
	}
	t.Logf("%d windows arrived as %d samples", windows, len(got))
}

// TestCoalescer checks what survives coalescing, series by series. Input
// and output are "series@t=value" in backlog order; "stale" is a
// staleness marker and "h<count>" a histogram.
func TestCoalescer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"a single sample stays", "a@1=1", "a@1=1"},
		{"a counter keeps its newest value", "a@1=1 a@2=2 a@3=3", "a@3=3"},
		{"each series keeps its own newest", "a@1=1 b@1=10 a@2=2 b@2=20 b@3=30", "a@2=2 b@3=30"},
		{"a staleness marker that is newest stays, after the last value", "a@1=1 a@2=5 a@3=stale", "a@2=5 a@3=stale"},
		{"a staleness marker followed by a value goes", "a@1=1 a@2=stale a@3=7", "a@3=7"},
		{"a float and a histogram of a series both stay, in order", "a@1=1 a@2=h4 a@3=2 a@4=h6", "a@3=2 a@4=h6"},
		{"a stale histogram that is newest stays", "a@1=h1 a@2=h2 a@3=hstale", "a@2=h2 a@3=hstale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCoalescer()
			for _, f := range strings.Fields(tc.in) {
				s := parseTestSample(t, f)
				c.add(&s)
			}
			out := c.result()
			var got []string
			for i := range out {
				got = append(got, formatTestSample(&out[i]))
			}
			if strings.Join(got, " ") != tc.want {
				t.Errorf("got %q, want %q", strings.Join(got, " "), tc.want)
			}
			if removed := c.in - len(out); removed != len(strings.Fields(tc.in))-len(strings.Fields(tc.want)) {
				t.Errorf("removed %d", removed)
			}
		})
	}
}

func parseTestSample(t *testing.T, f string) sample {
	t.Helper()
	name, rest, _ := strings.Cut(f, "@")
	ts, v, _ := strings.Cut(rest, "=")
	s := sample{lset: labels.FromStrings("__name__", name)}
	var err error
	if s.t, err = strconv.ParseInt(ts, 10, 64); err != nil {
		t.Fatal(err)
	}
	switch {
	case v == "stale":
		s.v = math.Float64frombits(value.StaleNaN)
	case v == "hstale":
		s.h = &prompb.Histogram{Sum: math.Float64frombits(value.StaleNaN), Timestamp: s.t}
	case strings.HasPrefix(v, "h"):
		n, err := strconv.ParseUint(v[1:], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		s.h = &prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: n}, Timestamp: s.t}
	default:
		if s.v, err = strconv.ParseFloat(v, 64); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func formatTestSample(s *sample) string {
	v := strconv.FormatFloat(s.v, 'g', -1, 64)
	switch {
	case s.h != nil && value.IsStaleNaN(s.h.Sum):
		v = "hstale"
	case s.h != nil:
		v = "h" + strconv.FormatUint(s.h.GetCountInt(), 10)
	case value.IsStaleNaN(s.v):
		v = "stale"
	}
	return fmt.Sprintf("%s@%d=%s", s.lset.Get("__name__"), s.t, v)
}

// TestBacklogWriteFault injects a full disk under the backlog: Append does
// not block or panic, the windows are counted as dropped
// (backlog_write), and the target works again once there is space.
func TestBacklogWriteFault(t *testing.T) {
	t.Parallel()
	const series = 4
	for _, tc := range []struct {
		name string
		// tinySegments makes every window start a new segment, whose
		// creation fails.
		tinySegments bool
		noTruncate   bool
	}{
		{"write fails half-way and is rolled back", false, false},
		{"a new segment cannot be created", true, false},
		{"write and its roll-back fail", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			fsys := &faultFS{FS: wal.OSFS()}
			h := newHarness(t)
			dir := h.m.dir
			h.m.fs = fsys
			cfg := testConfig(rc.url(), "f")
			cfg.QueueConfig.MaxShards = 1
			if tc.tinySegments {
				cfg.QueueConfig.MaxBacklogBytes = 1 << 10
			}
			h.apply(nil, cfg)
			h.m.Append(window(15_000, series))
			rc.nextAccepted(series, 5*time.Second)

			fsys.full.Store(true)
			fsys.noTruncate.Store(tc.noTruncate)
			start := time.Now()
			for w := int64(2); w <= 4; w++ {
				h.m.Append(window(w*15_000, series))
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("three Appends on a full disk took %v", took)
			}
			if got := h.dropped("f", reasonBacklogWrite); got != 3*series {
				t.Errorf("dropped{backlog_write} = %v, want %d", got, 3*series)
			}
			fsys.full.Store(false)
			fsys.noTruncate.Store(false)

			h.m.Append(window(5*15_000, series))
			reqs := rc.nextAccepted(series, 5*time.Second)
			if err := h.stop(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			for _, r := range append(reqs, rc.pending()...) {
				for _, ts := range r.v1.Timeseries {
					if ts.Samples[0].Timestamp != 5*15_000 {
						t.Errorf("sample at %d arrived, want only the window after the disk was back", ts.Samples[0].Timestamp)
					}
				}
			}
			if n := strings.Count(h.log.String(), "cannot write to the backlog"); n != 1 {
				t.Errorf("write failure logged %d times, want once:\n%s", n, h.log.String())
			}
			if c := h.dropped("f", reasonCorrupt); c != 0 {
				t.Errorf("dropped{backlog_corrupt} = %v", c)
			}

			// What is left on disk opens cleanly and holds nothing.
			var log bytes.Buffer
			tm := newMetrics(nil).forTarget("reopened")
			q, err := openQueue(filepath.Join(dir, "f"), wal.OSFS(), cfg.QueueConfig.MaxBacklogBytes,
				slog.New(slog.NewTextHandler(&log, nil)), &tm)
			if err != nil {
				t.Fatal(err)
			}
			defer q.close()
			if n, _ := q.pending(); n != 0 {
				t.Errorf("reopened backlog holds %d samples, want 0", n)
			}
			if strings.Contains(log.String(), "damaged") {
				t.Errorf("the backlog needed repair after the faults:\n%s", log.String())
			}
		})
	}
}

// TestRemovedTarget: a target removed by a reload, or no longer in the
// configuration at start-up, has its backlog directory deleted.
func TestRemovedTarget(t *testing.T) {
	t.Parallel()
	exists := func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	}
	t.Run("removed by a reload", func(t *testing.T) {
		t.Parallel()
		ra, rb := newReceiver(t, nil), newReceiver(t, nil)
		h := newHarness(t)
		h.apply(nil, testConfig(ra.url(), "a"), testConfig(rb.url(), "b"))
		h.m.Append(window(15_000, 2))
		ra.nextAccepted(2, 5*time.Second)
		rb.nextAccepted(2, 5*time.Second)
		a, b := filepath.Join(h.m.dir, "a"), filepath.Join(h.m.dir, "b")
		if !exists(a) || !exists(b) {
			t.Fatalf("backlog directories missing: a %v, b %v", exists(a), exists(b))
		}
		h.apply(nil, testConfig(ra.url(), "a"))
		if exists(b) {
			t.Error("the removed target's directory is still there")
		}
		if !exists(a) {
			t.Error("the kept target's directory is gone")
		}
	})
	t.Run("not configured at start-up", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		stale := filepath.Join(dir, "old-target")
		if err := os.MkdirAll(stale, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stale, wal.SegmentName(0)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		rc := newReceiver(t, nil)
		h := newHarnessIn(t, dir)
		h.apply(nil, testConfig(rc.url(), "a"))
		if exists(stale) {
			t.Error("the backlog of a target no longer configured survived the start")
		}
		if !exists(filepath.Join(dir, "a")) {
			t.Error("the configured target has no backlog directory")
		}
	})
}

// TestReloadKeepsBacklog: a target whose configuration changes while its
// receiver is down hands its backlog to its replacement; nothing is lost.
// The batch in flight at the handover may arrive twice (ApplyConfig: the
// replacement sends it again): a request the old target sent just before
// it stopped can be answered after the receiver comes up, as happened
// under the load of the whole test suite.
func TestReloadKeepsBacklog(t *testing.T) {
	t.Parallel()
	const (
		series  = 3
		windows = 6
	)
	var up atomic.Bool
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) (int, string) {
		if !up.Load() {
			return http.StatusServiceUnavailable, "down"
		}
		return http.StatusNoContent, ""
	})
	h := newHarness(t)
	h.apply(nil, testConfig(rc.url(), "k"))
	for _, ts := range windowTimes(windows) {
		h.m.Append(window(ts, series))
	}
	waitFor(t, 5*time.Second, "a failed send", func() bool { return rc.count() > 0 })
	changed := testConfig(rc.url(), "k")
	changed.Headers = map[string]string{"X-Config": "two"}
	h.apply(nil, changed)
	up.Store(true)
	got := collect(t, rc, nil, series, windowTimes(windows), 10*time.Second)
	for i := range series {
		var ts []int64
		for _, x := range got[strconv.Itoa(i)] {
			ts = append(ts, x.Timestamp)
		}
		if !resentOnce(ts, windowTimes(windows)) {
			t.Errorf("series %d: got %v, want every window in order, the batch in flight at the handover at most twice", i, ts)
		}
	}
}

// resentOnce reports whether got holds every timestamp of want and nothing
// else, in at most two ascending runs: every window in order, and one
// batch possibly sent again.
func resentOnce(got, want []int64) bool {
	runs := 1
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			runs++
		}
	}
	return runs <= 2 && slices.Equal(slices.Compact(slices.Sorted(slices.Values(got))), want)
}

// TestQueueReopen drives a backlog directly: the cursor survives a close,
// segments behind it are deleted, the rest is read again.
func TestQueueReopen(t *testing.T) {
	t.Parallel()
	const frames = 8
	for _, tc := range []struct {
		name string
		// limit is max_backlog_bytes: 100 makes segments of 64 bytes, one
		// frame each; 1 MiB puts every frame in one segment.
		limit  int64
		commit int  // frames read and committed before closing
		sync   bool // persist the cursor (a crash may come before)
		damage bool // garble the cursor file
		want   int  // frames read after reopening
	}{
		{"nothing sent", 100, 0, true, false, frames},
		{"half sent, cursor persisted", 100, frames / 2, true, false, frames / 2},
		{"half sent in one segment, cursor persisted", 1 << 20, frames / 2, true, false, frames / 2},
		// Sent segments are deleted at once: only the unsent segment is read again.
		{"half sent, cursor not persisted", 100, frames / 2, false, false, frames / 2},
		{"half sent in one segment, cursor not persisted", 1 << 20, frames / 2, false, false, frames},
		{"half sent in one segment, cursor damaged", 1 << 20, frames / 2, true, true, frames},
		{"all sent", 100, frames, true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tm := newMetrics(nil).forTarget("q")
			q, err := openQueue(dir, wal.OSFS(), tc.limit, discardLogger(), &tm)
			if err != nil {
				t.Fatal(err)
			}
			enc := newFrameEncoder()
			for i := range frames {
				enc.reset()
				in := convert(counterWindow(int64(i+1)*1000, float64(i)))
				if err := enc.addSeriesPB(in[0].lbls, nil, in[0].meta, in[0].ts.Samples, nil); err != nil {
					t.Fatal(err)
				}
				if err := q.append(enc.finish(), 1, false); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.commit {
				_, end, _, ok := q.next()
				if !ok {
					t.Fatal("frame missing")
				}
				q.commit(end, 1)
			}
			if tc.sync {
				if err := q.syncCursor(time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			q.close()
			if tc.damage {
				if err := os.WriteFile(filepath.Join(dir, cursorFile), []byte("garbage"), 0o644); err != nil {
					t.Fatal(err)
				}
			}

			q, err = openQueue(dir, wal.OSFS(), tc.limit, discardLogger(), &tm)
			if err != nil {
				t.Fatal(err)
			}
			defer q.close()
			if n, _ := q.pending(); n != int64(tc.want) {
				t.Errorf("pending %d samples, want %d", n, tc.want)
			}
			got := readBacklog(t, q)
			if len(got) != tc.want {
				t.Fatalf("read %d samples after reopening, want %d", len(got), tc.want)
			}
			for i, s := range got {
				if want := int64(frames-tc.want+i+1) * 1000; s.t != want {
					t.Errorf("sample %d at %d, want %d", i, s.t, want)
				}
			}
			segs := 0
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if _, ok := wal.ParseSegmentName(e.Name()); ok {
					segs++
				}
			}
			if segs > tc.want+1 {
				t.Errorf("%d segment files for %d unsent frames: sent ones were not deleted", segs, tc.want)
			}
		})
	}
}

func TestTracker(t *testing.T) {
	t.Parallel()
	var tr tracker
	pos := func(i int) wal.Position { return wal.Position{Offset: int64(i)} }
	var seqs []uint64
	for i := range 100 {
		seqs = append(seqs, tr.add(pos(i+1), 2, 2, int64(i)))
	}
	// Resolve out of order: frames are popped only once every frame
	// before them is resolved.
	for i := 99; i >= 1; i-- {
		tr.resolve(seqs[i], 2)
	}
	if got := tr.popResolved(nil); len(got) != 0 {
		t.Fatalf("popped %d frames while the first is unresolved", len(got))
	}
	if oldest, ok := tr.oldest(); !ok || oldest != 0 {
		t.Errorf("oldest = %d %v, want 0", oldest, ok)
	}
	tr.resolve(seqs[0], 1)
	tr.resolve(seqs[0], 1)
	got := tr.popResolved(nil)
	if len(got) != 100 || got[99].end != pos(100) || tr.len() != 0 {
		t.Fatalf("popped %d frames, %d left", len(got), tr.len())
	}
	// Sequence numbers go on after the storage is reused.
	for i := range 300 {
		seq := tr.add(pos(i), 1, 1, 0)
		tr.resolve(seq, 1)
		if n := len(tr.popResolved(nil)); n != 1 {
			t.Fatalf("frame %d: popped %d", i, n)
		}
	}
}

func TestQueueDirName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, want string }{
		{"mimir-prod", "mimir-prod"},
		{"vm_1.eu", "vm_1.eu"},
		{"http://127.0.0.1:8428/api/v1/write", "http___127.0.0.1_8428_api_v1_write-"},
		{"a/b", "a_b-"},
		{"..", "..-"},
		{"", "-"},
		{strings.Repeat("x", 100), strings.Repeat("x", 64) + "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := queueDirName(tc.name)
			if !strings.HasPrefix(got, tc.want) || (strings.HasSuffix(tc.want, "-") && len(got) != len(tc.want)+8) ||
				(!strings.HasSuffix(tc.want, "-") && got != tc.want) {
				t.Errorf("queueDirName(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
	if queueDirName("a/b") == queueDirName("a_b") || queueDirName("a/b") == queueDirName("a:b") {
		t.Error("names that sanitise alike share a directory")
	}
}

// FuzzFrameDecode: any payload, valid or not, decodes without panicking,
// and a frame built from decoded samples decodes to the same samples.
func FuzzFrameDecode(f *testing.F) {
	enc := newFrameEncoder()
	for _, req := range []*prompb.WriteRequest{window(15_000, 3), counterWindow(30_000, 7)} {
		enc.reset()
		for _, s := range convert(req) {
			if err := enc.addSeriesPB(s.lbls, nil, s.meta, s.ts.Samples, s.ts.Histograms); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(slices.Clone(enc.finish()[frameHeaderSize:]))
	}
	h := testHistogram(45_000)
	enc.reset()
	if err := enc.addSeries(labels.FromStrings("__name__", "h"), nil, nil, []prompb.Histogram{h}); err != nil {
		f.Fatal(err)
	}
	f.Add(slices.Clone(enc.finish()[frameHeaderSize:]))
	f.Add([]byte{1, 0, 0})

	f.Fuzz(func(t *testing.T, payload []byte) {
		dec := newFrameDecoder()
		got, err := dec.decode(payload, nil)
		if err != nil {
			return
		}
		enc := newFrameEncoder()
		for i := range got {
			if err := enc.addSample(&got[i]); err != nil {
				t.Fatal(err)
			}
		}
		again, err := dec.decode(enc.finish()[frameHeaderSize:], nil)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if len(again) != len(got) {
			t.Fatalf("%d samples, then %d", len(got), len(again))
		}
		for i := range got {
			a, b := got[i], again[i]
			if !labels.Equal(a.lset, b.lset) || a.t != b.t || math.Float64bits(a.v) != math.Float64bits(b.v) ||
				(a.h == nil) != (b.h == nil) || (a.meta == nil) != (b.meta == nil) || (a.meta != nil && a.meta.String() != b.meta.String()) {
				t.Fatalf("sample %d: %+v, then %+v", i, a, b)
			}
		}
	})
}

// syncCountFS counts fsyncs of backlog segments (by name) and directories.
type syncCountFS struct {
	wal.FS
	mu    sync.Mutex
	syncs map[string]int
	dirs  int
}

func (f *syncCountFS) OpenFile(name string, flag int, perm os.FileMode) (wal.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &syncCountFile{File: file, fs: f, name: filepath.Base(name)}, nil
}

func (f *syncCountFS) SyncDir(name string) error {
	f.mu.Lock()
	f.dirs++
	f.mu.Unlock()
	return f.FS.SyncDir(name)
}

type syncCountFile struct {
	wal.File
	fs   *syncCountFS
	name string
}

func (f *syncCountFile) Sync() error {
	f.fs.mu.Lock()
	f.fs.syncs[f.name]++
	f.fs.mu.Unlock()
	return f.File.Sync()
}

// TestQueueSync: sync fsyncs the segment appended to and every segment
// sealed since the last sync, once, and the directory; a second sync with
// nothing appended does nothing.
func TestQueueSync(t *testing.T) {
	tg := newTestTarget(t, testConfig("http://127.0.0.1:1/api/v1/write", "s"), nil)
	fsys := &syncCountFS{FS: wal.OSFS(), syncs: map[string]int{}}
	// 1 KiB backlog: 64-byte segments, so each 50-byte frame gets its own.
	q, err := openQueue(t.TempDir(), fsys, 1024, discardLogger(), &tg.metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	for range 3 {
		if err := q.append(make([]byte, 50), 1, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.sync(); err != nil {
		t.Fatal(err)
	}
	// A new backlog's first segment is 1.
	want := map[string]int{wal.SegmentName(1): 1, wal.SegmentName(2): 1, wal.SegmentName(3): 1}
	fsys.mu.Lock()
	if !maps.Equal(fsys.syncs, want) || fsys.dirs != 1 {
		t.Fatalf("fsyncs %v and %d of the directory; want %v and 1", fsys.syncs, fsys.dirs, want)
	}
	fsys.mu.Unlock()
	if err := q.sync(); err != nil {
		t.Fatal(err)
	}
	if err := q.append(make([]byte, 10), 1, false); err != nil {
		t.Fatal(err)
	}
	if err := q.sync(); err != nil {
		t.Fatal(err)
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.syncs[wal.SegmentName(3)] != 2 || fsys.syncs[wal.SegmentName(1)] != 1 || fsys.dirs != 2 {
		t.Fatalf("after one more frame: fsyncs %v, directory %d", fsys.syncs, fsys.dirs)
	}
}

func TestManagerSync(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t)
	h.apply(nil, testConfig(rc.url(), "a"))
	h.m.Append(window(1000, 3))
	if err := h.m.Sync(); err != nil {
		t.Fatal(err)
	}
	rc.nextAccepted(3, 5*time.Second)
}

package forward

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testUserAgent = "Sluice/test"

// request is one request a receiver got, decoded.
type request struct {
	at     time.Time
	header http.Header
	code   int // what the receiver answered
	v1     *prompb.WriteRequest
	v2     *writev2.Request
}

// accepted reports whether the receiver answered 2xx.
func (r request) accepted() bool { return r.code/100 == 2 }

// samples returns the number of float samples and histograms in the request.
func (r request) samples() int {
	n := 0
	if r.v1 != nil {
		for _, ts := range r.v1.Timeseries {
			n += len(ts.Samples) + len(ts.Histograms)
		}
	}
	if r.v2 != nil {
		for _, ts := range r.v2.Timeseries {
			n += len(ts.Samples) + len(ts.Histograms)
		}
	}
	return n
}

// receiver is a remote_write endpoint on 127.0.0.1 that decodes every
// request and answers what respond says.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	reqs chan request // every request, in arrival order

	mtx sync.Mutex // guards n
	n   int
}

// respondFunc chooses the answer to the n-th request (from 0): it may set
// headers, and returns the status code and a body.
type respondFunc func(n int, w http.ResponseWriter, r *http.Request) (code int, body string)

func newReceiver(t *testing.T, respond respondFunc) *receiver {
	t.Helper()
	rc := &receiver{t: t, reqs: make(chan request, 1000)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mtx.Lock()
		n := rc.n
		rc.n++
		rc.mtx.Unlock()
		got := request{at: time.Now(), header: r.Header.Clone()}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
			return
		}
		pb, err := snappy.Decode(nil, body) // block format
		if err != nil {
			t.Errorf("request %d: snappy block decode: %v", n, err)
		}
		if strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request") {
			got.v2 = &writev2.Request{}
			err = got.v2.Unmarshal(pb)
		} else {
			got.v1 = &prompb.WriteRequest{}
			err = got.v1.Unmarshal(pb)
		}
		if err != nil {
			t.Errorf("request %d: unmarshal: %v", n, err)
		}
		got.code = http.StatusNoContent
		if got.v2 != nil {
			// As a 2.0 receiver answers; respond may change it.
			var floats, hists int
			for _, ts := range got.v2.Timeseries {
				floats += len(ts.Samples)
				hists += len(ts.Histograms)
			}
			w.Header().Set(headerSamplesWritten, strconv.Itoa(floats))
			w.Header().Set(headerHistogramsWritten, strconv.Itoa(hists))
			w.Header().Set(headerExemplarsWritten, "0")
		}
		var answer string
		if respond != nil {
			got.code, answer = respond(n, w, r)
		}
		rc.reqs <- got
		w.WriteHeader(got.code)
		if answer != "" {
			_, _ = w.Write([]byte(answer))
		}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// readV1 reads a Remote-Write 1.0 request: the body as received, and
// the request it decodes to.
func readV1(r *http.Request) ([]byte, *prompb.WriteRequest, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, err
	}
	pb, err := snappy.Decode(nil, body)
	if err != nil {
		return body, nil, err
	}
	req := &prompb.WriteRequest{}
	return body, req, req.Unmarshal(pb)
}

func (rc *receiver) url() string { return rc.srv.URL + "/api/v1/write" }

// count returns the number of requests received so far.
func (rc *receiver) count() int {
	rc.mtx.Lock()
	defer rc.mtx.Unlock()
	return rc.n
}

// next returns the next request, failing the test after timeout.
func (rc *receiver) next(timeout time.Duration) request {
	rc.t.Helper()
	select {
	case r := <-rc.reqs:
		return r
	case <-time.After(timeout):
		rc.t.Fatalf("no request within %v", timeout)
		return request{}
	}
}

// nextAccepted returns accepted requests until they hold n samples.
func (rc *receiver) nextAccepted(n int, timeout time.Duration) []request {
	rc.t.Helper()
	deadline := time.After(timeout)
	var out []request
	got := 0
	for got < n {
		select {
		case r := <-rc.reqs:
			if r.accepted() {
				out = append(out, r)
				got += r.samples()
			}
		case <-deadline:
			rc.t.Fatalf("got %d of %d samples within %v", got, n, timeout)
		}
	}
	return out
}

// pending returns the requests received but not yet read.
func (rc *receiver) pending() []request {
	var out []request
	for {
		select {
		case r := <-rc.reqs:
			out = append(out, r)
		default:
			return out
		}
	}
}

// hangingServer accepts requests and never answers until the test ends
// (or the client gives up).
func hangingServer(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first
	return srv.URL + "/api/v1/write"
}

// closedPort returns a URL on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr + "/api/v1/write"
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mtx sync.Mutex // guards b
	b   bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	return s.b.String()
}

// harness is a Manager with its registry and log.
type harness struct {
	t   *testing.T
	m   *Manager
	reg *prometheus.Registry
	log *syncBuffer
}

// newHarness returns a Manager stopped when the test ends (before the
// servers created earlier are closed).
func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry(), log: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.m = NewManager(logger, h.reg, testUserAgent, t.TempDir())
	h.m.reloadDrain = 500 * time.Millisecond
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.m.Stop(ctx)
	})
	return h
}

func (h *harness) apply(ext map[string]string, cfgs ...configs.RemoteWriteConfig) {
	h.t.Helper()
	for i := range cfgs {
		if err := cfgs[i].Validate(); err != nil {
			h.t.Fatalf("config %d: %v", i, err)
		}
	}
	if err := h.m.ApplyConfig(cfgs, ext); err != nil {
		h.t.Fatal(err)
	}
}

// stop stops the Manager with a timeout and returns its error.
func (h *harness) stop(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.m.Stop(ctx)
}

// metric returns the value of the series of name with exactly the given
// labels, and whether it exists.
func (h *harness) metric(name string, lbls map[string]string) (float64, bool) {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !labelsMatch(m, lbls) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
			return false
		}
	}
	return true
}

// dropped returns sluice_forward_samples_dropped_total for a target and
// reason (0 if absent).
func (h *harness) dropped(name, reason string) float64 {
	v, _ := h.metric("sluice_forward_samples_dropped_total", map[string]string{"remote_name": name, "reason": reason})
	return v
}

func modelDuration(d time.Duration) model.Duration { return model.Duration(d) }

// testConfig is a target with every default and quick backoffs.
func testConfig(url, name string) configs.RemoteWriteConfig {
	c := configs.NewRemoteWriteConfig(url)
	c.Name = name
	c.RemoteTimeout = model.Duration(5 * time.Second)
	c.QueueConfig.MinBackoff = model.Duration(10 * time.Millisecond)
	c.QueueConfig.MaxBackoff = model.Duration(50 * time.Millisecond)
	return c
}

// yamlConfig parses a remote_write entry as a user writes it.
func yamlConfig(t *testing.T, y string) configs.RemoteWriteConfig {
	t.Helper()
	var c configs.RemoteWriteConfig
	if err := yaml.Unmarshal([]byte(y), &c); err != nil {
		t.Fatalf("parse %q: %v", y, err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return c
}

// window returns n float series test_metric{series="i"} at ts (ms) with
// value ts/1000+i.
func window(ts int64, n int) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i := range n {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: "test_metric"},
				{Name: "job", Value: "test"},
				{Name: "series", Value: strconv.Itoa(i)},
			},
			Samples: []prompb.Sample{{Timestamp: ts, Value: float64(ts/1000) + float64(i)}},
		})
	}
	req.Metadata = []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "test_metric", Help: "A test gauge."}}
	return req
}

// labelMap returns a v1 series' labels as a map.
func labelMap(ls []prompb.Label) map[string]string {
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

// shardGoroutines counts running shard goroutines.
func shardGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "forward.(*shard).run(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitFor polls cond until it holds, failing the test after timeout. It is
// for states that have no event to wait on (a goroutine exiting, an error
// being recorded).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// newTestTarget returns a target on a backlog in a temporary directory,
// not started, closed when the test ends.
func newTestTarget(tb testing.TB, cfg configs.RemoteWriteConfig, ext map[string]string) *target {
	tb.Helper()
	m := newMetrics(nil)
	tg, err := newTarget(cfg, ext, "ua", discardLogger(), m, time.Now, nil)
	if err != nil {
		tb.Fatal(err)
	}
	q, err := openQueue(tb.TempDir(), wal.OSFS(), cfg.QueueConfig.MaxBacklogBytes, discardLogger(), &tg.metrics)
	if err != nil {
		tb.Fatal(err)
	}
	tg.q = q
	tb.Cleanup(func() {
		tg.cancel()
		tg.client.close()
		q.close()
	})
	return tg
}

// readBacklog reads every frame of q from its reader's position on and
// returns the samples, marking each frame resolved.
func readBacklog(tb testing.TB, q *queue) []sample {
	tb.Helper()
	dec := newFrameDecoder()
	var out []sample
	for {
		f, ok := q.nextFrame()
		if !ok {
			return out
		}
		n := len(out)
		var err error
		if out, err = f.decode(dec, out); err != nil {
			tb.Fatalf("decode frame ending at %v: %v", f.end, err)
		}
		q.releaseFrame(f)
		q.commit(f.end, len(out)-n)
	}
}

// faultFS wraps the real file system and injects the faults of a full
// disk into backlog segments: while full is set, a write writes half its
// bytes and fails with ENOSPC, and creating a segment fails; while
// noTruncate is set, Truncate fails too (the roll-back of a failed write).
type faultFS struct {
	wal.FS
	full, noTruncate atomic.Bool
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (wal.File, error) {
	_, isSeg := wal.ParseSegmentName(filepath.Base(name))
	if isSeg && flag&os.O_CREATE != 0 && f.full.Load() {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
	}
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !isSeg {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

type faultFile struct {
	wal.File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.full.Load() {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

func (f *faultFile) Truncate(size int64) error {
	if f.fs.noTruncate.Load() {
		return syscall.EIO
	}
	return f.File.Truncate(size)
}

// crash abandons m as kill -9 would: its goroutines stop (for goleak) and
// its files are closed, but nothing is written on the way out: no final
// cursor, no drain.
func crash(m *Manager) {
	m.mtx.Lock()
	ts := m.targets
	m.targets, m.stopped = nil, true
	m.mtx.Unlock()
	for _, t := range ts {
		t.cancel()
		t.wg.Wait()
		t.client.close()
		t.q.close()
	}
}

// newHarnessIn is newHarness on a given backlog directory.
func newHarnessIn(t *testing.T, dir string) *harness {
	t.Helper()
	h := newHarness(t)
	h.m.dir = dir
	return h
}

// counterWindow is one window of the counter requests_total{job="c"} with
// value v at ts (ms).
func counterWindow(ts int64, v float64) *prompb.WriteRequest {
	return &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "requests_total"}, {Name: "job", Value: "c"}},
			Samples: []prompb.Sample{{Timestamp: ts, Value: v}},
		}},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "requests", Help: "Requests."}},
	}
}

// seriesSamples returns the timestamps and values each series received in
// accepted requests, in arrival order, keyed by the label series (or
// __name__ when absent).
func seriesSamples(reqs []request) map[string][]prompb.Sample {
	out := map[string][]prompb.Sample{}
	for _, r := range reqs {
		if !r.accepted() || r.v1 == nil {
			continue
		}
		for _, ts := range r.v1.Timeseries {
			lm := labelMap(ts.Labels)
			k := lm["series"]
			if k == "" {
				k = lm["__name__"]
			}
			out[k] = append(out[k], ts.Samples...)
		}
	}
	return out
}

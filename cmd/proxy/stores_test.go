package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// needBinary returns the path of a store binary from the Debian packages.
// CI installs them (.ci/run), so there a missing binary is a failure.
func needBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed; .ci/run must install it", name)
		}
		t.Skipf("%s not installed (apt-get install victoria-metrics prometheus prometheus-pushgateway)", name)
	}
	return p
}

// store is a long-term store running on a loopback port.
type store struct {
	name     string
	base     string // http://127.0.0.1:port
	writeURL string
	flush    func() // make recent samples queryable
}

// startProcess runs a binary until the test ends (SIGTERM, then SIGKILL)
// and waits until probe answers 200.
func startProcess(t *testing.T, probe string, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(t.TempDir(), filepath.Base(bin)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(probe); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("%s exited early:\n%s", bin, b)
		case <-time.After(100 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(logf.Name())
	t.Fatalf("%s not ready at %s:\n%s", bin, probe, b)
}

func startVictoriaMetrics(t *testing.T) *store {
	bin := needBinary(t, "victoria-metrics")
	addr := freePort(t)
	startProcess(t, "http://"+addr+"/health", bin,
		"-storageDataPath="+t.TempDir(), "-httpListenAddr="+addr, "-retentionPeriod=100y",
		"-search.latencyOffset=0s", "-loggerLevel=ERROR")
	base := "http://" + addr
	return &store{name: "victoria-metrics", base: base, writeURL: base + "/api/v1/write", flush: func() {
		if r, err := http.Get(base + "/internal/force_flush"); err == nil {
			r.Body.Close()
		}
	}}
}

func startPrometheus(t *testing.T, args ...string) *store {
	bin := needBinary(t, "prometheus")
	addr := freePort(t)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "http://"+addr+"/-/ready", bin, append([]string{
		"--config.file=" + cfg, "--storage.tsdb.path=" + t.TempDir(), "--web.listen-address=" + addr,
		"--web.enable-remote-write-receiver", "--log.level=warn"}, args...)...)
	base := "http://" + addr
	return &store{name: "prometheus", base: base, writeURL: base + "/api/v1/write", flush: func() {}}
}

type promSample struct {
	labels map[string]string
	value  float64
	points [][2]float64 // for range queries: (unix seconds, value)
}

// query runs an instant PromQL query at time at (zero = now).
func (s *store) query(t *testing.T, q string, at time.Time) []promSample {
	t.Helper()
	s.flush()
	v := url.Values{"query": {q}}
	if !at.IsZero() {
		v.Set("time", strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64))
	}
	r, err := http.Get(s.base + "/api/v1/query?" + v.Encode())
	if err != nil {
		t.Fatalf("%s query %s: %v", s.name, q, err)
	}
	defer r.Body.Close()
	var doc struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
				Values [][]any           `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &doc); err != nil || doc.Status != "success" {
		t.Fatalf("%s query %s: %v %s", s.name, q, err, b)
	}
	var out []promSample
	for _, res := range doc.Data.Result {
		ps := promSample{labels: res.Metric}
		if len(res.Value) == 2 {
			ps.value, _ = strconv.ParseFloat(res.Value[1].(string), 64)
		}
		for _, p := range res.Values {
			v, _ := strconv.ParseFloat(p[1].(string), 64)
			ps.points = append(ps.points, [2]float64{p[0].(float64), v})
		}
		out = append(out, ps)
	}
	return out
}

// waitValue polls until q returns exactly one series with value want.
func (s *store) waitValue(t *testing.T, q string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got []promSample
	for time.Now().Before(deadline) {
		got = s.query(t, q, time.Time{})
		if len(got) == 1 && math.Abs(got[0].value-want) < 1e-9*math.Max(1, math.Abs(want)) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: %s = %+v, want one series with value %v", s.name, q, got, want)
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluice.yml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pushText(t *testing.T, p *sluiceProc, method, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, r.StatusCode, b)
	}
}

// TestForwardToRealStores pushes through the real binary with client_golang
// and checks what VictoriaMetrics and Prometheus hold, with a third,
// dead target configured next to them.
func TestForwardToRealStores(t *testing.T) {
	bin := buildBinary(t)
	vm := startVictoriaMetrics(t)
	prom := startPrometheus(t)
	dead := "http://" + freePort(t) + "/api/v1/write" // nothing listens there
	cfg := writeConfig(t, fmt.Sprintf(`
global:
  external_labels: {region: test}
remote_write:
  - url: %s
    name: vm
  - url: %s
    name: prometheus
  - url: %s
    name: dead
    queue_config: {min_backoff: 100ms, max_backoff: 1s}
`, vm.writeURL, prom.writeURL, dead))
	const interval = time.Second
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval="+interval.String())

	for i := 0; i < 3; i++ {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "req_total", Help: "Requests.", ConstLabels: prometheus.Labels{"fn": "a"}})
		c.Inc()
		if err := push.New(p.url, "f").Collector(c).Add(); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []float64{5, 7} {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "temp_celsius", Help: "T."})
		g.Set(v)
		if err := push.New(p.url, "f").Collector(g).Push(); err != nil {
			t.Fatal(err)
		}
	}
	pushText(t, p, "POST", "/metrics/job/f", "lat_ms{clear_mode=\"mean1m\"} 100\n")
	pushText(t, p, "POST", "/metrics/job/f", "lat_ms{clear_mode=\"mean1m\"} 200\n")
	for _, obs := range [][]float64{{0.05, 0.2, 0.3}, {0.4, 0.7, 2}} {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dur_seconds", Help: "D.", Buckets: []float64{0.1, 0.5, 1}})
		for _, o := range obs {
			h.Observe(o)
		}
		if err := push.New(p.url, "f").Collector(h).Add(); err != nil {
			t.Fatal(err)
		}
	}
	pushText(t, p, "POST", "/metrics/job/gone", "bye_total 4\n")

	for _, st := range []*store{vm, prom} {
		t.Run(st.name, func(t *testing.T) {
			st.waitValue(t, `req_total{job="f",fn="a",region="test"}`, 3)
			st.waitValue(t, `temp_celsius{job="f"}`, 7)
			st.waitValue(t, `lat_ms{job="f"}`, 150)
			st.waitValue(t, `dur_seconds_count{job="f"}`, 6)
			// Buckets summed from both pushes: le=0.1:1, 0.5:4, 1:5, +Inf:6.
			// The median (rank 3) lies in (0.1,0.5]: 0.1 + 0.4*(3-1)/(4-1).
			st.waitValue(t, `histogram_quantile(0.5, dur_seconds_bucket{job="f"})`, 0.1+0.4*2/3)
			st.waitValue(t, `bye_total{job="gone"}`, 4)
			st.waitValue(t, `sluice_samples_ingested_total{job="sluice"}`, 10)
		})
	}

	// One sample per series per interval, on window ends.
	time.Sleep(3 * interval)
	for _, st := range []*store{vm, prom} {
		res := st.query(t, `req_total{job="f"}[5s]`, time.Time{})
		if len(res) != 1 || len(res[0].points) < 3 {
			t.Fatalf("%s: want >= 3 points in 5s, got %+v", st.name, res)
		}
		for i, pt := range res[0].points {
			if ms := int64(math.Round(pt[0] * 1000)); ms%interval.Milliseconds() != 0 {
				t.Fatalf("%s: sample at %d ms is not on a window end", st.name, ms)
			}
			if i > 0 && math.Round((pt[0]-res[0].points[i-1][0])*1000) != float64(interval.Milliseconds()) {
				t.Fatalf("%s: samples %v and %v are not one interval apart", st.name, res[0].points[i-1], pt)
			}
		}
	}

	// DELETE ends the series with a staleness marker: an instant query a
	// moment later finds nothing, while the data before stays.
	if err := push.New(p.url, "gone").Delete(); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	time.Sleep(3 * interval)
	for _, st := range []*store{vm, prom} {
		if res := st.query(t, `bye_total{job="gone"}`, time.Time{}); len(res) != 0 {
			t.Fatalf("%s: bye_total still present after DELETE: %+v", st.name, res)
		}
		if res := st.query(t, `bye_total{job="gone"}`, deleted.Add(-2*interval)); len(res) != 1 || res[0].value != 4 {
			t.Fatalf("%s: bye_total before the DELETE: %+v", st.name, res)
		}
	}

	// The dead target is retried and counted; it held up nobody.
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, `sluice_forward_requests_total{code="error",remote_name="dead"}`) {
		t.Fatalf("the dead target's failures are not counted:\n%s", grepLines(body, "sluice_forward_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rwRecorder is a loopback remote_write receiver that can fail on purpose.
type rwRecorder struct {
	mu        sync.Mutex
	failUntil time.Time
	v1        []prompb.WriteRequest
	v2        []writev2.Request
	headers   []http.Header
	failures  int
}

func (rw *rwRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if time.Now().Before(rw.failUntil) {
		rw.failures++
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	raw, err := snappy.Decode(nil, b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rw.headers = append(rw.headers, r.Header.Clone())
	if strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request") {
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rw.v2 = append(rw.v2, req)
		// As a 2.0 receiver answers: Sluice, like Prometheus 3, drops a
		// batch whose 2xx confirms nothing written.
		var floats, hists int
		for _, ts := range req.Timeseries {
			floats += len(ts.Samples)
			hists += len(ts.Histograms)
		}
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(floats))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.Itoa(hists))
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", "0")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rw.v1 = append(rw.v1, req)
	w.WriteHeader(http.StatusNoContent)
}

// windows returns the sorted timestamps at which series name arrived.
func (rw *rwRecorder) windows(name string) []int64 {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	seen := map[int64]bool{}
	for _, req := range rw.v1 {
		for _, ts := range req.Timeseries {
			for _, l := range ts.Labels {
				if l.Name == "__name__" && l.Value == name {
					for _, s := range ts.Samples {
						if !value.IsStaleNaN(s.Value) {
							seen[s.Timestamp] = true
						}
					}
				}
			}
		}
	}
	out := make([]int64, 0, len(seen))
	for ts := range seen {
		out = append(out, ts)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestNativeHistogramsToPrometheus: native histograms pushed by
// client_golang and summed reach a Prometheus (native histograms enabled)
// with their exact count, sum and buckets. They are forwarded as integer
// histograms, as pushed (aggregate's TestNativeHistogramKeepsIntegerCounts).
func TestNativeHistogramsToPrometheus(t *testing.T) {
	bin := buildBinary(t)
	prom := startPrometheus(t, "--enable-feature=native-histograms")
	cfg := writeConfig(t, "remote_write:\n  - url: "+prom.writeURL+"\n")
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")
	for _, obs := range [][]float64{{0.05, 0.2, 3}, {0.4, 7}} {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpc_seconds", Help: "R.", NativeHistogramBucketFactor: 1.1})
		for _, o := range obs {
			h.Observe(o)
		}
		if err := push.New(p.url, "f").Collector(h).Add(); err != nil {
			t.Fatal(err)
		}
	}
	prom.waitValue(t, `histogram_count(rpc_seconds{job="f"})`, 5)
	prom.waitValue(t, `histogram_sum(rpc_seconds{job="f"})`, 0.05+0.2+3+0.4+7)
	prom.waitValue(t, `histogram_fraction(0, 1, rpc_seconds{job="f"})`, 3.0/5)
}

// TestReceiverOutageLosesNoWindow: a receiver that fails for 30 s and
// recovers ends up with every window.
func TestReceiverOutageLosesNoWindow(t *testing.T) {
	t.Parallel() // mostly waiting out the outage
	bin := buildBinary(t)
	rec := &rwRecorder{}
	srv := newLoopbackServer(t, rec)
	cfg := writeConfig(t, fmt.Sprintf(`
self_metrics: {forward: false}
remote_write:
  - url: %s/api/v1/write
    queue_config: {min_backoff: 100ms, max_backoff: 2s, capacity: 100000}
`, srv))
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")
	pushText(t, p, "POST", "/metrics/job/o", "# TYPE up_total counter\nup_total 1\n")
	time.Sleep(2 * time.Second)
	rec.mu.Lock()
	rec.failUntil = time.Now().Add(30 * time.Second)
	rec.mu.Unlock()
	outageStart := time.Now()
	for time.Since(outageStart) < 33*time.Second {
		pushText(t, p, "POST", "/metrics/job/o", "# TYPE up_total counter\nup_total 1\n")
		time.Sleep(time.Second)
	}
	time.Sleep(5 * time.Second) // backoff is at most 2 s
	wins := rec.windows("up_total")
	if len(wins) < 35 {
		t.Fatalf("only %d windows arrived", len(wins))
	}
	for i := 1; i < len(wins); i++ {
		if wins[i]-wins[i-1] != 1000 {
			t.Fatalf("window gap between %d and %d (of %d windows)", wins[i-1], wins[i], len(wins))
		}
	}
	rec.mu.Lock()
	fails := rec.failures
	rec.mu.Unlock()
	if fails == 0 {
		t.Fatal("the receiver never failed; the test proved nothing")
	}
}

// TestRemoteWrite2Output decodes Sluice's Remote-Write 2.0 output.
func TestRemoteWrite2Output(t *testing.T) {
	bin := buildBinary(t)
	rec := &rwRecorder{}
	srv := newLoopbackServer(t, rec)
	cfg := writeConfig(t, fmt.Sprintf(`
self_metrics: {forward: false}
remote_write:
  - url: %s/api/v1/write
    protobuf_message: io.prometheus.write.v2.Request
`, srv))
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")
	pushText(t, p, "POST", "/metrics/job/v2", "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 2\n")
	pushText(t, p, "POST", "/metrics/job/v2", "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 3\n")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rec.mu.Lock()
		for i, req := range rec.v2 {
			h := rec.headers[i]
			for _, ts := range req.Timeseries {
				ls := map[string]string{}
				for j := 0; j+1 < len(ts.LabelsRefs); j += 2 {
					ls[req.Symbols[ts.LabelsRefs[j]]] = req.Symbols[ts.LabelsRefs[j+1]]
				}
				if ls["__name__"] != "jobs_total" || len(ts.Samples) != 1 || ts.Samples[0].Value != 5 {
					continue
				}
				rec.mu.Unlock()
				if ls["job"] != "v2" || req.Symbols[0] != "" || ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_COUNTER ||
					req.Symbols[ts.Metadata.HelpRef] != "Jobs done." || ts.Samples[0].Timestamp%1000 != 0 {
					t.Fatalf("RW2 series: labels %v metadata %+v sample %+v", ls, ts.Metadata, ts.Samples[0])
				}
				if h.Get("X-Prometheus-Remote-Write-Version") != "2.0.0" || h.Get("Content-Encoding") != "snappy" ||
					!strings.HasPrefix(h.Get("User-Agent"), "Sluice/") || len(h.Get("User-Agent")) == len("Sluice/") {
					t.Fatalf("RW2 headers: %v", h)
				}
				return
			}
		}
		rec.mu.Unlock()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("no RW2 request with jobs_total 5 arrived")
}

// newLoopbackServer serves h on 127.0.0.1 until the test ends.
func newLoopbackServer(t *testing.T, h http.Handler) string {
	t.Helper()
	addr := freePort(t)
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + addr + "/"); err == nil {
			r.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

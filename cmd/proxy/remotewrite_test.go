package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// scrapeTarget is a loopback scrape target: rwt_scrapes_total is the
// number of the scrape being served (1, 2, ...), and it records when each
// was served, so that what arrives downstream can be checked against what
// it exposed.
type scrapeTarget struct {
	reg     *prometheus.Registry
	scrapes prometheus.Counter

	mu    sync.Mutex // serialises scrapes; guards times
	times []time.Time
}

func newScrapeTarget() *scrapeTarget {
	s := &scrapeTarget{reg: prometheus.NewRegistry()}
	s.scrapes = prometheus.NewCounter(prometheus.CounterOpts{Name: "rwt_scrapes_total", Help: "Scrapes served."})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "rwt_temperature_celsius", Help: "Temperature."})
	g.Set(21.5)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rwt_latency_seconds", Help: "Latency.", Buckets: []float64{0.1, 0.5, 1}})
	for _, v := range []float64{0.05, 0.3, 0.7, 2} {
		h.Observe(v)
	}
	s.reg.MustRegister(s.scrapes, g, h)
	return s
}

func (s *scrapeTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		return // readiness probes are not scrapes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scrapes.Inc()
	s.times = append(s.times, time.Now())
	promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (s *scrapeTarget) served() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times...)
}

// waitScrapes waits until the target served n scrapes.
func (s *scrapeTarget) waitScrapes(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(s.served()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d scrapes in %s", len(s.served()), timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkScrapeCounter checks that the points of rwt_scrapes_total are the
// target's scrapes 1..n, each once, in order, stamped within a second of
// when the target served it, and returns n.
func checkScrapeCounter(t *testing.T, where string, points [][2]float64, served []time.Time) int {
	t.Helper()
	if len(points) == 0 {
		t.Fatalf("%s: no rwt_scrapes_total samples", where)
	}
	for i, p := range points {
		if p[1] != float64(i+1) {
			t.Fatalf("%s: sample %d of rwt_scrapes_total is %v, want %d (each scrape once, in order): %v", where, i, p[1], i+1, points)
		}
		at := time.UnixMilli(int64(math.Round(p[0] * 1000)))
		if d := at.Sub(served[i]); d < -time.Second || d > time.Second {
			t.Fatalf("%s: scrape %d stamped %s, served at %s", where, i+1, at.Format(time.RFC3339Nano), served[i].Format(time.RFC3339Nano))
		}
	}
	return len(points)
}

// seriesPoints maps each series (its labels, printed) to its points.
func seriesPoints(res []promSample) map[string][][2]float64 {
	out := map[string][][2]float64{}
	for _, r := range res {
		keys := make([]string, 0, len(r.labels))
		for k, v := range r.labels {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		out[strings.Join(keys, ",")] = r.points
	}
	return out
}

// samePoints compares points of one series: equal timestamps (ms) and
// values (VictoriaMetrics stores floats as decimals: 1e-12 relative).
func samePoints(a, b [][2]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Round(a[i][0]*1000) != math.Round(b[i][0]*1000) {
			return false
		}
		if a[i][1] != b[i][1] && math.Abs(a[i][1]-b[i][1]) > 1e-12*math.Max(math.Abs(a[i][1]), math.Abs(b[i][1])) {
			return false
		}
	}
	return true
}

func sluiceWithVM(t *testing.T, bin string, vm *store) *sluiceProc {
	t.Helper()
	cfg := writeConfig(t, fmt.Sprintf(`
self_metrics: {forward: false}
remote_write:
  - url: %s
    name: vm
    queue_config: {min_backoff: 100ms, max_backoff: 1s}
`, vm.writeURL))
	return startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")
}

// TestRemoteWriteFromPrometheus: a real Prometheus scrapes a loopback
// target and remote_writes to the real Sluice, which relays to a real
// VictoriaMetrics. Every series of the job arrives at VictoriaMetrics with
// the very samples (timestamps and values) Prometheus holds itself, and the
// target's scrape counter arrives scrape by scrape.
func TestRemoteWriteFromPrometheus(t *testing.T) {
	t.Parallel() // mostly waits for scrapes
	bin := buildBinary(t)
	promBin := needBinary(t, "prometheus")
	vm := startVictoriaMetrics(t)
	p := sluiceWithVM(t, bin, vm)
	target := newScrapeTarget()
	targetURL := newLoopbackServer(t, target)

	addr := freePort(t)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
global:
  scrape_interval: 1s
  evaluation_interval: 1h
scrape_configs:
  - job_name: rwtest
    static_configs: [{targets: [%q]}]
remote_write:
  - url: %s/api/v1/write
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}
    metadata_config: {send_interval: 2s}
`, strings.TrimPrefix(targetURL, "http://"), p.url)), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "http://"+addr+"/-/ready", promBin,
		"--config.file="+cfg, "--storage.tsdb.path="+t.TempDir(), "--web.listen-address="+addr, "--log.level=warn")
	prom := &store{name: "prometheus", base: "http://" + addr, flush: func() {}}

	target.waitScrapes(t, 6, 30*time.Second)
	// Compare a window that is complete at Prometheus: scrapes are done
	// up to 2 s ago.
	at := time.Now().Add(-2 * time.Second)
	const q = `{job="rwtest"}[1m]`
	want := seriesPoints(prom.query(t, q, at))
	for _, name := range []string{"rwt_scrapes_total", "rwt_temperature_celsius", "rwt_latency_seconds_bucket", "up", "scrape_duration_seconds"} {
		found := false
		for k := range want {
			found = found || strings.Contains(k, "__name__="+name+",")
		}
		if !found {
			t.Fatalf("Prometheus holds no %s series: %v", name, want)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var got map[string][][2]float64
	for {
		got = seriesPoints(vm.query(t, q, at))
		same := len(got) == len(want)
		for k, w := range want {
			same = same && samePoints(got[k], w)
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			for k, w := range want {
				if !samePoints(got[k], w) {
					t.Errorf("series %s:\n  Prometheus %v\n  VictoriaMetrics %v", k, w, got[k])
				}
			}
			t.Fatalf("VictoriaMetrics holds %d series of the job, Prometheus %d, and they differ (above)", len(got), len(want))
		}
		time.Sleep(500 * time.Millisecond)
	}
	for k, pts := range got {
		if strings.Contains(k, "__name__=rwt_scrapes_total,") {
			n := checkScrapeCounter(t, "VictoriaMetrics (from Prometheus)", pts, target.served())
			t.Logf("%d series of the job identical at Prometheus and VictoriaMetrics; %d scrapes checked", len(got), n)
		}
	}
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, `sluice_remote_write_samples_total{path="relay",version="1.0"}`) ||
		!strings.Contains(body, `sluice_remote_write_requests_total{code="204",version="1.0"}`) {
		t.Fatalf("remote_write self metrics:\n%s", grepLines(body, "sluice_remote_write"))
	}
}

// TestRemoteWriteFromVMAgent: the Debian vmagent scrapes a loopback target
// and remote_writes to Sluice, which relays to VictoriaMetrics: every
// scrape arrives once, in order, stamped when it was served, with the
// target's values.
func TestRemoteWriteFromVMAgent(t *testing.T) {
	t.Parallel() // mostly waits for scrapes
	bin := buildBinary(t)
	agent := needBinary(t, "vmagent")
	vm := startVictoriaMetrics(t)
	p := sluiceWithVM(t, bin, vm)
	target := newScrapeTarget()
	targetURL := newLoopbackServer(t, target)

	scrapeCfg := filepath.Join(t.TempDir(), "scrape.yml")
	if err := os.WriteFile(scrapeCfg, []byte(fmt.Sprintf(`
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: vmagent_rw
    static_configs: [{targets: [%q]}]
`, strings.TrimPrefix(targetURL, "http://"))), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	startProcess(t, "http://"+addr+"/health", agent,
		"-promscrape.config="+scrapeCfg, "-remoteWrite.url="+p.url+"/api/v1/write", "-remoteWrite.tmpDataPath="+t.TempDir(),
		"-httpListenAddr="+addr, "-remoteWrite.flushInterval=500ms", "-loggerLevel=ERROR")

	target.waitScrapes(t, 6, 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := vm.query(t, `rwt_scrapes_total{job="vmagent_rw"}[5m]`, time.Time{})
		if len(res) == 1 && len(res[0].points) >= 5 {
			n := checkScrapeCounter(t, "VictoriaMetrics (from vmagent)", res[0].points, target.served())
			t.Logf("%d scrapes arrived once each, in order", n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rwt_scrapes_total at VictoriaMetrics: %+v", res)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for q, want := range map[string]float64{
		`rwt_temperature_celsius{job="vmagent_rw"}`:              21.5,
		`rwt_latency_seconds_bucket{job="vmagent_rw",le="0.5"}`:  2,
		`rwt_latency_seconds_bucket{job="vmagent_rw",le="+Inf"}`: 4,
		`rwt_latency_seconds_sum{job="vmagent_rw"}`:              3.05,
	} {
		res := vm.query(t, q+"[5m]", time.Time{})
		if len(res) != 1 || len(res[0].points) < 5 {
			t.Fatalf("%s: %+v", q, res)
		}
		for _, pt := range res[0].points {
			if math.Abs(pt[1]-want) > 1e-9 {
				t.Fatalf("%s: %v, the target exposes %v", q, pt, want)
			}
		}
	}
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, `sluice_remote_write_samples_total{path="relay",version="1.0"}`) {
		t.Fatalf("remote_write self metrics:\n%s", grepLines(body, "sluice_remote_write"))
	}
}

// postRW sends a snappy-compressed protobuf to /api/v1/write.
func postRW(t *testing.T, base, contentType string, pb []byte) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/api/v1/write", strings.NewReader(string(snappy.Encode(nil, pb))))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Content-Encoding", "snappy")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, r.Header, string(b)
}

func marshal(t *testing.T, m interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRemoteWriteClearModeToVictoriaMetrics: hand-built Remote-Write 1.0
// and 2.0 requests with clear_mode series through the real binary are
// aggregated as pushes are; a relayed series keeps its own timestamp.
func TestRemoteWriteClearModeToVictoriaMetrics(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	vm := startVictoriaMetrics(t)
	p := sluiceWithVM(t, bin, vm)
	for i := range 3 {
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "clear_mode", Value: "sum"}, {Name: "job", Value: "f"}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli() - int64(i)}},
		}}}
		if code, _, body := postRW(t, p.url, "application/x-protobuf", marshal(t, req)); code != 204 {
			t.Fatalf("RW1 %d: %d %s", i, code, body)
		}
	}
	relayedAt := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
	for _, v := range []float64{2, 5} {
		st := writev2.NewSymbolTable()
		req := &writev2.Request{Timeseries: []writev2.TimeSeries{
			{
				LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("jobs_done"), st.Symbolize("clear_mode"), st.Symbolize("sum"),
					st.Symbolize("instance"), st.Symbolize("w1"), st.Symbolize("job"), st.Symbolize("g")},
				Samples:  []writev2.Sample{{Value: v, Timestamp: time.Now().UnixMilli()}},
				Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Jobs done.")},
			},
			{
				LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("relayed_gauge"), st.Symbolize("job"), st.Symbolize("h")},
				Samples:    []writev2.Sample{{Value: v, Timestamp: relayedAt.UnixMilli() + int64(v)}},
				Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE},
			},
		}}
		req.Symbols = st.Symbols()
		code, h, body := postRW(t, p.url, "application/x-protobuf;proto=io.prometheus.write.v2.Request", marshal(t, req))
		if code != 204 || h.Get("X-Prometheus-Remote-Write-Samples-Written") != "2" || h.Get("X-Prometheus-Remote-Write-Histograms-Written") != "0" ||
			h.Get("X-Prometheus-Remote-Write-Exemplars-Written") != "0" {
			t.Fatalf("RW2: %d %s %v", code, body, h)
		}
	}
	vm.waitValue(t, `req_total{job="f",instance=""}`, 3)
	vm.waitValue(t, `jobs_done{job="g",instance="w1"}`, 7)
	res := vm.query(t, `relayed_gauge{job="h"}[1m]`, time.Time{})
	if len(res) != 1 || len(res[0].points) != 2 || int64(math.Round(res[0].points[0][0]*1000)) != relayedAt.UnixMilli()+2 || res[0].points[1][1] != 5 {
		t.Fatalf("relayed series with its own timestamps: %+v (want %d)", res, relayedAt.UnixMilli()+2)
	}
	// Bad input: 400 naming the problem, RW2 headers on errors too.
	code, h, body := postRW(t, p.url, "application/x-protobuf;proto=io.prometheus.write.v2.Request", []byte{0x22, 0x05, 'x'})
	if code != 400 || !strings.Contains(body, "decode Remote-Write 2.0 body") || h.Get("X-Prometheus-Remote-Write-Samples-Written") != "0" {
		t.Fatalf("truncated RW2: %d %q %v", code, body, h)
	}
}

// exportSamples returns VictoriaMetrics' raw samples of the series
// matching match, keyed by the label i.
func exportSamples(t *testing.T, base, match string) map[string][]int64 {
	t.Helper()
	if r, err := http.Get(base + "/internal/force_flush"); err == nil {
		r.Body.Close()
	}
	r, err := http.Get(base + "/api/v1/export?" + url.Values{"match[]": {match}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	out := map[string][]int64{}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Metric     map[string]string `json:"metric"`
			Timestamps []int64           `json:"timestamps"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export: %v: %s", err, sc.Text())
		}
		out[line.Metric["i"]] = append(out[line.Metric["i"]], line.Timestamps...)
	}
	return out
}

// TestRemoteWriteRelaySurvivesKill9: relayed samples acknowledged with a
// 2xx survive a kill -9 right after the answer, while the target is down:
// once through the forward backlog, once (the backlog deleted as a power
// loss could, since it is not fsynced) through the write-ahead log alone.
func TestRemoteWriteRelaySurvivesKill9(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	vmBin := needBinary(t, "victoria-metrics")
	vm := &vmProc{bin: vmBin, addr: freePort(t), data: t.TempDir()}
	t.Cleanup(vm.stop)
	walDir := t.TempDir()
	addr := freePort(t)
	cfg := writeConfig(t, fmt.Sprintf(`
self_metrics: {forward: false}
remote_write:
  - url: http://%s/api/v1/write
    name: vm
    queue_config: {min_backoff: 100ms, max_backoff: 500ms}
`, vm.addr))
	// Checkpoints every 15 s: none runs between the answers and the kill.
	args := []string{"--wal.dir=" + walDir, "--config.file=" + cfg, "--aggregation.interval=15s"}
	base := time.Now().Add(-time.Minute).UnixMilli()
	sent := map[string][]int64{}
	for round, loseBacklog := range []bool{false, true} {
		p := startSluiceOn(t, bin, addr, args...)
		t.Cleanup(func() {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		})
		for k := range 5 {
			i := fmt.Sprintf("%d-%d", round, k)
			ts := base + int64(round*100+k)
			req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
				Labels:  []prompb.Label{{Name: "__name__", Value: "kill_relay"}, {Name: "i", Value: i}, {Name: "job", Value: "k"}},
				Samples: []prompb.Sample{{Value: float64(k), Timestamp: ts}},
			}}}
			if code, _, body := postRW(t, p.url, "application/x-protobuf", marshal(t, req)); code != 204 {
				t.Fatalf("relay %s: %d %s", i, code, body)
			}
			sent[i] = []int64{ts}
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if loseBacklog {
			if err := os.RemoveAll(filepath.Join(walDir, "queues")); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := startSluiceOn(t, bin, addr, args...)
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	vm.start(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := exportSamples(t, "http://"+vm.addr, `{__name__="kill_relay"}`)
		missing := 0
		for i, ts := range sent {
			found := false
			for _, g := range got[i] {
				found = found || g == ts[0]
			}
			if !found {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("all %d acknowledged relays arrived after two kill -9", len(sent))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged relays missing at VictoriaMetrics: got %v\nlog:\n%s", missing, len(sent), got, lastLines(p.stderr.String(), 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

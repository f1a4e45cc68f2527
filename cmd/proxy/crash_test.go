package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// TestCrashRecoveryTotals pushes counter deltas from concurrent clients,
// kills Sluice with SIGKILL at 20 random moments (with 1 s windows and
// checkpoints, some land in a flush or a checkpoint), restarts it on the
// same WAL directory each time, and checks the total that reaches
// VictoriaMetrics: every acknowledged delta is counted, none twice. Pushes
// cut off by the kill have an unknown outcome (the reply was lost), so
// the total may include some of them, never more.
func TestCrashRecoveryTotals(t *testing.T) {
	bin := buildBinary(t)
	vm := startVictoriaMetrics(t)
	walDir := t.TempDir()
	addr := freePort(t)
	args := []string{"--wal.dir=" + walDir, "--aggregation.interval=1s", "--remote-write.url=" + vm.writeURL}
	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	var acked, unknown atomic.Int64
	const kills, clients = 20, 4
	client := &http.Client{Timeout: 5 * time.Second}
	for round := 0; round < kills; round++ {
		p := startSluiceOn(t, bin, addr, args...)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r, err := client.Post(p.url+"/metrics/job/crash", "text/plain",
						strings.NewReader("# TYPE crash_total counter\ncrash_total 1\n"))
					if err != nil {
						if !errors.Is(err, syscall.ECONNREFUSED) {
							unknown.Add(1) // the kill cut the request or its reply
						}
						continue
					}
					_, _ = io.Copy(io.Discard, r.Body)
					r.Body.Close()
					switch {
					case r.StatusCode == 200:
						acked.Add(1)
					case r.StatusCode >= 500:
						// 503 while replaying: not applied, by contract.
					default:
						t.Errorf("push: status %d", r.StatusCode)
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rng.IntN(1500)) * time.Millisecond)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		close(stop)
		wg.Wait()
	}
	// A last, clean start: recovery, then a window with the final total.
	p := startSluiceOn(t, bin, addr, args...)
	defer func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}()
	lo, hi := float64(acked.Load()), float64(acked.Load()+unknown.Load())
	if lo < 100 {
		t.Fatalf("only %v pushes were acknowledged; the test proved little", lo)
	}
	deadline := time.Now().Add(30 * time.Second)
	var got float64
	for time.Now().Before(deadline) {
		res := vm.query(t, `crash_total{job="crash"}`, time.Time{})
		if len(res) == 1 {
			got = res[0].value
			if got >= lo && got <= hi {
				t.Logf("%d kills: acknowledged %v, unknown outcome %v, total at VictoriaMetrics %v", kills, lo, hi-lo, got)
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("total at VictoriaMetrics %v, want between %v (acknowledged) and %v (plus unknown outcomes)\nlast log:\n%s",
		got, lo, hi, lastLines(p.stderr.String(), 20))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestEveryBodyFormatSurvivesKill9: the write-ahead log records push
// bodies as they came. Pushes in every format Sluice takes (client_golang's
// default protobuf, its text format, OpenMetrics, gzip), in both API
// semantics' methods, are all back after kill -9 and a restart on the same
// WAL directory, with the same values, and the log says no record was
// skipped.
func TestEveryBodyFormatSurvivesKill9(t *testing.T) {
	bin := buildBinary(t)
	walDir := t.TempDir()
	addr := freePort(t)
	p := startSluiceOn(t, bin, addr, "--wal.dir="+walDir)
	first := p
	t.Cleanup(func() { // if the test ends before the kill below
		select {
		case <-first.done:
		default:
			_ = first.cmd.Process.Kill()
			<-first.done
		}
	})

	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "jobs_total", Help: "Jobs.", ConstLabels: prometheus.Labels{"clear_mode": "sum"}})
	counter.Add(2)
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_depth", Help: "Depth."})
	gauge.Set(7)
	for _, pusher := range []*push.Pusher{
		push.New(p.url, "proto").Collector(counter), // protobuf, the client's default
		push.New(p.url, "proto").Collector(counter),
		push.New(p.url, "text").Format(expfmt.NewFormat(expfmt.TypeTextPlain)).Collector(gauge),
	} {
		if err := pusher.Add(); err != nil {
			t.Fatalf("push: %v", err)
		}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("lat{clear_mode=\"mean1m\"} 100\n"))
	_ = zw.Close()
	raw := []struct {
		method, path, contentType, encoding string
		body                                []byte
	}{
		{"PUT", "/metrics/job/om", "application/openmetrics-text; version=1.0.0", "", []byte("# TYPE build info\nbuild_info{version=\"1.2\"} 1\n# EOF\n")},
		{"POST", "/metrics/job/gz", "text/plain", "gzip", gz.Bytes()},
		{"POST", "/metrics/job/gz", "text/plain", "", []byte("lat{clear_mode=\"mean1m\"} 200\n")},
	}
	for _, r := range raw {
		req, err := http.NewRequest(r.method, p.url+r.path, bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", r.contentType)
		if r.encoding != "" {
			req.Header.Set("Content-Encoding", r.encoding)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", r.method, r.path, resp.StatusCode, b)
		}
	}
	want := []string{
		`jobs_total{instance="",job="proto"} 4`,
		`queue_depth{instance="",job="text"} 7`,
		`build_info{instance="",job="om",version="1.2"} 1`,
		`lat{instance="",job="gz"} 150`,
	}
	check := func(when string, p *sluiceProc) {
		t.Helper()
		_, body := p.get(t, "/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: GET /metrics lacks %q", when, w)
			}
		}
	}
	check("before the kill", p)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done

	p = startSluiceOn(t, bin, addr, "--wal.dir="+walDir)
	restarted := p
	t.Cleanup(func() { restarted.stop(t) }) // if a check ends the test early
	check("after kill -9 and a restart", p)
	p.stop(t) // before reading its log, which it writes until it exits
	if log := p.stderr.String(); strings.Contains(log, "skipped a write-ahead log record") {
		t.Errorf("recovery skipped records:\n%s", lastLines(log, 20))
	}
}

// TestShutdownAnswersPushesByTheirOutcome: pushes in flight when Sluice
// gets SIGTERM are answered by what happened to them. They used to get
// 503 (the server's shutdown cancelled their wait for the log) although
// they were applied and durable, so a client that retried a 503 counted
// them twice. After each of five SIGTERMs under load and a restart on
// the same WAL directory, the total is every acknowledged push and at most
// the ones whose answer was lost, never a refused one.
func TestShutdownAnswersPushesByTheirOutcome(t *testing.T) {
	bin := buildBinary(t)
	walDir := t.TempDir()
	addr := freePort(t)
	var acked, unknown, refused atomic.Int64
	const rounds, clients = 5, 8
	for round := 0; round < rounds; round++ {
		p := startSluiceOn(t, bin, addr, "--wal.dir="+walDir)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
				defer client.CloseIdleConnections()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r, err := client.Post(p.url+"/metrics/job/term", "text/plain",
						strings.NewReader("# TYPE term_total counter\nterm_total{clear_mode=\"sum\"} 1\n"))
					if err != nil {
						if !errors.Is(err, syscall.ECONNREFUSED) {
							unknown.Add(1)
						}
						continue
					}
					_, _ = io.Copy(io.Discard, r.Body)
					r.Body.Close()
					switch {
					case r.StatusCode == 200:
						acked.Add(1)
					case r.StatusCode == 503:
						refused.Add(1)
					default:
						t.Errorf("push: status %d", r.StatusCode)
					}
				}
			}()
		}
		time.Sleep(400 * time.Millisecond)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatal("no exit within 30 s of SIGTERM")
		}
		close(stop)
		wg.Wait()
	}
	p := startSluiceOn(t, bin, addr, "--wal.dir="+walDir)
	defer p.stop(t)
	_, body := p.get(t, "/metrics")
	var got float64
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, `term_total{instance="",job="term"} `); ok {
			got, _ = strconv.ParseFloat(v, 64)
		}
	}
	lo, hi := float64(acked.Load()), float64(acked.Load()+unknown.Load())
	if lo < 100 {
		t.Fatalf("only %v pushes were acknowledged; the test proved little", lo)
	}
	if got < lo || got > hi {
		t.Fatalf("total %v after %d SIGTERMs: want between %v (acknowledged) and %v (plus lost answers); %d pushes were refused with 503",
			got, rounds, lo, hi, refused.Load())
	}
	t.Logf("acknowledged %v, answers lost %v, refused %d, total %v", lo, hi-lo, refused.Load(), got)
}

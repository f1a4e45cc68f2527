package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// sluiceProc is the real binary running on a loopback port.
type sluiceProc struct {
	url     string
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// buildBinary compiles cmd/proxy once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startSluice runs the binary with args and waits until /-/ready answers.
// The process is stopped (SIGTERM, then SIGKILL) when the test ends.
func startSluice(t *testing.T, bin string, args ...string) *sluiceProc {
	t.Helper()
	p := startSluiceOn(t, bin, freePort(t), append([]string{"--wal.dir=" + t.TempDir()}, args...)...)
	t.Cleanup(func() { p.stop(t) })
	return p
}

// startSluiceOn runs the binary on a given address and WAL directory and
// waits until it is ready (recovery done). It does not register a cleanup:
// the crash test kills it itself.
func startSluiceOn(t *testing.T, bin, addr string, args ...string) *sluiceProc {
	t.Helper()
	return startCmd(t, exec.Command(bin, append([]string{"--web.listen-address=" + addr}, args...)...), addr)
}

// startCmd starts cmd, a Sluice listening on addr, and waits until it is
// ready. It does not register a cleanup.
func startCmd(t *testing.T, cmd *exec.Cmd, addr string) *sluiceProc {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sluiceProc{url: "http://" + addr, cmd: cmd, stderr: &stderr, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(p.url + "/-/ready"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("sluice exited during start-up: %v\n%s", p.waitErr, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = cmd.Process.Kill()
	<-p.done
	t.Fatalf("sluice not ready within 20s:\n%s", stderr.String())
	return nil
}

func (p *sluiceProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			t.Errorf("sluice exited with %v after SIGTERM; stderr:\n%s", p.waitErr, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("sluice did not stop within 20s of SIGTERM (drain timeout 10s)")
	}
}

// exited waits up to d for the process to exit on its own.
func (p *sluiceProc) exited(d time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	case <-time.After(d):
		return false, nil
	}
}

func (p *sluiceProc) get(t *testing.T, path string) (int, string) {
	t.Helper()
	r, err := http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

func TestClientGolangPushAgainstBinary(t *testing.T) {
	bin := buildBinary(t)
	p := startSluice(t, bin)

	newCounter := func() prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "req_total", Help: "Requests.", ConstLabels: prometheus.Labels{"fn": "a"}})
		c.Inc()
		return c
	}
	// Three function invocations, each adding its own delta of 1 with the
	// Go client's default protobuf format.
	for i := 0; i < 3; i++ {
		if err := push.New(p.url, "f").Collector(newCounter()).Add(); err != nil {
			t.Fatalf("push.Add: %v", err)
		}
	}
	// Text format and PUT (Push) too.
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "queue_depth", Help: "Depth."})
	g.Set(7)
	if err := push.New(p.url, "f").Grouping("shard", "x/y").Format(expfmt.NewFormat(expfmt.TypeTextPlain)).Collector(g).Push(); err != nil {
		t.Fatalf("push.Push text: %v", err)
	}
	g.Set(4)
	if err := push.New(p.url, "f").Grouping("shard", "x/y").Collector(g).Push(); err != nil {
		t.Fatalf("push.Push: %v", err)
	}
	// A windowed mode through the raw HTTP API.
	for _, v := range []string{"100", "200"} {
		r, err := http.Post(p.url+"/metrics/job/f", "text/plain", strings.NewReader(`lat{clear_mode="mean1m"} `+v+"\n"))
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("raw push: %v %v", err, r)
		}
		r.Body.Close()
	}

	_, body := p.get(t, "/metrics")
	for _, want := range []string{
		`req_total{fn="a",instance="",job="f"} 3`,
		`queue_depth{instance="",job="f",shard="x/y"} 4`,
		`lat{instance="",job="f"} 150`,
		`push_time_seconds{instance="",job="f"}`,
		`push_failure_time_seconds{instance="",job="f",shard="x/y"} 0`,
		`sluice_samples_ingested_total 7`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}

	// Delete: the Go client requires exactly 202.
	if err := push.New(p.url, "f").Grouping("shard", "x/y").Delete(); err != nil {
		t.Fatalf("push.Delete: %v", err)
	}
	_, body = p.get(t, "/metrics")
	if strings.Contains(body, "queue_depth") || !strings.Contains(body, `req_total{fn="a",instance="",job="f"} 3`) {
		t.Fatalf("after Delete of {job=f,shard=x/y}, queue_depth must be gone and req_total kept:\n%s", body)
	}

	// A rejected push gets a 400 naming the problem; the client surfaces it.
	bad := prometheus.NewCounter(prometheus.CounterOpts{Name: "req_total", Help: "Requests.", ConstLabels: prometheus.Labels{"fn": "a", "clear_mode": "avg"}})
	err := push.New(p.url, "f").Collector(bad).Add()
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `unknown clear_mode "avg"`) {
		t.Fatalf("want a 400 naming the unknown clear_mode, got %v", err)
	}

	// Oversized body: 413 on the headers alone, naming the limit, before
	// the body is read (so the client must not be made to send it).
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /metrics/job/f HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", 17<<20)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(io.LimitReader(conn, 4096))
	if len(resp) == 0 {
		t.Fatalf("no answer to a 17 MiB Content-Length: %v", err)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.1 413") || !strings.Contains(string(resp), "limits.max_body_bytes") {
		t.Fatalf("17 MiB body: want 413 naming limits.max_body_bytes, got:\n%s", resp)
	}
}

func TestConfigReloadKeepsOldConfigOnError(t *testing.T) {
	bin := buildBinary(t)
	cfgFile := filepath.Join(t.TempDir(), "sluice.yml")
	write := func(s string) {
		if err := os.WriteFile(cfgFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("aggregation:\n  default_modes:\n    gauge: sum\n")
	p := startSluice(t, bin, "--config.file="+cfgFile)
	post := func(body string) {
		r, err := http.Post(p.url+"/metrics/job/r", "text/plain", strings.NewReader(body))
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("push: %v %v", err, r)
		}
		r.Body.Close()
	}
	post("# TYPE g gauge\ng 1\n")
	post("# TYPE g gauge\ng 1\n")
	if _, body := p.get(t, "/metrics"); !strings.Contains(body, `g{instance="",job="r"} 2`) {
		t.Fatalf("gauge default sum from the config file not applied:\n%s", body)
	}

	write("aggregation:\n  default_modes:\n    gauge: averge\n")
	r, err := http.Post(p.url+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 500 || !strings.Contains(string(b), `unknown clear_mode "averge"`) {
		t.Fatalf("bad reload: %d %s", r.StatusCode, b)
	}
	post("# TYPE h gauge\nh 1\n")
	post("# TYPE h gauge\nh 1\n")
	if _, body := p.get(t, "/metrics"); !strings.Contains(body, `h{instance="",job="r"} 2`) || !strings.Contains(body, "sluice_config_last_reload_successful 0") {
		t.Fatalf("the old config must stay in force after a bad reload:\n%s", body)
	}

	// SIGHUP reloads a fixed file.
	write("aggregation:\n  default_modes:\n    gauge: replace\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if _, body := p.get(t, "/metrics"); strings.Contains(body, "sluice_config_last_reload_successful 1") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	post("# TYPE k gauge\nk 5\n")
	post("# TYPE k gauge\nk 6\n")
	if _, body := p.get(t, "/metrics"); !strings.Contains(body, `k{instance="",job="r"} 6`) {
		t.Fatalf("SIGHUP reload not applied:\n%s", body)
	}

	// What changes only on restart is compared with what the process
	// started with, reload after reload.
	reload := func() {
		t.Helper()
		r, err := http.Post(p.url+"/-/reload", "", nil)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("reload: %v %v", err, r)
		}
		r.Body.Close()
	}
	write("limits:\n  max_body_bytes: 1000000\nweb:\n  http_server_config:\n    read_timeout: 7s\nwal:\n  fsync: interval\n")
	reload()
	write("limits:\n  max_body_bytes: 2000000\nweb:\n  http_server_config:\n    read_timeout: 8s\nwal:\n  segment_size: 2097152\n")
	reload()
	p.stop(t)
	logs := p.stderr.String()
	if n := strings.Count(logs, "limits.max_body_bytes changes only on restart"); n != 2 || strings.Contains(logs, "running=1000000") {
		t.Errorf("max_body_bytes warnings: %d, want 2, each with the running value:\n%s", n, logs)
	}
	if n := strings.Count(logs, "web.http_server_config changes only on restart"); n != 2 || !strings.Contains(logs, "running=\"{ReadTimeout:30s") || !strings.Contains(logs, "file=\"{ReadTimeout:8s") {
		t.Errorf("http_server_config warnings: %d, want 2, each with the running and the file's value:\n%s", n, logs)
	}
	if n := strings.Count(logs, "wal settings change only on restart"); n != 2 {
		t.Errorf("wal warnings: %d, want 2:\n%s", n, logs)
	}
}

func TestNoTargetSaysNothingIsForwarded(t *testing.T) {
	bin := buildBinary(t)
	p := startSluice(t, bin)
	p.stop(t)
	if !strings.Contains(p.stderr.String(), "nothing is forwarded") {
		t.Fatalf("with no target Sluice must say nothing is forwarded; log:\n%s", p.stderr.String())
	}
}

func TestDefaultsStartAndQuit(t *testing.T) {
	bin := buildBinary(t)
	p := startSluice(t, bin, "--web.enable-lifecycle", "--forward.drain-timeout=1s", "--remote-write.url=http://127.0.0.1:1/api/v1/write?api_key=hunter2")
	if code, body := p.get(t, "/api/v1/status"); code != 200 || !strings.Contains(body, `"aggregation.interval":"15s"`) ||
		!strings.Contains(body, `"series.ttl":"24h0m0s"`) || strings.Contains(body, "hunter2") {
		t.Fatalf("status (must not show the api key): %d %s", code, body)
	}
	r, err := http.Post(p.url+"/-/quit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	ok, err := p.exited(10 * time.Second)
	if !ok || err != nil {
		t.Fatalf("sluice did not exit cleanly within 10s of /-/quit: exited %v, %v", ok, err)
	}
	if strings.Contains(p.stderr.String(), "hunter2") {
		t.Fatalf("the log shows the api key:\n%s", p.stderr.String())
	}
}

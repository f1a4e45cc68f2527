package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// vmProc is a VictoriaMetrics the test can stop and start again on the
// same port and data directory.
type vmProc struct {
	bin, addr, data string
	cmd             *exec.Cmd
	done            chan struct{}
}

func (v *vmProc) start(t *testing.T) {
	t.Helper()
	v.cmd = exec.Command(v.bin, "-storageDataPath="+v.data, "-httpListenAddr="+v.addr, "-retentionPeriod=100y",
		"-search.latencyOffset=0s", "-loggerLevel=ERROR")
	logf, _ := os.Create(filepath.Join(t.TempDir(), "vm.log"))
	v.cmd.Stdout, v.cmd.Stderr = logf, logf
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v.done = make(chan struct{})
	go func() { _ = v.cmd.Wait(); close(v.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + v.addr + "/health"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("victoria-metrics did not start")
}

func (v *vmProc) stop() {
	if v.cmd == nil {
		return
	}
	_ = v.cmd.Process.Signal(os.Interrupt)
	select {
	case <-v.done:
	case <-time.After(15 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.done
	}
	v.cmd = nil
}

// export returns the raw sample timestamps (ms) of a series.
func (v *vmProc) export(t *testing.T, match string) []int64 {
	t.Helper()
	if r, err := http.Get("http://" + v.addr + "/internal/force_flush"); err == nil {
		r.Body.Close()
	}
	r, err := http.Get("http://" + v.addr + "/api/v1/export?" + url.Values{"match[]": {match}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var ts []int64
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var line struct {
			Timestamps []int64 `json:"timestamps"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("export: %v", err)
		}
		ts = append(ts, line.Timestamps...)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// TestVictoriaMetricsOutage stops VictoriaMetrics for 30 s while pushes go
// on, starts it again, and expects every 1 s window to arrive. A second
// target into the same store has a backlog far too small for the outage:
// its oldest windows are coalesced, and its total is still exact.
func TestVictoriaMetricsOutage(t *testing.T) {
	t.Parallel() // mostly waiting out the outage
	bin := buildBinary(t)
	vm := &vmProc{bin: needBinary(t, "victoria-metrics"), addr: freePort(t), data: t.TempDir()}
	vm.start(t)
	defer vm.stop()
	cfg := writeConfig(t, fmt.Sprintf(`
self_metrics: {forward: false}
remote_write:
  - url: http://%s/api/v1/write
    queue_config: {min_backoff: 100ms, max_backoff: 2s}
  - url: http://%s/api/v1/write
    name: tiny
    write_relabel_configs:
      - {target_label: backlog, replacement: tiny}
    queue_config: {min_backoff: 100ms, max_backoff: 2s, max_backlog_bytes: 512, capacity: 1}
`, vm.addr, vm.addr))
	p := startSluice(t, bin, "--config.file="+cfg, "--aggregation.interval=1s")
	pushes := 0
	push := func() {
		pushText(t, p, "POST", "/metrics/job/outage", "# TYPE beat_total counter\nbeat_total 1\n")
		pushes++
	}
	push()
	time.Sleep(3 * time.Second)
	vm.stop()
	stopped := time.Now()
	notReady := ""
	for time.Since(stopped) < 30*time.Second {
		push()
		time.Sleep(500 * time.Millisecond)
		if code, body := p.get(t, "/-/ready"); code == 503 {
			notReady = body
		}
	}
	// SPEC 2: not ready while a queue is full (the tiny one coalesces).
	if !strings.Contains(notReady, "forward backlog of tiny is full") {
		t.Errorf("/-/ready during the outage: want 503 naming the full backlog, last 503 body %q", notReady)
	}
	vm.start(t)
	for i := 0; i < 6; i++ {
		push()
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // backoff is at most 2 s
	if code, body := p.get(t, "/-/ready"); code != 200 {
		t.Errorf("/-/ready once the backlog is sent: %d %s", code, body)
	}
	ts := vm.export(t, `beat_total{job="outage",backlog=""}`)
	if len(ts) < 36 {
		t.Fatalf("only %d windows arrived", len(ts))
	}
	for i := 1; i < len(ts); i++ {
		if ts[i]-ts[i-1] != 1000 {
			t.Fatalf("gap between windows %d and %d (%d windows in all)", ts[i-1], ts[i], len(ts))
		}
	}
	tiny := vm.export(t, `beat_total{job="outage",backlog="tiny"}`)
	res := (&store{name: "vm", base: "http://" + vm.addr, flush: func() {}}).query(t, `beat_total{job="outage",backlog="tiny"}`, time.Time{})
	if len(res) != 1 || res[0].value != float64(pushes) {
		t.Fatalf("tiny backlog: latest total %+v, want %d (every push)", res, pushes)
	}
	if len(tiny) >= len(ts) {
		t.Fatalf("tiny backlog: %d windows arrived, want fewer than %d (coalesced)", len(tiny), len(ts))
	}
	_, body := p.get(t, "/metrics")
	if !strings.Contains(body, `sluice_forward_samples_dropped_total{reason="coalesced",remote_name="tiny"}`) {
		t.Fatalf("coalescing not counted:\n%s", grepLines(body, "dropped"))
	}
	t.Logf("%d consecutive 1 s windows across a 30 s outage; the tiny backlog delivered %d windows and the exact total %d", len(ts), len(tiny), pushes)
}

// TestRestartWithinAWindowEmitsItsEndOnce: on SIGTERM Sluice emits the
// current window early, at its end T. Started again within that window, it
// used to emit T again with the pushes since, so VictoriaMetrics kept two
// values at T (and Prometheus refused the request as a duplicate sample).
// Now the restarted process emits the next window end first, with the
// totals: every timestamp once, and the last value every push.
func TestRestartWithinAWindowEmitsItsEndOnce(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	vm := &vmProc{bin: needBinary(t, "victoria-metrics"), addr: freePort(t), data: t.TempDir()}
	vm.start(t)
	defer vm.stop()
	walDir, addr := t.TempDir(), freePort(t)
	args := []string{"--wal.dir=" + walDir, "--aggregation.interval=5s", "--remote-write.url=http://" + vm.addr + "/api/v1/write"}
	// Start just after a window end, so that the restart fits in the window.
	time.Sleep(time.Until(time.Now().Truncate(5 * time.Second).Add(5*time.Second + 200*time.Millisecond)))
	p := startSluiceOn(t, bin, addr, args...)
	pushText(t, p, "POST", "/metrics/job/restart", "# TYPE r_total counter\nr_total 1\n")
	p.stop(t)
	end := time.Now().Truncate(5 * time.Second).Add(5 * time.Second)
	p = startSluiceOn(t, bin, addr, args...)
	defer p.stop(t)
	if time.Now().After(end) {
		t.Skip("the restart took longer than the window; nothing to check")
	}
	pushText(t, p, "POST", "/metrics/job/restart", "# TYPE r_total counter\nr_total 1\n")
	time.Sleep(time.Until(end.Add(5*time.Second + 2*time.Second)))
	ts := vm.export(t, `r_total{job="restart"}`)
	for i := 1; i < len(ts); i++ {
		if ts[i] == ts[i-1] {
			t.Fatalf("two samples at %d: %v", ts[i], ts)
		}
	}
	res := (&store{name: "vm", base: "http://" + vm.addr, flush: func() {}}).query(t, `r_total{job="restart"}`, time.Time{})
	if len(ts) < 2 || len(res) != 1 || res[0].value != 2 {
		t.Fatalf("timestamps %v, latest %+v: want the early window and the next one, the latest 2", ts, res)
	}
}

// TestEarlyWindowEnd: the window end recorded at a shutdown is trusted
// while it is at most the recorded interval ahead. One further ahead (the
// clock set back while Sluice was stopped) used to stop every window until
// then, Sluice's own metrics included; now it is ignored. A restart with a
// shorter --aggregation.interval within the recorded window emits no
// window before its end (a store refuses samples older than one it has),
// and the windows after it.
func TestEarlyWindowEnd(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	for _, tc := range []struct {
		name string
		// end and iv are what the last shutdown recorded.
		end  func(now time.Time) time.Time
		iv   time.Duration
		hold bool // no window before end
	}{
		{name: "far ahead: ignored", end: func(time.Time) time.Time { return time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) }, iv: time.Minute},
		{name: "a longer interval's window: held until its end", iv: 5 * time.Second, hold: true,
			end: func(now time.Time) time.Time { return now.Add(5 * time.Second).Truncate(time.Second) }}, // 4-5 s ahead
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			walDir := t.TempDir()
			now := time.Now()
			end := tc.end(now)
			if err := writeEarlyWindow(walDir, end.UnixMilli(), tc.iv.Milliseconds()); err != nil {
				t.Fatal(err)
			}
			p := startSluiceOn(t, bin, freePort(t), "--wal.dir="+walDir, "--aggregation.interval=1s")
			defer p.stop(t)
			flushes := func() float64 {
				_, body := p.get(t, "/metrics")
				v, _ := metricValue(body, "sluice_flushes_total")
				return v
			}
			if tc.hold {
				time.Sleep(time.Until(end.Add(-1500 * time.Millisecond)))
				if n := flushes(); n != 0 {
					t.Fatalf("%v windows emitted before the recorded window end %v", n, end)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			if tc.hold {
				deadline = end.Add(5 * time.Second)
			}
			for flushes() < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("fewer than 2 windows emitted by %v (recorded end %v)", deadline, end)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

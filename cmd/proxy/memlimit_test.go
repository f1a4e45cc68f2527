package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestAutoMemLimitRatioFlag(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    float64
		wantErr string
	}{
		{name: "default", want: 0.9},
		{name: "half", args: []string{"--auto-gomemlimit.ratio=0.5"}, want: 0.5},
		{name: "all of it", args: []string{"--auto-gomemlimit.ratio=1"}, want: 1},
		{name: "zero", args: []string{"--auto-gomemlimit.ratio=0"}, wantErr: "--auto-gomemlimit.ratio must be in (0, 1], got 0"},
		{name: "over one", args: []string{"--auto-gomemlimit.ratio=1.5"}, wantErr: "--auto-gomemlimit.ratio must be in (0, 1], got 1.5"},
		{name: "not a number", args: []string{"--auto-gomemlimit.ratio=NaN"}, wantErr: "--auto-gomemlimit.ratio must be in (0, 1], got NaN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, _, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("parseFlags(%q) error %v, want %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.memLimitRatio != tc.want || !f.autoMemLimit {
				t.Fatalf("ratio %v auto %v, want %v and on", f.memLimitRatio, f.autoMemLimit, tc.want)
			}
		})
	}
}

// TestAutoGoMemLimit runs the binary and reads the soft memory limit the Go
// runtime reports (go_gc_gomemlimit_bytes): an explicit GOMEMLIMIT wins,
// --no-auto-gomemlimit leaves none, and in a memory cgroup the limit is
// the ratio of the cgroup's. The cgroup cases need root and a writable
// memory controller (v1 or v2); elsewhere they are skipped.
func TestAutoGoMemLimit(t *testing.T) {
	bin := buildBinary(t)
	const cgLimit = 1 << 30
	cases := []struct {
		name   string
		env    []string
		args   []string
		cgroup bool
		want   float64
	}{
		{name: "GOMEMLIMIT set", env: []string{"GOMEMLIMIT=300MiB"}, want: 300 << 20},
		{name: "off", args: []string{"--no-auto-gomemlimit"}, want: math.MaxInt64},
		{name: "container limit", cgroup: true, want: 0.9 * cgLimit},
		{name: "container limit, ratio 0.5", cgroup: true, args: []string{"--auto-gomemlimit.ratio=0.5"}, want: 0.5 * cgLimit},
		{name: "GOMEMLIMIT set in a container", cgroup: true, env: []string{"GOMEMLIMIT=300MiB"}, want: 300 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := freePort(t)
			args := append([]string{"--web.listen-address=" + addr, "--wal.dir=" + t.TempDir()}, tc.args...)
			cmd := exec.Command(bin, args...)
			if tc.cgroup {
				procs := memoryCgroup(t, cgLimit)
				// Join the cgroup before exec, so the runtime starts in it.
				cmd = exec.Command("sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, procs, bin}, args...)...)
			}
			cmd.Env = append(withoutEnv(os.Environ(), "GOMEMLIMIT", "AUTOMEMLIMIT"), tc.env...)
			p := startCmd(t, cmd, addr)
			t.Cleanup(func() { p.stop(t) })
			_, body := p.get(t, "/metrics")
			got, ok := metricValue(body, "go_gc_gomemlimit_bytes")
			if !ok {
				t.Fatal("no go_gc_gomemlimit_bytes on /metrics")
			}
			if math.Abs(got-tc.want) > 1<<20 {
				t.Fatalf("go_gc_gomemlimit_bytes %.0f, want %.0f", got, tc.want)
			}
		})
	}
}

// memoryCgroup creates a memory cgroup limited to limit bytes, removed at
// the end of the test (after the processes the test stops), and returns
// the path of its cgroup.procs. It skips the test if it cannot.
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	name := fmt.Sprintf("sluice-test-%d-%s", os.Getpid(), strings.NewReplacer("/", "-", " ", "-", ",", "-").Replace(t.Name()))
	var dir, limitFile string
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(string(b), "memory") {
		dir, limitFile = filepath.Join("/sys/fs/cgroup", name), "memory.max" // cgroup v2
	} else if st, err := os.Stat("/sys/fs/cgroup/memory"); err == nil && st.IsDir() {
		dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes" // v1
	} else {
		t.Skip("no cgroup memory controller here")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a memory cgroup (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Skipf("cannot set the cgroup's memory limit: %v", err)
	}
	return filepath.Join(dir, "cgroup.procs")
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// metricValue returns the value of the first sample of name (without
// labels) in a text exposition.
func metricValue(body, name string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

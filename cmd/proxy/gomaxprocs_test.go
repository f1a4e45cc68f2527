package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMinGoMaxProcsFlag(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{name: "default", want: 2},
		{name: "three", args: []string{"--runtime.min-gomaxprocs=3"}, want: 3},
		{name: "go default", args: []string{"--runtime.min-gomaxprocs=1"}, want: 1},
		{name: "zero", args: []string{"--runtime.min-gomaxprocs=0"}, wantErr: "--runtime.min-gomaxprocs must be at least 1, got 0"},
		{name: "negative", args: []string{"--runtime.min-gomaxprocs=-2"}, wantErr: "--runtime.min-gomaxprocs must be at least 1, got -2"},
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
			if f.minProcs != tc.want {
				t.Fatalf("min GOMAXPROCS %d, want %d", f.minProcs, tc.want)
			}
		})
	}
}

// TestMinGoMaxProcs runs the binary on a single CPU (taskset), where the Go
// runtime's default GOMAXPROCS is 1, and reads the GOMAXPROCS it runs with
// (go_sched_gomaxprocs_threads): raised to --runtime.min-gomaxprocs unless
// GOMAXPROCS is set or the flag is 1.
func TestMinGoMaxProcs(t *testing.T) {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Skip("no taskset (util-linux) to run the binary on one CPU")
	}
	bin := buildBinary(t)
	cpu := firstAllowedCPU(t)
	cases := []struct {
		name string
		env  []string
		args []string
		want float64
	}{
		{name: "one CPU", want: 2},
		{name: "one CPU, flag 3", args: []string{"--runtime.min-gomaxprocs=3"}, want: 3},
		{name: "one CPU, flag 1 keeps the Go default", args: []string{"--runtime.min-gomaxprocs=1"}, want: 1},
		{name: "one CPU, GOMAXPROCS set", env: []string{"GOMAXPROCS=1"}, want: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := freePort(t)
			args := append([]string{"-c", cpu, bin, "--web.listen-address=" + addr, "--wal.dir=" + t.TempDir()}, tc.args...)
			cmd := exec.Command(taskset, args...)
			cmd.Env = append(withoutEnv(os.Environ(), "GOMAXPROCS"), tc.env...)
			p := startCmd(t, cmd, addr)
			t.Cleanup(func() { p.stop(t) })
			_, body := p.get(t, "/metrics")
			got, ok := metricValue(body, "go_sched_gomaxprocs_threads")
			if !ok {
				t.Fatal("no go_sched_gomaxprocs_threads on /metrics")
			}
			if got != tc.want {
				t.Fatalf("go_sched_gomaxprocs_threads %v, want %v", got, tc.want)
			}
		})
	}
}

// firstAllowedCPU returns the first CPU this process may run on, from
// Cpus_allowed_list in /proc/self/status ("0-1", "2,4-7").
func firstAllowedCPU(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if list, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			first, _, _ := strings.Cut(strings.TrimSpace(list), ",")
			first, _, _ = strings.Cut(first, "-")
			return first
		}
	}
	t.Skip("no Cpus_allowed_list in /proc/self/status")
	return ""
}

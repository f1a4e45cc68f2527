package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestGoMaxProcsFlags(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		wantMin   int
		wantExtra int
		wantErr   string
	}{
		{name: "defaults", wantMin: 2, wantExtra: 1},
		{name: "min three", args: []string{"--runtime.min-gomaxprocs=3"}, wantMin: 3, wantExtra: 1},
		{name: "go default", args: []string{"--runtime.min-gomaxprocs=1", "--runtime.extra-gomaxprocs=0"}, wantMin: 1, wantExtra: 0},
		{name: "extra two", args: []string{"--runtime.extra-gomaxprocs=2"}, wantMin: 2, wantExtra: 2},
		{name: "min zero", args: []string{"--runtime.min-gomaxprocs=0"}, wantErr: "--runtime.min-gomaxprocs must be at least 1, got 0"},
		{name: "min negative", args: []string{"--runtime.min-gomaxprocs=-2"}, wantErr: "--runtime.min-gomaxprocs must be at least 1, got -2"},
		{name: "extra negative", args: []string{"--runtime.extra-gomaxprocs=-1"}, wantErr: "--runtime.extra-gomaxprocs must not be negative, got -1"},
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
			if f.minProcs != tc.wantMin || f.extraProcs != tc.wantExtra {
				t.Fatalf("min GOMAXPROCS %d, extra %d; want %d, %d", f.minProcs, f.extraProcs, tc.wantMin, tc.wantExtra)
			}
		})
	}
}

func TestGoMaxProcsRule(t *testing.T) {
	cases := []struct {
		name                    string
		def, extra, floor, want int
	}{
		{name: "one CPU, defaults", def: 1, extra: 1, floor: 2, want: 2},
		{name: "two CPUs, defaults", def: 2, extra: 1, floor: 2, want: 3},
		{name: "eight CPUs, defaults", def: 8, extra: 1, floor: 2, want: 9},
		{name: "one CPU, no extra", def: 1, extra: 0, floor: 2, want: 2},
		{name: "two CPUs, no extra", def: 2, extra: 0, floor: 2, want: 2},
		{name: "one CPU, Go default", def: 1, extra: 0, floor: 1, want: 1},
		{name: "floor above default plus extra", def: 2, extra: 1, floor: 4, want: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := goMaxProcs(tc.def, tc.extra, tc.floor); got != tc.want {
				t.Fatalf("goMaxProcs(%d, %d, %d) = %d, want %d", tc.def, tc.extra, tc.floor, got, tc.want)
			}
		})
	}
}

// TestGoMaxProcs runs the binary on one CPU and, where the machine has
// them, on two (taskset), where the Go runtime's default GOMAXPROCS is 1
// and 2, and reads the GOMAXPROCS it runs with (go_sched_gomaxprocs_threads):
// the default plus --runtime.extra-gomaxprocs, at least
// --runtime.min-gomaxprocs, unless GOMAXPROCS is set.
func TestGoMaxProcs(t *testing.T) {
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Skip("no taskset (util-linux) to run the binary on one CPU")
	}
	bin := buildBinary(t)
	cpus := allowedCPUs(t)
	one := strconv.Itoa(cpus[0])
	type procCase struct {
		name string
		cpus string // taskset's CPU list
		env  []string
		args []string
		want float64
	}
	cases := []procCase{
		{name: "one CPU", cpus: one, want: 2},
		{name: "one CPU, min 3", cpus: one, args: []string{"--runtime.min-gomaxprocs=3"}, want: 3},
		{name: "one CPU, min 1", cpus: one, args: []string{"--runtime.min-gomaxprocs=1"}, want: 2},
		{name: "one CPU, min 1 and no extra keep the Go default", cpus: one, args: []string{"--runtime.min-gomaxprocs=1", "--runtime.extra-gomaxprocs=0"}, want: 1},
		{name: "one CPU, GOMAXPROCS set", cpus: one, env: []string{"GOMAXPROCS=1"}, want: 1},
	}
	if len(cpus) >= 2 {
		two := one + "," + strconv.Itoa(cpus[1])
		cases = append(cases,
			procCase{name: "two CPUs", cpus: two, want: 3},
			procCase{name: "two CPUs, no extra", cpus: two, args: []string{"--runtime.extra-gomaxprocs=0"}, want: 2},
			procCase{name: "two CPUs, extra 2", cpus: two, args: []string{"--runtime.extra-gomaxprocs=2"}, want: 4},
			procCase{name: "two CPUs, GOMAXPROCS set", cpus: two, env: []string{"GOMAXPROCS=2"}, want: 2},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := freePort(t)
			args := append([]string{"-c", tc.cpus, bin, "--web.listen-address=" + addr, "--wal.dir=" + t.TempDir()}, tc.args...)
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

// allowedCPUs returns the CPUs this process may run on, from
// Cpus_allowed_list in /proc/self/status ("0-1", "2,4-7").
func allowedCPUs(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		list, ok := strings.CutPrefix(line, "Cpus_allowed_list:")
		if !ok {
			continue
		}
		var cpus []int
		for _, part := range strings.Split(strings.TrimSpace(list), ",") {
			lo, hi, isRange := strings.Cut(part, "-")
			first, err1 := strconv.Atoi(lo)
			last, err2 := first, error(nil)
			if isRange {
				last, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("Cpus_allowed_list %q: cannot parse %q", list, part)
			}
			for c := first; c <= last; c++ {
				cpus = append(cpus, c)
			}
		}
		if len(cpus) > 0 {
			return cpus
		}
	}
	t.Skip("no Cpus_allowed_list in /proc/self/status")
	return nil
}

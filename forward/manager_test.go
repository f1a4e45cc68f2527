package forward

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-metrics/sluice/configs"
)

// TestApplyConfig reloads: unchanged targets are kept, changed ones
// replaced, removed ones stopped with their goroutines and metric series,
// and a config whose HTTP client cannot be built changes nothing.
//
// Not parallel: it counts shard goroutines, which other tests would add to.
func TestApplyConfig(t *testing.T) {
	ra, rb := newReceiver(t, nil), newReceiver(t, nil)
	h := newHarness(t)
	a, b := testConfig(ra.url(), "a"), testConfig(rb.url(), "b")
	a.QueueConfig.MaxShards, b.QueueConfig.MaxShards = 2, 2
	ext := map[string]string{"cluster": "eu-1"}
	h.apply(ext, a, b)
	h.m.Append(window(1000, 4))
	ra.nextAccepted(4, time.Second)
	rb.nextAccepted(4, time.Second)
	if n := shardGoroutines(); n != 4 {
		t.Fatalf("%d shard goroutines for two targets of two shards", n)
	}
	targetOf := func(name string) *target {
		h.m.mtx.RLock()
		defer h.m.mtx.RUnlock()
		for _, t := range h.m.targets {
			if t.name == name {
				return t
			}
		}
		return nil
	}
	hasSeries := func(name string) bool {
		mfs, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "remote_name" && lp.GetValue() == name {
						return true
					}
				}
			}
		}
		return false
	}
	if !hasSeries("b") {
		t.Fatal("no metric series for b")
	}

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"same config keeps the running targets", func(t *testing.T) {
			ta, tb := targetOf("a"), targetOf("b")
			// A fresh parse of the same YAML has new pointers and regexps.
			h.apply(map[string]string{"cluster": "eu-1"}, testConfig(ra.url(), "a"), testConfig(rb.url(), "b"))
			if targetOf("a") == ta || targetOf("b") == tb {
				t.Fatal("max_shards differ from the running config, yet the targets were kept")
			}
			ta, tb = targetOf("a"), targetOf("b")
			h.apply(map[string]string{"cluster": "eu-1"}, testConfig(ra.url(), "a"), testConfig(rb.url(), "b"))
			if targetOf("a") != ta || targetOf("b") != tb {
				t.Error("an unchanged target was replaced")
			}
			// A replacement starts once the target it replaces has stopped,
			// at the very end of ApplyConfig: its goroutines may not show in
			// a stack dump yet.
			waitFor(t, 2*time.Second, "8 shard goroutines (two targets of four shards)", func() bool { return shardGoroutines() == 8 })
		}},
		{"changed external labels replace the target", func(t *testing.T) {
			ta := targetOf("a")
			h.apply(map[string]string{"cluster": "eu-2"}, testConfig(ra.url(), "a"), testConfig(rb.url(), "b"))
			if targetOf("a") == ta {
				t.Error("target kept despite new external labels")
			}
			if !hasSeries("a") {
				t.Error("a replaced target lost its metric series")
			}
		}},
		{"removed target stops and its series go", func(t *testing.T) {
			h.apply(map[string]string{"cluster": "eu-2"}, testConfig(ra.url(), "a"))
			waitFor(t, 2*time.Second, "b's shards to exit", func() bool { return shardGoroutines() == 4 })
			if hasSeries("b") {
				t.Error("metric series of removed target b remain")
			}
			st := h.m.Targets()
			if len(st) != 1 || st[0].Name != "a" {
				t.Errorf("Targets = %+v, want only a", st)
			}
		}},
		{"unbuildable HTTP client changes nothing", func(t *testing.T) {
			ta := targetOf("a")
			bad := testConfig(rb.url(), "b")
			bad.HTTPClientConfig.TLSConfig.CAFile = "/nonexistent/ca.pem"
			err := h.m.ApplyConfig([]configs.RemoteWriteConfig{testConfig(ra.url(), "a"), bad}, nil)
			if err == nil || !strings.Contains(err.Error(), "b") {
				t.Fatalf("ApplyConfig error = %v, want one naming b", err)
			}
			if targetOf("a") != ta || targetOf("b") != nil || shardGoroutines() != 4 {
				t.Error("a failed ApplyConfig changed the running targets")
			}
			if hasSeries("b") {
				t.Error("metric series of target b, which a failed ApplyConfig did not start, remain")
			}
			// A valid new target next to the bad one leaves nothing either.
			bad.Name = "c"
			if err := h.m.ApplyConfig([]configs.RemoteWriteConfig{testConfig(ra.url(), "a"), testConfig(rb.url(), "b"), bad}, nil); err == nil {
				t.Fatal("ApplyConfig with an unbuildable target c succeeded")
			}
			if hasSeries("b") || hasSeries("c") {
				t.Error("metric series of targets of a failed ApplyConfig remain")
			}
		}},
		{"duplicate names are refused", func(t *testing.T) {
			err := h.m.ApplyConfig([]configs.RemoteWriteConfig{testConfig(ra.url(), "a"), testConfig(rb.url(), "a")}, nil)
			if err == nil {
				t.Fatal("two targets named a accepted")
			}
		}},
		{"the kept target still forwards", func(t *testing.T) {
			for range ra.pending() {
			}
			h.m.Append(window(2000, 4))
			r := ra.nextAccepted(4, time.Second)
			if got := labelMap(r[0].v1.Timeseries[0].Labels)["cluster"]; got != "eu-2" {
				t.Errorf("cluster = %q, want eu-2", got)
			}
		}},
		{"empty config stops everything", func(t *testing.T) {
			h.apply(nil)
			waitFor(t, 2*time.Second, "all shards to exit", func() bool { return shardGoroutines() == 0 })
			if hasSeries("a") {
				t.Error("metric series of removed target a remain")
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
}

package aggregate

import (
	"context"
	"fmt"
	"testing"
)

// recount recomputes the limits' count from the state.
func recount(s *Store) (total int64, groups map[string]int) {
	groups = map[string]int{}
	for _, g := range s.groupList() {
		g.mu.Lock()
		n := 0
		for _, se := range g.series {
			n += 1 + int(exposedExtra(se.hist, se.summ))
		}
		if n != len(g.series)+g.extra {
			groups[g.key] = len(g.series) + g.extra - n
		}
		total += int64(n)
		g.mu.Unlock()
	}
	return
}

func checkInv(t *testing.T, s *Store, what string) {
	t.Helper()
	want, bad := recount(s)
	if got := s.counted.Load(); got != want || len(bad) > 0 {
		t.Fatalf("%s: counted %d, state shows %d; group diffs %v", what, got, want, bad)
	}
}

// TestCountedMatchesTheState: after every kind of change (new series,
// sum and replace updates whose buckets or quantiles change, family swaps
// under Pushgateway semantics, PUT replacing a group, windows, a
// checkpoint and restore, expiry, wipe) the count the series limits use
// is what the state shows, in total and per group.
func TestCountedMatchesTheState(t *testing.T) {
	h := func(n string, bs ...string) string {
		out := "# TYPE " + n + " histogram\n"
		for _, b := range bs {
			out += n + "_bucket{le=\"" + b + "\"} 1\n"
		}
		return out + n + "_bucket{le=\"+Inf\"} 1\n" + n + "_sum 1\n" + n + "_count 1\n"
	}
	for _, sem := range []Semantics{SemanticsAggregate, SemanticsPushgateway} {
		set := testSettings()
		set.Semantics = sem
		s, clk := newTestStore(t, set)
		steps := []struct {
			g string
			m Method
			b string
		}{
			{"job=a", MethodPost, h("h", "1", "2")},
			{"job=a", MethodPost, h("h", "1", "2")},
			{"job=a", MethodPost, "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 1\ns_sum 1\ns_count 1\n"},
			{"job=a", MethodPost, "# TYPE s summary\ns{quantile=\"0.5\",clear_mode=\"replace\"} 1\ns_sum{clear_mode=\"replace\"} 1\ns_count{clear_mode=\"replace\"} 1\n"},
			{"job=b", MethodPost, "# TYPE r summary\nr{quantile=\"0.5\",clear_mode=\"replace\"} 1\nr{quantile=\"0.9\",clear_mode=\"replace\"} 1\nr_sum{clear_mode=\"replace\"} 1\nr_count{clear_mode=\"replace\"} 1\n"},
			{"job=b", MethodPost, "# TYPE r summary\nr_sum{clear_mode=\"replace\"} 1\nr_count{clear_mode=\"replace\"} 1\n"},
			{"job=b", MethodPost, "# TYPE r summary\nr{quantile=\"0.1\",clear_mode=\"replace\"} 1\nr{quantile=\"0.5\",clear_mode=\"replace\"} 1\nr{quantile=\"0.9\",clear_mode=\"replace\"} 1\nr_sum{clear_mode=\"replace\"} 1\nr_count{clear_mode=\"replace\"} 1\n"},
			{"job=c", MethodPost, "# TYPE k histogram\nk_bucket{le=\"1\",clear_mode=\"replace\"} 1\nk_bucket{le=\"+Inf\",clear_mode=\"replace\"} 1\nk_sum{clear_mode=\"replace\"} 1\nk_count{clear_mode=\"replace\"} 1\n"},
			{"job=c", MethodPost, "# TYPE k histogram\nk_bucket{le=\"1\",clear_mode=\"replace\"} 1\nk_bucket{le=\"2\",clear_mode=\"replace\"} 1\nk_bucket{le=\"3\",clear_mode=\"replace\"} 1\nk_bucket{le=\"+Inf\",clear_mode=\"replace\"} 1\nk_sum{clear_mode=\"replace\"} 1\nk_count{clear_mode=\"replace\"} 1\n"},
			{"job=d", MethodPost, "# TYPE z counter\nz 1\n" + h("y", "1")},
			{"job=d", MethodPost, h("z", "1", "5", "9")}, // swap under pushgateway
			{"job=d", MethodPut, "# TYPE y gauge\ny 3\n"},
			{"job=d", MethodPut, h("y", "1", "2", "3", "4")},
			{"job=d", MethodPost, "# TYPE y counter\ny 3\n"},
			{"job=e", MethodPost, "w{clear_mode=\"mean1m\"} 3\n"},
			{"job=e", MethodPost, "w{clear_mode=\"mean1m\"} 3\n"},
		}
		for i, st := range steps {
			_ = push(t, s, st.g, st.m, st.b) // some are refused: that must change nothing
			checkInv(t, s, fmt.Sprintf("semantics %d, step %d", sem, i))
		}
		// checkpoint round trip
		l := &partsLog{}
		if err := s.Checkpoint(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		r, _ := newTestStore(t, set)
		if err := r.Restore(l.committed); err != nil {
			t.Fatal(err)
		}
		checkInv(t, r, "restored")
		if r.counted.Load() != s.counted.Load() {
			t.Fatalf("restored %d, live %d", r.counted.Load(), s.counted.Load())
		}
		clk.advance(set.SeriesTTL / 2)
		_ = push(t, s, "job=a", MethodPost, "x 1\n")
		clk.advance(set.SeriesTTL/2 + 1)
		if err := s.Expire(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkInv(t, s, "expired")
		if err := s.Wipe(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkInv(t, s, "wiped")
		if c := s.counted.Load(); c != 0 {
			t.Fatalf("wiped: counted %d", c)
		}
	}
}

package aggregate

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-metrics/sluice/wal"
)

// durableStore is a Store journaled to a real WAL in dir.
type durableStore struct {
	s      *Store
	w      *wal.WAL
	cancel context.CancelFunc
	done   chan struct{}
}

func openDurable(t *testing.T, dir string, clk *fakeClock) *durableStore {
	t.Helper()
	return openDurableWith(t, dir, clk, textBody)
}

// openDurableWith is openDurable recovering push bodies with decode.
func openDurableWith(t *testing.T, dir string, clk *fakeClock, decode BodyDecoder) *durableStore {
	t.Helper()
	w, err := wal.Open(dir, wal.OSFS(), wal.Options{SegmentSize: 64 << 10}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := NewCommitter(w)
	var logs syncBuffer
	s := New(testSettings(), clk.now, c, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err := Recover(s, w, decode); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "skipped a write-ahead log record") {
		t.Fatalf("recovery skipped records:\n%s", logs.String())
	}
	s.SetReady()
	ctx, cancel := context.WithCancel(context.Background())
	d := &durableStore{s: s, w: w, cancel: cancel, done: make(chan struct{})}
	go func() { _ = c.Run(ctx); close(d.done) }()
	return d
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (d *durableStore) close(t *testing.T) {
	d.cancel()
	<-d.done
	if err := d.w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointAndReplayAcrossRestart pushes every kind of state through a
// real WAL, checkpoints half-way, "restarts" from the directory, and
// expects the same exposition, then the same result from further pushes.
func TestCheckpointAndReplayAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	d := openDurable(t, dir, clk)
	ctx := context.Background()
	pushes := []string{
		"# TYPE req_total counter\nreq_total 2\ntemp{clear_mode=\"replace\"} 5\nlat{clear_mode=\"p99_5m\"} 10\nm{clear_mode=\"mean1m\"} 4\n",
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 4\ns_count 2\n",
		"# TYPE req_total counter\nreq_total 3\nlat{clear_mode=\"p99_5m\"} 30\nm{clear_mode=\"mean1m\"} 8\n",
	}
	for i, p := range pushes {
		if i%2 == 0 {
			mustPush(t, d.s, "job=f", p) // families encoded in the record
		} else {
			pushBody(t, d.s, "job=f", p) // the body recorded as it came
		}
		if err := d.s.Apply(ctx, &Push{Group: groupLabels("job=n"), Families: nativeFamilies(t)}); err != nil {
			t.Fatal(err)
		}
		clk.advance(time.Second)
		if i == 1 {
			if err := d.s.Checkpoint(ctx, d.w); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := expose(t, d.s)
	d.close(t)

	r := openDurable(t, dir, clk)
	defer r.close(t)
	if got := expose(t, r.s); got != before {
		t.Fatalf("state after restart differs\n got:\n%s\nwant:\n%s", got, before)
	}
	// Windows and sketches keep working across the restart.
	mustPush(t, r.s, "job=f", "lat{clear_mode=\"p99_5m\"} 50\nm{clear_mode=\"mean1m\"} 12\n")
	got := gatherValue(t, r.s, "m")
	if got != 8 {
		t.Fatalf("mean1m of 4, 8, 12 = %v, want 8", got)
	}
	if got := gatherValue(t, r.s, "lat"); got < 49.5 || got > 50.5 {
		t.Fatalf("p99 of 10, 30, 50 = %v, want ~50", got)
	}
}

func gatherValue(t *testing.T, s *Store, name string) float64 {
	t.Helper()
	m := gatherOne(t, s, name)
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return m.GetUntyped().GetValue()
}

// TestRecoverPushBodies: pushes whose records hold their bodies come back
// after a restart; without a decoder for them, recovery skips them and
// says so rather than failing to start.
func TestRecoverPushBodies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		decode  BodyDecoder
		want    string // the exposition of job=f after the restart
		skipped bool
	}{
		{name: "decoder rebuilds the pushes", decode: textBody,
			want: "# TYPE req_total counter\nreq_total{instance=\"\",job=\"f\"} 5\n# TYPE temp untyped\ntemp{instance=\"\",job=\"f\"} 7\n"},
		{name: "no decoder skips them", decode: nil, skipped: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock()
			d := openDurable(t, dir, clk)
			pushBody(t, d.s, "job=f", "# TYPE req_total counter\nreq_total 2\ntemp{clear_mode=\"replace\"} 5\n")
			pushBody(t, d.s, "job=f", "# TYPE req_total counter\nreq_total 3\ntemp{clear_mode=\"replace\"} 7\n")
			d.close(t)

			w, err := wal.Open(dir, wal.OSFS(), wal.Options{SegmentSize: 64 << 10}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var logs syncBuffer
			s := New(testSettings(), clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)))
			if err := Recover(s, w, tc.decode); err != nil {
				t.Fatal(err)
			}
			if got := expose(t, s); got != tc.want {
				t.Errorf("state after restart:\n%s\nwant:\n%s", got, tc.want)
			}
			if got := strings.Count(logs.String(), "no decoder was given"); (got == 2) != tc.skipped {
				t.Errorf("%d records skipped for want of a decoder; log:\n%s", got, logs.String())
			}
		})
	}
}

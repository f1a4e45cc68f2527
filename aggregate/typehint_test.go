package aggregate

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// stallJournal records in order; its first Enqueue stalls until release
// is closed, as a push descheduled between its claim and its Enqueue
// would.
type stallJournal struct {
	mu      sync.Mutex
	recs    []memRec
	first   sync.Once
	entered chan struct{}
	release chan struct{}
}

func (j *stallJournal) Enqueue(typ uint8, data []byte) func(context.Context) error {
	stall := false
	j.first.Do(func() { stall = true })
	if stall {
		close(j.entered)
		<-j.release
	}
	j.mu.Lock()
	j.recs = append(j.recs, memRec{typ, append([]byte(nil), data...)})
	j.mu.Unlock()
	return func(context.Context) error { return nil }
}
func (j *stallJournal) Barrier(context.Context) error { return nil }

// TestTypeHintReplaysWhateverTheLogOrder: a remote_write push that took
// the type of a family another push had just made (not yet in the log) is
// logged with the type it took, so that a replay in log order, where that
// family does not exist yet, gives the same state and skips nothing.
func TestTypeHintReplaysWhateverTheLogOrder(t *testing.T) {
	set := testSettings()
	j := &stallJournal{entered: make(chan struct{}), release: make(chan struct{})}
	clk := newClock()
	s := New(set, clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { // A: a Push API push, x a counter, new family
		list, _ := textBody(BodyText, []byte("# TYPE x counter\nx 1\n"))
		done <- s.Apply(ctx, &Push{Group: groupLabels("job=a"), Method: MethodPost, Families: list})
	}()
	<-j.entered
	// B: a remote_write push to another group, x guessed untyped: adopts counter.
	v := 5.0
	b := &Push{Group: groupLabels("job=b"), Method: MethodPost, TypeHint: true, Families: []*dto.MetricFamily{{
		Name: ptr("x"), Type: dto.MetricType_UNTYPED.Enum(), Metric: []*dto.Metric{{Untyped: &dto.Untyped{Value: &v}}}}}}
	errB := make(chan error, 1)
	go func() { errB <- s.Apply(ctx, b) }()
	select {
	case err := <-errB:
		if err != nil {
			t.Fatalf("B: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("B blocked (same shard?)")
	}
	close(j.release)
	if err := <-done; err != nil {
		t.Fatalf("A: %v", err)
	}
	live := expose(t, s)
	s2 := New(set, clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	replayRecords(t, s2, j.recs)
	if got := expose(t, s2); got != live {
		t.Fatalf("replay differs\nlive:\n%s\nreplayed:\n%s", live, got)
	}
}

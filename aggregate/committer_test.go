package aggregate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-metrics/sluice/wal"
)

// gatedLog is a Log whose Append waits for the test to open its gate, and
// records every batch.
type gatedLog struct {
	gate    chan struct{}
	mu      sync.Mutex
	batches [][]byte // first byte of each record's data, per batch
}

func (l *gatedLog) Append(ctx context.Context, recs ...wal.Record) (wal.Position, error) {
	<-l.gate
	var b []byte
	for _, r := range recs {
		b = append(b, r.Data[0])
	}
	l.mu.Lock()
	l.batches = append(l.batches, b)
	l.mu.Unlock()
	return wal.Position{}, nil
}

// TestCommitterGroupsRecords checks group commit: records queued while a
// batch is being written go out together in the next batch, in enqueue
// order, and each waiter returns once its own batch is written.
func TestCommitterGroupsRecords(t *testing.T) {
	cases := []struct {
		name  string
		later int // records enqueued while the first batch is being written
	}{
		{"a lone record", 1},
		{"a few records", 3},
		{"more than a full batch", 2 * commitFull},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &gatedLog{gate: make(chan struct{})}
			c := NewCommitter(log)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = c.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			first := c.Enqueue(RecordPush, []byte{0})
			// Wait until Run is writing the first record, blocked on the gate.
			for deadline := time.Now().Add(10 * time.Second); ; {
				c.mu.Lock()
				n := len(c.queue)
				c.mu.Unlock()
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the first record was never taken for writing")
				}
				time.Sleep(time.Millisecond)
			}
			waits := make([]func(context.Context) error, tc.later)
			for i := range waits {
				waits[i] = c.Enqueue(RecordPush, []byte{byte(1 + i)})
			}
			close(log.gate)
			if err := first(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, w := range waits {
				if err := w(context.Background()); err != nil {
					t.Fatalf("record %d: %v", i+1, err)
				}
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if len(log.batches) != 2 || len(log.batches[0]) != 1 || len(log.batches[1]) != tc.later {
				t.Fatalf("batches %v, want [0] then all %d later records in one batch", log.batches, tc.later)
			}
			for i, b := range log.batches[1] {
				if int(b) != i+1 {
					t.Fatalf("second batch %v is not in enqueue order", log.batches[1])
				}
			}
		})
	}
}

func TestCommitDelay(t *testing.T) {
	fsync := 400 * time.Microsecond // waits 200 µs when it waits
	for _, tc := range []struct {
		name       string
		q          int
		lastAppend time.Duration
		rate       float64
		want       time.Duration
	}{
		{"dense pushes wait half an append", 4, fsync, 20000, 200 * time.Microsecond},
		{"exactly commitGain expected", 4, fsync, 7500, 200 * time.Microsecond},
		{"sparse relay does not wait", 3, fsync, 5000, 0},
		{"slow pushes still wait", 6, 400 * time.Microsecond, 13000, 200 * time.Microsecond},
		{"lone record goes at once", 1, fsync, 50000, 0},
		{"full batch goes at once", commitFull, fsync, 50000, 0},
		{"fast append is not worth a wait", 4, 80 * time.Microsecond, 1e6, 0},
		{"wait capped at maxCommitDelay", 4, 10 * time.Millisecond, 20000, maxCommitDelay},
		{"no rate yet", 4, fsync, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commitDelay(tc.q, tc.lastAppend, tc.rate); got != tc.want {
				t.Errorf("commitDelay(%d, %v, %g) = %v, want %v", tc.q, tc.lastAppend, tc.rate, got, tc.want)
			}
		})
	}
}

func TestArrivalRate(t *testing.T) {
	var r arrivalRate
	t0 := time.Unix(1000, 0)
	if r.observe(5, t0); r.perSec != 0 {
		t.Fatalf("first batch gives no interval, rate %g, want 0", r.perSec)
	}
	// 10 records per millisecond, steadily: the average converges to
	// 10,000/s.
	for i := 1; i <= 60; i++ {
		r.observe(10, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if got := r.perSec; got < 9900 || got > 10000 {
		t.Fatalf("steady 10 records per ms: rate %g, want about 10000", got)
	}
	// Then one record per 10 ms: the rate falls below what makes a wait
	// pay for a 200 µs wait (commitGain records).
	at := t0.Add(60 * time.Millisecond)
	for i := 1; i <= 30; i++ {
		r.observe(1, at.Add(time.Duration(i)*10*time.Millisecond))
	}
	if got := r.perSec; got*200e-6 >= commitGain {
		t.Fatalf("sparse arrivals: rate %g still expects %g records in 200 µs", got, got*200e-6)
	}
}

// TestCommitBatches checks how queued items fall into batches (a Committer
// that is not running, so nothing is taken): whether the head batch counts
// as relayed requests only, which is never held back, and where
// maxCommitBatch splits the queue.
func TestCommitBatches(t *testing.T) {
	relay := wal.Record{Type: RecordRelay, Data: []byte{1}}
	push := wal.Record{Type: RecordPush, Data: []byte{1}}
	half := wal.Record{Type: RecordPush, Data: make([]byte, maxCommitBatch/2+1)}
	huge := wal.Record{Type: RecordPush, Data: make([]byte, maxCommitBatch+1)}
	type item struct {
		rec     wal.Record
		barrier bool
	}
	for _, tc := range []struct {
		name      string
		items     []item
		wantRelay bool
		wantItems []int // items per batch
	}{
		{name: "relayed requests only", items: []item{{rec: relay}, {rec: relay}, {rec: relay}}, wantRelay: true, wantItems: []int{3}},
		{name: "one relayed request", items: []item{{rec: relay}}, wantRelay: true, wantItems: []int{1}},
		{name: "a push among them", items: []item{{rec: relay}, {rec: push}, {rec: relay}}, wantItems: []int{3}},
		{name: "pushes only", items: []item{{rec: push}, {rec: push}}, wantItems: []int{2}},
		{name: "a barrier", items: []item{{rec: relay}, {barrier: true}}, wantItems: []int{2}},
		{name: "a barrier alone", items: []item{{barrier: true}}, wantItems: []int{1}},
		{name: "two records past maxCommitBatch", items: []item{{rec: half}, {rec: half}, {rec: push}}, wantItems: []int{1, 2}},
		{name: "a larger record goes alone", items: []item{{rec: push}, {rec: huge}, {rec: push}}, wantItems: []int{1, 1, 1}},
		{name: "a larger record in a batch of barriers", items: []item{{barrier: true}, {rec: huge}}, wantItems: []int{2}},
		{name: "a barrier joins a full batch", items: []item{{rec: half}, {rec: half}, {barrier: true}}, wantItems: []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCommitter(&gatedLog{gate: make(chan struct{})})
			for _, it := range tc.items {
				c.add(it.rec, it.barrier)
			}
			if got := c.queue[0].relay; got != tc.wantRelay {
				t.Errorf("head batch relay = %v, want %v", got, tc.wantRelay)
			}
			var got []int
			for _, b := range c.queue {
				got = append(got, b.items)
			}
			if !slices.Equal(got, tc.wantItems) {
				t.Errorf("items per batch %v, want %v", got, tc.wantItems)
			}
		})
	}
}

// TestCommitterSharedOutcome checks that every waiter of a batch gets the
// batch's outcome, and a later batch fails too once one failed.
func TestCommitterSharedOutcome(t *testing.T) {
	log := &failingLog{err: errors.New("disk on fire")}
	c := NewCommitter(log)
	waits := []func(context.Context) error{
		c.Enqueue(RecordPush, []byte{1}),
		c.Enqueue(RecordPush, []byte{2}),
		c.add(wal.Record{}, true),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i, w := range waits {
		if err := w(context.Background()); !errors.Is(err, log.err) {
			t.Fatalf("waiter %d: %v, want %v", i, err, log.err)
		}
	}
	if err := c.Enqueue(RecordPush, []byte{3})(context.Background()); !errors.Is(err, log.err) {
		t.Fatalf("after the failure: %v, want %v", err, log.err)
	}
	if log.calls != 1 {
		t.Fatalf("%d appends, want the one batch", log.calls)
	}
}

type failingLog struct {
	err   error
	calls int // only Run's goroutine appends
}

func (l *failingLog) Append(context.Context, ...wal.Record) (wal.Position, error) {
	l.calls++
	return wal.Position{}, l.err
}

package aggregate

import (
	"context"
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

func TestRelayOnly(t *testing.T) {
	relay := &commitItem{rec: wal.Record{Type: RecordRelay}}
	push := &commitItem{rec: wal.Record{Type: RecordPush}}
	barrier := &commitItem{barrier: true}
	for _, tc := range []struct {
		name  string
		queue []*commitItem
		want  bool
	}{
		{name: "relayed requests only", queue: []*commitItem{relay, relay, relay}, want: true},
		{name: "one relayed request", queue: []*commitItem{relay}, want: true},
		{name: "a push among them", queue: []*commitItem{relay, push, relay}, want: false},
		{name: "pushes only", queue: []*commitItem{push, push}, want: false},
		{name: "a barrier", queue: []*commitItem{relay, barrier}, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := relayOnly(tc.queue); got != tc.want {
				t.Fatalf("relayOnly = %v, want %v", got, tc.want)
			}
		})
	}
}

package aggregate

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sluice-metrics/sluice/wal"
)

// Log is the write-ahead log as the Committer uses it: Append writes a
// batch of records atomically and returns once it is durable.
type Log interface {
	Append(ctx context.Context, recs ...wal.Record) (wal.Position, error)
}

// maxCommitBatch bounds the bytes one WAL batch carries; a single larger
// record still goes alone.
const maxCommitBatch = 8 << 20

// Group commit waits a little for a batch to fill when records arrive
// densely: an fsync costs the same CPU time for one record as for many
// (about 80-150 µs on the development machine), so at a few thousand
// pushes per second batches of two or three spent more CPU on fsyncs than
// on the pushes. When more than one record but fewer than commitFull are
// queued, the Committer may wait half as long as its last append took (an
// fsync in wal.fsync: always, a write(2) in interval mode), at most
// maxCommitDelay. A lone record is written at once, and so is a batch of
// commitFull or more.
//
// It waits only when the wait pays: at the recent arrival rate (records
// per second, averaged over batches) at least commitGain records must be
// expected during it, so the processors have work while the queued
// requests wait. Pushes from 64 clients arrive at 12,000-35,000 records/s,
// 2-15 per wait, and wait as before: 9-17% more pushes/s at the maximum
// rate than with no wait. A relay from eight senders arrives at about
// 3,500-5,000 requests/s, mostly under one per wait; there every sender
// waited with the CPUs idle, and a blind wait cost about 10% more CPU per
// relayed sample and 15-20% of the throughput (interleaved load tests,
// the make compare relay load).
//
// commitGain is 1.5 rather than higher because not waiting feeds on
// itself: more fsyncs cost CPU, which lowers the push rate, which lowers
// the arrivals expected. At 3, pushes on a slow phase of the development
// VM (an fsync of 0.4 ms, 13,000 pushes/s: 2.6 expected) stopped waiting
// and lost about 20% of their rate; at 1.5 that takes under 7,500
// pushes/s at the maximum rate.
//
// A queue of relayed requests only is never held back, whatever the rate:
// each is already a batch of hundreds of samples whose sender sends the
// next only after the 2xx, so the wait idles every sender, and the fsync
// it would share is a small part of such a request's cost. In
// interleaved runs of the make compare relay load (six of each),
// not waiting for them gave 14% more relayed samples per second, 4% less
// CPU per sample and a lower p99.
//
// No wait shorter than minCommitDelay: an append that takes less (a
// write(2) in interval mode, an fsync on a fast disk) gains nothing from
// it, and a sleep that short is not one: on a busy machine the sleeping
// goroutine gets its processor back milliseconds later (2-6 ms measured
// under half load in interval mode, for 2 µs asked), and every queued
// push waits with it.
const (
	commitFull     = 12
	commitGain     = 1.5
	maxCommitDelay = time.Millisecond
	minCommitDelay = 50 * time.Microsecond
	// rateWeight is the weight of the newest batch in the arrival rate.
	rateWeight = 0.2
)

// commitDelay returns how long to wait for more records before writing a
// batch, 0 for not at all: q records are queued, the last append took
// lastAppend, and records arrive at rate per second.
func commitDelay(q int, lastAppend time.Duration, rate float64) time.Duration {
	d := min(lastAppend/2, maxCommitDelay)
	if q < 2 || q >= commitFull || d < minCommitDelay || rate*d.Seconds() < commitGain {
		return 0
	}
	return d
}

// arrivalRate is an average rate of records per second: each batch adds
// its records over the time since the previous batch was taken.
type arrivalRate struct {
	perSec float64
	last   time.Time // when the previous batch was taken; zero before the first
}

// observe records that a batch of q records was taken at now.
func (r *arrivalRate) observe(q int, now time.Time) {
	if !r.last.IsZero() {
		if el := now.Sub(r.last).Seconds(); el > 0 {
			r.perSec += rateWeight * (float64(q)/el - r.perSec)
		}
	}
	r.last = now
}

// Committer implements Journal on a write-ahead log. Records enqueued under
// the Store's locks are written by one goroutine in enqueue order, in
// batches of whatever queued up while the previous batch was being
// fsynced (group commit).
type Committer struct {
	log Log

	// mu guards queue and err.
	mu sync.Mutex
	// queue holds the batches waiting to be written, oldest first; the
	// last one takes new records until it holds maxCommitBatch bytes.
	queue []*commitBatch
	err   error // sticky: once a batch failed, nothing more is written
	// spare is the record slice of a written batch, for the next new one
	// (two batches are alive at a time: one written, one filling).
	spare []wal.Record

	wake chan struct{}
	// rate is the arrival rate of records; only Run's goroutine uses it.
	rate arrivalRate
	// lastAppend is how long the last batch took to write; only Run's
	// goroutine uses it.
	lastAppend time.Duration
	// last is the position after the last durable batch; only the Run
	// goroutine writes it, others read it through Position.
	lastMu sync.Mutex
	last   wal.Position
}

// commitBatch is what goes to the log in one Append, and the outcome its
// waiters share: one channel per batch rather than per record, which
// took three allocations (item, channel, closure) off every push.
type commitBatch struct {
	recs  []wal.Record
	size  int // bytes of record data
	items int // records and barriers
	// relay is whether every item is a relayed request: such a batch is
	// never held back (see commitGain).
	relay bool
	done  chan struct{}
	err   error // set before done is closed
	// waitFn is wait as a func value, made once per batch rather than
	// per record.
	waitFn func(context.Context) error
}

// wait blocks until the batch is written, or ctx is done.
func (b *commitBatch) wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewCommitter builds a Committer; Run does the writing.
func NewCommitter(log Log) *Committer {
	return &Committer{log: log, wake: make(chan struct{}, 1)}
}

// Enqueue implements Journal.
func (c *Committer) Enqueue(typ uint8, data []byte) func(context.Context) error {
	return c.add(wal.Record{Type: typ, Data: data}, false)
}

// Barrier implements Journal.
func (c *Committer) Barrier(ctx context.Context) error {
	return c.add(wal.Record{}, true)(ctx)
}

// add queues rec (or, for a barrier, nothing) in the open batch, or in a
// new one if rec would take the open one past maxCommitBatch (a single
// larger record still goes, alone).
func (c *Committer) add(rec wal.Record, barrier bool) func(context.Context) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return func(context.Context) error { return err }
	}
	var b *commitBatch
	if n := len(c.queue); n > 0 && (barrier || c.queue[n-1].size == 0 || c.queue[n-1].size+len(rec.Data) <= maxCommitBatch) {
		b = c.queue[n-1]
	} else {
		b = &commitBatch{recs: c.spare, relay: true, done: make(chan struct{})}
		b.waitFn = b.wait
		c.spare = nil
		c.queue = append(c.queue, b)
	}
	b.items++
	if barrier {
		b.relay = false
	} else {
		b.recs = append(b.recs, rec)
		b.size += len(rec.Data)
		b.relay = b.relay && rec.Type == RecordRelay
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return b.waitFn
}

// Position returns the position after the last durable batch.
func (c *Committer) Position() wal.Position {
	c.lastMu.Lock()
	defer c.lastMu.Unlock()
	return c.last
}

// Run writes queued records until ctx is done, then writes what is still
// queued and returns.
func (c *Committer) Run(ctx context.Context) error {
	for {
		select {
		case <-c.wake:
			c.drain()
		case <-ctx.Done():
			c.drain()
			c.mu.Lock()
			if c.err == nil {
				c.err = errors.New("write-ahead log closed")
			}
			c.mu.Unlock()
			c.drain() // fail anything that raced in
			return nil
		}
	}
}

// maxSpareRecords bounds the record slice a Committer keeps for reuse.
const maxSpareRecords = 4096

func (c *Committer) drain() {
	var spare []wal.Record
	for {
		c.mu.Lock()
		if spare != nil {
			c.spare, spare = spare, nil
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		if d := commitDelay(c.queue[0].items, c.lastAppend, c.rate.perSec); d > 0 && !c.queue[0].relay {
			// Records are arriving densely, but fewer are queued than
			// make an fsync worth its CPU: wait half an fsync for more
			// to join (the head batch stays open meanwhile).
			c.mu.Unlock()
			time.Sleep(d)
			c.mu.Lock()
		}
		b := c.queue[0]
		// Shift rather than reslice, so that the backing array is reused.
		n := copy(c.queue, c.queue[1:])
		c.queue[n] = nil
		c.queue = c.queue[:n]
		// Counted when taken, each record once, over intervals that
		// follow one another: records that came in during a wait count
		// too, so waiting does not make the rate look lower.
		c.rate.observe(b.items, time.Now())
		err := c.err
		c.mu.Unlock()

		if err == nil && len(b.recs) > 0 {
			// Background: once queued, a batch is written even if the
			// requests that queued it went away.
			var pos wal.Position
			start := time.Now()
			pos, err = c.log.Append(context.Background(), b.recs...)
			c.lastAppend = time.Since(start)
			if err == nil {
				c.lastMu.Lock()
				c.last = pos
				c.lastMu.Unlock()
			} else {
				c.mu.Lock()
				if c.err == nil {
					c.err = err
				}
				c.mu.Unlock()
			}
		}
		if cap(b.recs) <= maxSpareRecords {
			clear(b.recs) // not to pin the records' data
			spare = b.recs[:0]
		}
		b.recs = nil // the waiters keep b; not its records
		b.err = err
		close(b.done)
	}
}

package aggregate

import (
	"context"
	"errors"
	"sync"

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

// Committer implements Journal on a write-ahead log. Records enqueued under
// the Store's locks are written by one goroutine in enqueue order, in
// batches of whatever queued up while the previous batch was being
// fsynced (group commit).
type Committer struct {
	log Log

	// mu guards queue and err.
	mu    sync.Mutex
	queue []*commitItem
	err   error // sticky: once a batch failed, nothing more is written

	wake chan struct{}
	// last is the position after the last durable batch; only the Run
	// goroutine writes it, others read it through Position.
	lastMu sync.Mutex
	last   wal.Position
}

type commitItem struct {
	rec  *wal.Record // nil for a barrier
	done chan struct{}
	err  error
}

// NewCommitter builds a Committer; Run does the writing.
func NewCommitter(log Log) *Committer {
	return &Committer{log: log, wake: make(chan struct{}, 1)}
}

// Enqueue implements Journal.
func (c *Committer) Enqueue(typ uint8, data []byte) func(context.Context) error {
	return c.add(&commitItem{rec: &wal.Record{Type: typ, Data: data}, done: make(chan struct{})})
}

// Barrier implements Journal.
func (c *Committer) Barrier(ctx context.Context) error {
	return c.add(&commitItem{done: make(chan struct{})})(ctx)
}

func (c *Committer) add(it *commitItem) func(context.Context) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return func(context.Context) error { return err }
	}
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return func(ctx context.Context) error {
		select {
		case <-it.done:
			return it.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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

func (c *Committer) drain() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		n, size := 0, 0
		for n < len(c.queue) {
			if r := c.queue[n].rec; r != nil {
				if n > 0 && size+len(r.Data) > maxCommitBatch {
					break
				}
				size += len(r.Data)
			}
			n++
		}
		batch := c.queue[:n:n]
		c.queue = c.queue[n:]
		err := c.err
		c.mu.Unlock()

		if err == nil {
			recs := make([]wal.Record, 0, len(batch))
			for _, it := range batch {
				if it.rec != nil {
					recs = append(recs, *it.rec)
				}
			}
			if len(recs) > 0 {
				// Background: once queued, a batch is written even if the
				// requests that queued it went away.
				var pos wal.Position
				pos, err = c.log.Append(context.Background(), recs...)
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
		}
		for _, it := range batch {
			it.err = err
			close(it.done)
		}
	}
}

package forward

import (
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// sample is one float sample or one native histogram on its way to a
// target, with the labels it is sent with (external labels and
// write_relabel_configs applied).
type sample struct {
	lset labels.Labels
	// meta is the metric family's metadata, nil if none was given. It is
	// shared and never modified.
	meta *prompb.MetricMetadata
	// h is the histogram, nil for a float sample. It points into the
	// WriteRequest handed to Append, which the Manager owns and never
	// modifies.
	h *prompb.Histogram
	t int64
	v float64
	// size is the approximate number of bytes the sample stands for, for
	// sluice_forward_queue_bytes.
	size int
}

// backlog is one shard's FIFO of samples waiting to be sent. It is not safe
// for concurrent use: the shard's mutex guards it. The in-memory ring is
// the only implementation today; a disk-backed backlog (SPEC 6 and 7)
// replaces it behind this interface.
type backlog interface {
	// push appends s. When the backlog is full it first evicts the oldest
	// sample and returns it with ok true: push never blocks.
	push(s sample) (evicted sample, ok bool)
	// pop moves up to n of the oldest samples to dst and returns it.
	pop(dst []sample, n int) []sample
	// len returns the number of samples held.
	len() int
}

// ring is a bounded in-memory backlog. Its storage grows on demand up to
// max samples, so that an idle target costs little.
type ring struct {
	buf  []sample // circular; len(buf) is the allocated size
	head int      // index of the oldest sample
	n    int      // samples held
	max  int      // capacity (queue_config.capacity)
}

// ringInitial is the first allocation: a small Sluice sends a few hundred
// series per window.
const ringInitial = 256

func newRing(capacity int) *ring {
	return &ring{max: capacity}
}

func (r *ring) push(s sample) (sample, bool) {
	if r.n == r.max {
		// Full, hence len(buf) == max: overwrite the oldest.
		ev := r.buf[r.head]
		r.buf[r.head] = s
		r.head = (r.head + 1) % len(r.buf)
		return ev, true
	}
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = s
	r.n++
	return sample{}, false
}

func (r *ring) grow() {
	size := max(ringInitial, 2*len(r.buf))
	size = min(size, r.max)
	buf := make([]sample, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}

func (r *ring) pop(dst []sample, n int) []sample {
	n = min(n, r.n)
	for range n {
		dst = append(dst, r.buf[r.head])
		r.buf[r.head] = sample{} // release labels and histograms
		r.head = (r.head + 1) % len(r.buf)
	}
	r.n -= n
	if r.n == 0 {
		r.head = 0
	}
	return dst
}

func (r *ring) len() int { return r.n }

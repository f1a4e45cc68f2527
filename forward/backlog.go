package forward

import (
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// sample is one float sample or one native histogram on its way to a
// target, with the labels it is sent with (external labels and
// write_relabel_configs applied). Samples are decoded from the target's
// backlog on disk (queue.go); each owns its labels, metadata and
// histogram, which are shared between copies and never modified.
type sample struct {
	// lset is the series' labels, empty when wire holds them.
	lset labels.Labels
	// wire is the series' labels as a prometheus.TimeSeries holds them
	// (field-1 Label messages), set only by a wire decoder (for
	// Remote-Write 1.0 targets); it aliases a decoder arena that is never
	// written again.
	wire []byte
	// meta is the metric family's metadata, nil if none was given.
	meta *prompb.MetricMetadata
	// h is the histogram, nil for a float sample.
	h *prompb.Histogram
	t int64
	v float64
	// size is the approximate number of bytes the sample stands for, for
	// sluice_forward_queue_bytes.
	size int
	// frame is the sequence number of the backlog frame the sample was
	// read from (see tracker): a batch never mixes two frames.
	frame uint64
	// fresh: the frame was appended by this process and taken from
	// memory, so it was never sent before (see ring.headRun).
	fresh bool
}

// hash picks the sample's shard: the same series always gets the same
// hash within one target (whose samples all have wire, or none has).
func (s *sample) hash() uint64 {
	if s.wire != nil {
		return xxhash.Sum64(s.wire)
	}
	return s.lset.Hash()
}

// ring is a shard's in-memory FIFO of samples read ahead from the backlog,
// queue_config.capacity of them at most. Its storage grows on demand up to
// max samples, so that an idle target costs little. It is not safe for
// concurrent use: the shard's mutex guards it. The reader only pushes what
// room says fits; push evicts the oldest sample of a full ring (never
// happens in the shards, kept so that push never fails).
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

// room returns how many samples fit before the ring is full.
func (r *ring) room() int { return r.max - r.n }

// headRun returns the number of samples, at most n, from the oldest on
// that make the next batch: those of the oldest sample's frame, and of the
// frames after it while all are fresh. Frames that may have been sent
// before (read back from disk, after a restart) are batched alone, so that
// a receiver that rejects a whole request for one sample it already has
// (out of order) never rejects new samples with it; fresh frames are
// batched together, and split again if the receiver rejects them
// (shard.send).
func (r *ring) headRun(n int) int {
	n = min(n, r.n)
	if n == 0 {
		return 0
	}
	first := &r.buf[r.head]
	for i := 1; i < n; i++ {
		s := &r.buf[(r.head+i)%len(r.buf)]
		if s.frame != first.frame && !(first.fresh && s.fresh) {
			return i
		}
	}
	return n
}

package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/sluice-metrics/sluice/wal"
)

// coalesceFrameSamples bounds the frames a coalescing writes, so that
// each decodes in a few hundred kilobytes.
const coalesceFrameSamples = 10_000

// coalescer folds samples, in their order in the backlog, into what
// survives coalescing: for each series its newest float sample, its
// newest histogram, and a staleness marker only if it is the series'
// newest entry. Sluice's outputs are cumulative (counters, histograms,
// gauges of the current state), so the newest sample carries the total:
// only the resolution of the windows before it is lost.
type coalescer struct {
	byHash map[uint64][]int32 // labels hash -> indices in series
	series []coalescedSeries
	in     int // samples added
}

type coalescedSeries struct {
	lset               labels.Labels
	float, hist, stale keptSample
}

// keptSample is a sample and its position among those added, so that the
// survivors keep their order.
type keptSample struct {
	s   sample
	pos int // 1-based; 0: none
}

func newCoalescer() *coalescer {
	return &coalescer{byHash: map[uint64][]int32{}}
}

// isStale reports whether s is a staleness marker (float or histogram).
func isStale(s *sample) bool {
	if s.h != nil {
		return value.IsStaleNaN(s.h.Sum)
	}
	return value.IsStaleNaN(s.v)
}

func (c *coalescer) add(s *sample) {
	c.in++
	k := keptSample{s: *s, pos: c.in}
	k.s.frame = 0
	st := c.lookup(s.lset)
	switch {
	case isStale(s):
		st.stale = k
	case s.h != nil:
		st.hist, st.stale = k, keptSample{}
	default:
		st.float, st.stale = k, keptSample{}
	}
}

func (c *coalescer) lookup(ls labels.Labels) *coalescedSeries {
	h := ls.Hash()
	for _, i := range c.byHash[h] {
		if labels.Equal(c.series[i].lset, ls) {
			return &c.series[i]
		}
	}
	c.byHash[h] = append(c.byHash[h], int32(len(c.series)))
	c.series = append(c.series, coalescedSeries{lset: ls})
	return &c.series[len(c.series)-1]
}

// result returns the survivors in the order they were added.
func (c *coalescer) result() []sample {
	kept := make([]keptSample, 0, len(c.series))
	for i := range c.series {
		for _, k := range []keptSample{c.series[i].float, c.series[i].hist, c.series[i].stale} {
			if k.pos > 0 {
				kept = append(kept, k)
			}
		}
	}
	slices.SortFunc(kept, func(a, b keptSample) int { return a.pos - b.pos })
	out := make([]sample, len(kept))
	for i := range kept {
		out[i] = kept[i].s
	}
	return out
}

// enforceLimit brings the backlog back under max_backlog_bytes (SPEC 6).
// It works only on the segments after the reader's, never the last one
// (which takes appends): the frames the shards hold or send are not
// touched. First it coalesces the oldest of them into one segment, as many
// as it takes to bring the backlog to half its limit if they coalesce
// well; if the backlog is still over the limit it deletes the oldest of
// them until it is not. Both are counted as dropped samples,
// reasons coalesced and backlog_full. dec and enc are the caller's.
func (q *queue) enforceLimit(ctx context.Context, dec *frameDecoder, enc *frameEncoder) {
	// Windows appended while coalescing may leave the backlog over its
	// limit: coalesce again (the coalesced segment with them) before
	// dropping anything, until it is under the limit or coalescing stops
	// paying (pickForCoalescing).
	for ctx.Err() == nil {
		pick := q.pickForCoalescing()
		if len(pick) == 0 {
			break
		}
		if err := q.coalesce(ctx, pick, dec, enc); err != nil {
			if ctx.Err() == nil {
				q.logger.Error("coalesce the backlog", "err", err)
			}
			break
		}
	}
	q.dropOldest()
}

// candidatesLocked returns the segments enforceLimit may rewrite or drop.
func (q *queue) candidatesLocked() []qseg {
	i, _ := slices.BinarySearchFunc(q.segs, q.rpos.Segment+1, func(s qseg, idx int) int { return s.idx - idx })
	if i >= len(q.segs)-1 {
		return nil
	}
	return q.segs[i : len(q.segs)-1]
}

func (q *queue) pickForCoalescing() []qseg {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if q.unsentLocked() <= q.limit || q.appended < q.coalesceAfter {
		return nil
	}
	// Enough that, coalesced to little, they leave the backlog at half
	// its limit: room for many windows before the next coalescing.
	need := q.unsentLocked() - q.limit/2
	cands := q.candidatesLocked()
	var size int64
	frames := 0
	n := 0
	for n < len(cands) && size < need {
		size += cands[n].size
		frames += cands[n].frames
		n++
	}
	if frames < 2 {
		return nil // nothing to gain
	}
	return slices.Clone(cands[:n])
}

// coalesce rewrites the segments pick (consecutive, after the reader's) as
// one: coalesce.tmp is written and fsynced, then renamed over the last of
// them, then the others are deleted. A crash in between leaves old and
// coalesced windows both, which are sent again: at-least-once, in order.
func (q *queue) coalesce(ctx context.Context, pick []qseg, dec *frameDecoder, enc *frameEncoder) error {
	c := newCoalescer()
	var (
		buf      []sample
		lost     int64 // in frames that could not be read
		inBytes  int64
		inFrames int
	)
	for _, s := range pick {
		inBytes += s.size
		inFrames += s.frames
		seen, err := q.readSegment(s, func(p []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			var err error
			buf, err = dec.decode(p, buf[:0])
			for i := range buf {
				c.add(&buf[i])
			}
			clear(buf)
			return err
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if !errors.Is(err, errFrame) {
				return err
			}
			q.logger.Error("backlog segment damaged; coalescing what precedes the damage",
				"segment", wal.SegmentName(s.idx), "err", err)
		}
		lost += max(s.samples-seen, 0)
	}
	out := c.result()
	removed := int64(c.in - len(out))

	tmp := q.path(coalesceTmp)
	size, frames, err := q.writeSegment(tmp, out, enc)
	if err != nil {
		_ = q.fs.Remove(tmp)
		return err
	}
	last := pick[len(pick)-1].idx
	if err := q.fs.Rename(tmp, q.segPath(last)); err != nil {
		_ = q.fs.Remove(tmp)
		return fmt.Errorf("replace backlog segment: %w", err)
	}
	if err := q.fs.SyncDir(q.dir); err != nil {
		q.logger.Warn("fsync backlog directory", "err", err)
	}

	q.mtx.Lock()
	q.forgetMemLocked(last) // their frames moved
	i, _ := slices.BinarySearchFunc(q.segs, pick[0].idx, func(s qseg, idx int) int { return s.idx - idx })
	q.segs = slices.Delete(q.segs, i, i+len(pick)-1)
	q.segs[i] = qseg{idx: last, size: size, samples: int64(len(out)), frames: frames}
	q.diskBytes += size - inBytes
	q.samples -= removed + lost
	if size*2 > inBytes {
		// Little to gain from coalescing again before a quarter of the
		// limit has been appended: keep under the limit by dropping.
		q.coalesceAfter = q.appended + q.limit/4
	}
	q.updateGaugesLocked()
	q.mtx.Unlock()

	gone := make([]int, 0, len(pick)-1)
	for _, s := range pick[:len(pick)-1] {
		gone = append(gone, s.idx)
	}
	q.removeSegments(gone)
	q.m.dropped.WithLabelValues(reasonCoalesced).Add(float64(removed))
	if lost > 0 {
		q.m.dropped.WithLabelValues(reasonCorrupt).Add(float64(lost))
	}
	q.logger.Warn("backlog over max_backlog_bytes: oldest windows coalesced, keeping each series' newest sample (totals kept, resolution lost)",
		"frames", inFrames, "samples_removed", removed, "samples_kept", len(out), "bytes_before", inBytes, "bytes_after", size)
	return nil
}

// readSegment calls fn with each frame payload of s, in order, and returns
// the samples the frames read held. It stops at the first error.
func (q *queue) readSegment(s qseg, fn func(payload []byte) error) (int64, error) {
	f, err := q.fs.OpenFile(q.segPath(s.idx), os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("open backlog segment: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var (
		hdr  [frameHeaderSize]byte
		buf  []byte
		off  int64
		seen int64
	)
	for off < s.size {
		p, n, err := readFrame(br, off, s.size, &hdr, &buf)
		if err != nil {
			return seen, err
		}
		if err := fn(p); err != nil {
			return seen, err
		}
		off += frameHeaderSize + int64(len(p))
		seen += int64(n)
	}
	return seen, nil
}

// writeSegment writes samples as frames to a new file and fsyncs it.
func (q *queue) writeSegment(name string, samples []sample, enc *frameEncoder) (size int64, frames int, err error) {
	f, err := q.fs.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, 0, fmt.Errorf("write coalesced backlog: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write coalesced backlog: %w", cerr)
		}
	}()
	for chunk := range slices.Chunk(samples, coalesceFrameSamples) {
		enc.reset()
		for i := range chunk {
			if err := enc.addSample(&chunk[i]); err != nil {
				return 0, 0, err
			}
		}
		frame := enc.finish()
		if _, err := f.Write(frame); err != nil {
			return 0, 0, fmt.Errorf("write coalesced backlog: %w", err)
		}
		size += int64(len(frame))
		frames++
	}
	if err := f.Sync(); err != nil {
		return 0, 0, fmt.Errorf("write coalesced backlog: %w", err)
	}
	return size, frames, nil
}

// dropOldest deletes the oldest segments after the reader's while the
// backlog is over its limit, counting their samples (backlog_full).
func (q *queue) dropOldest() {
	q.mtx.Lock()
	var (
		gone    []int
		samples int64
		bytes   int64
	)
	for q.unsentLocked() > q.limit {
		cands := q.candidatesLocked()
		if len(cands) == 0 {
			break
		}
		s := cands[0]
		i, _ := slices.BinarySearchFunc(q.segs, s.idx, func(s qseg, idx int) int { return s.idx - idx })
		q.segs = slices.Delete(q.segs, i, i+1)
		q.diskBytes -= s.size
		q.samples -= s.samples
		gone = append(gone, s.idx)
		samples += s.samples
		bytes += s.size
	}
	if len(gone) > 0 {
		q.updateGaugesLocked()
	}
	q.mtx.Unlock()
	if len(gone) == 0 {
		return
	}
	q.removeSegments(gone)
	q.m.dropped.WithLabelValues(reasonBacklogFull).Add(float64(samples))
	q.logger.Warn("backlog still over max_backlog_bytes after coalescing: dropping its oldest windows",
		"samples_dropped", samples, "bytes", bytes, "segments", len(gone))
}

package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/DataDog/sketches-go/ddsketch"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// snapshotMagic and snapshotVersion head a state snapshot (the data of a
// WAL checkpoint). Bump the version on any layout change; restore reads
// every version.
//
// Version 3, written a part at a time as the state is copied:
//
//	magic "SLST" | version <uvarint> = 3 | series entries, to the groups |
//	groups | series count <8b> | group count <8b> |
//	offset of the groups from the first series entry <8b>
//
// Version 2 (read only) is version 3 without the unit after each series'
// HELP text. Version 1 (read only) had the group count, the groups and the series
// count before the series entries, and nothing after them. A group is its
// labels, last push and last failure; a series entry is its group's index
// then the series (appendSeries). The trailer's integers are big endian.
const (
	snapshotMagic   = "SLST"
	snapshotVersion = 3
	// snapshotTrailer is the size of a version 2 or 3 snapshot's trailer.
	snapshotTrailer = 24
	// captureBuffer is how many bytes of series entries a capture
	// gathers before writing them to the checkpoint.
	captureBuffer = 256 << 10
)

// Series state kinds in a snapshot.
const (
	stateValue   = 0
	stateWindow  = 1
	stateHist    = 2
	stateSummary = 3
)

// capture is a checkpoint's copy of the state at one position of the
// log, taken group by group while operations go on (see Checkpoint): a
// group is copied by the checkpoint, or, if an operation gets to it
// first, by that operation before it changes the group. Either holds the
// group's lock. Series entries go to the checkpoint file a buffer at a
// time; the groups, small, are kept and written after them (snapshot
// version 2).
type capture struct {
	epoch   int64
	version uint64 // of the layout written

	mu      sync.Mutex // guards the fields below
	out     io.Writer  // the checkpoint file
	buf     []byte     // bytes not yet written to out
	written int64      // bytes written to out
	body    int64      // where the series entries start (after magic and version)
	err     error      // the first write error
	groups  []byte     // the live groups' entries
	live    int
	nSeries int
}

// newCapture starts the capture of checkpoint epoch into out.
func (s *Store) newCapture(epoch int64, out io.Writer) *capture {
	c := &capture{epoch: epoch, version: snapshotVersion, out: out, buf: make([]byte, 0, captureBuffer+captureBuffer/4)}
	if s.snapshotLayout != 0 {
		c.version = s.snapshotLayout
	}
	c.buf = append(c.buf, snapshotMagic...)
	c.buf = binary.AppendUvarint(c.buf, c.version)
	c.body = int64(len(c.buf))
	return c
}

// captureLocked copies g into the checkpoint being taken, c, unless it
// is there already. The caller holds g.mu.
func (s *Store) captureLocked(g *group, c *capture) {
	if g.captured >= c.epoch {
		return
	}
	g.captured = c.epoch
	if g.deleted || g.lastPush == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := uint64(c.live)
	c.live++
	c.groups = appendLabels(c.groups, g.labels)
	c.groups = binary.AppendVarint(c.groups, g.lastPush)
	c.groups = binary.AppendVarint(c.groups, g.lastFailure)
	c.nSeries += len(g.series)
	for _, se := range g.series {
		c.buf = binary.AppendUvarint(c.buf, idx)
		c.buf = appendSeries(c.buf, se, c.version)
	}
	if len(c.buf) >= captureBuffer {
		c.writeOut()
	}
}

// writeOut writes the buffer to the checkpoint file. c.mu is held.
func (c *capture) writeOut() {
	if c.err == nil {
		_, c.err = c.out.Write(c.buf)
	}
	c.written += int64(len(c.buf))
	c.buf = c.buf[:0]
}

// finish writes the rest of the snapshot (the groups and the trailer) and
// returns its size, or the first write error. Every group is captured by
// then.
func (c *capture) finish() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	groupsAt := c.written + int64(len(c.buf)) - c.body
	c.buf = append(c.buf, c.groups...)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(c.nSeries))
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(c.live))
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(groupsAt))
	c.writeOut()
	return c.written, c.err
}

// beforeChange copies g into the checkpoint being taken, if any, before an
// operation changes it. The caller holds g.mu.
func (s *Store) beforeChange(g *group) {
	if c := s.capturing.Load(); c != nil {
		s.captureLocked(g, c)
	}
}

// appendSeries appends one series entry of a snapshot, after its group
// index.
func appendSeries(b []byte, se *series, version uint64) []byte {
	b = appendLabels(b, se.lset)
	b = appendString(b, se.name)
	b = append(b, byte(se.typ))
	b = appendString(b, se.mode.String())
	b = appendString(b, se.fam.help)
	if version >= 3 {
		b = appendString(b, se.fam.unit)
	}
	b = binary.AppendVarint(b, se.lastPush)
	switch {
	case se.win != nil:
		b = append(b, stateWindow)
		b = appendWindow(b, se.win)
	case se.hist != nil:
		b = append(b, stateHist)
		b = appendHist(b, se.hist)
	case se.summ != nil:
		b = append(b, stateSummary)
		b = appendFloat(b, se.summ.count)
		b = appendFloat(b, se.summ.sum)
		b = binary.AppendUvarint(b, uint64(len(se.summ.quantiles)))
		for _, q := range se.summ.quantiles {
			b = appendFloat(b, q.GetQuantile())
			b = appendFloat(b, q.GetValue())
		}
	default:
		b = append(b, stateValue)
		b = appendFloat(b, se.value)
	}
	return b
}

func appendFloat(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func appendWindow(b []byte, w *window) []byte {
	b = binary.AppendVarint(b, w.step)
	for i := range w.slots {
		sl := &w.slots[i]
		b = binary.AppendVarint(b, sl.idx)
		if sl.idx == 0 {
			continue
		}
		b = appendFloat(b, sl.count)
		b = appendFloat(b, sl.sum)
		b = appendFloat(b, sl.min)
		b = appendFloat(b, sl.max)
		var sk []byte
		if sl.sketch != nil {
			sl.sketch.Encode(&sk, true)
		}
		b = binary.AppendUvarint(b, uint64(len(sk)))
		b = append(b, sk...)
	}
	return b
}

func appendHist(b []byte, h *histState) []byte {
	b = appendFloat(b, h.count)
	b = appendFloat(b, h.sum)
	b = binary.AppendUvarint(b, uint64(len(h.bounds)))
	for i := range h.bounds {
		b = appendFloat(b, h.bounds[i])
		b = appendFloat(b, h.cum[i])
	}
	if h.native == nil {
		return append(b, 0)
	}
	n := h.native
	b = append(b, 1)
	b = binary.AppendVarint(b, int64(n.Schema))
	b = appendFloat(b, n.ZeroThreshold)
	b = appendFloat(b, n.ZeroCount)
	b = appendFloat(b, n.Count)
	b = appendFloat(b, n.Sum)
	for _, side := range []struct {
		spans   []histogram.Span
		buckets []float64
	}{{n.PositiveSpans, n.PositiveBuckets}, {n.NegativeSpans, n.NegativeBuckets}} {
		b = binary.AppendUvarint(b, uint64(len(side.spans)))
		for _, sp := range side.spans {
			b = binary.AppendVarint(b, int64(sp.Offset))
			b = binary.AppendUvarint(b, uint64(sp.Length))
		}
		b = binary.AppendUvarint(b, uint64(len(side.buckets)))
		for _, v := range side.buckets {
			b = appendFloat(b, v)
		}
	}
	return b
}

func (r *reader) float() (float64, error) {
	if len(r.b) < 8 {
		return 0, errShort
	}
	f := math.Float64frombits(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return f, nil
}

func (r *reader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		return 0, errShort
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) varint() (int64, error) {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		return 0, errShort
	}
	r.b = r.b[n:]
	return v, nil
}

// restoreScratch is what restore reuses from one series to the next.
type restoreScratch struct {
	strs  map[string]string       // interned strings, up to maxInterned
	modes map[string]configs.Mode // parsed modes by their text
	sb    labels.ScratchBuilder
	key   []byte
}

// maxInterned bounds the strings a restore interns; label values can be
// unique per series, and those are not worth keeping.
const maxInterned = 1 << 16

// string reads a string, returning the interned copy if it has one.
func (rs *restoreScratch) string(r *reader) (string, error) {
	n, err := r.count()
	if err != nil || n > len(r.b) {
		return "", errShort
	}
	b := r.b[:n]
	r.b = r.b[n:]
	if s, ok := rs.strs[string(b)]; ok {
		return s, nil
	}
	s := string(b)
	if len(rs.strs) < maxInterned {
		rs.strs[s] = s
	}
	return s, nil
}

// labels is reader.labels with interned strings and a reused builder.
func (rs *restoreScratch) labels(r *reader) (labels.Labels, error) {
	n, err := r.count()
	if err != nil {
		return labels.EmptyLabels(), err
	}
	rs.sb.Reset()
	for i := 0; i < n; i++ {
		name, err := rs.string(r)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		value, err := rs.string(r)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		rs.sb.Add(name, value)
	}
	rs.sb.Sort()
	return rs.sb.Labels(), nil
}

// mode reads and parses a mode, parsing each distinct text once.
func (rs *restoreScratch) mode(r *reader) (configs.Mode, error) {
	n, err := r.count()
	if err != nil || n > len(r.b) {
		return configs.Mode{}, errShort
	}
	b := r.b[:n]
	r.b = r.b[n:]
	if m, ok := rs.modes[string(b)]; ok {
		return m, nil
	}
	m, err := configs.ParseMode(string(b))
	if err != nil {
		return configs.Mode{}, fmt.Errorf("restore snapshot: %w", err)
	}
	if len(rs.modes) < maxInterned {
		rs.modes[string(b)] = m
	}
	return m, nil
}

// restore rebuilds the state from a snapshot into an empty Store.
func (s *Store) restore(data []byte) error {
	if len(data) < len(snapshotMagic) || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return errors.New("restore snapshot: bad magic")
	}
	r := &reader{b: data[len(snapshotMagic):]}
	v, err := r.count()
	if err != nil || v < 1 || v > snapshotVersion {
		return fmt.Errorf("restore snapshot: unsupported version %d", v)
	}
	var (
		gr     = r // the groups
		ng, ns int
	)
	if v == 1 {
		if ng, err = r.count(); err != nil {
			return err
		}
	} else {
		b := r.b
		if len(b) < snapshotTrailer {
			return errors.New("restore snapshot: truncated trailer")
		}
		t := b[len(b)-snapshotTrailer:]
		b = b[:len(b)-snapshotTrailer]
		nSeries, nGroups, at := binary.BigEndian.Uint64(t), binary.BigEndian.Uint64(t[8:]), binary.BigEndian.Uint64(t[16:])
		// Every entry takes a byte at least.
		if at > uint64(len(b)) || nSeries > at || nGroups > uint64(len(b))-at {
			return fmt.Errorf("restore snapshot: trailer (%d series, %d groups at %d) does not fit %d bytes", nSeries, nGroups, at, len(b))
		}
		r, gr = &reader{b: b[:at]}, &reader{b: b[at:]}
		ng, ns = int(nGroups), int(nSeries)
	}
	groups := make([]*group, ng)
	for i := range groups {
		ls, err := gr.labels()
		if err != nil {
			return err
		}
		g := &group{key: groupKey(ls, s.keysInLabels), labels: ls}
		if g.lastPush, err = gr.varint(); err != nil {
			return err
		}
		if g.lastFailure, err = gr.varint(); err != nil {
			return err
		}
		groups[i] = g
	}
	if v == 1 {
		if ns, err = r.count(); err != nil {
			return err
		}
	} else if len(gr.b) != 0 {
		return fmt.Errorf("restore snapshot: %d bytes after the groups", len(gr.b))
	}
	// Decode every series first, then build the maps at their final
	// sizes: growing maps of a million entries one by one costs more than
	// decoding the series.
	all := make([]*series, 0, ns)
	perGroup := make([]int, len(groups))
	// Scratch reused for every series: label names, metric names, modes
	// and HELP texts repeat across series, so they are interned, and the
	// label builder and key buffer are reused.
	rs := restoreScratch{strs: make(map[string]string), modes: make(map[string]configs.Mode)}
	for i := 0; i < ns; i++ {
		// The group index is not a length: count() would reject an index
		// larger than the bytes left, as near the end of a big snapshot.
		gi, err := r.uvarint()
		if err != nil || gi >= uint64(len(groups)) {
			return fmt.Errorf("restore snapshot: series %d: bad group index", i)
		}
		se := &series{group: groups[gi]}
		if se.lset, err = rs.labels(r); err != nil {
			return err
		}
		if d, ok := labelsData(se.lset); ok && s.keysInLabels {
			se.key = d // the labels' encoding, shared
		} else {
			rs.key = se.lset.Bytes(rs.key)
			se.key = string(rs.key)
		}
		if se.name, err = rs.string(r); err != nil {
			return err
		}
		tb, err := r.byte()
		if err != nil {
			return err
		}
		se.typ = dto.MetricType(tb)
		if se.mode, err = rs.mode(r); err != nil {
			return err
		}
		help, err := rs.string(r)
		if err != nil {
			return err
		}
		var unit string
		if v >= 3 {
			if unit, err = rs.string(r); err != nil {
				return err
			}
		}
		if se.lastPush, err = r.varint(); err != nil {
			return err
		}
		kind, err := r.byte()
		if err != nil {
			return err
		}
		switch kind {
		case stateValue:
			se.value, err = r.float()
		case stateWindow:
			se.win, err = r.window(se.mode)
		case stateHist:
			se.hist, err = r.hist()
		case stateSummary:
			se.summ, err = r.summary()
		default:
			err = fmt.Errorf("restore snapshot: unknown state kind %d", kind)
		}
		if err != nil {
			return err
		}
		u := &update{name: se.name, typ: se.typ, outType: outputType(se.typ, se.mode), mode: se.mode, help: help, unit: unit, obs: observation{hist: se.hist}}
		f, err := s.claim(u, false, true) // restored: accepted once
		if err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
		se.fam = f // the claim is the series' reference
		if showsClassic(u) {
			f.classic.Store(true) // from any of its series, not the first only
		}
		se.name = f.name
		all = append(all, se)
		perGroup[gi]++
	}
	if len(r.b) != 0 {
		return fmt.Errorf("restore snapshot: %d trailing bytes", len(r.b))
	}
	for i, g := range groups {
		g.series = make(map[string]*series, perGroup[i])
		s.groups[g.key] = g
	}
	perShard := len(all)/len(s.shards) + len(all)/(8*len(s.shards)) + 1
	for i := range s.shards {
		if len(s.shards[i].series) == 0 {
			s.shards[i].series = make(map[string]*series, perShard)
		}
	}
	var extra int64
	for _, se := range all {
		s.shards[s.shardOf(se.key)].series[se.key] = se
		se.group.series[se.key] = se
		s.modeCounts[se.mode.Kind].Add(1)
		se.extra = exposedExtra(se.hist, se.summ)
		se.group.extra += int(se.extra)
		extra += int64(se.extra)
	}
	s.counted.Add(int64(len(all)) + extra)
	return nil
}

func (r *reader) window(m configs.Mode) (*window, error) {
	w := newWindow(m)
	step, err := r.varint()
	if err != nil {
		return nil, err
	}
	w.step = step
	for i := range w.slots {
		sl := &w.slots[i]
		if sl.idx, err = r.varint(); err != nil {
			return nil, err
		}
		if sl.idx == 0 {
			continue
		}
		for _, f := range []*float64{&sl.count, &sl.sum, &sl.min, &sl.max} {
			if *f, err = r.float(); err != nil {
				return nil, err
			}
		}
		n, err := r.count()
		if err != nil || n > len(r.b) {
			return nil, errShort
		}
		if n > 0 {
			sk, _ := ddsketch.NewDefaultDDSketch(sketchAccuracy)
			if err := sk.DecodeAndMergeWith(r.b[:n]); err != nil {
				return nil, fmt.Errorf("restore snapshot: sketch: %w", err)
			}
			sl.sketch = sk
			r.b = r.b[n:]
		}
	}
	return w, nil
}

func (r *reader) hist() (*histState, error) {
	h := &histState{}
	var err error
	if h.count, err = r.float(); err != nil {
		return nil, err
	}
	if h.sum, err = r.float(); err != nil {
		return nil, err
	}
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		b, err := r.float()
		if err != nil {
			return nil, err
		}
		c, err := r.float()
		if err != nil {
			return nil, err
		}
		h.bounds, h.cum = append(h.bounds, b), append(h.cum, c)
	}
	native, err := r.byte()
	if err != nil || native == 0 {
		return h, err
	}
	fh := &histogram.FloatHistogram{}
	schema, err := r.varint()
	if err != nil {
		return nil, err
	}
	fh.Schema = int32(schema)
	for _, f := range []*float64{&fh.ZeroThreshold, &fh.ZeroCount, &fh.Count, &fh.Sum} {
		if *f, err = r.float(); err != nil {
			return nil, err
		}
	}
	for side := 0; side < 2; side++ {
		ns, err := r.count()
		if err != nil {
			return nil, err
		}
		spans := make([]histogram.Span, ns)
		for i := range spans {
			off, err := r.varint()
			if err != nil {
				return nil, err
			}
			l, err := r.count()
			if err != nil {
				return nil, err
			}
			spans[i] = histogram.Span{Offset: int32(off), Length: uint32(l)}
		}
		nb, err := r.count()
		if err != nil {
			return nil, err
		}
		buckets := make([]float64, nb)
		for i := range buckets {
			if buckets[i], err = r.float(); err != nil {
				return nil, err
			}
		}
		if side == 0 {
			fh.PositiveSpans, fh.PositiveBuckets = spans, buckets
		} else {
			fh.NegativeSpans, fh.NegativeBuckets = spans, buckets
		}
	}
	h.native = fh
	return h, nil
}

func (r *reader) summary() (*summaryState, error) {
	sm := &summaryState{}
	var err error
	if sm.count, err = r.float(); err != nil {
		return nil, err
	}
	if sm.sum, err = r.float(); err != nil {
		return nil, err
	}
	n, err := r.count()
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		q, err := r.float()
		if err != nil {
			return nil, err
		}
		v, err := r.float()
		if err != nil {
			return nil, err
		}
		sm.quantiles = append(sm.quantiles, &dto.Quantile{Quantile: ptr(q), Value: ptr(v)})
	}
	return sm, nil
}

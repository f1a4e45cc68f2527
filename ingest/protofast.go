package ingest

import (
	"math"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// parseProto decodes a body of varint-delimited MetricFamily messages (what
// client_golang's push package sends) into p's slabs, as parseBody does for
// text: a handful of allocations per body instead of several per sample.
//
// It produces exactly what decodeProtoDelimited produces, for the inputs it
// accepts, and gives up (ok == false) on anything outside the common shape:
// a field it does not know or with an unexpected wire type, a singular field
// given twice (which proto.Unmarshal would merge), exemplars, native
// histograms, an unknown type, a truncated message, or a
// family that validateProtoFamily rejects. The caller then decodes with
// decodeProtoDelimited, which yields the same families or its own error.
// FuzzProtoFastMatchesUnmarshal checks the equivalence. What it returns is
// valid until p's next parse or reset, like parseBody's.
func (p *textParser) parseProto(body []byte) (fams []*dto.MetricFamily, ok bool) {
	p.reset()
	p.buf = append(p.buf[:0], body...)
	p.s = unsafe.String(unsafe.SliceData(p.buf), len(p.buf))
	// A metric takes at least 4 bytes and a label pair 6, but client
	// bodies run to about 40 and 25: room for those, and the slabs grow
	// if not enough.
	p.slab.init(len(body)/24, len(body)/12)
	if p.index == nil {
		p.index = make(map[string]int, 8)
	}
	out := p.out[:0]
	for pos := 0; pos < len(p.buf); {
		size, n := protowire.ConsumeVarint(p.buf[pos:])
		if n < 0 || size > uint64(len(p.buf)-pos-n) {
			return nil, false
		}
		start, end := pos+n, pos+n+int(size)
		mf, ok := p.protoFamily(start, end)
		if !ok || validateProtoFamily(mf) != nil {
			return nil, false
		}
		pos = end
		out = addFamily(out, p.index, mf)
	}
	p.out = out
	p.parsed, p.proto = true, true
	if len(out) == 0 {
		return nil, true
	}
	return out, true
}

// str returns the body's bytes [off, end) as a string in p.s's memory.
func (p *textParser) str(off, end int) *string { return p.slab.str(p.s[off:end]) }

// protoField is one field of a message: its number and wire type, its
// value (varint or fixed64), and where its value's bytes or, for a
// length-delimited field, its payload are in p.buf, [off, end).
type protoField struct {
	num      protowire.Number
	typ      protowire.Type
	off, end int
	v        uint64
}

// fieldReader reads the fields of the message at p.buf[i:end] one by one.
type fieldReader struct {
	b      []byte // p.buf
	i, end int
	f      protoField // the field next read
	bad    bool       // the message is malformed
}

func (p *textParser) fields(start, end int) fieldReader {
	return fieldReader{b: p.buf, i: start, end: end}
}

// next reads the next field into r.f and reports whether there was one; at
// a malformed one it sets r.bad and returns false.
func (r *fieldReader) next() bool {
	if r.i >= r.end {
		return false
	}
	b := r.b[r.i:r.end]
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		r.bad = true
		return false
	}
	f := protoField{num: num, typ: typ}
	var m int
	switch typ {
	case protowire.VarintType:
		f.v, m = protowire.ConsumeVarint(b[n:])
		f.off, f.end = r.i+n, r.i+n+m
	case protowire.Fixed64Type:
		f.v, m = protowire.ConsumeFixed64(b[n:])
		f.off, f.end = r.i+n, r.i+n+m
	case protowire.BytesType:
		var size uint64
		size, m = protowire.ConsumeVarint(b[n:])
		if m >= 0 && size > uint64(len(b)-n-m) {
			m = -1
		}
		if m >= 0 {
			f.off = r.i + n + m
			f.end = f.off + int(size)
			m += int(size)
		}
	default:
		m = -1
	}
	if m < 0 {
		r.bad = true
		return false
	}
	r.f, r.i = f, r.i+n+m
	return true
}

// seen records field number num in *mask and reports whether it was
// already there (a singular field given twice).
func seen(mask *uint32, num protowire.Number) bool {
	bit := uint32(1) << uint(num)
	if *mask&bit != 0 {
		return true
	}
	*mask |= bit
	return false
}

// float is a fixed64 field's value as a float64 in the slab, recorded as
// a value slot (refill). Every fixed64 field the decoder takes is a
// value but a quantile's rank and a bucket's bound: see bound.
func (p *textParser) float(f protoField) *float64 {
	v := p.slab.float(math.Float64frombits(f.v))
	p.slots = append(p.slots, valueSlot{start: f.off, end: f.end, kind: slotFixed64, f: v})
	return v
}

// bound is float for a quantile's rank or a bucket's upper bound: part of
// a body's shape, not a value.
func (p *textParser) bound(f protoField) *float64 {
	return p.slab.float(math.Float64frombits(f.v))
}

// count is a varint count field's value in the slab, recorded as a value
// slot (refill).
func (p *textParser) count(f protoField) *uint64 {
	v := p.slab.uint(f.v)
	p.slots = append(p.slots, valueSlot{start: f.off, end: f.end, kind: slotVarint, u: v})
	return v
}

func (p *textParser) protoFamily(start, end int) (*dto.MetricFamily, bool) {
	mf := next(&p.slab.families, 8)
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.BytesType && !seen(&mask, 1):
			mf.Name = p.str(f.off, f.end)
		case f.num == 2 && f.typ == protowire.BytesType && !seen(&mask, 2):
			mf.Help = p.str(f.off, f.end)
		case f.num == 3 && f.typ == protowire.VarintType && !seen(&mask, 3):
			t := int32(f.v)
			if _, known := dto.MetricType_name[t]; !known || uint64(int64(t)) != f.v {
				return nil, false // proto keeps an unknown enum value as an unknown field
			}
			mf.Type = p.slab.typ(dto.MetricType(t))
		case f.num == 4 && f.typ == protowire.BytesType:
			m, ok := p.protoMetric(f.off, f.end)
			if !ok {
				return nil, false
			}
			mf.Metric = append(mf.Metric, m)
		case f.num == 5 && f.typ == protowire.BytesType && !seen(&mask, 5):
			mf.Unit = p.str(f.off, f.end)
		default:
			return nil, false
		}
	}
	return mf, !r.bad
}

func (p *textParser) protoMetric(start, end int) (*dto.Metric, bool) {
	m := p.slab.metric()
	var mask uint32
	pairs := p.pairs[:0]
	r := p.fields(start, end)
	for r.next() {
		f := r.f
		want := protowire.BytesType // every field but the timestamp is a message
		if f.num == 6 {
			want = protowire.VarintType
		}
		if f.typ != want || (f.num != 1 && seen(&mask, f.num)) {
			return nil, false // labels (1) repeat; the rest are singular
		}
		var ok bool // false for an unknown field
		switch f.num {
		case 1:
			var lp *dto.LabelPair
			lp, ok = p.protoLabel(f.off, f.end)
			pairs = append(pairs, lp)
		case 2:
			m.Gauge = next(&p.slab.gauges, p.slab.left())
			m.Gauge.Value, ok = p.protoValue(f.off, f.end)
		case 3:
			m.Counter, ok = p.protoCounter(f.off, f.end)
		case 4:
			m.Summary, ok = p.protoSummary(f.off, f.end)
		case 5:
			m.Untyped = next(&p.slab.untypeds, p.slab.left())
			m.Untyped.Value, ok = p.protoValue(f.off, f.end)
		case 6:
			m.TimestampMs, ok = p.slab.int(int64(f.v)), true
		case 7:
			m.Histogram, ok = p.protoHistogram(f.off, f.end)
		}
		if !ok {
			return nil, false
		}
	}
	if len(pairs) > 0 {
		m.Label = p.slab.labels(pairs)
	}
	p.pairs = clearSlice(pairs)
	return m, !r.bad
}

func (p *textParser) protoLabel(start, end int) (*dto.LabelPair, bool) {
	lp := next(&p.slab.pairs, 16)
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.BytesType && !seen(&mask, 1):
			lp.Name = p.str(f.off, f.end)
		case f.num == 2 && f.typ == protowire.BytesType && !seen(&mask, 2):
			lp.Value = p.str(f.off, f.end)
		default:
			return nil, false
		}
	}
	return lp, !r.bad
}

// protoCounter decodes a Counter: its value and created timestamp, which
// client_golang sets on every counter (an exemplar is left to proto).
func (p *textParser) protoCounter(start, end int) (*dto.Counter, bool) {
	c := next(&p.slab.counters, p.slab.left())
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.Fixed64Type && !seen(&mask, 1):
			c.Value = p.float(f)
		case f.num == 3 && f.typ == protowire.BytesType && !seen(&mask, 3):
			var ok bool
			if c.CreatedTimestamp, ok = p.protoTimestamp(f.off, f.end); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return c, !r.bad
}

// protoTimestamp decodes a google.protobuf.Timestamp, a created timestamp,
// converting as proto.Unmarshal does (nanos is an int32 sent as a varint).
func (p *textParser) protoTimestamp(start, end int) (*timestamppb.Timestamp, bool) {
	ts := next(&p.slab.timestamps, 8)
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.VarintType && !seen(&mask, 1):
			ts.Seconds = int64(f.v)
		case f.num == 2 && f.typ == protowire.VarintType && !seen(&mask, 2):
			ts.Nanos = int32(f.v)
		default:
			return nil, false
		}
	}
	return ts, !r.bad
}

// protoValue decodes a Gauge or Untyped: only field 1, the value.
func (p *textParser) protoValue(start, end int) (*float64, bool) {
	var v *float64
	r := p.fields(start, end)
	for r.next() {
		if r.f.num != 1 || r.f.typ != protowire.Fixed64Type || v != nil {
			return nil, false
		}
		v = p.float(r.f)
	}
	return v, !r.bad
}

func (p *textParser) protoSummary(start, end int) (*dto.Summary, bool) {
	s := next(&p.slab.summaries, 4)
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.VarintType && !seen(&mask, 1):
			s.SampleCount = p.count(f)
		case f.num == 2 && f.typ == protowire.Fixed64Type && !seen(&mask, 2):
			s.SampleSum = p.float(f)
		case f.num == 3 && f.typ == protowire.BytesType:
			q := next(&p.slab.quantiles, 8)
			var qmask uint32
			qr := p.fields(f.off, f.end)
			for qr.next() {
				g := qr.f
				if g.typ != protowire.Fixed64Type || (g.num != 1 && g.num != 2) || seen(&qmask, g.num) {
					return nil, false
				}
				if g.num == 1 {
					q.Quantile = p.bound(g)
				} else {
					q.Value = p.float(g)
				}
			}
			if qr.bad {
				return nil, false
			}
			s.Quantile = append(s.Quantile, q)
		case f.num == 4 && f.typ == protowire.BytesType && !seen(&mask, 4):
			var ok bool
			if s.CreatedTimestamp, ok = p.protoTimestamp(f.off, f.end); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return s, !r.bad
}

func (p *textParser) protoHistogram(start, end int) (*dto.Histogram, bool) {
	h := next(&p.slab.histograms, 4)
	var mask uint32
	r := p.fields(start, end)
	for r.next() {
		switch f := r.f; {
		case f.num == 1 && f.typ == protowire.VarintType && !seen(&mask, 1):
			h.SampleCount = p.count(f)
		case f.num == 4 && f.typ == protowire.Fixed64Type && !seen(&mask, 4):
			h.SampleCountFloat = p.float(f)
		case f.num == 2 && f.typ == protowire.Fixed64Type && !seen(&mask, 2):
			h.SampleSum = p.float(f)
		case f.num == 3 && f.typ == protowire.BytesType:
			bk := next(&p.slab.buckets, p.slab.left())
			var bmask uint32
			br := p.fields(f.off, f.end)
			for br.next() {
				switch g := br.f; {
				case seen(&bmask, g.num):
					return nil, false
				case g.num == 1 && g.typ == protowire.VarintType:
					bk.CumulativeCount = p.count(g)
				case g.num == 4 && g.typ == protowire.Fixed64Type:
					bk.CumulativeCountFloat = p.float(g)
				case g.num == 2 && g.typ == protowire.Fixed64Type:
					bk.UpperBound = p.bound(g)
				default:
					return nil, false // an exemplar, or unknown
				}
			}
			if br.bad {
				return nil, false
			}
			h.Bucket = append(h.Bucket, bk)
		case f.num == 15 && f.typ == protowire.BytesType && !seen(&mask, 15):
			var ok bool
			if h.CreatedTimestamp, ok = p.protoTimestamp(f.off, f.end); !ok {
				return nil, false
			}
		default:
			return nil, false // native histogram fields, exemplars
		}
	}
	return h, !r.bad
}

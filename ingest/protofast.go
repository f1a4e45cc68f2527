package ingest

import (
	"math"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
)

// parseProto decodes a body of varint-delimited MetricFamily messages (what
// client_golang's push package sends) into p's slabs, as parseBody does for
// text: a handful of allocations per body instead of several per sample.
//
// It produces exactly what decodeProtoDelimited produces, for the inputs it
// accepts, and gives up (ok == false) on anything outside the common shape:
// a field it does not know or with an unexpected wire type, a singular field
// given twice (which proto.Unmarshal would merge), exemplars, created
// timestamps, native histograms, an unknown type, a truncated message, or a
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
	// (and keep their growth) if not enough.
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
		mf, ok := p.protoFamily(p.buf[start:end], start)
		if !ok || validateProtoFamily(mf) != nil {
			return nil, false
		}
		pos = end
		if i, seen := p.index[mf.GetName()]; seen {
			out[i] = mf
			continue
		}
		p.index[mf.GetName()] = len(out)
		out = append(out, mf)
	}
	p.out = out
	if len(out) == 0 {
		return nil, true
	}
	return out, true
}

// str returns the n bytes of the body at off as a string in p.s's memory.
func (p *textParser) str(off, n int) *string { return p.slab.str(p.s[off : off+n]) }

// protoField is one field of a message: its number and wire type, and its
// value (varint or fixed64) or, for a length-delimited field, where its
// payload is in p.buf.
type protoField struct {
	num  protowire.Number
	typ  protowire.Type
	off  int // payload offset in p.buf (bytes fields)
	size int // payload length (bytes fields)
	v    uint64
}

// nextField decodes the field at msg[i:], where msg starts at base in
// p.buf, and returns it with the index after it, or -1.
func nextField(msg []byte, i, base int) (f protoField, next int) {
	num, typ, n := protowire.ConsumeTag(msg[i:])
	if n < 0 {
		return f, -1
	}
	f.num, f.typ = num, typ
	i += n
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(msg[i:])
		if n < 0 {
			return f, -1
		}
		f.v, i = v, i+n
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(msg[i:])
		if n < 0 {
			return f, -1
		}
		f.v, i = v, i+n
	case protowire.BytesType:
		size, n := protowire.ConsumeVarint(msg[i:])
		if n < 0 || size > uint64(len(msg)-i-n) {
			return f, -1
		}
		f.off, f.size = base+i+n, int(size)
		i += n + int(size)
	default:
		return f, -1
	}
	return f, i
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

func (p *textParser) protoFamily(msg []byte, base int) (*dto.MetricFamily, bool) {
	mf := next(&p.slab.families, 8)
	var mask uint32
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 {
			return nil, false
		}
		i = ni
		switch {
		case f.num == 1 && f.typ == protowire.BytesType && !seen(&mask, 1):
			mf.Name = p.str(f.off, f.size)
		case f.num == 2 && f.typ == protowire.BytesType && !seen(&mask, 2):
			mf.Help = p.str(f.off, f.size)
		case f.num == 3 && f.typ == protowire.VarintType && !seen(&mask, 3):
			t := int32(f.v)
			if _, known := dto.MetricType_name[t]; !known || uint64(int64(t)) != f.v {
				return nil, false // proto keeps an unknown enum value as an unknown field
			}
			mf.Type = p.slab.typ(dto.MetricType(t))
		case f.num == 4 && f.typ == protowire.BytesType:
			m, ok := p.protoMetric(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			mf.Metric = append(mf.Metric, m)
		case f.num == 5 && f.typ == protowire.BytesType && !seen(&mask, 5):
			mf.Unit = p.str(f.off, f.size)
		default:
			return nil, false
		}
	}
	return mf, true
}

func (p *textParser) protoMetric(msg []byte, base int) (*dto.Metric, bool) {
	m := p.slab.metric()
	var mask uint32
	pairs := p.pairs[:0]
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 {
			return nil, false
		}
		i = ni
		switch {
		case f.num == 1 && f.typ == protowire.BytesType:
			lp, ok := p.protoLabel(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			pairs = append(pairs, lp)
		case f.num == 2 && f.typ == protowire.BytesType && !seen(&mask, 2):
			v, ok := p.protoValue(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			m.Gauge = next(&p.slab.gauges, p.slab.left())
			m.Gauge.Value = v
		case f.num == 3 && f.typ == protowire.BytesType && !seen(&mask, 3):
			v, ok := p.protoValue(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			m.Counter = next(&p.slab.counters, p.slab.left())
			m.Counter.Value = v
		case f.num == 4 && f.typ == protowire.BytesType && !seen(&mask, 4):
			s, ok := p.protoSummary(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			m.Summary = s
		case f.num == 5 && f.typ == protowire.BytesType && !seen(&mask, 5):
			v, ok := p.protoValue(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			m.Untyped = next(&p.slab.untypeds, p.slab.left())
			m.Untyped.Value = v
		case f.num == 6 && f.typ == protowire.VarintType && !seen(&mask, 6):
			p.slab.ints = grow(p.slab.ints)
			p.slab.ints = append(p.slab.ints, int64(f.v))
			m.TimestampMs = &p.slab.ints[len(p.slab.ints)-1]
		case f.num == 7 && f.typ == protowire.BytesType && !seen(&mask, 7):
			h, ok := p.protoHistogram(p.buf[f.off:f.off+f.size], f.off)
			if !ok {
				return nil, false
			}
			m.Histogram = h
		default:
			return nil, false
		}
	}
	if len(pairs) > 0 {
		m.Label = p.slab.labels(pairs)
	}
	p.pairs = clearSlice(pairs)
	return m, true
}

func (p *textParser) protoLabel(msg []byte, base int) (*dto.LabelPair, bool) {
	p.slab.pairs = grow(p.slab.pairs)
	p.slab.pairs = p.slab.pairs[:len(p.slab.pairs)+1]
	lp := &p.slab.pairs[len(p.slab.pairs)-1]
	var mask uint32
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 {
			return nil, false
		}
		i = ni
		switch {
		case f.num == 1 && f.typ == protowire.BytesType && !seen(&mask, 1):
			lp.Name = p.str(f.off, f.size)
		case f.num == 2 && f.typ == protowire.BytesType && !seen(&mask, 2):
			lp.Value = p.str(f.off, f.size)
		default:
			return nil, false
		}
	}
	return lp, true
}

// protoValue decodes a Gauge, Counter or Untyped: only field 1, the value
// (a counter's exemplar and created timestamp are left to proto).
func (p *textParser) protoValue(msg []byte, base int) (*float64, bool) {
	var v *float64
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 || f.num != 1 || f.typ != protowire.Fixed64Type || v != nil {
			return nil, false
		}
		i = ni
		v = p.slab.float(math.Float64frombits(f.v))
	}
	return v, true
}

func (p *textParser) protoSummary(msg []byte, base int) (*dto.Summary, bool) {
	s := next(&p.slab.summaries, 4)
	var mask uint32
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 {
			return nil, false
		}
		i = ni
		switch {
		case f.num == 1 && f.typ == protowire.VarintType && !seen(&mask, 1):
			s.SampleCount = p.slab.uint(f.v)
		case f.num == 2 && f.typ == protowire.Fixed64Type && !seen(&mask, 2):
			s.SampleSum = p.slab.float(math.Float64frombits(f.v))
		case f.num == 3 && f.typ == protowire.BytesType:
			q := next(&p.slab.quantiles, 8)
			var qmask uint32
			sub := p.buf[f.off : f.off+f.size]
			for j := 0; j < len(sub); {
				g, nj := nextField(sub, j, f.off)
				if nj < 0 || g.typ != protowire.Fixed64Type || (g.num != 1 && g.num != 2) || seen(&qmask, g.num) {
					return nil, false
				}
				j = nj
				if g.num == 1 {
					q.Quantile = p.slab.float(math.Float64frombits(g.v))
				} else {
					q.Value = p.slab.float(math.Float64frombits(g.v))
				}
			}
			s.Quantile = append(s.Quantile, q)
		default:
			return nil, false
		}
	}
	return s, true
}

func (p *textParser) protoHistogram(msg []byte, base int) (*dto.Histogram, bool) {
	h := next(&p.slab.histograms, 4)
	var mask uint32
	for i := 0; i < len(msg); {
		f, ni := nextField(msg, i, base)
		if ni < 0 {
			return nil, false
		}
		i = ni
		switch {
		case f.num == 1 && f.typ == protowire.VarintType && !seen(&mask, 1):
			h.SampleCount = p.slab.uint(f.v)
		case f.num == 4 && f.typ == protowire.Fixed64Type && !seen(&mask, 4):
			h.SampleCountFloat = p.slab.float(math.Float64frombits(f.v))
		case f.num == 2 && f.typ == protowire.Fixed64Type && !seen(&mask, 2):
			h.SampleSum = p.slab.float(math.Float64frombits(f.v))
		case f.num == 3 && f.typ == protowire.BytesType:
			bk := next(&p.slab.buckets, p.slab.left())
			var bmask uint32
			sub := p.buf[f.off : f.off+f.size]
			for j := 0; j < len(sub); {
				g, nj := nextField(sub, j, f.off)
				if nj < 0 || seen(&bmask, g.num) {
					return nil, false
				}
				j = nj
				switch {
				case g.num == 1 && g.typ == protowire.VarintType:
					bk.CumulativeCount = p.slab.uint(g.v)
				case g.num == 4 && g.typ == protowire.Fixed64Type:
					bk.CumulativeCountFloat = p.slab.float(math.Float64frombits(g.v))
				case g.num == 2 && g.typ == protowire.Fixed64Type:
					bk.UpperBound = p.slab.float(math.Float64frombits(g.v))
				default:
					return nil, false // an exemplar, or unknown
				}
			}
			h.Bucket = append(h.Bucket, bk)
		default:
			return nil, false // native histogram fields, exemplars, created timestamp
		}
	}
	return h, true
}

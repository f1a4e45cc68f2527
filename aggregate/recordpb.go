package aggregate

import (
	"encoding/binary"
	"math"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// appendFamilyDelimited appends f as protodelim.MarshalTo writes it: its
// size as a varint, then the protobuf encoding. The common shapes (counters,
// gauges, untyped, summaries and classic histograms without exemplars or
// created timestamps) are encoded by hand, field by field in field-number
// order as the protobuf runtime does, which is several times faster than
// the reflection-driven marshaller; any other family goes through it.
// Either way the bytes decode to the same family (unknown fields, which
// nothing in Sluice reads, are not kept by the hand encoder).
// FuzzFamilyEncoding checks the equivalence.
func appendFamilyDelimited(b []byte, f *dto.MetricFamily) ([]byte, error) {
	if !plainFamily(f) {
		n := proto.Size(f)
		b = protowire.AppendVarint(b, uint64(n))
		return (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, f)
	}
	return appendMessage(b, -1, func(b []byte) []byte { return pbFamily(b, f) }), nil
}

// plainFamily reports whether the hand encoder covers every field f sets.
func plainFamily(f *dto.MetricFamily) bool {
	for _, m := range f.Metric {
		if m == nil {
			return false
		}
		if c := m.Counter; c != nil && (c.Exemplar != nil || c.CreatedTimestamp != nil) {
			return false
		}
		if s := m.Summary; s != nil && s.CreatedTimestamp != nil {
			return false
		}
		if h := m.Histogram; h != nil {
			if h.CreatedTimestamp != nil || h.Schema != nil || h.ZeroThreshold != nil || h.ZeroCount != nil ||
				h.ZeroCountFloat != nil || h.NegativeSpan != nil || h.NegativeDelta != nil || h.NegativeCount != nil ||
				h.PositiveSpan != nil || h.PositiveDelta != nil || h.PositiveCount != nil || h.Exemplars != nil {
				return false
			}
			for _, bk := range h.Bucket {
				if bk == nil || bk.Exemplar != nil {
					return false
				}
			}
		}
		for _, lp := range m.Label {
			if lp == nil {
				return false
			}
		}
		if s := m.Summary; s != nil {
			for _, q := range s.Quantile {
				if q == nil {
					return false
				}
			}
		}
	}
	return true
}

// appendMessage appends a length-delimited message: its tag (unless field
// is negative), its length and what body appends. One byte is reserved for
// the length, which fits messages under 128 bytes; longer bodies are moved
// up to make room for a longer varint.
func appendMessage(b []byte, field protowire.Number, body func([]byte) []byte) []byte {
	if field >= 0 {
		b = protowire.AppendTag(b, field, protowire.BytesType)
	}
	at := len(b)
	b = append(b, 0)
	b = body(b)
	n := len(b) - at - 1
	if n < 0x80 {
		b[at] = byte(n)
		return b
	}
	w := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, w-1)...)
	copy(b[at+w:], b[at+1:at+1+n])
	binary.PutUvarint(b[at:at+w], uint64(n))
	return b
}

func pbString(b []byte, field protowire.Number, s *string) []byte {
	if s == nil {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, *s)
}

func pbDouble(b []byte, field protowire.Number, v *float64) []byte {
	if v == nil {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(*v))
}

func pbUint(b []byte, field protowire.Number, v *uint64) []byte {
	if v == nil {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, *v)
}

func pbFamily(b []byte, f *dto.MetricFamily) []byte {
	b = pbString(b, 1, f.Name)
	b = pbString(b, 2, f.Help)
	if f.Type != nil {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(*f.Type)))
	}
	for _, m := range f.Metric {
		b = appendMessage(b, 4, func(b []byte) []byte { return pbMetric(b, m) })
	}
	return pbString(b, 5, f.Unit)
}

func pbMetric(b []byte, m *dto.Metric) []byte {
	for _, lp := range m.Label {
		b = appendMessage(b, 1, func(b []byte) []byte {
			return pbString(pbString(b, 1, lp.Name), 2, lp.Value)
		})
	}
	if g := m.Gauge; g != nil {
		b = appendMessage(b, 2, func(b []byte) []byte { return pbDouble(b, 1, g.Value) })
	}
	if c := m.Counter; c != nil {
		b = appendMessage(b, 3, func(b []byte) []byte { return pbDouble(b, 1, c.Value) })
	}
	if s := m.Summary; s != nil {
		b = appendMessage(b, 4, func(b []byte) []byte {
			b = pbUint(b, 1, s.SampleCount)
			b = pbDouble(b, 2, s.SampleSum)
			for _, q := range s.Quantile {
				b = appendMessage(b, 3, func(b []byte) []byte {
					return pbDouble(pbDouble(b, 1, q.Quantile), 2, q.Value)
				})
			}
			return b
		})
	}
	if u := m.Untyped; u != nil {
		b = appendMessage(b, 5, func(b []byte) []byte { return pbDouble(b, 1, u.Value) })
	}
	if m.TimestampMs != nil {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*m.TimestampMs))
	}
	if h := m.Histogram; h != nil {
		b = appendMessage(b, 7, func(b []byte) []byte {
			b = pbUint(b, 1, h.SampleCount)
			b = pbDouble(b, 2, h.SampleSum)
			for _, bk := range h.Bucket {
				b = appendMessage(b, 3, func(b []byte) []byte {
					b = pbUint(b, 1, bk.CumulativeCount)
					b = pbDouble(b, 2, bk.UpperBound)
					return pbDouble(b, 4, bk.CumulativeCountFloat)
				})
			}
			return pbDouble(b, 4, h.SampleCountFloat)
		})
	}
	return b
}

package forward

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/configs"
)

// encoder turns a batch into a snappy-compressed remote_write body. Each
// shard owns one and reuses its buffers from batch to batch; it is not safe
// for concurrent use.
type encoder struct {
	v2 bool

	// Remote-Write 1.0, written directly (marshalV1).
	scratch  []byte                   // labels encoded from lset
	metadata []*prompb.MetricMetadata // of the families in the request, in order
	families map[string]struct{}      // metadata already in the request

	// Remote-Write 2.0.
	symbols     writev2.SymbolsTable
	series2     []writev2.TimeSeries
	refs        []uint32
	samples2    []writev2.Sample
	histograms2 []writev2.Histogram

	// pb is the uncompressed protobuf and comp its snappy block, reused.
	pb, comp []byte
}

func newEncoder(protobufMessage string) *encoder {
	return &encoder{
		v2:       protobufMessage == configs.ProtoMsgV2,
		families: map[string]struct{}{},
		symbols:  writev2.NewSymbolTable(),
	}
}

// encode returns the compressed body for batch. The returned slice is a
// copy of exactly its size: the HTTP transport may still read a request
// body after Do returns, so it must not be reused.
func (e *encoder) encode(batch []sample) ([]byte, error) {
	var err error
	if e.v2 {
		err = e.marshalV2(batch)
	} else {
		err = e.marshalV1(batch)
	}
	if err != nil {
		return nil, err
	}
	if n := snappy.MaxEncodedLen(len(e.pb)); cap(e.comp) < n {
		e.comp = make([]byte, n)
	}
	comp := snappy.Encode(e.comp[:cap(e.comp)], e.pb)
	return bytes.Clone(comp), nil
}

// counts returns the number of labels and histograms in batch.
func counts(batch []sample) (nLabels, nHistograms int) {
	for i := range batch {
		nLabels += batch[i].lset.Len()
		if batch[i].h != nil {
			nHistograms++
		}
	}
	return nLabels, nHistograms
}

// marshalV1 writes a prometheus.WriteRequest to e.pb: one TimeSeries per
// sample, as Prometheus sends, and the metadata of every family present.
// It writes the protobuf directly, byte for byte what the generated code
// would: the labels of a sample from a wire decoder (sample.wire) are
// copied as they are, those of others encoded from lset.
func (e *encoder) marshalV1(batch []sample) error {
	e.metadata = e.metadata[:0]
	clear(e.families)
	b := e.pb[:0]
	for i := range batch {
		s := &batch[i]
		ls := s.wire
		if ls == nil {
			e.scratch = e.scratch[:0]
			s.lset.Range(func(l labels.Label) {
				e.scratch = appendWireLabel(e.scratch, l.Name, l.Value)
			})
			ls = e.scratch
		}
		var inner, hsize int
		if s.h != nil {
			hsize = s.h.Size()
			inner = 1 + uvarintLen(uint64(hsize)) + hsize
		} else {
			n := sampleSize(s.v, s.t)
			inner = 1 + uvarintLen(uint64(n)) + n
		}
		tsLen := len(ls) + inner
		b = append(b, 0x0a) // WriteRequest.timeseries
		b = binary.AppendUvarint(b, uint64(tsLen))
		b = append(b, ls...)
		if s.h != nil {
			b = append(b, 0x22) // TimeSeries.histograms
			b = binary.AppendUvarint(b, uint64(hsize))
			b = slices.Grow(b, hsize)
			if _, err := s.h.MarshalToSizedBuffer(b[len(b) : len(b)+hsize]); err != nil {
				return fmt.Errorf("marshal write request: %w", err)
			}
			b = b[:len(b)+hsize]
		} else {
			b = append(b, 0x12) // TimeSeries.samples
			b = binary.AppendUvarint(b, uint64(sampleSize(s.v, s.t)))
			if s.v != 0 {
				b = append(b, 0x09) // Sample.value
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.v))
			}
			if s.t != 0 {
				b = append(b, 0x10) // Sample.timestamp
				b = binary.AppendUvarint(b, uint64(s.t))
			}
		}
		if s.meta != nil {
			if _, ok := e.families[s.meta.MetricFamilyName]; !ok {
				e.families[s.meta.MetricFamilyName] = struct{}{}
				e.metadata = append(e.metadata, s.meta)
			}
		}
	}
	for _, md := range e.metadata {
		n := md.Size()
		b = append(b, 0x1a) // WriteRequest.metadata
		b = binary.AppendUvarint(b, uint64(n))
		b = slices.Grow(b, n)
		if _, err := md.MarshalToSizedBuffer(b[len(b) : len(b)+n]); err != nil {
			return fmt.Errorf("marshal write request: %w", err)
		}
		b = b[:len(b)+n]
	}
	clear(e.metadata)
	e.pb = b
	return nil
}

// sampleSize is the size of a prometheus.Sample message; zero fields are
// left out, as the generated code does (a NaN is written, -0 is not).
func sampleSize(v float64, t int64) int {
	n := 0
	if v != 0 {
		n += 9
	}
	if t != 0 {
		n += 1 + uvarintLen(uint64(t))
	}
	return n
}

// marshalV2 writes an io.prometheus.write.v2.Request to e.pb with interned
// symbols and inline metadata.
func (e *encoder) marshalV2(batch []sample) error {
	nLabels, nHist := counts(batch)
	e.symbols.Reset()
	e.refs = grow(e.refs, 2*nLabels)
	e.samples2 = grow(e.samples2, len(batch)-nHist)
	e.histograms2 = grow(e.histograms2, nHist)
	e.series2 = grow(e.series2, len(batch))

	for i := range batch {
		s := &batch[i]
		start := len(e.refs)
		s.lset.Range(func(l labels.Label) {
			e.refs = append(e.refs, e.symbols.Symbolize(l.Name), e.symbols.Symbolize(l.Value))
		})
		ts := writev2.TimeSeries{LabelsRefs: e.refs[start:len(e.refs):len(e.refs)]}
		if s.h != nil {
			e.histograms2 = append(e.histograms2, toV2Histogram(s.h))
			n := len(e.histograms2)
			ts.Histograms = e.histograms2[n-1 : n : n]
		} else {
			e.samples2 = append(e.samples2, writev2.Sample{Value: s.v, Timestamp: s.t})
			n := len(e.samples2)
			ts.Samples = e.samples2[n-1 : n : n]
		}
		if s.meta != nil {
			ts.Metadata = writev2.Metadata{
				Type:    v2MetricType(s.meta.Type),
				HelpRef: e.symbols.Symbolize(s.meta.Help),
				UnitRef: e.symbols.Symbolize(s.meta.Unit),
			}
		}
		e.series2 = append(e.series2, ts)
	}
	req := writev2.Request{Symbols: e.symbols.Symbols(), Timeseries: e.series2}
	pb, err := req.OptimizedMarshal(e.pb[:0])
	if err != nil {
		return fmt.Errorf("marshal write request: %w", err)
	}
	e.pb = pb
	return nil
}

// grow returns s emptied with room for n elements, reusing its array when
// it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, 0, n)
	}
	clear(s[:cap(s)]) // drop references to the previous batch
	return s[:0]
}

// v2MetricType maps a Remote-Write 1.0 metric type to its 2.0 enum.
func v2MetricType(t prompb.MetricMetadata_MetricType) writev2.Metadata_MetricType {
	switch t {
	case prompb.MetricMetadata_COUNTER:
		return writev2.Metadata_METRIC_TYPE_COUNTER
	case prompb.MetricMetadata_GAUGE:
		return writev2.Metadata_METRIC_TYPE_GAUGE
	case prompb.MetricMetadata_HISTOGRAM:
		return writev2.Metadata_METRIC_TYPE_HISTOGRAM
	case prompb.MetricMetadata_GAUGEHISTOGRAM:
		return writev2.Metadata_METRIC_TYPE_GAUGEHISTOGRAM
	case prompb.MetricMetadata_SUMMARY:
		return writev2.Metadata_METRIC_TYPE_SUMMARY
	case prompb.MetricMetadata_INFO:
		return writev2.Metadata_METRIC_TYPE_INFO
	case prompb.MetricMetadata_STATESET:
		return writev2.Metadata_METRIC_TYPE_STATESET
	}
	return writev2.Metadata_METRIC_TYPE_UNSPECIFIED
}

// toV2Histogram converts a Remote-Write 1.0 histogram field by field: the
// two messages have the same fields, so going through histogram.Histogram
// (writev2.FromIntHistogram) would only copy the buckets twice. Bucket
// slices are shared with h, which is never modified.
func toV2Histogram(h *prompb.Histogram) writev2.Histogram {
	out := writev2.Histogram{
		Sum:            h.Sum,
		Schema:         h.Schema,
		ZeroThreshold:  h.ZeroThreshold,
		NegativeSpans:  toV2Spans(h.NegativeSpans),
		NegativeDeltas: h.NegativeDeltas,
		NegativeCounts: h.NegativeCounts,
		PositiveSpans:  toV2Spans(h.PositiveSpans),
		PositiveDeltas: h.PositiveDeltas,
		PositiveCounts: h.PositiveCounts,
		// The reset hint enums have the same values (unknown, yes, no, gauge).
		ResetHint:    writev2.Histogram_ResetHint(h.ResetHint),
		Timestamp:    h.Timestamp,
		CustomValues: h.CustomValues,
	}
	switch c := h.Count.(type) {
	case *prompb.Histogram_CountInt:
		out.Count = &writev2.Histogram_CountInt{CountInt: c.CountInt}
	case *prompb.Histogram_CountFloat:
		out.Count = &writev2.Histogram_CountFloat{CountFloat: c.CountFloat}
	}
	switch z := h.ZeroCount.(type) {
	case *prompb.Histogram_ZeroCountInt:
		out.ZeroCount = &writev2.Histogram_ZeroCountInt{ZeroCountInt: z.ZeroCountInt}
	case *prompb.Histogram_ZeroCountFloat:
		out.ZeroCount = &writev2.Histogram_ZeroCountFloat{ZeroCountFloat: z.ZeroCountFloat}
	}
	return out
}

func toV2Spans(s []prompb.BucketSpan) []writev2.BucketSpan {
	if len(s) == 0 {
		return nil
	}
	out := make([]writev2.BucketSpan, len(s))
	for i := range s {
		out[i] = writev2.BucketSpan{Offset: s[i].Offset, Length: s[i].Length}
	}
	return out
}

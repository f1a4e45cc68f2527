package aggregate

import (
	"math"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// observation is one pushed value of a series: a float for counters, gauges
// and untyped metrics, or a histogram or summary.
type observation struct {
	value float64
	hist  *histState
	summ  *summaryState
}

// histState is a histogram, classic, native or both. Bucket counts of the
// classic part are cumulative, as in the exposition formats.
type histState struct {
	count, sum float64
	// bounds are the finite upper bounds, ascending; cum[i] counts
	// observations <= bounds[i]. The +Inf bucket is count.
	bounds []float64
	cum    []float64
	// native is nil for a classic-only histogram.
	native *histogram.FloatHistogram
}

// sameLayout reports whether two histograms have the same classic bucket
// bounds and both or neither carry a native part.
func (h *histState) sameLayout(o *histState) bool {
	if (h.native == nil) != (o.native == nil) || len(h.bounds) != len(o.bounds) {
		return false
	}
	for i, b := range h.bounds {
		if b != o.bounds[i] {
			return false
		}
	}
	return true
}

// plusInto returns h+o, summed into o's memory: o is a pushed histogram
// that nothing else refers to (its update's), so the sum needs no
// allocation of its own (about 1 in 9 bytes allocated per push of the
// SPEC 10 load). h is unchanged; o is the result, or on an error of no
// further use. Layouts must agree (sameLayout). Native parts are merged
// exactly; where schemas differ the result has the coarser one
// (FloatHistogram.Add does the reduction).
func (h *histState) plusInto(o *histState) (*histState, error) {
	o.count += h.count
	o.sum += h.sum
	for i := range h.cum {
		o.cum[i] += h.cum[i]
	}
	if h.native != nil {
		n, _, _, err := h.native.Copy().Add(o.native)
		if err != nil {
			return nil, err
		}
		o.native = n.Compact(0)
	}
	return o, nil
}

// summaryState is a summary. In sum mode the quantiles are dropped, since
// quantiles of different pushes cannot be merged.
type summaryState struct {
	count, sum float64
	quantiles  []*dto.Quantile
}

// series is one aggregated series. Its mutable fields are guarded by its
// group's mutex; the identity fields are immutable.
type series struct {
	// Immutable after creation.
	key   string
	lset  labels.Labels // with __name__, without clear_mode
	name  string        // metric family name (histogram base name)
	group *group
	typ   dto.MetricType
	// extra is how many series more than one it shows as (exposedExtra);
	// guarded by the group's mutex.
	extra int32
	mode  configs.Mode
	fam   *family // set when the series is inserted

	// Guarded by the group's mutex, as the group's series map is. (The
	// shard's mutex guards only the shard's map.)
	lastPush int64 // Unix nanoseconds
	value    float64
	win      *window
	hist     *histState
	summ     *summaryState
}

// exposedExtra is how many series beyond one a series of this state shows
// as, in a scrape and in a store: a classic histogram one per bucket (+Inf
// included) and _sum and _count, a summary one per quantile and _sum and
// _count. The series limits count them.
func exposedExtra(h *histState, sm *summaryState) int32 {
	switch {
	case h != nil:
		// As shown (appendMetric): the classic series if there are
		// buckets or nothing native, and the native sample if native.
		e := int32(-1)
		if len(h.bounds) > 0 || h.native == nil {
			e += int32(len(h.bounds)) + 3 // finite buckets, +Inf, _sum, _count
		}
		if h.native != nil {
			e++
		}
		return e
	case sm != nil:
		return int32(len(sm.quantiles)) + 1
	}
	return 0
}

// outputType is the type Sluice exposes the series as: windowed statistics
// are gauges, whatever was pushed, so a counter never goes down downstream.
func outputType(typ dto.MetricType, mode configs.Mode) dto.MetricType {
	if mode.Windowed() {
		return dto.MetricType_GAUGE
	}
	return typ
}

// metric renders the series' current value, or nil when it has nothing to
// show (a windowed series whose window is empty).
func (s *series) metric(nowNanos int64) *dto.Metric {
	v, m, ok := s.current(nowNanos)
	if !ok {
		return nil
	}
	return labelledMetric(s.lset, outputType(s.typ, s.mode), v, m)
}

// labelledMetric returns the metric of a series with labels lset (with
// __name__, which is not a pair) in a family of output type typ: m if it
// holds a histogram or summary, else a metric of the float v, with lset's
// label pairs. The label pairs, the pointers to them and their strings
// come from three allocations rather than three per label: a flush renders
// every series. (Should an append outgrow its array, the pointers taken
// before still point at the values written there.)
func labelledMetric(lset labels.Labels, typ dto.MetricType, v float64, m *dto.Metric) *dto.Metric {
	if m == nil {
		m = &dto.Metric{}
		switch typ {
		case dto.MetricType_COUNTER:
			m.Counter = &dto.Counter{Value: ptr(v)}
		case dto.MetricType_GAUGE:
			m.Gauge = &dto.Gauge{Value: ptr(v)}
		default:
			m.Untyped = &dto.Untyped{Value: ptr(v)}
		}
	}
	n := max(lset.Len()-1, 0)
	pairs := make([]dto.LabelPair, 0, n)
	strs := make([]string, 0, 2*n)
	m.Label = make([]*dto.LabelPair, 0, n)
	lset.Range(func(l labels.Label) {
		if l.Name == model.MetricNameLabel {
			return
		}
		strs = append(strs, l.Name, l.Value)
		pairs = append(pairs, dto.LabelPair{Name: &strs[len(strs)-2], Value: &strs[len(strs)-1]})
		m.Label = append(m.Label, &pairs[len(pairs)-1])
	})
	return m
}

// current returns the series' value: a float (m nil) for counters, gauges,
// untyped metrics and windowed statistics, or a label-less metric holding
// a histogram or summary. ok is false when the series has nothing to show
// (a windowed series whose window is empty).
func (s *series) current(nowNanos int64) (v float64, m *dto.Metric, ok bool) {
	switch {
	case s.win != nil:
		v, ok = s.win.result(nowNanos)
		return v, nil, ok
	case s.hist != nil:
		return 0, &dto.Metric{Histogram: s.hist.dto()}, true
	case s.summ != nil:
		return 0, &dto.Metric{Summary: &dto.Summary{SampleCount: ptr(uint64(s.summ.count)), SampleSum: ptr(s.summ.sum), Quantile: s.summ.quantiles}}, true
	}
	return s.value, nil, true
}

func (h *histState) dto() *dto.Histogram {
	d := &dto.Histogram{SampleCountFloat: ptr(h.count), SampleSum: ptr(h.sum)}
	// Whole counts, buckets included, are integers, as their clients sent
	// them: an OpenMetrics encoder refuses a classic histogram with float
	// counts (and a Prometheus, which asks for OpenMetrics, then gets none
	// of it), and a native one with integer counts is an integer
	// histogram downstream (stored as such by a Prometheus or Mimir), not
	// a float one. A native histogram is integer only as a whole (count,
	// zero bucket and every bucket): a decoder reads a float histogram's
	// count from SampleCountFloat (Prometheus' protobuf parser read an
	// integer count as 0).
	integer := whole(h.count) && all(h.cum, whole)
	var pos, neg []int64 // an integer native histogram's buckets
	if n := h.native; n != nil && integer {
		// And only if it is a valid integer histogram: a float one's
		// count is not checked against its buckets (rounding), so one
		// pushed with whole counts that disagree stays a float one.
		integer = whole(n.ZeroCount) && all(n.PositiveBuckets, whole) && all(n.NegativeBuckets, whole)
		if integer {
			pos, neg = deltas(n.PositiveBuckets), deltas(n.NegativeBuckets)
			ih := &histogram.Histogram{Schema: n.Schema, ZeroThreshold: n.ZeroThreshold, ZeroCount: uint64(n.ZeroCount), Count: uint64(h.count), Sum: h.sum,
				PositiveSpans: n.PositiveSpans, NegativeSpans: n.NegativeSpans, PositiveBuckets: pos, NegativeBuckets: neg}
			integer = ih.Validate() == nil
		}
	}
	if integer {
		d.SampleCount, d.SampleCountFloat = ptr(uint64(h.count)), nil
	}
	for i, b := range h.bounds {
		bk := &dto.Bucket{UpperBound: ptr(b), CumulativeCountFloat: ptr(h.cum[i])}
		if integer {
			bk.CumulativeCount, bk.CumulativeCountFloat = ptr(uint64(h.cum[i])), nil
		}
		d.Bucket = append(d.Bucket, bk)
	}
	if n := h.native; n != nil {
		d.Schema = ptr(n.Schema)
		d.ZeroThreshold = ptr(n.ZeroThreshold)
		d.PositiveSpan = spansToDTO(n.PositiveSpans)
		d.NegativeSpan = spansToDTO(n.NegativeSpans)
		if integer {
			d.ZeroCount = ptr(uint64(n.ZeroCount))
			d.PositiveDelta, d.NegativeDelta = pos, neg
		} else {
			d.ZeroCountFloat = ptr(n.ZeroCount)
			d.PositiveCount = slices.Clone(n.PositiveBuckets)
			d.NegativeCount = slices.Clone(n.NegativeBuckets)
		}
		if len(d.PositiveSpan) == 0 && len(d.NegativeSpan) == 0 && n.ZeroCount == 0 {
			// A native histogram with no buckets is marked by a no-op
			// span, as client_golang does, so decoders still see it.
			d.PositiveSpan = []*dto.BucketSpan{{Offset: ptr(int32(0)), Length: ptr(uint32(0))}}
		}
	}
	return d
}

// whole reports whether c is a count an integer field holds exactly.
func whole(c float64) bool { return c == math.Trunc(c) && c >= 0 && c < 1<<53 }

// deltas encodes whole bucket counts as an integer histogram's buckets:
// each the difference from the one before.
func deltas(counts []float64) []int64 {
	if len(counts) == 0 {
		return nil
	}
	out := make([]int64, len(counts))
	prev := int64(0)
	for i, c := range counts {
		out[i] = int64(c) - prev
		prev = int64(c)
	}
	return out
}

func spansToDTO(s []histogram.Span) []*dto.BucketSpan {
	out := make([]*dto.BucketSpan, len(s))
	for i, sp := range s {
		out[i] = &dto.BucketSpan{Offset: ptr(sp.Offset), Length: ptr(sp.Length)}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

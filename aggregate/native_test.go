package aggregate

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"
)

// nativeFamily observes vals in a native histogram rpc_seconds with the
// given bucket factor (which picks the schema) and returns it as a pushed
// family.
func nativeFamily(t testing.TB, factor float64, vals ...float64) *dto.MetricFamily {
	t.Helper()
	return nativeNamed(t, "rpc_seconds", factor, vals...)
}

// nativeNamed is nativeFamily for a metric of another name.
func nativeNamed(t testing.TB, name string, factor float64, vals ...float64) *dto.MetricFamily {
	t.Helper()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: "h", NativeHistogramBucketFactor: factor})
	for _, v := range vals {
		h.Observe(v)
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	m.Label = nil
	return &dto.MetricFamily{Name: ptr(name), Help: ptr("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{&m}}
}

func TestNativeHistogramMergeReducesToCoarserSchema(t *testing.T) {
	a := []float64{0.001, 0.02, 0.5, 0.5, 3, 70}
	b := []float64{0.003, 0.04, 0.9, 12, -2}
	s, _ := newTestStore(t, testSettings())
	fine := nativeFamily(t, 1.1, a...) // schema 3
	coarse := nativeFamily(t, 2, b...) // schema 0
	if fine.Metric[0].Histogram.GetSchema() <= coarse.Metric[0].Histogram.GetSchema() {
		t.Fatalf("test setup: want a finer first schema, got %d and %d", fine.Metric[0].Histogram.GetSchema(), coarse.Metric[0].Histogram.GetSchema())
	}
	for _, f := range []*dto.MetricFamily{fine, coarse} {
		if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{f}}); err != nil {
			t.Fatal(err)
		}
	}
	// The exact answer: every value observed in one schema-0 histogram.
	want, err := histFromDTO(nativeFamily(t, 2, append(append([]float64{}, a...), b...)...).Metric[0].Histogram)
	if err != nil {
		t.Fatal(err)
	}
	got, err := histFromDTO(gatherOne(t, s, "rpc_seconds").Histogram)
	if err != nil {
		t.Fatalf("merged histogram does not round-trip: %v", err)
	}
	if got.native.Schema != 0 || got.count != 11 || math.Abs(got.sum-want.sum) > 1e-9 {
		t.Fatalf("merged: schema %d count %v sum %v; want schema 0 count 11 sum %v", got.native.Schema, got.count, got.sum, want.sum)
	}
	want.native.Sum = got.native.Sum // summed in another order; checked above
	if !got.native.Equals(want.native.Compact(0)) {
		t.Fatalf("merged native histogram\n got %v\nwant %v", got.native, want.native)
	}
}

func TestNativeHistogramRejectsClassicLayoutSwitch(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{nativeFamily(t, 2, 1)}}); err != nil {
		t.Fatal(err)
	}
	err := push(t, s, "job=f", MethodPost, "# TYPE rpc_seconds histogram\nrpc_seconds_bucket{le=\"1\"} 1\nrpc_seconds_bucket{le=\"+Inf\"} 1\nrpc_seconds_sum 1\nrpc_seconds_count 1\n")
	if e, ok := AsError(err); !ok || e.Reason != ReasonLayoutChange {
		t.Fatalf("want layout change error, got %v", err)
	}
}

// gatherOne returns the only metric of a family.
func gatherOne(t *testing.T, s *Store, name string) *dto.Metric {
	t.Helper()
	fams, err := s.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.Metric) == 1 {
			return f.Metric[0]
		}
	}
	t.Fatalf("no single metric %q in %v", name, fams)
	return nil
}

func nativeFamilies(t testing.TB) []*dto.MetricFamily {
	return []*dto.MetricFamily{nativeFamily(t, 2, 0.001, 0.02, 0.5, 0.5, 3, 70)}
}

// TestNativeHistogramExposedAsPrometheusReadsIt: a merged native histogram
// on GET /metrics (protobuf) reads back, with Prometheus' own parser, with
// its count and buckets.
func TestNativeHistogramExposedAsPrometheusReadsIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals []float64
	}{
		{"positive buckets", []float64{0.5, 3}},
		{"zero bucket too", []float64{0, 0.5, 3}},
		{"negative buckets", []float64{-1, -2, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, testSettings())
			if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{nativeFamily(t, 1.1, tc.vals...)}}); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
			fams, err := s.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fams {
				if f.GetName() == "rpc_seconds" {
					if err := enc.Encode(f); err != nil {
						t.Fatal(err)
					}
				}
			}
			p := textparse.NewProtobufParser(buf.Bytes(), false, false, false, false, labels.NewSymbolTable())
			for {
				e, err := p.Next()
				if err != nil {
					t.Fatalf("no histogram read back: %v", err)
				}
				if e != textparse.EntryHistogram {
					continue
				}
				_, _, h, fh := p.Histogram()
				if h != nil {
					fh = h.ToFloat(nil)
				}
				var inBuckets float64
				for it := fh.AllBucketIterator(); it.Next(); {
					inBuckets += it.At().Count
				}
				if fh.Count != float64(len(tc.vals)) || inBuckets != fh.Count {
					t.Fatalf("read back count %v, %v in buckets; want %d: %v", fh.Count, inBuckets, len(tc.vals), fh)
				}
				return
			}
		})
	}
}

// TestNativeHistogramCountMustMatchBuckets: an integer native histogram
// whose count is not its buckets' total is refused, as the remote_write
// receiver refuses it (a float one's is not checked: rounding).
func TestNativeHistogramCountMustMatchBuckets(t *testing.T) {
	cases := []struct {
		name    string
		count   uint64
		wantErr bool
	}{
		{name: "matching", count: 3},
		{name: "count_below_buckets", count: 1, wantErr: true},
		{name: "count_above_buckets", count: 9, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, testSettings())
			f := nativeFamily(t, 2, 1, 1, 3) // three observations
			f.Metric[0].Histogram.SampleCount = ptr(tc.count)
			err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{f}})
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want an error: %v", err, tc.wantErr)
			}
			if tc.wantErr && !strings.Contains(err.Error(), "invalid native histogram") {
				t.Fatalf("error %q does not name the histogram", err)
			}
		})
	}
}

// TestNativeHistogramKeepsIntegerCounts: native histograms pushed with
// integer counts are exposed and forwarded as integer histograms, summed
// or not, as their clients sent them (a store keeps them as such); one
// with a fractional count stays a float histogram.
func TestNativeHistogramKeepsIntegerCounts(t *testing.T) {
	floatFamily := func() *dto.MetricFamily {
		f := nativeFamily(t, 2, 0.5, 3)
		h := f.Metric[0].Histogram
		h.SampleCount, h.SampleCountFloat = nil, ptr(2.5)
		h.ZeroCount, h.ZeroCountFloat = nil, ptr(0.5)
		var counts []float64
		var c int64
		for _, d := range h.PositiveDelta {
			c += d
			counts = append(counts, float64(c))
		}
		h.PositiveDelta, h.PositiveCount = nil, counts
		return f
	}
	// Whole counts, but a count that is not the buckets' total: valid as
	// a float histogram (not checked: rounding), not as an integer one.
	mismatched := func() *dto.MetricFamily {
		f := floatFamily()
		h := f.Metric[0].Histogram
		total := 0.0
		for i := range h.PositiveCount {
			h.PositiveCount[i] = float64(i + 1)
			total += h.PositiveCount[i]
		}
		h.SampleCountFloat, h.ZeroCountFloat = ptr(total+3), ptr(0.0)
		return f
	}
	for _, tc := range []struct {
		name          string
		mode          string
		pushes        []*dto.MetricFamily
		wantCount     float64
		wantInBuckets float64 // if not wantCount
		wantInt       bool
	}{
		{name: "integer, replaced", mode: "replace", pushes: []*dto.MetricFamily{nativeFamily(t, 2, 0.5, 3, -1)}, wantCount: 3, wantInt: true},
		{name: "integer, summed across schemas", mode: "sum", pushes: []*dto.MetricFamily{nativeFamily(t, 1.1, 0.5, 3, 0), nativeFamily(t, 2, 7, -2)}, wantCount: 5, wantInt: true},
		{name: "fractional count", mode: "replace", pushes: []*dto.MetricFamily{floatFamily()}, wantCount: 2.5, wantInt: false},
		{name: "whole counts, count not the buckets' total", mode: "replace", pushes: []*dto.MetricFamily{mismatched()}, wantCount: 13, wantInBuckets: 10, wantInt: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			for _, f := range tc.pushes {
				if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Mode: tc.mode, Families: []*dto.MetricFamily{f}}); err != nil {
					t.Fatal(err)
				}
			}
			h := gatherOne(t, s, "rpc_seconds").Histogram
			isInt := h.SampleCountFloat == nil && h.ZeroCountFloat == nil && len(h.PositiveCount)+len(h.NegativeCount) == 0
			if isInt != tc.wantInt {
				t.Fatalf("exposed as an integer histogram: %v, want %v: %v", isInt, tc.wantInt, h)
			}
			if got := NativeHistogram(h); got.Count != tc.wantCount {
				t.Fatalf("exposed count %v, want %v", got.Count, tc.wantCount)
			}
			rec := &recorder{}
			f := NewFlusher(time.Minute, clk.now, rec, []Source{{Gatherer: s}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			f.Flush(f.WindowEnd(clk.t))
			var sent []prompb.Histogram
			for _, ts := range rec.reqs[0].Timeseries {
				sent = append(sent, ts.Histograms...)
			}
			if len(sent) != 1 {
				t.Fatalf("forwarded %d histograms, want 1", len(sent))
			}
			if sent[0].IsFloatHistogram() == tc.wantInt {
				t.Fatalf("forwarded as a float histogram: %v, want %v", sent[0].IsFloatHistogram(), !tc.wantInt)
			}
			fh := sent[0].ToFloatHistogram()
			if fh.Count != tc.wantCount {
				t.Fatalf("forwarded count %v, want %v", fh.Count, tc.wantCount)
			}
			var inBuckets float64
			for it := fh.AllBucketIterator(); it.Next(); {
				inBuckets += it.At().Count
			}
			if want := max(tc.wantInBuckets, tc.wantCount*float64(boolInt(tc.wantInBuckets == 0))); inBuckets != want {
				t.Fatalf("forwarded buckets hold %v, want %v: %v", inBuckets, want, fh)
			}
		})
	}
}

package aggregate

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// nativeFamily observes vals in a native histogram with the given bucket
// factor (which picks the schema) and returns it as a pushed family.
func nativeFamily(t testing.TB, factor float64, vals ...float64) *dto.MetricFamily {
	t.Helper()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpc_seconds", Help: "h", NativeHistogramBucketFactor: factor})
	for _, v := range vals {
		h.Observe(v)
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	m.Label = nil
	return &dto.MetricFamily{Name: ptr("rpc_seconds"), Help: ptr("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{&m}}
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

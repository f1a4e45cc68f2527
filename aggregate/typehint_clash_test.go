package aggregate

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestRemoteWriteNativeBesideClassicSeries: a sender that keeps both forms
// of a histogram (Prometheus' always_scrape_classic_histograms) writes x
// (native) and x_count: separate series over remote_write, not a clash.
func TestRemoteWriteNativeBesideClassicSeries(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	cnt := 3.0
	native := &dto.Histogram{SampleCount: ptr(uint64(3)), SampleSum: ptr(1.5), Schema: ptr(int32(0)), ZeroThreshold: ptr(1e-128),
		PositiveSpan: []*dto.BucketSpan{{Offset: ptr(int32(0)), Length: ptr(uint32(1))}}, PositiveDelta: []int64{3}}
	p := &Push{Group: groupLabels("job=f,instance=i"), Method: MethodPost, TypeHint: true, Families: []*dto.MetricFamily{
		{Name: ptr("x"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Histogram: native}}},
		{Name: ptr("x_count"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Counter: &dto.Counter{Value: &cnt}}}},
	}}
	if err := s.Apply(context.Background(), p); err != nil {
		t.Fatalf("native x beside x_count over remote_write: %v", err)
	}
}

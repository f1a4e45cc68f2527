package aggregate

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestNativeAndClassicHistogramCountsEverySeries: a histogram with both
// native and classic buckets (client_golang with Buckets and
// NativeHistogramBucketFactor) shows its classic series and its native
// sample; the limits count all of them.
func TestNativeAndClassicHistogramCountsEverySeries(t *testing.T) {
	set := testSettings()
	set.Limits.MaxSeries, set.Limits.MaxSeriesPerGroup, set.Limits.MaxSeriesPerRequest = 1000, 1000, 1000
	s, _ := newTestStore(t, set)
	var bounds []float64
	for i := range 500 {
		bounds = append(bounds, float64(i+1))
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpc_seconds", Help: "h", NativeHistogramBucketFactor: 1.1, Buckets: bounds})
	h.Observe(3)
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	f := &dto.MetricFamily{Name: ptr("rpc_seconds"), Help: ptr("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{&m}}
	if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{f}}); err != nil {
		t.Fatal(err)
	}
	// 500 finite buckets, +Inf, _sum, _count, and the native sample.
	if got := s.counted.Load(); got != 504 {
		t.Fatalf("counted %d series, want 504", got)
	}
	set.Limits.MaxSeriesPerRequest = 100
	s.SetSettings(set)
	err := s.Apply(context.Background(), &Push{Group: groupLabels("job=g"), Families: []*dto.MetricFamily{f}})
	if err == nil || !strings.Contains(err.Error(), "max_series_per_request") {
		t.Fatalf("a push of 504 series under max_series_per_request 100: %v", err)
	}
}

// TestRemoteWriteSeriesBesideASummarysCount: over remote_write, a series
// named like a pushed summary's _count is refused: both would show as one
// series, and a window would carry only one of them.
func TestRemoteWriteSeriesBesideASummarysCount(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	if err := push(t, s, "job=f,instance=i", MethodPost, "# TYPE x summary\nx{quantile=\"0.5\"} 1\nx_sum 5\nx_count 2\n"); err != nil {
		t.Fatal(err)
	}
	cnt := 7.0
	p := &Push{Group: groupLabels("job=f,instance=i"), Method: MethodPost, TypeHint: true, Families: []*dto.MetricFamily{
		{Name: ptr("x_count"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Counter: &dto.Counter{Value: &cnt}}}},
	}}
	if err := s.Apply(context.Background(), p); err == nil || !strings.Contains(err.Error(), "collide") {
		t.Fatalf("remote_write x_count beside summary x: %v, want a clash", err)
	}
}

// TestClassicSeriesJoiningAFamilyAreChecked: what a family was checked
// for follows the series that join it, not only the one that made it.
func TestClassicSeriesJoiningAFamilyAreChecked(t *testing.T) {
	ctx := context.Background()
	classic := "# TYPE x histogram\nx_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 2\nx_sum 3\nx_count 2\n"

	t.Run("classic_series_join_a_native_family", func(t *testing.T) {
		s, _ := newTestStore(t, testSettings())
		if err := s.Apply(ctx, nativeX(t, "job=a")); err != nil {
			t.Fatal(err)
		}
		mustPush(t, s, "job=b", classic)
		if err := s.Apply(ctx, remoteWriteXCount("job=b")); err == nil || !strings.Contains(err.Error(), "collide") {
			t.Fatalf("remote_write x_count beside a classic x: %v, want a clash", err)
		}
	})
	t.Run("push_api_joins_a_family_remote_write_made", func(t *testing.T) {
		s, _ := newTestStore(t, testSettings())
		if err := s.Apply(ctx, remoteWriteXCount("job=b")); err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(ctx, &Push{Group: groupLabels("job=a"), TypeHint: true, Families: []*dto.MetricFamily{nativeNamed(t, "x", 1.1, 2)}}); err != nil {
			t.Fatal(err)
		}
		if err := push(t, s, "job=b", MethodPost, classic); err == nil || !strings.Contains(err.Error(), "collide") {
			t.Fatalf("a pushed classic x beside x_count: %v, want a clash", err)
		}
	})
}

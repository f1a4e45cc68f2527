package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
)

// benchPush builds a push of n series in the given mode.
func benchPush(b *testing.B, n int, mode string) []*dto.MetricFamily {
	var sb strings.Builder
	sb.WriteString("# TYPE bench_total counter\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "bench_total{route=\"/r%d\",code=\"200\",clear_mode=%q} 1\n", i, mode)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	return []*dto.MetricFamily{fams["bench_total"]}
}

// benchGroups is one 25-series push in the given mode for each of 1,000 groups.
func benchGroups(b *testing.B, mode string) []Push {
	fams := benchPush(b, 25, mode)
	groups := make([]Push, 1000)
	for i := range groups {
		groups[i] = Push{Group: groupLabels(fmt.Sprintf("job=j%d", i)), Families: fams}
	}
	return groups
}

// applyParallel applies the pushes round-robin (by stride) from every
// benchmark goroutine.
func applyParallel(b *testing.B, s *Store, groups []Push, stride int) {
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := s.Apply(context.Background(), &groups[i%len(groups)]); err != nil {
				b.Error(err)
				return
			}
			i += stride
		}
	})
}

// BenchmarkApply measures one push of 25 series over 1,000 groups, per mode.
func BenchmarkApply(b *testing.B) {
	for _, mode := range []string{"sum", "replace", "family", "mean1m", "sum1m", "min1m", "max1m", "count1m", "median5m", "p99_5m"} {
		b.Run(mode, func(b *testing.B) {
			s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			groups := benchGroups(b, mode)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Apply(context.Background(), &groups[i%len(groups)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApplyShaped is BenchmarkApply with a Shape per group, as ingest
// passes for a repeated text push: after each group's first push, the
// push is checked by its values alone.
func BenchmarkApplyShaped(b *testing.B) {
	for _, mode := range []string{"sum", "replace", "mean1m"} {
		b.Run(mode, func(b *testing.B) {
			s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			groups := benchGroups(b, mode)
			shapes := make([]Shape, len(groups))
			for i := range groups {
				groups[i].Shape = &shapes[i]
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Apply(context.Background(), &groups[i%len(groups)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApplyNativeHistogram sums client_golang native histograms of
// two schemas into one series per group (each push merges exactly, to the
// coarser schema).
func BenchmarkApplyNativeHistogram(b *testing.B) {
	s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	fams := [][]*dto.MetricFamily{
		{nativeFamily(b, 1.1, 0.001, 0.02, 0.5, 0.5, 3, 70, -2)},
		{nativeFamily(b, 2, 0.003, 0.04, 0.9, 12)},
	}
	pushes := make([]Push, 200)
	for i := range pushes {
		pushes[i] = Push{Group: groupLabels(fmt.Sprintf("job=j%d", i%100)), Mode: "sum", Families: fams[i%2]}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Apply(context.Background(), &pushes[i%len(pushes)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyPushgatewayPut is BenchmarkApply/replace with Pushgateway
// semantics and PUT: each push replaces its group.
func BenchmarkApplyPushgatewayPut(b *testing.B) {
	s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	groups := benchGroups(b, "replace")
	sem := SemanticsPushgateway
	for i := range groups {
		groups[i].Method, groups[i].Semantics = MethodPut, &sem
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Apply(context.Background(), &groups[i%len(groups)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyParallel is BenchmarkApply/sum from all cores at once.
func BenchmarkApplyParallel(b *testing.B) {
	s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	groups := benchGroups(b, "sum")
	b.ReportAllocs()
	b.ResetTimer()
	applyParallel(b, s, groups, 7)
}

// benchStore returns a store holding 1,000 groups of 25 sum series.
func benchStore(b *testing.B) *Store {
	s := New(testSettings(), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	fams := benchPush(b, 25, "sum")
	for i := 0; i < 1000; i++ {
		if err := s.Apply(context.Background(), &Push{Group: groupLabels(fmt.Sprintf("job=j%d", i)), Families: fams}); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkGather renders 25,000 series.
func BenchmarkGather(b *testing.B) {
	s := benchStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlush renders windows of 25,000 series whose set does not
// change, as the flusher does every interval (the requests are dropped),
// to an Appender that owns the requests (a new request per batch) and to
// one that borrows them (forward.Manager: the flush reuses its buffers).
func BenchmarkFlush(b *testing.B) {
	for _, tc := range []struct {
		name string
		out  Appender
	}{
		{"owned", appenderFunc(func(*prompb.WriteRequest) {})},
		{"borrowed", borrowingFunc(func(*prompb.WriteRequest) {})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchStore(b)
			f := NewFlusher(time.Second, time.Now, tc.out, []Source{{Gatherer: s}},
				prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			ts := time.Unix(1_700_000_000, 0)
			f.Flush(ts) // the first window has no previous one
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ts = ts.Add(time.Second)
				f.Flush(ts)
			}
		})
	}
}

// borrowingFunc is a BorrowingAppender that reads requests during the call.
type borrowingFunc func(*prompb.WriteRequest)

func (f borrowingFunc) Append(req *prompb.WriteRequest)         { f(req) }
func (f borrowingFunc) AppendBorrowed(req *prompb.WriteRequest) { f(req) }

// BenchmarkEncodePush measures the write-ahead log record of a 25-series push.
func BenchmarkEncodePush(b *testing.B) {
	sem := SemanticsAggregate
	p := benchGroups(b, "sum")[0]
	p.Semantics = &sem
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeOp(&Op{Type: RecordPush, Time: time.Now(), Push: &p}); err != nil {
			b.Fatal(err)
		}
	}
}

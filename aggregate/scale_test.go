package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-metrics/sluice/wal"
)

// The scale tests build a million live series, which takes a few seconds
// and a few hundred MiB, so they run only when asked:
//
//	SLUICE_SCALE_SERIES=1000000 go test -run 'TestScale' -v ./aggregate
//
// They check SPEC 10's memory and restart targets and log the figures.
const scaleEnv = "SLUICE_SCALE_SERIES"

func scaleSeries(t *testing.T) int {
	t.Helper()
	v := os.Getenv(scaleEnv)
	if v == "" {
		t.Skipf("set %s=1000000 to run", scaleEnv)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1000 {
		t.Fatalf("%s=%q: want a number of series >= 1000", scaleEnv, v)
	}
	return n
}

// scalePushes is how many pushes scalePush needs to create n series.
func scalePushes(n int) int { return (n + scalePerPush - 1) / scalePerPush }

const scaleGroups, scalePerPush = 1000, 25

// scalePush returns push i of those that create series over 1,000 groups,
// 25 series a push, half sum counters and half replace gauges, with labels
// the size of a typical service's (route, method, code, instance).
func scalePush(i int) *Push {
	g := i % scaleGroups
	counter := &dto.MetricFamily{Name: ptr("http_requests_total"), Type: dto.MetricType_COUNTER.Enum()}
	gauge := &dto.MetricFamily{Name: ptr("inflight_requests"), Type: dto.MetricType_GAUGE.Enum()}
	for j := range scalePerPush {
		k := (i/scaleGroups)*scalePerPush + j
		lp := []*dto.LabelPair{
			{Name: ptr("code"), Value: ptr(strconv.Itoa(200 + k%5))},
			{Name: ptr("method"), Value: ptr("GET")},
			{Name: ptr("route"), Value: ptr(fmt.Sprintf("/api/v1/resource/%d", k))},
		}
		if j%2 == 0 {
			counter.Metric = append(counter.Metric, &dto.Metric{Label: lp, Counter: &dto.Counter{Value: ptr(1.0)}})
		} else {
			gauge.Metric = append(gauge.Metric, &dto.Metric{Label: lp, Gauge: &dto.Gauge{Value: ptr(float64(k))}})
		}
	}
	return &Push{
		Group:    groupLabels(fmt.Sprintf("job=service-%d,instance=10.0.%d.%d:8080", g%50, g/250, g%250)),
		Families: []*dto.MetricFamily{counter, gauge},
	}
}

func scaleSettings(n int) Settings {
	set := testSettings()
	set.Limits.MaxSeries = n + 1
	set.Limits.MaxSeriesPerGroup = n
	return set
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestScaleMemoryPerSeries checks SPEC 10: under 1 KiB per live
// aggregated series at a million series.
func TestScaleMemoryPerSeries(t *testing.T) {
	n := scaleSeries(t)
	before := heapInUse()
	s := New(scaleSettings(n), time.Now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	for i := range scalePushes(n) {
		if err := s.Apply(context.Background(), scalePush(i)); err != nil {
			t.Fatal(err)
		}
	}
	after := heapInUse()
	live := s.counted.Load() // counters only: one each
	perSeries := float64(after-before) / float64(live)
	t.Logf("%d live series: %.0f bytes of heap per series (%d MiB in total)", live, perSeries, (after-before)>>20)
	runtime.KeepAlive(s)
	if perSeries >= 1024 {
		t.Errorf("%.0f bytes per live series, SPEC 10 wants under 1 KiB", perSeries)
	}
}

// TestScaleRestart checks SPEC 10: ready in under 10 s after a restart
// with a million live series (checkpoint load plus replay).
func TestScaleRestart(t *testing.T) {
	n := scaleSeries(t)
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	open := func() *wal.WAL {
		w, err := wal.Open(dir, wal.OSFS(), wal.Options{}, prometheus.NewRegistry(), logger)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	s := New(scaleSettings(n), time.Now, nil, nil, prometheus.NewRegistry(), logger)
	for i := range scalePushes(n) {
		if err := s.Apply(context.Background(), scalePush(i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := s.Checkpoint(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	checkpointTook := time.Since(start)
	size := testutilGauge(s.metrics.checkpointBytes)
	// A tail of pushes after the checkpoint, to replay: 1,000 pushes.
	c := NewCommitter(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	s.journal = c
	s.SetReady()
	for i := range 1000 {
		if err := s.Apply(context.Background(), scalePush(i)); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := s.counted.Load()
	s = nil
	runtime.GC()

	start = time.Now()
	w = open()
	defer w.Close()
	s2 := New(scaleSettings(n), time.Now, nil, nil, prometheus.NewRegistry(), logger)
	if err := Recover(s2, w, nil); err != nil {
		t.Fatal(err)
	}
	recoverTook := time.Since(start)
	t.Logf("%d series: checkpoint of %d MiB written in %v; open + recover (load + replay of 1,000 pushes) in %v",
		want, int64(size)>>20, checkpointTook.Round(time.Millisecond), recoverTook.Round(time.Millisecond))
	if got := s2.counted.Load(); got != want {
		t.Fatalf("recovered %d series, want %d", got, want)
	}
	if recoverTook >= 10*time.Second {
		t.Errorf("recovery took %v, SPEC 10 wants under 10 s", recoverTook)
	}
}

func testutilGauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

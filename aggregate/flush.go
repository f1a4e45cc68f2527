package aggregate

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// Appender receives one window's output: every live series once, at the
// window's end. forward.Manager implements it. Ownership of req passes to
// the Appender.
type Appender interface {
	Append(req *prompb.WriteRequest)
}

// Source is one set of metric families the Flusher emits.
type Source struct {
	Gatherer prometheus.Gatherer
	// Labels are added to every series of the source that lacks them
	// (job="sluice" and instance for Sluice's own metrics).
	Labels map[string]string
}

// Flusher emits its sources every interval, on window ends aligned to
// multiples of the interval since the Unix epoch, and ends series that
// disappeared since the previous window with a staleness marker.
type Flusher struct {
	interval time.Duration
	now      func() time.Time
	out      Appender
	logger   *slog.Logger

	// Owned by the goroutine calling Run or Flush; not safe for concurrent use.
	sources []Source
	prev    map[uint64]labels.Labels // series emitted in the previous window
	lastTS  int64                    // milliseconds of the last window emitted

	flushes  prometheus.Counter
	skipped  prometheus.Counter
	series   prometheus.Gauge
	stale    prometheus.Counter
	duration prometheus.Histogram
}

// NewFlusher builds a Flusher. It starts nothing; Run does.
func NewFlusher(interval time.Duration, now func() time.Time, out Appender, sources []Source, reg prometheus.Registerer, logger *slog.Logger) *Flusher {
	f := &Flusher{
		interval: interval, now: now, out: out, sources: sources, logger: logger,
		prev: make(map[uint64]labels.Labels),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_flushes_total", Help: "Windows emitted to the forward queues.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_flushes_skipped_total", Help: "Windows not emitted because a source could not be gathered.",
		}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_flush_series", Help: "Series emitted in the last window (self metrics included).",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_flush_staleness_markers_total", Help: "Staleness markers emitted for series that ended.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_flush_duration_seconds", Help: "Time to render one window.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
	}
	reg.MustRegister(f.flushes, f.skipped, f.series, f.stale, f.duration)
	return f
}

// WindowEnd returns the end of the window containing t.
func (f *Flusher) WindowEnd(t time.Time) time.Time {
	iv := f.interval.Nanoseconds()
	n := t.UnixNano()
	return time.Unix(0, (n/iv+1)*iv)
}

// Run emits a window at every window end until ctx is done, then emits the
// current window once more (at its end, so a restart that emits it again
// writes the same timestamp) and returns.
func (f *Flusher) Run(ctx context.Context) error {
	for {
		end := f.WindowEnd(f.now())
		t := time.NewTimer(end.Sub(f.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Flush(end)
			return nil
		case <-t.C:
			f.Flush(end)
		}
	}
}

// Flush renders every source at window end ts and hands the result to the
// Appender. A window at or before the last one emitted is skipped, so
// output timestamps never go backwards.
func (f *Flusher) Flush(ts time.Time) {
	ms := ts.UnixMilli()
	if ms <= f.lastTS {
		return
	}
	start := time.Now()
	f.lastTS = ms
	all := make([][]*dto.MetricFamily, len(f.sources))
	for i, src := range f.sources {
		fams, err := src.Gatherer.Gather()
		if err != nil && len(fams) == 0 {
			// Nothing to show (the write-ahead log failed, say): skip the
			// window rather than end every series with a staleness marker.
			f.logger.Error("window not emitted", "window_end", ts, "err", err)
			f.skipped.Inc()
			return
		}
		if err != nil {
			// Gather returns what it could; emit that and say why.
			f.logger.Warn("gather for flush", "err", err)
		}
		all[i] = fams
	}
	req := &prompb.WriteRequest{}
	w := &windowRender{req: req, cur: make(map[uint64]labels.Labels, len(f.prev)), prev: f.prev}
	cur := w.cur
	for i, src := range f.sources {
		for _, fam := range all[i] {
			w.appendFamily(fam, src.Labels, ms)
		}
	}
	for h, ls := range f.prev {
		if _, ok := cur[h]; !ok {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels:  prompb.FromLabels(ls, nil),
				Samples: []prompb.Sample{{Value: math.Float64frombits(value.StaleNaN), Timestamp: ms}},
			})
			f.stale.Inc()
		}
	}
	f.prev = cur
	f.series.Set(float64(len(cur)))
	f.flushes.Inc()
	f.duration.Observe(time.Since(start).Seconds())
	f.out.Append(req)
}

// windowRender is the state of rendering one window: the request, the
// series emitted so far (cur) and those of the previous window (prev).
type windowRender struct {
	req       *prompb.WriteRequest
	cur, prev map[uint64]labels.Labels
	sb        labels.ScratchBuilder
	scratch   labels.Labels // sb's labels before they are known to be new
}

// built returns the labels in w.sb and their hash. A series that was in the
// previous window gets that window's copy, so that a steady set of series
// allocates no labels per window and cur shares prev's memory.
func (w *windowRender) built() (labels.Labels, uint64) {
	w.sb.Overwrite(&w.scratch)
	h := w.scratch.Hash()
	if old, ok := w.prev[h]; ok && labels.Equal(old, w.scratch) {
		return old, h
	}
	return w.scratch.Copy(), h
}

// appendFamily renders one family the way a scrape of it would be ingested:
// classic histograms and summaries as their _bucket/_sum/_count/quantile
// series, native histograms as histogram samples. It consumes fam: its
// metrics are nil afterwards.
func (w *windowRender) appendFamily(fam *dto.MetricFamily, extra map[string]string, ms int64) {
	req, cur, sb := w.req, w.cur, &w.sb
	name := fam.GetName()
	req.Metadata = append(req.Metadata, prompb.MetricMetadata{
		Type:             metadataType(fam.GetType()),
		MetricFamilyName: name,
		Help:             fam.GetHelp(),
		Unit:             fam.GetUnit(),
	})
	// Each metric is dropped from fam once rendered, so that with a
	// million series the gathered families are garbage as the request
	// grows rather than both being live at the end.
	metrics := fam.GetMetric()
	for i, m := range metrics {
		metrics[i] = nil
		mk := func(metricName, extraName, extraValue string) (labels.Labels, uint64) {
			sb.Reset()
			sb.Add(model.MetricNameLabel, metricName)
			for _, lp := range m.GetLabel() {
				sb.Add(lp.GetName(), lp.GetValue())
			}
			for k, v := range extra {
				if !hasLabel(m.GetLabel(), k) {
					sb.Add(k, v)
				}
			}
			if extraName != "" {
				sb.Add(extraName, extraValue)
			}
			sb.Sort()
			return w.built()
		}
		emit := func(metricName, extraName, extraValue string, ts prompb.TimeSeries) {
			ls, h := mk(metricName, extraName, extraValue)
			cur[h] = ls
			ts.Labels = prompb.FromLabels(ls, nil)
			req.Timeseries = append(req.Timeseries, ts)
		}
		float := func(metricName, extraName, extraValue string, v float64) {
			emit(metricName, extraName, extraValue, prompb.TimeSeries{Samples: []prompb.Sample{{Value: v, Timestamp: ms}}})
		}
		switch {
		case m.Counter != nil:
			float(name, "", "", m.Counter.GetValue())
		case m.Gauge != nil:
			float(name, "", "", m.Gauge.GetValue())
		case m.Untyped != nil:
			float(name, "", "", m.Untyped.GetValue())
		case m.Summary != nil:
			s := m.Summary
			for _, q := range s.GetQuantile() {
				float(name, model.QuantileLabel, formatLabelFloat(q.GetQuantile()), q.GetValue())
			}
			float(name+"_sum", "", "", s.GetSampleSum())
			float(name+"_count", "", "", float64(s.GetSampleCount()))
		case m.Histogram != nil:
			h := m.Histogram
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			if isNative(h) {
				if fh, err := nativeFromDTO(h, count, h.GetSampleSum()); err == nil {
					emit(name, "", "", prompb.TimeSeries{Histograms: []prompb.Histogram{prompb.FromFloatHistogram(ms, fh)}})
				}
			}
			if len(h.GetBucket()) > 0 || !isNative(h) {
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue
					}
					c := float64(b.GetCumulativeCount())
					if b.CumulativeCountFloat != nil {
						c = b.GetCumulativeCountFloat()
					}
					float(name+"_bucket", model.BucketLabel, formatLabelFloat(b.GetUpperBound()), c)
				}
				float(name+"_bucket", model.BucketLabel, "+Inf", count)
				float(name+"_sum", "", "", h.GetSampleSum())
				float(name+"_count", "", "", count)
			}
		}
	}
}

// hasLabel reports whether ls has a label named name.
func hasLabel(ls []*dto.LabelPair, name string) bool {
	for _, lp := range ls {
		if lp.GetName() == name {
			return true
		}
	}
	return false
}

// formatLabelFloat renders le and quantile values the way client_golang's
// exposition does, so series match what a scrape would produce.
func formatLabelFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func metadataType(t dto.MetricType) prompb.MetricMetadata_MetricType {
	switch t {
	case dto.MetricType_COUNTER:
		return prompb.MetricMetadata_COUNTER
	case dto.MetricType_GAUGE:
		return prompb.MetricMetadata_GAUGE
	case dto.MetricType_HISTOGRAM:
		return prompb.MetricMetadata_HISTOGRAM
	case dto.MetricType_GAUGE_HISTOGRAM:
		return prompb.MetricMetadata_GAUGEHISTOGRAM
	case dto.MetricType_SUMMARY:
		return prompb.MetricMetadata_SUMMARY
	}
	return prompb.MetricMetadata_UNKNOWN
}

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

// Flush sizes. A window is rendered and handed on in parts, so that a
// flush holds a part of it at a time, never the whole window: a source the
// Flusher can read a part at a time (the Store) is read flushChunkSeries
// series (whole groups) at a time, and the Appender gets a request
// whenever one holds flushBatchSeries series.
const (
	flushChunkSeries = 8192
	flushBatchSeries = 16384
)

// chunkGatherer is a source the Flusher reads a part at a time (Durable and
// *Store; any other Gatherer is gathered whole).
type chunkGatherer interface {
	gatherChunks(size int, fn func(*flushChunk) error) error
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
	// seen holds every series emitted and not yet ended, by the hash of
	// its labels, with the last window (gen) it was emitted in. A Store
	// series' labels are the Store's own memory, not a copy.
	seen   map[uint64]seenSeries
	gen    uint64
	lastTS int64 // milliseconds of the last window flushed, or skipped
	// emitted is the last window of which something was handed on (a
	// window a failing source skipped was not).
	emitted int64
	render  *windowRender
	// chunk and batch: flushChunkSeries and flushBatchSeries (tests make
	// them small).
	chunk, batch int

	flushes  prometheus.Counter
	skipped  prometheus.Counter
	series   prometheus.Gauge
	stale    prometheus.Counter
	duration prometheus.Histogram
}

// seenSeries is an entry of Flusher.seen.
type seenSeries struct {
	ls  labels.Labels
	gen uint64
}

// NewFlusher builds a Flusher. It starts nothing; Run does.
func NewFlusher(interval time.Duration, now func() time.Time, out Appender, sources []Source, reg prometheus.Registerer, logger *slog.Logger) *Flusher {
	f := &Flusher{
		interval: interval, now: now, out: out, sources: sources, logger: logger,
		seen:  make(map[uint64]seenSeries),
		chunk: flushChunkSeries, batch: flushBatchSeries,
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_flushes_total", Help: "Windows emitted to the forward queues.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_flushes_skipped_total", Help: "Windows not emitted, or not emitted whole, because a source could not be gathered.",
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

// SetLastEmitted makes ms (Unix milliseconds) the last window end emitted:
// no window at or before it is emitted. Call it before Run. A process that
// stopped emitted its current window early, at its end (see Run); one that
// starts again within that window must not emit the same timestamp with
// other values (a store keeps both, or refuses the request), so its first
// window is the next one, which carries the totals.
func (f *Flusher) SetLastEmitted(ms int64) {
	f.lastTS, f.emitted = max(f.lastTS, ms), max(f.emitted, ms)
}

// LastEmitted is the end of the last window emitted, in Unix
// milliseconds; 0 if none. A window skipped because a source failed (the
// write-ahead log, say) does not count. Call it after Run returned.
func (f *Flusher) LastEmitted() int64 { return f.emitted }

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
// Appender, a request of at most about flushBatchSeries series at a time.
// A window at or before the last one emitted is skipped, so output
// timestamps never go backwards.
//
// A source that fails before anything of the window was handed on skips
// the window: nothing is emitted, and no series ends. One that fails later
// (the write-ahead log failing mid-window) cuts the window short: what was
// handed on stands, and no staleness marker is emitted, since the series
// not rendered did not end.
func (f *Flusher) Flush(ts time.Time) {
	ms := ts.UnixMilli()
	if ms <= f.lastTS {
		return
	}
	start := time.Now()
	f.lastTS = ms
	f.gen++
	w := f.newRender(ms)
	whole := true
	for _, src := range f.sources {
		var err error
		if cg, ok := src.Gatherer.(chunkGatherer); ok {
			err = cg.gatherChunks(f.chunk, func(c *flushChunk) error {
				w.appendChunk(c, src.Labels)
				return nil
			})
		} else {
			var fams []*dto.MetricFamily
			fams, err = src.Gatherer.Gather()
			if err != nil && len(fams) > 0 {
				// Gather returns what it could; emit that and say why.
				f.logger.Warn("gather for flush", "err", err)
				err = nil
			}
			for _, fam := range fams {
				w.appendFamily(fam, src.Labels)
			}
		}
		if err == nil {
			continue
		}
		f.skipped.Inc()
		if !w.sent {
			// Nothing to show (the write-ahead log failed, say): skip
			// the window rather than end every series with a staleness
			// marker.
			f.logger.Error("window not emitted", "window_end", ts, "err", err)
			return
		}
		f.logger.Error("window cut short: the series rendered so far were emitted, no staleness markers", "window_end", ts, "err", err)
		whole = false
		break
	}
	if whole {
		w.endSeries()
	}
	w.send(true)
	f.emitted = ms
	f.series.Set(float64(w.series))
	f.flushes.Inc()
	f.duration.Observe(time.Since(start).Seconds())
}

// windowRender is the state of rendering one window: the request being
// filled and the slabs its series' labels and samples come from.
type windowRender struct {
	f      *Flusher
	ms     int64
	borrow BorrowingAppender // out, if it can take a request it does not own
	req    *prompb.WriteRequest
	meta   map[string]struct{} // families whose metadata req has
	// fams holds the metadata of every family rendered in the window,
	// for the requests of staleness markers.
	fams map[string]prompb.MetricMetadata
	// cur is the family being rendered, if inFamily.
	cur      prompb.MetricMetadata
	inFamily bool
	lbuf     []prompb.Label
	sbuf     []prompb.Sample
	sb       labels.ScratchBuilder
	// scratch holds sb's labels before they are known to be new.
	scratch labels.Labels
	series  int  // series emitted in the window
	sent    bool // a request of the window was handed on
}

// newRender starts rendering a window. The request and its slabs of the
// last window are reused when the Appender borrows requests.
func (f *Flusher) newRender(ms int64) *windowRender {
	if w := f.render; w != nil && w.borrow != nil {
		w.reset()
		clear(w.fams)
		w.ms, w.series, w.sent, w.inFamily = ms, 0, false, false
		return w
	}
	w := &windowRender{f: f, ms: ms, req: &prompb.WriteRequest{}, meta: make(map[string]struct{}), fams: make(map[string]prompb.MetricMetadata)}
	w.borrow, _ = f.out.(BorrowingAppender)
	f.render = w
	return w
}

// send hands the request on if it holds a series, or, with last, if
// nothing of the window was handed on yet (every window is one Append at
// least).
func (w *windowRender) send(last bool) {
	if len(w.req.Timeseries) == 0 && (!last || w.sent) {
		return
	}
	w.sent = true
	if w.borrow != nil {
		w.borrow.AppendBorrowed(w.req)
		w.reset()
	} else {
		w.f.out.Append(w.req)
		// The next request is about as big: no growing by doubling.
		w.req = &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, cap(w.req.Timeseries))}
		w.lbuf, w.sbuf = make([]prompb.Label, 0, cap(w.lbuf)), make([]prompb.Sample, 0, cap(w.sbuf))
		clear(w.meta)
	}
	if w.inFamily && !last {
		// The family being rendered goes on in the next request.
		w.family(w.cur)
	}
}

// reset empties the request for reuse: after it was handed on, or when a
// skipped window leaves a part rendered and not handed on. It is cleared,
// so that the reused buffers keep no ended series' labels alive.
func (w *windowRender) reset() {
	clear(w.req.Timeseries)
	clear(w.lbuf)
	w.req.Timeseries, w.req.Metadata = w.req.Timeseries[:0], w.req.Metadata[:0]
	w.lbuf, w.sbuf = w.lbuf[:0], w.sbuf[:0]
	clear(w.meta)
}

// family adds a family's metadata to the request, once per request, and
// makes it the family the next series belong to.
func (w *windowRender) family(md prompb.MetricMetadata) {
	w.cur, w.inFamily = md, true
	w.fams[md.MetricFamilyName] = md
	if _, ok := w.meta[md.MetricFamilyName]; !ok {
		w.meta[md.MetricFamilyName] = struct{}{}
		w.req.Metadata = append(w.req.Metadata, md)
	}
}

// track records that ls is emitted in this window and returns the labels
// to emit it with, or false if a series with these labels already was.
// A series that was in an earlier window keeps that window's labels; a new
// one is stored as ls, copied first if copyLabels (scratch labels).
func (w *windowRender) track(ls labels.Labels, copyLabels bool) (labels.Labels, bool) {
	f := w.f
	h := ls.Hash()
	if e, ok := f.seen[h]; ok && labels.Equal(e.ls, ls) {
		if e.gen == f.gen {
			return e.ls, false
		}
		f.seen[h] = seenSeries{ls: e.ls, gen: f.gen}
		return e.ls, true
	}
	if copyLabels {
		ls = ls.Copy()
	}
	f.seen[h] = seenSeries{ls: ls, gen: f.gen}
	return ls, true
}

// emit appends a series with one sample: a float, or hist if not nil.
func (w *windowRender) emit(ls labels.Labels, copyLabels bool, v float64, hist *prompb.Histogram) {
	ls, ok := w.track(ls, copyLabels)
	if !ok {
		return
	}
	w.series++
	w.add(ls, v, hist)
}

// add appends a series to the request, sending it once it is full.
func (w *windowRender) add(ls labels.Labels, v float64, hist *prompb.Histogram) {
	n := len(w.lbuf)
	ls.Range(func(l labels.Label) {
		w.lbuf = append(w.lbuf, prompb.Label{Name: l.Name, Value: l.Value})
	})
	ts := prompb.TimeSeries{Labels: w.lbuf[n:len(w.lbuf):len(w.lbuf)]}
	if hist != nil {
		ts.Histograms = []prompb.Histogram{*hist}
	} else {
		w.sbuf = append(w.sbuf, prompb.Sample{Value: v, Timestamp: w.ms})
		k := len(w.sbuf)
		ts.Samples = w.sbuf[k-1 : k : k]
	}
	w.req.Timeseries = append(w.req.Timeseries, ts)
	if len(w.req.Timeseries) >= w.f.batch {
		w.send(false)
	}
}

// endSeries emits a staleness marker for every series not emitted in this
// window and forgets it.
func (w *windowRender) endSeries() {
	f := w.f
	w.inFamily = false
	for h, e := range f.seen {
		if e.gen == f.gen {
			continue
		}
		delete(f.seen, h)
		// A request of markers carries the metadata of every family of
		// the window, as a request of the whole window did; which family
		// a marker belongs to is the forward queues' to find, as for any
		// series. (w.meta holds a subset of w.fams' names.)
		if len(w.meta) < len(w.fams) {
			for name, md := range w.fams {
				if _, ok := w.meta[name]; !ok {
					w.meta[name] = struct{}{}
					w.req.Metadata = append(w.req.Metadata, md)
				}
			}
		}
		w.add(e.ls, math.Float64frombits(value.StaleNaN), nil)
		f.stale.Inc()
	}
}

// baseLabels are where a rendered series' labels come from besides its
// name (and le or quantile): a dto metric's label pairs, or a Store
// series' labels (its __name__ aside) or grouping key, plus the source's
// labels the series lacks.
type baseLabels struct {
	pairs    []*dto.LabelPair
	lset     labels.Labels
	fromLset bool
	groupKey bool // lset is a grouping key: instance="" if it has none
	extra    map[string]string
}

func (b *baseLabels) has(name string) bool {
	if b.fromLset {
		return b.lset.Has(name)
	}
	return hasLabel(b.pairs, name)
}

// build returns the series' labels in w.scratch (valid until the next
// build).
func (w *windowRender) build(b *baseLabels, metricName, extraName, extraValue string) labels.Labels {
	sb := &w.sb
	sb.Reset()
	sb.Add(model.MetricNameLabel, metricName)
	if b.fromLset {
		b.lset.Range(func(l labels.Label) {
			if l.Name != model.MetricNameLabel {
				sb.Add(l.Name, l.Value)
			}
		})
	} else {
		for _, lp := range b.pairs {
			sb.Add(lp.GetName(), lp.GetValue())
		}
	}
	if b.groupKey && !b.has("instance") {
		sb.Add("instance", "")
	}
	for k, v := range b.extra {
		if !b.has(k) && (k != "instance" || !b.groupKey) {
			sb.Add(k, v)
		}
	}
	if extraName != "" {
		sb.Add(extraName, extraValue)
	}
	sb.Sort()
	sb.Overwrite(&w.scratch)
	return w.scratch
}

// appendChunk renders a chunk of the Store's series. A float series
// without labels to add is emitted with the Store's own labels: no label
// is built or copied.
func (w *windowRender) appendChunk(c *flushChunk, extra map[string]string) {
	for i := range c.fams {
		fam := &c.fams[i]
		w.family(prompb.MetricMetadata{Type: metadataType(fam.typ), MetricFamilyName: fam.name, Help: fam.help, Unit: fam.unit})
		b := baseLabels{fromLset: true, groupKey: fam.groups, extra: extra}
		for _, s := range fam.series {
			switch {
			case s.m == nil && !fam.groups && len(extra) == 0 && s.lset.Get(model.MetricNameLabel) == fam.name:
				w.emit(s.lset, false, s.value, nil)
			case s.m == nil:
				b.lset = s.lset
				w.emit(w.build(&b, fam.name, "", ""), true, s.value, nil)
			default:
				b.lset = s.lset
				w.appendMetric(fam.name, s.m, &b)
			}
		}
	}
	w.inFamily = false
}

// appendFamily renders one gathered family. It consumes fam: its metrics
// are nil afterwards.
func (w *windowRender) appendFamily(fam *dto.MetricFamily, extra map[string]string) {
	name := fam.GetName()
	w.family(prompb.MetricMetadata{
		Type:             metadataType(fam.GetType()),
		MetricFamilyName: name,
		Help:             fam.GetHelp(),
		Unit:             fam.GetUnit(),
	})
	// Each metric is dropped from fam once rendered, so that the
	// gathered families are garbage as the request grows.
	metrics := fam.GetMetric()
	for i, m := range metrics {
		metrics[i] = nil
		w.appendMetric(name, m, &baseLabels{pairs: m.GetLabel(), extra: extra})
	}
	w.inFamily = false
}

// appendMetric renders one metric the way a scrape of it would be
// ingested: classic histograms and summaries as their
// _bucket/_sum/_count/quantile series, native histograms as histogram
// samples.
func (w *windowRender) appendMetric(name string, m *dto.Metric, b *baseLabels) {
	float := func(metricName, extraName, extraValue string, v float64) {
		w.emit(w.build(b, metricName, extraName, extraValue), true, v, nil)
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
		count := renderedCount(h)
		if isNative(h) {
			if fh, err := nativeFromDTO(h, count, h.GetSampleSum()); err == nil {
				// Integer counts go out as an integer histogram, as
				// their clients pushed them.
				ph := prompb.FromFloatHistogram(w.ms, fh)
				if ih := intNative(h, fh); ih != nil {
					ph = prompb.FromIntHistogram(w.ms, ih)
				}
				w.emit(w.build(b, name, "", ""), true, 0, &ph)
			}
		}
		if len(h.GetBucket()) > 0 || !isNative(h) {
			for _, bk := range h.GetBucket() {
				if math.IsInf(bk.GetUpperBound(), 1) {
					continue
				}
				c := float64(bk.GetCumulativeCount())
				if bk.CumulativeCountFloat != nil {
					c = bk.GetCumulativeCountFloat()
				}
				float(name+"_bucket", model.BucketLabel, formatLabelFloat(bk.GetUpperBound()), c)
			}
			float(name+"_bucket", model.BucketLabel, "+Inf", count)
			float(name+"_sum", "", "", h.GetSampleSum())
			float(name+"_count", "", "", count)
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

package wal

import "github.com/prometheus/client_golang/prometheus"

// metrics are the WAL's self metrics. The names are a contract with
// dashboards; do not rename them.
type metrics struct {
	bytes         prometheus.Gauge
	segments      prometheus.Gauge
	fsyncDuration prometheus.Histogram
	records       prometheus.Counter
	batches       prometheus.Counter
	fsyncs        prometheus.Counter
	corruptions   prometheus.Counter
	appendErrors  prometheus.Counter
	zeroFill      *prometheus.CounterVec
	// zeroFillAppend and zeroFillBackground are zeroFill's two series,
	// resolved once.
	zeroFillAppend, zeroFillBackground prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_wal_bytes",
			Help: "Bytes of log data in the WAL's segment files (the segment being written is zero-filled ahead, so on disk it is larger).",
		}),
		segments: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_wal_segments",
			Help: "Number of WAL segment files.",
		}),
		fsyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_wal_fsync_duration_seconds",
			Help: "Duration of one fsync of a WAL segment.",
			// From an NVMe drive's ~100µs to a struggling network disk.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_wal_records_appended_total",
			Help: "Records appended to the WAL and acknowledged.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_wal_batches_total",
			Help: "Append calls that succeeded (each writes one batch of records atomically).",
		}),
		fsyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_wal_fsyncs_total",
			Help: "fsyncs of WAL segment files; with group commit, far fewer than batches under concurrency.",
		}),
		corruptions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_wal_corruptions_repaired_total",
			Help: "Torn or corrupt WAL data found on open and cut off (the log is kept up to the last valid batch).",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_wal_append_errors_total",
			Help: "Append calls that returned an error; none of their records are in the log.",
		}),
		zeroFill: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_wal_zero_fill_bytes_total",
			Help: "Zeros written ahead of the log's end, by who wrote them: the background filler (by=\"background\") or an append that found none ready (by=\"append\"), whose commit then waits for them.",
		}, []string{"by"}),
	}
	m.zeroFillAppend = m.zeroFill.WithLabelValues("append")
	m.zeroFillBackground = m.zeroFill.WithLabelValues("background")
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bytes, m.segments, m.fsyncDuration, m.records, m.batches, m.fsyncs, m.corruptions, m.appendErrors, m.zeroFill}
}

// register registers every metric on reg, or none of them.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	cs := m.collectors()
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

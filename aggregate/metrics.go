package aggregate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-metrics/sluice/configs"
)

// storeMetrics are the Store's self metrics.
type storeMetrics struct {
	samplesIngested   prometheus.Counter
	timestampsIgnored prometheus.Counter
	quantilesDropped  prometheus.Counter
	seriesRemoved     *prometheus.CounterVec

	checkpointBytes    prometheus.Gauge
	checkpointDuration prometheus.Histogram
}

// modeName labels sluice_series by mode kind.
func modeName(k configs.ModeKind) string {
	switch k {
	case configs.ModeSum:
		return "sum"
	case configs.ModeReplace:
		return "replace"
	case configs.ModeFamily:
		return "family"
	case configs.ModeWindowMean:
		return "window_mean"
	case configs.ModeWindowSum:
		return "window_sum"
	case configs.ModeWindowMin:
		return "window_min"
	case configs.ModeWindowMax:
		return "window_max"
	case configs.ModeWindowCount:
		return "window_count"
	case configs.ModeWindowQuantile:
		return "window_quantile"
	}
	return "invalid"
}

func newStoreMetrics(reg prometheus.Registerer, s *Store) *storeMetrics {
	m := &storeMetrics{
		samplesIngested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_samples_ingested_total",
			Help: "Series values (a histogram or summary counts once) aggregated: from accepted pushes, and from remote_write series with clear_mode.",
		}),
		timestampsIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_client_timestamps_ignored_total",
			Help: "Pushed samples whose client timestamp was ignored (windows go by arrival time).",
		}),
		quantilesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_summary_quantiles_dropped_total",
			Help: "Summary quantiles dropped because summaries in sum mode cannot merge quantiles.",
		}),
		seriesRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_series_removed_total",
			Help: "Aggregated series removed, by reason (expired, deleted, replaced).",
		}, []string{"reason"}),
	}
	m.checkpointBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_checkpoint_bytes", Help: "Size of the last state checkpoint.",
	})
	m.checkpointDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_checkpoint_duration_seconds", Help: "Time to take and write one checkpoint.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
	})
	reg.MustRegister(m.checkpointBytes, m.checkpointDuration)
	seriesDesc := prometheus.NewDesc("sluice_series", "Live aggregated series by clear_mode kind.", []string{"mode"}, nil)
	groupsDesc := prometheus.NewDesc("sluice_groups", "Live push groups (grouping keys).", nil, nil)
	countedDesc := prometheus.NewDesc("sluice_series_counted", "Live series as limits.max_series counts them: what a store sees, each bucket of a classic histogram and each quantile of a summary (with _sum and _count) one.", nil, nil)
	for _, r := range []string{"expired", "deleted", "replaced"} {
		m.seriesRemoved.WithLabelValues(r)
	}
	reg.MustRegister(m.samplesIngested, m.timestampsIgnored, m.quantilesDropped, m.seriesRemoved,
		collectorFunc{descs: []*prometheus.Desc{seriesDesc, groupsDesc, countedDesc}, collect: func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(countedDesc, prometheus.GaugeValue, float64(s.counted.Load()))
			for k := configs.ModeSum; k <= configs.ModeWindowQuantile; k++ {
				ch <- prometheus.MustNewConstMetric(seriesDesc, prometheus.GaugeValue, float64(s.modeCounts[k].Load()), modeName(k))
			}
			s.groupsMu.Lock()
			n := len(s.groups)
			s.groupsMu.Unlock()
			ch <- prometheus.MustNewConstMetric(groupsDesc, prometheus.GaugeValue, float64(n))
		}})
	return m
}

// collectorFunc adapts a function to prometheus.Collector.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

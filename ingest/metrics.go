package ingest

import "github.com/prometheus/client_golang/prometheus"

// ingestMetrics are the HTTP front's self metrics.
type ingestMetrics struct {
	requests *prometheus.CounterVec
	rejected *prometheus.CounterVec
	duration *prometheus.HistogramVec
	refilled prometheus.Counter
}

func newIngestMetrics(reg prometheus.Registerer) *ingestMetrics {
	m := &ingestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_push_requests_total",
			Help: "Push requests (PUT, POST, DELETE) by method and HTTP status code.",
		}, []string{"method", "code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rejected_pushes_total",
			Help: "Rejected push requests by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_push_duration_seconds",
			Help:    "Time to decode, validate and apply a push, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"method"}),
		refilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_push_bodies_refilled_total",
			Help: "Push bodies (text or protobuf) that differed from their route's last push only in sample values, and were decoded by their values alone (whether the store then took them or not).",
		}),
	}
	reg.MustRegister(m.requests, m.rejected, m.duration, m.refilled)
	return m
}

// rwMetrics are the remote_write receiver's self metrics.
type rwMetrics struct {
	requests         *prometheus.CounterVec
	samples          *prometheus.CounterVec
	histograms       *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	relabelDropped   prometheus.Counter
	exemplarsDropped prometheus.Counter
	staleIgnored     prometheus.Counter
	metadataSkipped  prometheus.Counter
}

func newRWMetrics(reg prometheus.Registerer) *rwMetrics {
	m := &rwMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_remote_write_requests_total",
			Help: "Remote-write requests received, by protocol version (1.0, 2.0, unknown) and HTTP status code.",
		}, []string{"version", "code"}),
		samples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_remote_write_samples_total",
			Help: "Float samples written from remote_write requests, by version and path: relay (forwarded unchanged) or aggregate (clear_mode).",
		}, []string{"version", "path"}),
		histograms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_remote_write_histograms_total",
			Help: "Native histogram samples written from remote_write requests, by version and path (relay, aggregate).",
		}, []string{"version", "path"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_remote_write_rejected_total",
			Help: "Rejected (or partly written) remote_write requests by reason.",
		}, []string{"reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_remote_write_duration_seconds",
			Help:    "Time to decode, validate and write a remote_write request (durably), by version.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"version"}),
		relabelDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_ingest_relabel_dropped_series_total",
			Help: "Remote-written series dropped by ingest.relabel_configs (or left without a metric name by them).",
		}),
		exemplarsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_remote_write_exemplars_dropped_total",
			Help: "Exemplars received over remote_write and dropped: Sluice does not relay or aggregate exemplars.",
		}),
		staleIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_remote_write_stale_markers_ignored_total",
			Help: "Staleness markers received over remote_write for clear_mode series and ignored: Sluice ends aggregated series itself, after their TTL.",
		}),
		metadataSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_remote_write_metadata_skipped_total",
			Help: "Remote-Write 1.0 metadata entries not kept for the series Sluice relays: a family name, HELP or unit longer than limits.max_metadata_length.",
		}),
	}
	reg.MustRegister(m.requests, m.samples, m.histograms, m.rejected, m.duration, m.relabelDropped, m.exemplarsDropped, m.staleIgnored, m.metadataSkipped)
	return m
}

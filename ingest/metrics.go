package ingest

import "github.com/prometheus/client_golang/prometheus"

// ingestMetrics are the HTTP front's self metrics.
type ingestMetrics struct {
	requests *prometheus.CounterVec
	rejected *prometheus.CounterVec
	duration *prometheus.HistogramVec
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
	}
	reg.MustRegister(m.requests, m.rejected, m.duration)
	return m
}

package forward

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons for sluice_forward_samples_dropped_total besides HTTP
// status codes ("400", "404", ...).
const (
	// reasonCoalesced: the backlog was over max_backlog_bytes and the
	// sample was folded into a newer one of its series (coalesce.go). Not
	// data lost: the newer sample carries the total; resolution is lost.
	reasonCoalesced = "coalesced"
	// reasonBacklogFull: the backlog was still over max_backlog_bytes
	// after coalescing; its oldest windows were deleted.
	reasonBacklogFull = "backlog_full"
	// reasonBacklogWrite: the window could not be written to the backlog
	// (disk full, I/O error).
	reasonBacklogWrite = "backlog_write"
	// reasonCorrupt: the backlog held a frame that could not be read back
	// (disk damage found after start-up).
	reasonCorrupt = "backlog_corrupt"
	// reasonShutdown: the target was removed from the configuration and
	// its backlog deleted before the sample was delivered.
	reasonShutdown = "shutdown"
	// reasonRelabel: write_relabel_configs dropped the series. Not an error:
	// it is the configured outcome, counted so that it can be told apart.
	reasonRelabel = "relabel"
	// reasonEncode: the batch could not be marshalled (never expected).
	reasonEncode = "encode"
	// reasonUnconfirmed: a Remote-Write 2.0 target answered 2xx but its
	// X-Prometheus-Remote-Write-*-Written headers said nothing was
	// written (or were missing): a 1.0-only receiver that ignored the
	// Content-Type, as Prometheus 3 reads it.
	reasonUnconfirmed = "rw2_unconfirmed"
)

// metrics are the Manager's self metrics, every series labelled with
// remote_name (the target's DisplayName). The names are a contract with
// dashboards; do not rename them.
type metrics struct {
	samplesSent    *prometheus.CounterVec
	histogramsSent *prometheus.CounterVec
	samplesRetried *prometheus.CounterVec
	samplesDropped *prometheus.CounterVec
	queueSamples   *prometheus.GaugeVec
	queueBytes     *prometheus.GaugeVec
	sendDuration   *prometheus.HistogramVec
	requests       *prometheus.CounterVec
	highestSent    *prometheus.GaugeVec
	backlogBytes   *prometheus.GaugeVec
	backlogOldest  *prometheus.GaugeVec
}

const remoteName = "remote_name"

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		samplesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_forward_samples_sent_total",
			Help: "Float samples (staleness markers included) accepted by the target with a 2xx.",
		}, []string{remoteName}),
		histogramsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_forward_histograms_sent_total",
			Help: "Native histogram samples accepted by the target with a 2xx.",
		}, []string{remoteName}),
		samplesRetried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_forward_samples_retried_total",
			Help: "Samples (floats and histograms) in batches re-sent after a recoverable error, once per retry.",
		}, []string{remoteName}),
		samplesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_forward_samples_dropped_total",
			Help: "Samples (floats and histograms) not delivered, by reason: an HTTP status code, coalesced (folded into a newer sample of the series when the backlog was full: resolution, not data), backlog_full, backlog_write, backlog_corrupt, shutdown, relabel (dropped by write_relabel_configs) or encode.",
		}, []string{remoteName, "reason"}),
		queueSamples: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_forward_queue_samples",
			Help: "Samples waiting to be sent: in the backlog on disk, read ahead or being sent.",
		}, []string{remoteName}),
		queueBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_forward_queue_bytes",
			Help: "Approximate in-memory size of the samples read ahead from the backlog or being sent (label bytes plus values).",
		}, []string{remoteName}),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_forward_send_duration_seconds",
			Help: "Duration of one remote_write HTTP request, whatever its outcome.",
			// From a local receiver (ms) up to the 30 s default remote_timeout.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{remoteName}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_forward_requests_total",
			Help: "remote_write HTTP requests by status code; code=\"error\" when no response was received.",
		}, []string{remoteName, "code"}),
		highestSent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_forward_highest_sent_timestamp_seconds",
			Help: "Highest sample timestamp accepted by the target, in seconds since the epoch.",
		}, []string{remoteName}),
		backlogBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_forward_backlog_bytes",
			Help: "Bytes of the backlog on disk not yet sent; bounded by queue_config.max_backlog_bytes.",
		}, []string{remoteName}),
		backlogOldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_forward_backlog_oldest_timestamp_seconds",
			Help: "Timestamp of the oldest sample not yet sent, in seconds since the epoch (time() minus it is the backlog's age); 0 when nothing waits.",
		}, []string{remoteName}),
	}
	if reg != nil {
		reg.MustRegister(m.samplesSent, m.histogramsSent, m.samplesRetried, m.samplesDropped,
			m.queueSamples, m.queueBytes, m.sendDuration, m.requests, m.highestSent,
			m.backlogBytes, m.backlogOldest)
	}
	return m
}

// forTarget returns the children of one target. Two targets with the same
// name (a changed config replacing the old one) share them, and share the
// backlog, which sets queueSamples and the backlog gauges; queueBytes is
// only ever moved with Add.
func (m *metrics) forTarget(name string) targetMetrics {
	l := prometheus.Labels{remoteName: name}
	tm := targetMetrics{
		samplesSent:    m.samplesSent.With(l),
		histogramsSent: m.histogramsSent.With(l),
		samplesRetried: m.samplesRetried.With(l),
		dropped:        m.samplesDropped.MustCurryWith(l),
		queueSamples:   m.queueSamples.With(l),
		queueBytes:     m.queueBytes.With(l),
		sendDuration:   m.sendDuration.With(l),
		requests:       m.requests.MustCurryWith(l),
		highestSent:    m.highestSent.With(l),
		backlogBytes:   m.backlogBytes.With(l),
		backlogOldest:  m.backlogOldest.With(l),
	}
	// Export the usual reasons at 0 so that rate() works from the start.
	for _, r := range []string{reasonCoalesced, reasonBacklogFull, reasonBacklogWrite} {
		tm.dropped.WithLabelValues(r)
	}
	return tm
}

// delete removes every series of a target that is gone.
func (m *metrics) delete(name string) {
	l := prometheus.Labels{remoteName: name}
	m.samplesSent.DeletePartialMatch(l)
	m.histogramsSent.DeletePartialMatch(l)
	m.samplesRetried.DeletePartialMatch(l)
	m.samplesDropped.DeletePartialMatch(l)
	m.queueSamples.DeletePartialMatch(l)
	m.queueBytes.DeletePartialMatch(l)
	m.sendDuration.DeletePartialMatch(l)
	m.requests.DeletePartialMatch(l)
	m.highestSent.DeletePartialMatch(l)
	m.backlogBytes.DeletePartialMatch(l)
	m.backlogOldest.DeletePartialMatch(l)
}

// targetMetrics are one target's children of metrics.
type targetMetrics struct {
	samplesSent    prometheus.Counter
	histogramsSent prometheus.Counter
	samplesRetried prometheus.Counter
	dropped        *prometheus.CounterVec // by reason
	queueSamples   prometheus.Gauge
	queueBytes     prometheus.Gauge
	sendDuration   prometheus.Observer
	requests       *prometheus.CounterVec // by code
	highestSent    prometheus.Gauge
	backlogBytes   prometheus.Gauge
	backlogOldest  prometheus.Gauge
}

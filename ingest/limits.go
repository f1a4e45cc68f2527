package ingest

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-metrics/sluice/configs"
)

// limitFields are the limits.* fields, in the order they are documented.
// Each is a value of the "limit" label of sluice_limit and
// sluice_limit_exceeded_total.
var limitFields = [...]string{
	"max_body_bytes",
	"max_decompressed_body_bytes",
	"max_series_per_request",
	"max_labels_per_series",
	"max_label_name_length",
	"max_label_value_length",
	"max_metadata_length",
	"max_series_per_group",
	"max_series",
	"max_inflight_requests",
}

func limitValue(l configs.LimitsConfig, field string) float64 {
	switch field {
	case "max_body_bytes":
		return float64(l.MaxBodyBytes)
	case "max_decompressed_body_bytes":
		return float64(l.MaxDecompressedBodyBytes)
	case "max_series_per_request":
		return float64(l.MaxSeriesPerRequest)
	case "max_labels_per_series":
		return float64(l.MaxLabelsPerSeries)
	case "max_label_name_length":
		return float64(l.MaxLabelNameLength)
	case "max_label_value_length":
		return float64(l.MaxLabelValueLength)
	case "max_metadata_length":
		return float64(l.MaxMetadataLength)
	case "max_series_per_group":
		return float64(l.MaxSeriesPerGroup)
	case "max_series":
		return float64(l.MaxSeries)
	case "max_inflight_requests":
		return float64(l.MaxInflightRequests)
	}
	return 0
}

// limitMetrics are the self metrics of the limits: the value in force and
// the requests each one rejected.
type limitMetrics struct {
	exceeded *prometheus.CounterVec
	// inflight counts push and remote_write requests being served.
	inflight atomic.Int64
}

// limitsCollector exposes sluice_limit from the limits in force at scrape
// time, so a reload shows at once.
type limitsCollector struct {
	desc   *prometheus.Desc
	limits func() configs.LimitsConfig
	// bodyLimit is the max_body_bytes the HTTP server was built with: it
	// changes only on restart, whatever the file says now.
	bodyLimit int
}

func (c *limitsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *limitsCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.limits()
	for _, f := range limitFields {
		v := limitValue(l, f)
		if f == "max_body_bytes" {
			v = float64(c.bodyLimit)
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, f)
	}
}

func newLimitMetrics(reg prometheus.Registerer, limits func() configs.LimitsConfig, bodyLimit int) *limitMetrics {
	m := &limitMetrics{
		exceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_limit_exceeded_total",
			Help: "Requests rejected because they exceeded a limit, by the limits.* field that rejected them.",
		}, []string{"limit"}),
	}
	for _, f := range limitFields {
		m.exceeded.WithLabelValues(f) // every limit shows, at 0, from the start
	}
	reg.MustRegister(m.exceeded,
		&limitsCollector{
			desc:      prometheus.NewDesc("sluice_limit", "The value of each limits.* field in force.", []string{"limit"}, nil),
			limits:    limits,
			bodyLimit: bodyLimit,
		},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_inflight_requests",
			Help: "Push and remote_write requests being decoded and applied now (limits.max_inflight_requests).",
		}, func() float64 { return float64(m.inflight.Load()) }),
	)
	return m
}

// countLimit counts a rejection by the limits.* field limit; "" (no limit
// rejected it) counts nothing.
func (m *limitMetrics) countLimit(limit string) {
	if limit != "" {
		m.exceeded.WithLabelValues(limit).Inc()
	}
}

// retryAfterOverload is the Retry-After, in seconds, of a request refused
// because too many are in flight: the overload is momentary.
const retryAfterOverload = "1"

// admit serves c if fewer than limits.max_inflight_requests push and
// remote_write requests are in flight. Over the limit a push gets 429 and
// a remote_write request 503 (SPEC 5: a default Prometheus drops a batch
// on 429 instead of retrying it), both with Retry-After.
func (s *server) admit(c *fiber.Ctx, cls endpointClass) error {
	limit := int64(s.opts.Limits().MaxInflightRequests)
	n := s.limits.inflight.Add(1)
	defer s.limits.inflight.Add(-1)
	if limit <= 0 || n <= limit {
		return c.Next()
	}
	s.limits.countLimit("max_inflight_requests")
	c.Set(fiber.HeaderRetryAfter, retryAfterOverload)
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	msg := "more than " + strconv.FormatInt(limit, 10) + " push and remote_write requests in flight (limits.max_inflight_requests); retry after " + retryAfterOverload + "s\n"
	if cls == classRemoteWrite {
		v, _ := rwVersionOf(c.Get(fiber.HeaderContentType))
		if v == rwV2 {
			c.Set(headerSamplesWritten, "0")
			c.Set(headerHistogramsWritten, "0")
			c.Set(headerExemplarsWritten, "0")
		}
		s.rw.requests.WithLabelValues(v.String(), "503").Inc()
		s.rw.rejected.WithLabelValues("overloaded").Inc()
		return c.Status(http.StatusServiceUnavailable).SendString("overloaded: " + msg)
	}
	s.metrics.requests.WithLabelValues(strings.Clone(c.Method()), "429").Inc()
	s.metrics.rejected.WithLabelValues("inflight_limit").Inc()
	return c.Status(http.StatusTooManyRequests).SendString(msg)
}

// initHardening builds the limit and authentication state of s from its
// options; bodyLimit is the max_body_bytes the server is built with.
func (s *server) initHardening(bodyLimit int) {
	web := s.opts.Web
	if web == nil {
		def := configs.Default().Web
		web = func() *configs.WebConfig { return &def }
	}
	s.auth = &authState{cfg: web}
	s.authm = newAuthMetrics(s.opts.Registerer)
	s.limits = newLimitMetrics(s.opts.Registerer, s.opts.Limits, bodyLimit)
}

// httpServerLimit describes an error fasthttp answers itself: the
// sluice_limit_exceeded_total label, the message naming the
// web.http_server_config field, and the rejection reason; "" for others.
func httpServerLimit(code int) (limit, msg, reason string) {
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		return "max_header_bytes", "request line and headers too large (web.http_server_config.max_header_bytes)", "headers_too_large"
	case http.StatusRequestTimeout:
		return "read_timeout", "request not received in time (web.http_server_config.read_timeout)", "request_timeout"
	}
	return "", "", ""
}

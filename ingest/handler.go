// Package ingest is Sluice's HTTP front: the Pushgateway-compatible push
// API, the remote_write receiver, the scrape view on GET /metrics, the
// Pushgateway JSON API and the health and lifecycle endpoints. It decodes
// and validates requests and hands pushes and remote writes to an
// Aggregator.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// Aggregator is what ingest hands pushes to. Implementations are safe for
// concurrent use; Apply is atomic (a rejected push changes nothing) and
// returns *aggregate.Error for rejections.
type Aggregator interface {
	// Apply applies a push. It must not keep p, whose memory the
	// handler reuses for a later push once Apply returns.
	Apply(ctx context.Context, p *aggregate.Push) error
	// Write applies a remote_write request: the series to relay and the
	// pushes built from the series to aggregate (see aggregate.Store.Write,
	// including its partial writes).
	Write(ctx context.Context, w *aggregate.Write) (aggregate.WriteResult, error)
	Delete(ctx context.Context, group labels.Labels) error
	Wipe(ctx context.Context) error
	Groups() []aggregate.GroupSnapshot
	prometheus.Gatherer
}

// Options configures the HTTP front. Every dependency is passed in.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Gatherer yields Sluice's own metrics for GET /metrics.
	Gatherer   prometheus.Gatherer
	Aggregator Aggregator
	// Limits returns the limits in force (they change on reload).
	Limits func() configs.LimitsConfig
	// Ingest returns the ingest settings in force (relabelling of
	// remote-written series); nil means none.
	Ingest func() configs.IngestConfig

	EnableAdminAPI  bool
	EnableLifecycle bool
	// Ready reports whether Sluice is ready; a non-empty reason means not.
	Ready func() (reason string)
	// Healthy reports whether Sluice works at all (GET /-/healthy, what
	// liveness probes ask); a non-empty reason means it needs a restart.
	// Nil: always.
	Healthy func() (reason string)
	// Reload reloads the configuration file.
	Reload func() error
	// Quit asks the process to shut down gracefully.
	Quit func()
	// Status is what /api/v1/status shows.
	Status Status
	// Web returns the web config in force: credentials and what they
	// protect are read per request (a reload returns a new pointer); the
	// HTTP server settings are read once by NewApp. Nil means the
	// defaults: no authentication.
	Web func() *configs.WebConfig
	// Targets returns the forward targets' state for the web page on GET /;
	// nil means the page says it is not available.
	Targets func() []TargetInfo
}

// Status is the data of /api/v1/status, in the Pushgateway's shape.
type Status struct {
	BuildInformation map[string]string
	Flags            map[string]string
	StartTime        time.Time
}

type server struct {
	opts    Options
	metrics *ingestMetrics
	rw      *rwMetrics
	scrape  fiber.Handler
	bufs    bufPool        // remote_write decompression buffers
	meta    *metadataCache // Remote-Write 1.0 metadata sent on its own
	limits  *limitMetrics  // limits.go
	auth    *authState     // auth.go
	unread  unreadRequests // auth.go: requests refused before their body
	authm   *authMetrics
	// pushes recycles what a push needs (*pushScratch) and its memory.
	pushes sync.Pool
	// shapes keeps the scratch of the last push per route (shape.go).
	shapes *shapeCache
	// freedAt is when memory was last handed back to the OS after a
	// decompression bomb (Unix nanoseconds); see releaseAfterBomb.
	freedAt atomic.Int64
}

// pushScratch is one push's memory: its body decoder, and the Push handed
// to the Aggregator (which does not keep it), so that the Push is not an
// allocation of its own.
type pushScratch struct {
	dec  Decoder
	push aggregate.Push
	// While the scratch is kept for a route (shapeCache): the route, its
	// grouping key, what the store made of the last push (shape) and the
	// memory the scratch holds (cost).
	route string
	group cachedGroup
	shape aggregate.Shape
	cost  int
}

// Bounds of the kept scratches (shape.go): at most 32 MiB, enough for
// some 50,000 sample lines, say 2,000 jobs of 25 series each.
const (
	maxShapeRoutes = 4096
	maxShapeBytes  = 32 << 20
)

// NewApp builds the fiber application serving every endpoint. bodyLimit
// caps request bodies as received (fiber answers 413 above it).
func NewApp(opts Options, bodyLimit int) *fiber.App {
	s := &server{opts: opts, metrics: newIngestMetrics(opts.Registerer), rw: newRWMetrics(opts.Registerer), meta: newMetadataCache()}
	s.pushes.New = func() any { return new(pushScratch) }
	s.shapes = newShapeCache(maxShapeRoutes, maxShapeBytes)
	scrapeOpts := promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          slogPrinter{opts.Logger},
		EnableOpenMetrics: true,
	}
	view := scrapeView{own: opts.Gatherer, pushed: opts.Aggregator}
	plain := promhttp.HandlerFor(view, scrapeOpts)
	om := promhttp.HandlerFor(openMetricsView{view}, scrapeOpts)
	s.scrape = adaptor.HTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What the handler will answer in: an OpenMetrics scrape (a
		// Prometheus asks for one) gets histograms OpenMetrics can carry.
		if expfmt.NegotiateAccept(r.Header, expfmt.DefaultOpenMetricsAcceptedFormats()...).FormatType() == expfmt.TypeOpenMetrics { // as promhttp negotiates
			om.ServeHTTP(w, r)
			return
		}
		plain.ServeHTTP(w, r)
	}))
	s.initHardening(bodyLimit) // limits.go, auth.go
	hs := s.auth.web().HTTPServerConfig
	app := fiber.New(fiber.Config{
		AppName:               "sluice",
		DisableStartupMessage: true,
		BodyLimit:             bodyLimit,
		CaseSensitive:         true,
		StrictRouting:         true,
		ErrorHandler:          s.errorHandler,
		ReadTimeout:           time.Duration(hs.ReadTimeout),
		WriteTimeout:          time.Duration(hs.WriteTimeout),
		IdleTimeout:           time.Duration(hs.IdleTimeout),
		ReadBufferSize:        hs.MaxHeaderBytes,
		Concurrency:           hs.MaxConnections,
	})
	app.Server().HeaderReceived = s.headerReceived // 401 before the body is read
	// A panic is a bug, never an answer to input; recover turns it into a
	// 500 and a logged stack instead of a dead process.
	app.Use(recover.New(recover.Config{EnableStackTrace: true, StackTraceHandler: func(c *fiber.Ctx, e any) {
		opts.Logger.Error("panic serving request", "path", c.Path(), "panic", e, "stack", string(debug.Stack()))
	}}))
	app.Use(s.guard) // authentication and limits.max_inflight_requests (auth.go)
	app.Get("/", homeHandler(s))
	app.Get("/metrics", s.scrape)
	app.Put("/metrics", s.push)
	app.Post("/metrics", s.push)
	app.Put("/metrics/*", s.push)
	app.Post("/metrics/*", s.push)
	app.Delete("/metrics/*", s.deleteGroup)
	app.All("/metrics", allowOnly("DELETE, GET, HEAD, POST, PUT")) // the scrape too
	app.All("/metrics/*", allowOnly("DELETE, POST, PUT"))

	healthy := func(c *fiber.Ctx) error {
		if s.opts.Healthy != nil {
			if reason := s.opts.Healthy(); reason != "" {
				c.Status(http.StatusServiceUnavailable)
				if c.Method() == fiber.MethodHead {
					return nil
				}
				return c.SendString(reason + "\n")
			}
		}
		if c.Method() == fiber.MethodHead {
			return c.SendStatus(http.StatusOK)
		}
		return c.SendString("OK")
	}
	app.Get("/-/healthy", healthy)
	app.Head("/-/healthy", healthy)
	app.Get("/-/ready", s.ready)
	app.Head("/-/ready", s.ready)
	app.Post("/-/reload", s.reload)
	app.Put("/-/reload", s.reload)
	app.Post("/-/quit", s.quit)
	app.Put("/-/quit", s.quit)
	app.All("/-/quit", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderAllow, "POST, PUT")
		return c.Status(http.StatusMethodNotAllowed).SendString("Only POST or PUT requests allowed.")
	})

	app.Options("/api/v1/*", cors)
	app.Post("/api/v1/write", s.remoteWrite)
	app.All("/api/v1/write", allowOnly("OPTIONS, POST"))
	app.Get("/api/v1/status", s.status)
	app.All("/api/v1/status", allowOnly("GET, HEAD, OPTIONS"))
	app.Get("/api/v1/metrics", s.apiMetrics)
	app.All("/api/v1/metrics", allowOnly("GET, HEAD, OPTIONS"))
	if opts.EnableAdminAPI {
		app.Put("/api/v1/admin/wipe", s.wipe)
		app.All("/api/v1/admin/wipe", allowOnly("OPTIONS, PUT"))
	} else {
		app.All("/api/v1/admin/wipe", func(c *fiber.Ctx) error {
			return c.Status(http.StatusNotFound).SendString("Not Found: the admin API is off (--web.enable-admin-api)")
		})
	}
	// Any other path under /api/v1/ is unknown: 404, as on the
	// Pushgateway (not the 405 that the OPTIONS route would give).
	app.All("/api/v1/*", func(c *fiber.Ctx) error {
		return c.Status(http.StatusNotFound).SendString("404 page not found")
	})
	return app
}

func (s *server) relabelConfigs() []*relabel.Config {
	if s.opts.Ingest == nil {
		return nil
	}
	return s.opts.Ingest().RelabelConfigs
}

// errorHandler answers fiber's own errors (404, 405, 408, 413, 431) in
// plain text.
func (s *server) errorHandler(c *fiber.Ctx, err error) error {
	code := http.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code = fe.Code
	}
	msg := err.Error()
	if code == http.StatusBadRequest {
		// fasthttp's own message for a request it cannot parse quotes
		// every header back, credentials included: name the problem only.
		msg = "malformed HTTP request"
		if strings.Contains(err.Error(), "Content-Length") {
			msg = "malformed HTTP request: bad Content-Length"
		}
	}
	reason := ""
	if code == http.StatusRequestEntityTooLarge {
		if unread, err := s.rejectedUnread(c); unread {
			return err // no valid credentials: 401, body not read
		}
		msg, reason = "request body too large (limits.max_body_bytes)", "body_too_large"
		s.limits.countLimit("max_body_bytes")
	}
	if limit, m, r := httpServerLimit(code); limit != "" {
		msg, reason = m, r
		s.limits.countLimit(limit)
	}
	if reason != "" {
		s.countServerRejection(c, code, reason)
	}
	if v, _ := rwVersionOf(c.Get(fiber.HeaderContentType)); v == rwV2 && c.Path() == "/api/v1/write" {
		// Remote-Write 2.0 answers always say what was written.
		c.Set(headerSamplesWritten, "0")
		c.Set(headerHistogramsWritten, "0")
		c.Set(headerExemplarsWritten, "0")
	}
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	return c.Status(code).SendString(msg)
}

// releaseAfterBomb hands the memory of a refused decompression bomb (up
// to limits.max_decompressed_body_bytes of buffer, now garbage) back to
// the OS at once, at most once a second: left to the collector and the
// scavenger, it stays resident until the heap grows again, so that a second
// bomb right after the first found a process already twice as big
// (TestHostileClients' peak RSS went past 200 MiB that way). The push's
// decoder, which held the buffer, is released before this runs.
func (s *server) releaseAfterBomb() {
	now := time.Now().UnixNano()
	last := s.freedAt.Load()
	if now-last < int64(time.Second) || !s.freedAt.CompareAndSwap(last, now) {
		return
	}
	debug.FreeOSMemory()
}

// countServerRejection counts a request the HTTP server refused before
// its handler ran (413 for the body, 431, 408) in the outcome metrics of
// the endpoint it was for, when its request line was read: pushes by
// method, remote_write by version. The limit metric counts it anyway.
func (s *server) countServerRejection(c *fiber.Ctx, code int, reason string) {
	path, method := c.Path(), c.Method()
	switch {
	case path == "/api/v1/write" && method == fiber.MethodPost:
		v, _ := rwVersionOf(c.Get(fiber.HeaderContentType))
		s.rw.requests.WithLabelValues(v.String(), strconv.Itoa(code)).Inc()
		s.rw.rejected.WithLabelValues(reason).Inc()
	case (path == "/metrics" || strings.HasPrefix(path, "/metrics/")) && (method == fiber.MethodPut || method == fiber.MethodPost):
		s.metrics.requests.WithLabelValues(methodName(method), strconv.Itoa(code)).Inc()
		s.metrics.rejected.WithLabelValues(reason).Inc()
	}
}

// allowOnly answers 405 with an Allow header naming methods.
func allowOnly(methods string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderAllow, methods)
		return c.Status(http.StatusMethodNotAllowed).SendString("Method Not Allowed")
	}
}

func cors(c *fiber.Ctx) error {
	c.Set("Access-Control-Allow-Origin", "*")
	c.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	c.Set("Access-Control-Allow-Headers", "Accept, Authorization, Content-Type, Origin")
	c.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	return c.SendStatus(http.StatusOK)
}

// groupFromPath parses the grouping key of a /metrics/... request.
func groupFromPath(c *fiber.Ctx) (labels.Labels, error) {
	raw := string(c.Request().URI().PathOriginal())
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	return ParseGroupingKey(raw[len("/metrics"):])
}

// splitGroupMode takes a clear_mode (or clearmode) label out of a grouping
// key: the mode it names applies to every series of the push, and it is
// not part of the group's identity, as it is not part of a series'. An
// empty value is no label.
func splitGroupMode(group labels.Labels) (labels.Labels, string, error) {
	mode, alias := group.Get(aggregate.ModeLabel), group.Get(aggregate.ModeLabelAlias)
	if !group.Has(aggregate.ModeLabel) && !group.Has(aggregate.ModeLabelAlias) {
		return group, "", nil
	}
	if mode != "" && alias != "" {
		return group, "", fmt.Errorf("grouping key has both %s and %s; use one", aggregate.ModeLabel, aggregate.ModeLabelAlias)
	}
	// Checked here, not only where a series applies it: a push without
	// series, or a DELETE, must not take a mode no push could use.
	if mode+alias != "" {
		if _, err := configs.ParseMode(mode + alias); err != nil {
			return group, "", fmt.Errorf("grouping key: %w", err)
		}
	}
	b := labels.NewBuilder(group)
	b.Del(aggregate.ModeLabel, aggregate.ModeLabelAlias)
	return b.Labels(), mode + alias, nil
}

// methodName returns a push's method as a string that outlives the
// request (fiber reuses the request memory): a constant for the methods a
// push route serves.
func methodName(m string) string {
	switch m {
	case fiber.MethodPut:
		return fiber.MethodPut
	case fiber.MethodPost:
		return fiber.MethodPost
	}
	return strings.Clone(m)
}

func (s *server) push(c *fiber.Ctx) error {
	start := time.Now()
	method := methodName(c.Method())
	var kb [256]byte
	route := routeKey(kb[:0], method, c.Request().URI().PathOriginal())
	ps := s.shapes.take(route)
	if ps == nil {
		ps = s.pushes.Get().(*pushScratch)
	}
	code, msg, reason, limit := s.doPush(c, ps)
	ps.push = aggregate.Push{}
	if ps.dec.shaped && (ps.route != "" || s.shapes.again(route)) {
		// Kept for the route's next push, its families and all. A
		// scratch taken from the cache has its route already.
		if ps.route == "" {
			ps.route = string(route)
		}
		ps.cost = scratchCost(ps)
		out, n := s.shapes.put(ps)
		for _, old := range out[:n] {
			s.releaseScratch(old)
		}
	} else {
		s.releaseScratch(ps)
	}
	s.metrics.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
	s.metrics.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	if reason != "" {
		s.metrics.rejected.WithLabelValues(reason).Inc()
		s.limits.countLimit(limit)
		s.opts.Logger.Debug("push rejected", "path", c.Path(), "code", code, "reason", reason, "err", msg)
	}
	if limit == "max_decompressed_body_bytes" {
		s.releaseAfterBomb()
	}
	if msg != "" {
		c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
		return c.Status(code).SendString(msg + "\n")
	}
	// An empty body, as the Pushgateway answers (fiber's SendStatus would
	// write the status text).
	c.Status(code)
	return nil
}

// releaseScratch forgets the push a scratch holds and pools it.
func (s *server) releaseScratch(ps *pushScratch) {
	ps.dec.Reset() // nothing refers to its families any more
	ps.shape.Reset()
	ps.route, ps.group, ps.cost = "", cachedGroup{}, 0
	if !ps.dec.large() {
		s.pushes.Put(ps)
	}
}

// doPush returns the status code, the error message (empty on success),
// the rejection reason for the metrics, and the limits.* field that
// rejected the push, if one did.
func (s *server) doPush(c *fiber.Ctx, ps *pushScratch) (code int, msg, reason, limit string) {
	dec := &ps.dec
	group, mode := ps.group.labels, ps.group.mode
	if ps.route == "" {
		// A scratch kept for the route has its grouping key already.
		var err error
		if group, err = groupFromPath(c); err != nil {
			return http.StatusBadRequest, err.Error(), "invalid_path", ""
		}
		if group, mode, err = splitGroupMode(group); err != nil {
			return http.StatusBadRequest, err.Error(), "invalid_path", ""
		}
		ps.group = cachedGroup{labels: group, mode: mode}
	}
	lim := s.opts.Limits()
	// Request().Body() is the raw body: fiber's c.Body() would undo
	// Content-Encoding itself, without our limits.
	body := c.Request().Body()
	fams, src, err := dec.DecodePush(c.Get(fiber.HeaderContentType), c.Get(fiber.HeaderContentEncoding), body,
		BodyLimits{MaxDecompressedBytes: lim.MaxDecompressedBodyBytes})
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error() + " (limits.max_decompressed_body_bytes)", "body_too_large", "max_decompressed_body_bytes"
	case errors.Is(err, ErrUnsupportedEncoding):
		return http.StatusUnsupportedMediaType, err.Error(), "unsupported_encoding", ""
	case err != nil:
		return http.StatusBadRequest, err.Error(), "decode_error", ""
	}
	m := aggregate.MethodPost
	if c.Method() == fiber.MethodPut {
		m = aggregate.MethodPut
	}
	if dec.refilled {
		s.metrics.refilled.Inc()
	} else {
		ps.shape.Reset() // other families than the store saw last
	}
	ps.push = aggregate.Push{Group: group, Method: m, Families: fams, Mode: mode, Body: src.Body, BodyFormat: src.Format, Shape: shapeOf(ps)}
	if err := s.opts.Aggregator.Apply(c.Context(), &ps.push); err != nil {
		ae, ok := aggregate.AsError(err)
		if !ok {
			s.opts.Logger.Error("apply push", "err", err)
			return http.StatusInternalServerError, "internal error: " + err.Error(), "internal", ""
		}
		switch ae.Kind {
		case aggregate.KindLimit:
			return http.StatusTooManyRequests, ae.Msg, ae.Reason, ae.Limit
		case aggregate.KindTooLarge:
			return http.StatusRequestEntityTooLarge, ae.Msg, ae.Reason, ae.Limit
		case aggregate.KindUnavailable:
			c.Set(fiber.HeaderRetryAfter, "5")
			return http.StatusServiceUnavailable, ae.Msg, ae.Reason, ae.Limit
		}
		return http.StatusBadRequest, ae.Msg, ae.Reason, ae.Limit
	}
	return http.StatusOK, "", "", ""
}

func (s *server) deleteGroup(c *fiber.Ctx) error {
	group, err := groupFromPath(c)
	if err == nil {
		group, _, err = splitGroupMode(group)
	}
	if err != nil {
		s.metrics.requests.WithLabelValues(fiber.MethodDelete, "400").Inc()
		s.metrics.rejected.WithLabelValues("invalid_path").Inc()
		return c.Status(http.StatusBadRequest).SendString(err.Error() + "\n")
	}
	if err := s.opts.Aggregator.Delete(c.Context(), group); err != nil {
		s.metrics.requests.WithLabelValues(fiber.MethodDelete, "503").Inc()
		c.Set(fiber.HeaderRetryAfter, "5")
		return c.Status(http.StatusServiceUnavailable).SendString(err.Error() + "\n")
	}
	s.metrics.requests.WithLabelValues(fiber.MethodDelete, "202").Inc()
	c.Status(http.StatusAccepted) // empty body, as the Pushgateway's
	return nil
}

func (s *server) ready(c *fiber.Ctx) error {
	if reason := s.opts.Ready(); reason != "" {
		return c.Status(http.StatusServiceUnavailable).SendString(reason)
	}
	return c.SendString("OK")
}

func (s *server) reload(c *fiber.Ctx) error {
	if err := s.opts.Reload(); err != nil {
		return c.Status(http.StatusInternalServerError).SendString("failed to reload config: " + err.Error())
	}
	return c.SendString("OK")
}

func (s *server) quit(c *fiber.Ctx) error {
	if !s.opts.EnableLifecycle {
		return c.Status(http.StatusForbidden).SendString("Lifecycle API is not enabled.")
	}
	s.opts.Quit()
	return c.SendString("Requesting termination... Goodbye!")
}

func (s *server) wipe(c *fiber.Ctx) error {
	if err := s.opts.Aggregator.Wipe(c.Context()); err != nil {
		return c.Status(http.StatusServiceUnavailable).SendString(err.Error() + "\n")
	}
	c.Status(http.StatusAccepted) // empty body, as the Pushgateway's
	return nil
}

// scrapeView is what GET /metrics exposes: Sluice's own metrics and the
// aggregated series, merged as prometheus.Gatherers merges them. A pushed
// family that is also one of Sluice's own (a job pushing its default
// registry pushes go_* and process_* families; the Store refuses another
// type) takes the HELP text of Sluice's own, as on the Pushgateway: help
// strings differ between client_golang versions, and a family whose HELP
// differs between the two would be left out of every scrape.
type scrapeView struct {
	own, pushed prometheus.Gatherer
}

func (v scrapeView) Gather() ([]*dto.MetricFamily, error) {
	own, errOwn := v.own.Gather()
	pushed, errPushed := v.pushed.Gather()
	help := make(map[string]*string, len(own))
	for _, f := range own {
		help[f.GetName()] = f.Help
	}
	for _, f := range pushed {
		if h, ok := help[f.GetName()]; ok {
			f.Help = h
		}
	}
	fams, err := prometheus.Gatherers{gathered(own), gathered(pushed)}.Gather()
	return fams, errors.Join(errOwn, errPushed, err)
}

// openMetricsView is the scrape view for an OpenMetrics scrape. Its
// encoder takes classic histograms with integer counts only, and stops a
// family at the first metric it cannot write (the metrics after it, other
// groups' included, were lost). So each histogram is made one it can
// write: native buckets are left out (OpenMetrics 1.0 has none; a
// native-only histogram shows as its +Inf bucket, _sum and _count, as in
// the text format), whole counts become integers, and a histogram with
// fractional counts is left out alone.
type openMetricsView struct{ v scrapeView }

func (o openMetricsView) Gather() ([]*dto.MetricFamily, error) {
	fams, err := o.v.Gather()
	out := fams[:0]
	for _, f := range fams {
		if t := f.GetType(); t == dto.MetricType_HISTOGRAM || t == dto.MetricType_GAUGE_HISTOGRAM {
			f.Metric = slices.DeleteFunc(f.Metric, func(m *dto.Metric) bool { return !classicForOpenMetrics(m.Histogram) })
			if len(f.Metric) == 0 {
				continue
			}
		}
		out = append(out, f)
	}
	return out, err
}

// classicForOpenMetrics makes h a classic histogram with integer counts,
// or reports that it cannot be one (fractional counts, or none at all).
// h is the gathered copy, the scrape's own.
func classicForOpenMetrics(h *dto.Histogram) bool {
	if h == nil {
		return false
	}
	h.Schema, h.ZeroThreshold, h.ZeroCount, h.ZeroCountFloat = nil, nil, nil, nil
	h.PositiveSpan, h.PositiveDelta, h.PositiveCount = nil, nil, nil
	h.NegativeSpan, h.NegativeDelta, h.NegativeCount = nil, nil, nil
	whole := func(c float64) bool { return c == math.Trunc(c) && c >= 0 && c < 1<<53 }
	if h.SampleCountFloat != nil {
		if !whole(h.GetSampleCountFloat()) {
			return false
		}
		h.SampleCount, h.SampleCountFloat = proto.Uint64(uint64(h.GetSampleCountFloat())), nil
	}
	for _, b := range h.Bucket {
		if b.CumulativeCountFloat != nil {
			if !whole(b.GetCumulativeCountFloat()) {
				return false
			}
			b.CumulativeCount, b.CumulativeCountFloat = proto.Uint64(uint64(b.GetCumulativeCountFloat())), nil
		}
	}
	return true
}

// gathered is a Gatherer of families already gathered.
type gathered []*dto.MetricFamily

func (g gathered) Gather() ([]*dto.MetricFamily, error) { return g, nil }

// slogPrinter adapts a slog.Logger to promhttp's Println-style logger.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Error("serve metrics", "err", v) }

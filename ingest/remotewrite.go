package ingest

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// Remote-Write 2.0 response headers: how much of the request was written.
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// rwResult is the answer to one remote_write request.
type rwResult struct {
	version rwVersion
	code    int
	msg     string // empty on success
	reason  string // for the rejected counter; empty on success
	limit   string // the limits.* field that rejected it, if one did
	// Written: what the RW 2.0 headers report. Series relabelled away
	// count as written: Sluice took them and dropped them on purpose.
	samples, histograms int
	// Applied, by path, for the self metrics.
	relayFloats, relayHists int
	aggFloats, aggHists     int
}

// remoteWrite serves POST /api/v1/write (SPEC 5).
func (s *server) remoteWrite(c *fiber.Ctx) error {
	start := time.Now()
	r := s.doRemoteWrite(c)
	v := r.version.String()
	s.rw.requests.WithLabelValues(v, strconv.Itoa(r.code)).Inc()
	s.rw.duration.WithLabelValues(v).Observe(time.Since(start).Seconds())
	if r.reason != "" {
		s.rw.rejected.WithLabelValues(r.reason).Inc()
		s.limits.countLimit(r.limit)
		s.opts.Logger.Debug("remote_write rejected", "version", v, "code", r.code, "reason", r.reason, "err", r.msg)
	}
	if n := r.relayFloats; n > 0 {
		s.rw.samples.WithLabelValues(v, "relay").Add(float64(n))
	}
	if n := r.relayHists; n > 0 {
		s.rw.histograms.WithLabelValues(v, "relay").Add(float64(n))
	}
	if n := r.aggFloats; n > 0 {
		s.rw.samples.WithLabelValues(v, "aggregate").Add(float64(n))
	}
	if n := r.aggHists; n > 0 {
		s.rw.histograms.WithLabelValues(v, "aggregate").Add(float64(n))
	}
	if r.version == rwV2 {
		// Prometheus 3 takes a 2xx without them for a Remote-Write 1.0
		// receiver and drops the batch; on errors they say what was written.
		c.Set(headerSamplesWritten, strconv.Itoa(r.samples))
		c.Set(headerHistogramsWritten, strconv.Itoa(r.histograms))
		c.Set(headerExemplarsWritten, "0")
	}
	if r.code == http.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "5")
	}
	if r.msg == "" {
		return c.SendStatus(r.code)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMETextPlainCharsetUTF8)
	return c.Status(r.code).SendString(r.msg + "\n")
}

// decodeRemoteWrite decompresses, unmarshals, validates, relabels and
// splits a remote_write body (the raw body: fiber's c.Body() would undo
// Content-Encoding itself). Nothing of it is applied yet. The result
// points into a pooled request: release it once the Store is done.
func decodeRemoteWrite(pool *bufPool, v rwVersion, body []byte, lim configs.LimitsConfig, relabels []*relabel.Config, meta *metadataCache) (*rwDecoded, *rwError) {
	return pool.decode(v, body, lim, relabels, meta)
}

func (s *server) doRemoteWrite(c *fiber.Ctx) rwResult {
	fail := func(v rwVersion, e *rwError) rwResult {
		return rwResult{version: v, code: e.code, msg: e.msg, reason: e.reason, limit: e.limit}
	}
	if e := checkRWEncoding(c.Get(fiber.HeaderContentEncoding)); e != nil {
		v, _ := rwVersionOf(c.Get(fiber.HeaderContentType))
		return fail(v, e)
	}
	v, e := rwVersionOf(c.Get(fiber.HeaderContentType))
	if e != nil {
		return fail(v, e)
	}
	dec, e := decodeRemoteWrite(&s.bufs, v, c.Request().Body(), s.opts.Limits(), s.relabelConfigs(), s.meta)
	if e != nil {
		return fail(v, e)
	}
	defer dec.release() // the Store only borrows the relayed series
	if dec.droppedSeries > 0 {
		s.rw.relabelDropped.Add(float64(dec.droppedSeries))
	}
	if dec.exemplars > 0 {
		s.rw.exemplarsDropped.Add(float64(dec.exemplars))
	}
	if dec.staleMarkers > 0 {
		s.rw.staleIgnored.Add(float64(dec.staleMarkers))
	}
	if dec.metadataSkipped > 0 {
		s.rw.metadataSkipped.Add(float64(dec.metadataSkipped))
	}
	res := rwResult{version: v, code: http.StatusNoContent, samples: dec.droppedFloats, histograms: dec.droppedHists}
	if dec.write.Relay == nil && len(dec.write.Pushes) == 0 {
		return res // metadata only, or everything relabelled away
	}
	wr, err := s.opts.Aggregator.Write(c.Context(), &dec.write)
	if wr.Relayed {
		res.relayFloats, res.relayHists = dec.relayFloats, dec.relayHists
	}
	for i := 0; i < wr.Pushes; i++ {
		res.aggFloats += dec.pushFloats[i]
		res.aggHists += dec.pushHists[i]
	}
	res.samples += res.relayFloats + res.aggFloats
	res.histograms += res.relayHists + res.aggHists
	if err == nil {
		return res
	}
	ae, ok := aggregate.AsError(err)
	if !ok {
		s.opts.Logger.Error("apply remote_write", "err", err)
		res.code, res.msg, res.reason = http.StatusInternalServerError, "internal error: "+err.Error(), "internal"
		return res
	}
	res.msg, res.reason, res.limit = ae.Msg, ae.Reason, ae.Limit
	switch ae.Kind {
	case aggregate.KindUnavailable:
		res.code = http.StatusServiceUnavailable
	case aggregate.KindTooLarge:
		res.code = http.StatusRequestEntityTooLarge
	default:
		// A series limit too: retrying cannot help, and a 429 would make
		// a default Prometheus drop the batch anyway.
		res.code = http.StatusBadRequest
	}
	if wr.Relayed || wr.Pushes > 0 {
		res.msg = "partly written (" + strconv.Itoa(res.samples) + " samples, " + strconv.Itoa(res.histograms) + " histograms): " + res.msg
	}
	return res
}

package ingest

import (
	"cmp"
	"fmt"
	"math"
	"mime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// rwVersion is the Remote-Write protocol version of a request.
type rwVersion uint8

const (
	rwUnknown rwVersion = iota
	rwV1
	rwV2
)

func (v rwVersion) String() string {
	switch v {
	case rwV1:
		return "1.0"
	case rwV2:
		return "2.0"
	}
	return "unknown"
}

const (
	rwMediaType = "application/x-protobuf"
	rwEncoding  = "snappy"
	// maxPooledBuf: decompression buffers larger than this are not kept
	// for reuse, so one huge request does not pin its buffer.
	maxPooledBuf = 16 << 20
)

// rwError is a rejected remote_write request: its HTTP status, a message
// naming the problem, and a reason for sluice_remote_write_rejected_total.
type rwError struct {
	code   int
	reason string
	msg    string
	limit  string // the limits.* field that rejected the request, if one did
}

func (e *rwError) Error() string { return e.msg }

func rwErrorf(code int, reason, format string, args ...any) *rwError {
	return &rwError{code: code, reason: reason, msg: fmt.Sprintf(format, args...)}
}

// rwLimitf is rwErrorf for a rejection by the limits.* field limit.
func rwLimitf(code int, reason, limit, format string, args ...any) *rwError {
	e := rwErrorf(code, reason, format, args...)
	e.limit = limit
	return e
}

// Rejection reasons of sluice_remote_write_rejected_total, besides the
// aggregation reasons (aggregate.Reason*).
const (
	rwReasonMediaType    = "unsupported_media_type"
	rwReasonEncoding     = "unsupported_encoding"
	rwReasonTooLarge     = "body_too_large"
	rwReasonSnappy       = "invalid_snappy"
	rwReasonProtobuf     = "invalid_protobuf"
	rwReasonSymbols      = "invalid_symbol_ref"
	rwReasonLabel        = "invalid_label"
	rwReasonNoName       = "missing_metric_name"
	rwReasonDuplicate    = "duplicate_label"
	rwReasonUnsorted     = "unsorted_labels"
	rwReasonLabelLimit   = "label_limit"
	rwReasonHistogram    = "invalid_histogram"
	rwReasonMixed        = "samples_and_histograms"
	rwReasonTypeConflict = "type_conflict"
)

// rwVersionOf picks the protocol from Content-Type: application/x-protobuf
// is Remote-Write 1.0 unless its proto parameter names the 2.0 message.
func rwVersionOf(contentType string) (rwVersion, *rwError) {
	if strings.TrimSpace(contentType) == "" {
		return rwUnknown, rwErrorf(415, rwReasonMediaType, "no Content-Type: remote_write needs %s (Remote-Write 1.0) or %s;proto=%s", rwMediaType, rwMediaType, configs.ProtoMsgV2)
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return rwUnknown, rwErrorf(415, rwReasonMediaType, "unparsable Content-Type %q: %v", contentType, err)
	}
	if mt != rwMediaType {
		return rwUnknown, rwErrorf(415, rwReasonMediaType, "unsupported Content-Type %q: remote_write needs %s", mt, rwMediaType)
	}
	switch proto := params["proto"]; proto {
	case "", configs.ProtoMsgV1:
		return rwV1, nil
	case configs.ProtoMsgV2:
		return rwV2, nil
	default:
		return rwUnknown, rwErrorf(415, rwReasonMediaType, "unsupported protobuf message %q (Content-Type proto parameter): Sluice accepts %s and %s",
			proto, configs.ProtoMsgV1, configs.ProtoMsgV2)
	}
}

// checkRWEncoding accepts only snappy: the Remote-Write specifications
// require it (block format).
func checkRWEncoding(contentEncoding string) *rwError {
	enc := strings.TrimSpace(contentEncoding)
	if strings.EqualFold(enc, rwEncoding) {
		return nil
	}
	if enc == "" {
		return rwErrorf(415, rwReasonEncoding, "no Content-Encoding: remote_write bodies must be snappy-compressed (block format) with Content-Encoding: snappy")
	}
	return rwErrorf(415, rwReasonEncoding, "unsupported Content-Encoding %q: remote_write bodies must be snappy (block format)", enc)
}

// bufPool reuses decoded requests (rwRequest) with their decompression
// buffers and arenas from request to request.
type bufPool struct{ p sync.Pool }

func (b *bufPool) get() *rwRequest {
	if r, ok := b.p.Get().(*rwRequest); ok {
		return r
	}
	return &rwRequest{}
}

// put takes r back once nothing refers to it or to its strings any more.
// A request whose body was larger than maxPooledBuf is not kept, so that
// one huge request does not pin its buffers.
func (b *bufPool) put(r *rwRequest) {
	if cap(r.buf) > maxPooledBuf {
		return
	}
	r.reset()
	b.p.Put(r)
}

// unsnappy decompresses a snappy block into r's buffer after checking its
// decoded length against limit.
func (r *rwRequest) unsnappy(body []byte, limit int64) ([]byte, *rwError) {
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, rwErrorf(400, rwReasonSnappy, "decompress snappy body (%d bytes): %v", len(body), err)
	}
	if int64(n) > limit {
		return nil, rwLimitf(413, rwReasonTooLarge, "max_decompressed_body_bytes", "decompressed body of %d bytes exceeds %d bytes (limits.max_decompressed_body_bytes)", n, limit)
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	data, err := snappy.Decode(r.buf[:cap(r.buf)], body)
	if err != nil {
		return nil, rwErrorf(400, rwReasonSnappy, "decompress snappy body (%d bytes): %v", len(body), err)
	}
	return data, nil
}

// decode decompresses, decodes, validates, relabels and splits a
// remote_write body. The result is valid until its release is called,
// which gives the pooled request back: relayed series (and the relay's
// WAL record) point into it, and the Store only borrows them. What is
// aggregated, cached or reported in errors is copied.
func (b *bufPool) decode(v rwVersion, body []byte, lim configs.LimitsConfig, relabels []*relabel.Config, meta *metadataCache) (*rwDecoded, *rwError) {
	r := b.get()
	out, e := r.decode(v, body, lim, relabels, meta)
	if e != nil {
		b.put(r)
		return nil, e
	}
	out.pool, out.req = b, r
	return out, nil
}

func (r *rwRequest) decode(v rwVersion, body []byte, lim configs.LimitsConfig, relabels []*relabel.Config, meta *metadataCache) (*rwDecoded, *rwError) {
	data, e := r.unsnappy(body, lim.MaxDecompressedBodyBytes)
	if e != nil {
		return nil, e
	}
	d := newRWDecoder(lim, relabels, meta)
	if v == rwV1 {
		if err := r.parseV1(data); err != nil {
			return nil, rwErrorf(400, rwReasonProtobuf, "decode Remote-Write 1.0 body (prometheus.WriteRequest): %v", err)
		}
		return d.decodeV1(r, data, body)
	}
	if err := r.parseV2(data); err != nil {
		return nil, rwErrorf(400, rwReasonProtobuf, "decode Remote-Write 2.0 body (io.prometheus.write.v2.Request): %v", err)
	}
	return d.decodeV2(r)
}

// relaySnappy sets w.RelayRaw and w.RelaySnappy: the relay as the
// Remote-Write 1.0 body the write-ahead log records and the forward
// queues send, uncompressed and snappy-compressed, built in r's buffers.
// raw and body are the request as received, decompressed and not, used
// as they are when the relay is the request unchanged.
func (r *rwRequest) relaySnappy(w *aggregate.Write, raw, body []byte, unchanged bool) *rwError {
	if w.Relay == nil {
		return nil
	}
	w.RelayBorrowed = true
	if unchanged {
		w.RelayRaw, w.RelaySnappy = raw, body
		if len(raw) <= math.MaxInt32 { // the offsets fit
			w.RelayRuns = r.v1Runs
		}
		return nil
	}
	n := w.Relay.Size()
	if cap(r.relayPB) < n {
		r.relayPB = make([]byte, n)
	}
	k, err := w.Relay.MarshalToSizedBuffer(r.relayPB[:n])
	if err != nil {
		return rwErrorf(500, "internal", "encode relayed series: %v", err)
	}
	pb := r.relayPB[n-k : n]
	if m := snappy.MaxEncodedLen(len(pb)); cap(r.relaySnap) < m {
		r.relaySnap = make([]byte, m)
	}
	w.RelayRaw = pb
	w.RelaySnappy = snappy.Encode(r.relaySnap[:cap(r.relaySnap)], pb)
	return nil
}

// rwDecoded is a validated remote_write request, split into what is
// relayed and what is aggregated, with the counts the response reports.
type rwDecoded struct {
	write aggregate.Write
	// Samples and histograms relayed, aggregated (per push, in push
	// order) and relabelled away.
	relayFloats, relayHists int
	pushFloats, pushHists   []int
	droppedSeries           int
	droppedFloats           int
	droppedHists            int
	// staleMarkers counts the staleness markers sent for aggregated
	// series: ignored (and reported as written), since Sluice ends its
	// aggregated series itself.
	staleMarkers int
	exemplars    int // received; Sluice does not carry them
	// metadataSkipped counts metadata entries too long to cache.
	metadataSkipped int

	// The pooled request the relay points into; release gives it back.
	pool *bufPool
	req  *rwRequest
}

// release gives the request back to its pool: the result, its relay and
// its strings must not be used afterwards. Safe on nil.
func (d *rwDecoded) release() {
	if d != nil && d.pool != nil {
		d.pool.put(d.req)
		d.pool, d.req = nil, nil
	}
}

// rwDecoder validates, relabels and splits decoded requests. A decoder is
// used for one request at a time.
type rwDecoder struct {
	lim      configs.LimitsConfig
	relabels []*relabel.Config
	meta     *metadataCache // nil: none

	sb  labels.ScratchBuilder
	lb  *labels.Builder
	agg map[string]*aggSeries
	// aggOrder keeps the aggregated series in request order.
	aggOrder []*aggSeries
	// key is scratch space for the map keys of addAgg and buildPushes.
	key []byte
	// The aggregated series, their labels and first samples come from
	// chunks: a few allocations per request, not several per series.
	series  []aggSeries
	lbls    []prompb.Label
	samples []prompb.Sample
}

// take returns n elements from the free end of *chunk, as a slice whose
// capacity ends at its length: an append to it copies, and leaves the
// chunk alone. A full chunk is followed by one twice its size (at least
// 16, at least n), so the chunks of a request are a handful, and at most
// half of them unused. Earlier chunks stay valid.
func take[T any](chunk *[]T, n int) []T {
	if cap(*chunk)-len(*chunk) < n {
		*chunk = make([]T, 0, max(n, 2*cap(*chunk), 16))
	}
	start := len(*chunk)
	*chunk = (*chunk)[:start+n]
	return (*chunk)[start : start+n : start+n]
}

func newRWDecoder(lim configs.LimitsConfig, relabels []*relabel.Config, meta *metadataCache) *rwDecoder {
	d := &rwDecoder{lim: lim, relabels: relabels, meta: meta}
	if len(relabels) > 0 {
		d.lb = labels.NewBuilder(labels.EmptyLabels())
	}
	return d
}

// seriesMeta is what the sender said about a series' metric family.
type seriesMeta struct {
	typ        prompb.MetricMetadata_MetricType
	help, unit string
	known      bool
}

func (m seriesMeta) clone() seriesMeta {
	m.help, m.unit = strings.Clone(m.help), strings.Clone(m.unit)
	return m
}

// aggSeries is one series to aggregate, with every sample the request
// carried for it (a Remote-Write 1.0 sender sends each sample as its own
// TimeSeries).
type aggSeries struct {
	lbls   []prompb.Label
	name   string
	meta   seriesMeta
	floats []prompb.Sample
	hists  []prompb.Histogram
}

// decodeV1 validates a Remote-Write 1.0 request and splits it. The
// relayed series are r.v1's own TimeSeries, compacted in place, so that
// relaying allocates nothing per sample. raw and body are the request as
// received, decompressed and not: when the relay is the whole request
// unchanged, the write-ahead log records it and the forward queues send
// it as it is.
func (d *rwDecoder) decodeV1(r *rwRequest, raw, body []byte) (*rwDecoded, *rwError) {
	req := &r.v1
	out := &rwDecoded{exemplars: r.exemplars}
	if d.meta != nil {
		out.metadataSkipped = d.meta.update(req.Metadata, d.lim.MaxMetadataLength)
	}
	var reqMeta map[string]*prompb.MetricMetadata // built on first need
	lookup := func(name string) seriesMeta {
		if reqMeta == nil && len(req.Metadata) > 0 {
			reqMeta = make(map[string]*prompb.MetricMetadata, len(req.Metadata))
			for i := range req.Metadata {
				reqMeta[req.Metadata[i].MetricFamilyName] = &req.Metadata[i]
			}
		}
		if md, ok := familyMetadata(requestMeta{reqMeta, d.meta}, name); ok {
			return seriesMeta{typ: md.Type, help: md.Help, unit: md.Unit, known: true}
		}
		return seriesMeta{}
	}
	// unchanged: the relay is the request as received (same series, same
	// labels in the same order, encoded as the generated code encodes
	// them, same metadata, no exemplars), so its body can stand for it in
	// the write-ahead log and the forward queues, which may send it as it
	// is. A body with exemplars, which Sluice does not forward, is
	// encoded again without them.
	unchanged := len(d.relabels) == 0 && r.v1Wire && r.exemplars == 0
	keep := req.Timeseries[:0]
	var relayNames map[string]struct{} // for cached metadata
	// Series relayed without metadata of their own take the cache's;
	// its size is read once, not per series (its lock is shared).
	cachedMeta := len(req.Metadata) == 0 && d.meta != nil && d.meta.size() > 0
	// A plain series (r.v1Plain) needs only the checks the parser could
	// not make: the limits, and no relabelling.
	plainOK := len(d.relabels) == 0 && r.v1MaxName <= d.lim.MaxLabelNameLength && r.v1MaxValue <= d.lim.MaxLabelValueLength
	for i := range req.Timeseries {
		ts := req.Timeseries[i]
		ts.Exemplars = nil
		var (
			ls         = ts.Labels
			name       string
			same       = true
			mode, drop bool
			err        *rwError
		)
		plain := plainOK && r.v1Plain[i] && len(ls)-1 <= d.lim.MaxLabelsPerSeries
		if !plain {
			if ls, same, err = d.sortedV1(ls, r.v1ASCII[i]); err != nil {
				return nil, err
			}
		}
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
			unchanged = false
			continue // nothing to write (exemplars only)
		}
		switch {
		case !plain:
			if ls, name, mode, drop, err = d.finish(ls); err != nil {
				return nil, err
			}
		case cachedMeta:
			name = metricNameV1(ls)
		}
		if drop {
			out.droppedSeries++
			out.droppedFloats += len(ts.Samples)
			out.droppedHists += len(ts.Histograms)
			unchanged = false
			continue
		}
		if err := checkHistograms(ls, ts.Histograms); err != nil {
			return nil, err
		}
		if mode {
			if err := d.addAgg(out, ls, name, lookup(name), ts.Samples, ts.Histograms); err != nil {
				return nil, err
			}
			unchanged = false
			continue
		}
		unchanged = unchanged && same
		ts.Labels = ls
		keep = append(keep, ts)
		out.relayFloats += len(ts.Samples)
		out.relayHists += len(ts.Histograms)
		if cachedMeta {
			if relayNames == nil {
				relayNames = make(map[string]struct{})
			}
			relayNames[name] = struct{}{}
		}
	}
	clear(req.Timeseries[len(keep):]) // drop references to what moved
	req.Timeseries = keep
	if len(keep) > 0 {
		// Prometheus sends metadata in requests of its own; those seen
		// before go with the series they describe.
		if len(relayNames) > 0 {
			req.Metadata = d.meta.forNames(relayNames)
			unchanged = unchanged && len(req.Metadata) == 0
		}
		out.write.Relay = req
	}
	if err := r.relaySnappy(&out.write, raw, body, unchanged); err != nil {
		return nil, err
	}
	if err := d.buildPushes(out); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeV2 validates a Remote-Write 2.0 request and splits it. Relayed
// series are converted to Remote-Write 1.0 form (labels resolved, start
// timestamps and exemplars dropped) in a few request-wide allocations.
func (d *rwDecoder) decodeV2(r *rwRequest) (*rwDecoded, *rwError) {
	req := &r.v2
	out := &rwDecoded{exemplars: r.exemplars}
	syms := req.Symbols
	if len(syms) > 0 && syms[0] != "" {
		return nil, rwErrorf(400, rwReasonSymbols, "symbols[0] must be the empty string, got %q", truncate(syms[0]))
	}
	for i, s := range syms {
		if !utf8.ValidString(s) {
			return nil, rwErrorf(400, rwReasonLabel, "symbols[%d] is not valid UTF-8", i)
		}
	}
	nLabels, nFloats := 0, 0
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		if len(ts.LabelsRefs)%2 != 0 {
			return nil, rwErrorf(400, rwReasonSymbols, "timeseries[%d]: odd number of labels_refs (%d)", i, len(ts.LabelsRefs))
		}
		nLabels += len(ts.LabelsRefs) / 2
		nFloats += len(ts.Samples)
	}
	// Every relayed series' labels and samples are sub-slices of these,
	// sized first so that they never move.
	labelBuf := slices.Grow(r.relayLbls[:0], nLabels)
	floatBuf := slices.Grow(r.relayFlts[:0], nFloats)
	defer func() { r.relayLbls, r.relayFlts = labelBuf[:0], floatBuf[:0] }()
	var relay *prompb.WriteRequest
	var metaIdx map[string]struct{}
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		start := len(labelBuf)
		prev := ""
		for j := 0; j < len(ts.LabelsRefs); j += 2 {
			nr, vr := ts.LabelsRefs[j], ts.LabelsRefs[j+1]
			if int(nr) >= len(syms) || int(vr) >= len(syms) {
				return nil, rwErrorf(400, rwReasonSymbols, "timeseries[%d]: labels_refs (%d, %d) outside the symbols table of %d entries", i, nr, vr, len(syms))
			}
			name := syms[nr]
			if j > 0 && name <= prev {
				ls := labelBuf[start:]
				if name == prev {
					return nil, rwErrorf(400, rwReasonDuplicate, "series %s: label %q more than once", rwSeries(ls), truncate(name))
				}
				return nil, rwErrorf(400, rwReasonUnsorted, "series %s: labels not sorted by name (%q after %q); Remote-Write 2.0 requires sorted labels",
					rwSeries(ls), truncate(name), truncate(prev))
			}
			prev = name
			if name == "" {
				return nil, rwErrorf(400, rwReasonLabel, "series %s: empty label name", rwSeries(labelBuf[start:]))
			}
			if syms[vr] == "" {
				continue // an empty value is no label
			}
			labelBuf = append(labelBuf, prompb.Label{Name: name, Value: syms[vr]})
		}
		// Names and values are checked: every symbol is valid UTF-8.
		ls := labelBuf[start:len(labelBuf):len(labelBuf)]
		md := ts.Metadata
		if int(md.HelpRef) >= len(syms) || int(md.UnitRef) >= len(syms) {
			return nil, rwErrorf(400, rwReasonSymbols, "series %s: metadata help_ref %d or unit_ref %d outside the symbols table of %d entries",
				rwSeries(ls), md.HelpRef, md.UnitRef, len(syms))
		}
		if len(ts.Samples) > 0 && len(ts.Histograms) > 0 {
			return nil, rwErrorf(400, rwReasonMixed, "series %s has both samples and histograms; Remote-Write 2.0 allows one kind per series", rwSeries(ls))
		}
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
			continue // exemplars only
		}
		ls, name, mode, drop, err := d.finish(ls)
		if err != nil {
			return nil, err
		}
		if drop {
			out.droppedSeries++
			out.droppedFloats += len(ts.Samples)
			out.droppedHists += len(ts.Histograms)
			continue
		}
		fs := len(floatBuf)
		for _, s := range ts.Samples {
			floatBuf = append(floatBuf, prompb.Sample{Value: s.Value, Timestamp: s.Timestamp})
		}
		floats := floatBuf[fs:len(floatBuf):len(floatBuf)]
		var hists []prompb.Histogram
		if len(ts.Histograms) > 0 {
			hists = make([]prompb.Histogram, len(ts.Histograms))
			for k := range ts.Histograms {
				hists[k] = histV2ToV1(&ts.Histograms[k])
			}
			if err := checkHistograms(ls, hists); err != nil {
				return nil, err
			}
		}
		sm := seriesMeta{typ: prompb.MetricMetadata_MetricType(md.Type), help: syms[md.HelpRef], unit: syms[md.UnitRef]}
		sm.known = md.Type != writev2.Metadata_METRIC_TYPE_UNSPECIFIED
		if mode {
			if err := d.addAgg(out, ls, name, sm, floats, hists); err != nil {
				return nil, err
			}
			continue
		}
		if relay == nil {
			relay = &r.relay
			relay.Timeseries = slices.Grow(r.relaySer[:0], len(req.Timeseries)-i)
		}
		relay.Timeseries = append(relay.Timeseries, prompb.TimeSeries{Labels: ls, Samples: floats, Histograms: hists})
		out.relayFloats += len(floats)
		out.relayHists += len(hists)
		if sm.known || sm.help != "" || sm.unit != "" {
			fam := familyName(name, sm.typ)
			if _, ok := metaIdx[fam]; !ok {
				if metaIdx == nil {
					metaIdx = make(map[string]struct{})
				}
				metaIdx[fam] = struct{}{}
				relay.Metadata = append(relay.Metadata, prompb.MetricMetadata{Type: sm.typ, MetricFamilyName: fam, Help: sm.help, Unit: sm.unit})
			}
		}
	}
	out.write.Relay = relay
	if relay != nil {
		r.relaySer = relay.Timeseries[:0]
	}
	if err := r.relaySnappy(&out.write, nil, nil, false); err != nil {
		return nil, err
	}
	if err := d.buildPushes(out); err != nil {
		return nil, err
	}
	return out, nil
}

// sortedV1 checks a Remote-Write 1.0 label list and sorts it by name if
// the sender did not (in place: the request is ours). Empty values are
// dropped: in Prometheus an empty label is no label. same reports that ls
// needed neither.
//
// ascii says that every name and value is non-empty ASCII, so valid.
func (d *rwDecoder) sortedV1(ls []prompb.Label, ascii bool) (_ []prompb.Label, same bool, _ *rwError) {
	empty, sorted := false, true
	for i := range ls {
		if ls[i].Value == "" {
			empty = true
		}
		if i > 0 && ls[i].Name < ls[i-1].Name {
			sorted = false
		}
	}
	if empty {
		ls = slices.DeleteFunc(ls, func(l prompb.Label) bool { return l.Value == "" })
	}
	if !sorted {
		slices.SortStableFunc(ls, func(a, b prompb.Label) int { return cmp.Compare(a.Name, b.Name) })
	}
	for i := 1; i < len(ls); i++ {
		if ls[i].Name == ls[i-1].Name {
			return nil, false, rwErrorf(400, rwReasonDuplicate, "series %s: label %q more than once", rwSeries(ls), truncate(ls[i].Name))
		}
	}
	if !ascii {
		if err := checkNames(ls); err != nil {
			return nil, false, err
		}
	}
	return ls, !empty && sorted, nil
}

// metricNameV1 is the value of ls' __name__ label.
func metricNameV1(ls []prompb.Label) string {
	for _, l := range ls {
		if l.Name == model.MetricNameLabel {
			return l.Value
		}
	}
	return ""
}

// checkNames checks that label names are non-empty valid UTF-8 and values
// valid UTF-8 (what Prometheus 3 accepts).
func checkNames(ls []prompb.Label) *rwError {
	for _, l := range ls {
		if !model.UTF8Validation.IsValidLabelName(l.Name) {
			return rwErrorf(400, rwReasonLabel, "series %s: invalid label name %q", rwSeries(ls), truncate(l.Name))
		}
		if !utf8.ValidString(l.Value) {
			return rwErrorf(400, rwReasonLabel, "series %s: label %q has a value that is not valid UTF-8", rwSeries(ls), truncate(l.Name))
		}
	}
	return nil
}

// finish applies ingest.relabel_configs to sorted, checked labels, then
// checks the metric name and the label limits. It returns the final
// labels, the metric name, whether the series carries clear_mode, and
// whether relabelling dropped it (also when it left no metric name).
func (d *rwDecoder) finish(ls []prompb.Label) (_ []prompb.Label, name string, mode, drop bool, _ *rwError) {
	if len(d.relabels) > 0 {
		d.sb.Reset()
		for _, l := range ls {
			d.sb.Add(l.Name, l.Value)
		}
		d.lb.Reset(d.sb.Labels())
		if !relabel.ProcessBuilder(d.lb, d.relabels...) {
			return nil, "", false, true, nil
		}
		res := d.lb.Labels()
		if res.Get(model.MetricNameLabel) == "" {
			return nil, "", false, true, nil
		}
		ls = prompb.FromLabels(res, nil)
		if err := checkNames(ls); err != nil {
			return nil, "", false, false, err
		}
	}
	for _, l := range ls {
		switch l.Name {
		case model.MetricNameLabel:
			name = l.Value
		case aggregate.ModeLabel, aggregate.ModeLabelAlias:
			mode = true
		}
		if len(l.Name) > d.lim.MaxLabelNameLength {
			return nil, "", false, false, rwLimitf(413, rwReasonLabelLimit, "max_label_name_length", "series %s: label name %q is longer than %d bytes (limits.max_label_name_length)",
				rwSeries(ls), truncate(l.Name), d.lim.MaxLabelNameLength)
		}
		if len(l.Value) > d.lim.MaxLabelValueLength {
			return nil, "", false, false, rwLimitf(413, rwReasonLabelLimit, "max_label_value_length", "series %s: value of label %q is longer than %d bytes (limits.max_label_value_length)",
				rwSeries(ls), truncate(l.Name), d.lim.MaxLabelValueLength)
		}
	}
	if name == "" {
		return nil, "", false, false, rwErrorf(400, rwReasonNoName, "series %s has no metric name (__name__)", rwSeries(ls))
	}
	if n := len(ls) - 1; n > d.lim.MaxLabelsPerSeries {
		return nil, "", false, false, rwLimitf(413, rwReasonLabelLimit, "max_labels_per_series", "series %s has %d labels, more than %d (limits.max_labels_per_series)",
			rwSeries(ls), n, d.lim.MaxLabelsPerSeries)
	}
	return ls, name, mode, false, nil
}

// checkHistograms rejects native histograms a store would reject (and with
// them the whole batch they are forwarded in).
func checkHistograms(ls []prompb.Label, hs []prompb.Histogram) *rwError {
	for i := range hs {
		h := &hs[i]
		var err error
		if h.IsFloatHistogram() {
			err = h.ToFloatHistogram().Validate()
		} else {
			err = h.ToIntHistogram().Validate()
		}
		if err != nil {
			return rwErrorf(400, rwReasonHistogram, "series %s: invalid native histogram at %d: %v", rwSeries(ls), h.Timestamp, err)
		}
	}
	return nil
}

// histV2ToV1 converts a Remote-Write 2.0 histogram (its start timestamp is
// dropped: Remote-Write 1.0 cannot carry it). Bucket slices are shared.
func histV2ToV1(h *writev2.Histogram) prompb.Histogram {
	out := prompb.Histogram{
		Sum: h.Sum, Schema: h.Schema, ZeroThreshold: h.ZeroThreshold,
		NegativeSpans: spansV2ToV1(h.NegativeSpans), NegativeDeltas: h.NegativeDeltas, NegativeCounts: h.NegativeCounts,
		PositiveSpans: spansV2ToV1(h.PositiveSpans), PositiveDeltas: h.PositiveDeltas, PositiveCounts: h.PositiveCounts,
		ResetHint: prompb.Histogram_ResetHint(h.ResetHint), Timestamp: h.Timestamp, CustomValues: h.CustomValues,
	}
	switch c := h.Count.(type) {
	case *writev2.Histogram_CountInt:
		out.Count = &prompb.Histogram_CountInt{CountInt: c.CountInt}
	case *writev2.Histogram_CountFloat:
		out.Count = &prompb.Histogram_CountFloat{CountFloat: c.CountFloat}
	}
	switch z := h.ZeroCount.(type) {
	case *writev2.Histogram_ZeroCountInt:
		out.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: z.ZeroCountInt}
	case *writev2.Histogram_ZeroCountFloat:
		out.ZeroCount = &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: z.ZeroCountFloat}
	}
	return out
}

func spansV2ToV1(s []writev2.BucketSpan) []prompb.BucketSpan {
	if len(s) == 0 {
		return nil
	}
	out := make([]prompb.BucketSpan, len(s))
	for i, sp := range s {
		out[i] = prompb.BucketSpan{Offset: sp.Offset, Length: sp.Length}
	}
	return out
}

// familyName is the metric family a series belongs to, for Remote-Write
// 1.0 metadata: the series name without the suffix a histogram or summary
// adds (counters keep _total, as Prometheus' metadata does).
func familyName(name string, t prompb.MetricMetadata_MetricType) string {
	switch t {
	case prompb.MetricMetadata_HISTOGRAM, prompb.MetricMetadata_GAUGEHISTOGRAM, prompb.MetricMetadata_SUMMARY:
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suf); ok && base != "" {
				return base
			}
		}
	}
	return name
}

// familyMetadata finds the metadata of the family a series belongs to: its
// name, or its name without the suffix a histogram, summary or counter
// adds, if that family's type has such a suffix.
//
// It is generic over where the metadata comes from so that looking it up
// allocates nothing (a closure passed in did, twice a series).
func familyMetadata[M metaSource](src M, name string) (prompb.MetricMetadata, bool) {
	if md, ok := src.get(name); ok {
		return md, true
	}
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return prompb.MetricMetadata{}, false
	}
	md, ok := src.get(name[:i])
	if !ok {
		return prompb.MetricMetadata{}, false
	}
	const (
		counter   = prompb.MetricMetadata_COUNTER
		hist      = prompb.MetricMetadata_HISTOGRAM
		gaugeHist = prompb.MetricMetadata_GAUGEHISTOGRAM
		summary   = prompb.MetricMetadata_SUMMARY
	)
	switch name[i:] {
	case "_bucket":
		ok = md.Type == hist || md.Type == gaugeHist
	case "_count", "_sum":
		ok = md.Type == hist || md.Type == gaugeHist || md.Type == summary
	case "_total":
		ok = md.Type == counter
	default:
		ok = false
	}
	if !ok {
		return prompb.MetricMetadata{}, false
	}
	return md, true
}

// metaSource is where familyMetadata looks a family up.
type metaSource interface {
	get(family string) (prompb.MetricMetadata, bool)
}

// requestMeta is the metadata of a request, then the cache's.
type requestMeta struct {
	req   map[string]*prompb.MetricMetadata
	cache *metadataCache // nil: none
}

func (r requestMeta) get(f string) (prompb.MetricMetadata, bool) {
	if m := r.req[f]; m != nil {
		return *m, true
	}
	if r.cache != nil {
		return r.cache.get(f)
	}
	return prompb.MetricMetadata{}, false
}

// cachedMeta is the metadata cache's map, read under its lock.
type cachedMeta map[string]prompb.MetricMetadata

func (c cachedMeta) get(f string) (prompb.MetricMetadata, bool) {
	m, ok := c[f]
	return m, ok
}

// addAgg collects a series to aggregate. Several TimeSeries with the same
// labels are one series with all their samples.
func (d *rwDecoder) addAgg(out *rwDecoded, ls []prompb.Label, name string, md seriesMeta, floats []prompb.Sample, hists []prompb.Histogram) *rwError {
	// A staleness marker says the sender stopped seeing the series (a
	// target went away, a rule stopped matching). For an aggregated
	// series that is no value to add or keep: Sluice ends the series
	// itself once its TTL passes, with a marker of its own. So markers
	// are left out, and count as written, rather than failing the whole
	// request with 400 (which a Prometheus sender drops, relayed series
	// included).
	staleFloat := func(s prompb.Sample) bool { return value.IsStaleNaN(s.Value) }
	staleHist := func(h prompb.Histogram) bool { return value.IsStaleNaN(h.Sum) }
	if slices.ContainsFunc(floats, staleFloat) || slices.ContainsFunc(hists, staleHist) {
		// Clones: the request's own samples stay as they came.
		nf, nh := len(floats), len(hists)
		floats = slices.DeleteFunc(slices.Clone(floats), staleFloat)
		hists = slices.DeleteFunc(slices.Clone(hists), staleHist)
		out.droppedFloats += nf - len(floats)
		out.droppedHists += nh - len(hists)
		out.staleMarkers += nf - len(floats) + nh - len(hists)
		if len(floats) == 0 && len(hists) == 0 {
			return nil
		}
	}
	if d.agg == nil {
		d.agg = make(map[string]*aggSeries)
	}
	d.key = d.key[:0]
	for _, l := range ls {
		d.key = append(append(append(append(d.key, l.Name...), 0xff), l.Value...), 0xff)
	}
	s := d.agg[string(d.key)] // no copy for the lookup
	if s == nil {
		// The Store keeps the labels: copies, not strings into the pooled
		// body. The key is that copy, one string for all of them.
		key := string(d.key)
		s = &take(&d.series, 1)[0]
		s.lbls, s.meta = take(&d.lbls, len(ls)), md.clone()
		off := 0
		for i, l := range ls {
			name := key[off : off+len(l.Name)]
			off += len(l.Name) + 1
			s.lbls[i] = prompb.Label{Name: name, Value: key[off : off+len(l.Value)]}
			off += len(l.Value) + 1
			if l.Name == model.MetricNameLabel {
				s.name = s.lbls[i].Value
			}
		}
		d.agg[key] = s
		d.aggOrder = append(d.aggOrder, s)
	} else if !s.meta.known && md.known {
		s.meta = md.clone()
	}
	if s.floats == nil && len(floats) > 0 {
		s.floats = take(&d.samples, len(floats))
		copy(s.floats, floats)
	} else {
		s.floats = append(s.floats, floats...)
	}
	s.hists = append(s.hists, hists...)
	if len(s.floats) > 0 && len(s.hists) > 0 {
		return rwErrorf(400, rwReasonMixed, "series %s has both float samples and native histograms; an aggregated series has one type", rwSeries(ls))
	}
	return nil
}

// buildPushes turns the aggregated series into pushes, as a Pushgateway
// push of them would be: the grouping key is the series' job and instance
// (as for a scrape target), each sample is one pushed value, and a series
// with several samples is pushed once per sample, oldest first (one push
// per group for each round of samples).
func (d *rwDecoder) buildPushes(out *rwDecoded) *rwError {
	// The quantiles of a summary summed with clear_mode=sum are dropped,
	// as a push's are: a quantile is no count that adds up. (A gauge's
	// default mode is not sum, so only an explicit clear_mode=sum is
	// looked for.) They count as written.
	kept := d.aggOrder[:0]
	for _, s := range d.aggOrder {
		if summedQuantile(s) {
			out.droppedFloats += len(s.floats)
			out.write.DroppedQuantiles += len(s.floats)
			continue
		}
		kept = append(kept, s)
	}
	d.aggOrder = kept
	if len(d.aggOrder) == 0 {
		return nil
	}
	rounds := 0
	for _, s := range d.aggOrder {
		slices.SortStableFunc(s.floats, func(a, b prompb.Sample) int { return cmp.Compare(a.Timestamp, b.Timestamp) })
		slices.SortStableFunc(s.hists, func(a, b prompb.Histogram) int { return cmp.Compare(a.Timestamp, b.Timestamp) })
		rounds = max(rounds, len(s.floats), len(s.hists))
	}
	sem := aggregate.SemanticsAggregate
	// The pushes' metrics come from chunks (next, take), the first sized
	// for a round of the request: a few allocations per request instead
	// of several per sample. Label names and values, timestamps and
	// values point into the aggregated series, which outlive the pushes
	// (the Store copies what it keeps).
	n, nLabels := len(d.aggOrder), 0
	for _, s := range d.aggOrder {
		nLabels += len(s.lbls)
	}
	var (
		metrics  []dto.Metric
		pairs    []dto.LabelPair
		ptrs     []*dto.LabelPair
		counters []dto.Counter
		gauges   []dto.Gauge
		untypeds []dto.Untyped
	)
	for r := 0; r < rounds; r++ {
		type groupPush struct {
			push         *aggregate.Push
			fams         map[string]*dto.MetricFamily
			floats, hist int
			order        string // the grouping key as text, for the push order
		}
		byGroup := map[string]*groupPush{}
		var order []*groupPush
		for _, s := range d.aggOrder {
			if r >= len(s.floats) && r >= len(s.hists) {
				continue
			}
			d.key = d.key[:0]
			for _, l := range s.lbls {
				if l.Name == "job" || l.Name == "instance" {
					d.key = append(append(append(append(d.key, l.Name...), 0xff), l.Value...), 0xff)
				}
			}
			gp := byGroup[string(d.key)]
			if gp == nil {
				d.sb.Reset()
				for _, l := range s.lbls {
					if l.Name == "job" || l.Name == "instance" {
						d.sb.Add(l.Name, l.Value)
					}
				}
				group := d.sb.Labels()
				gp = &groupPush{push: &aggregate.Push{Group: group, Method: aggregate.MethodPost, Semantics: &sem, TypeHint: true},
					fams: map[string]*dto.MetricFamily{}, order: group.String()}
				byGroup[string(d.key)] = gp
				order = append(order, gp)
			}
			typ := aggType(s.name, s.meta, len(s.hists) > 0)
			f := gp.fams[s.name]
			if f == nil {
				f = &dto.MetricFamily{Name: ptr(s.name), Type: typ.Enum()}
				if s.meta.help != "" {
					f.Help = ptr(s.meta.help)
				}
				if s.meta.unit != "" {
					f.Unit = ptr(s.meta.unit)
				}
				gp.fams[s.name] = f
				gp.push.Families = append(gp.push.Families, f)
			} else if f.GetType() != typ {
				return rwErrorf(400, rwReasonTypeConflict, "metric %q is sent as %s and as %s in one request",
					truncate(s.name), strings.ToLower(f.GetType().String()), strings.ToLower(typ.String()))
			}
			m := next(&metrics, n)
			m.Label = take(&ptrs, len(s.lbls))[:0] // __name__ is left out
			for i := range s.lbls {
				if l := &s.lbls[i]; l.Name != model.MetricNameLabel {
					lp := next(&pairs, nLabels)
					lp.Name, lp.Value = &l.Name, &l.Value
					m.Label = append(m.Label, lp)
				}
			}
			if len(s.hists) > 0 {
				h := &s.hists[r]
				m.TimestampMs = &h.Timestamp
				m.Histogram = histToDTO(h)
				gp.hist++
			} else {
				sm := &s.floats[r]
				m.TimestampMs = &sm.Timestamp
				// As aggregate.typedMetric sets a value, in place.
				switch typ {
				case dto.MetricType_COUNTER:
					m.Counter = next(&counters, n)
					m.Counter.Value = &sm.Value
				case dto.MetricType_GAUGE:
					m.Gauge = next(&gauges, n)
					m.Gauge.Value = &sm.Value
				default:
					m.Untyped = next(&untypeds, n)
					m.Untyped.Value = &sm.Value
				}
				gp.floats++
			}
			f.Metric = append(f.Metric, m)
		}
		slices.SortFunc(order, func(a, b *groupPush) int { return strings.Compare(a.order, b.order) })
		for _, gp := range order {
			out.write.Pushes = append(out.write.Pushes, gp.push)
			out.pushFloats = append(out.pushFloats, gp.floats)
			out.pushHists = append(out.pushHists, gp.hist)
		}
	}
	return nil
}

// summedQuantile reports whether s is a quantile series of a summary with
// clear_mode=sum: by its metadata, or, without metadata (a Prometheus
// sends it a minute after it starts, and again only a minute after Sluice
// restarts), by its quantile label, which no other series a sender writes
// carries (summing quantiles in that minute made a series that only grew).
func summedQuantile(s *aggSeries) bool {
	if len(s.hists) > 0 || isComponent(s.name) {
		return false
	}
	if s.meta.known && s.meta.typ != prompb.MetricMetadata_SUMMARY {
		return false
	}
	if !s.meta.known && !slices.ContainsFunc(s.lbls, func(l prompb.Label) bool { return l.Name == model.QuantileLabel }) {
		return false
	}
	for _, l := range s.lbls {
		if l.Name == aggregate.ModeLabel || l.Name == aggregate.ModeLabelAlias {
			m, err := configs.ParseMode(l.Value)
			return err == nil && m.Kind == configs.ModeSum
		}
	}
	return false
}

// isComponent reports whether name is that of a classic histogram's or
// summary's _bucket, _count or _sum series.
func isComponent(name string) bool {
	return strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum")
}

// aggType is the type a remote-written series is aggregated as: from the
// sender's metadata, else from its name's suffix (_total, _count, _sum and
// _bucket are counters), else untyped. The series of a classic histogram
// or summary are counters (_bucket, _count), gauges (quantiles) or, for
// _sum, a gauge: a sum of observations goes down when negative values are
// observed, and summed with clear_mode=sum it adds up as a push's does.
func aggType(name string, md seriesMeta, hist bool) dto.MetricType {
	if hist {
		if md.typ == prompb.MetricMetadata_GAUGEHISTOGRAM {
			return dto.MetricType_GAUGE_HISTOGRAM
		}
		return dto.MetricType_HISTOGRAM
	}
	component := isComponent(name)
	if md.known {
		switch md.typ {
		case prompb.MetricMetadata_COUNTER:
			return dto.MetricType_COUNTER
		case prompb.MetricMetadata_GAUGE, prompb.MetricMetadata_GAUGEHISTOGRAM, prompb.MetricMetadata_INFO, prompb.MetricMetadata_STATESET:
			return dto.MetricType_GAUGE
		case prompb.MetricMetadata_HISTOGRAM, prompb.MetricMetadata_SUMMARY:
			if component && !strings.HasSuffix(name, "_sum") {
				return dto.MetricType_COUNTER
			}
			return dto.MetricType_GAUGE
		}
	}
	if component || strings.HasSuffix(name, "_total") {
		return dto.MetricType_COUNTER
	}
	return dto.MetricType_UNTYPED
}

// histToDTO converts a native histogram to the push form the aggregation
// merges. One without buckets gets an empty span, as client_golang does,
// so that it still counts as native.
func histToDTO(h *prompb.Histogram) *dto.Histogram {
	d := &dto.Histogram{Schema: ptr(h.Schema), ZeroThreshold: ptr(h.ZeroThreshold), SampleSum: ptr(h.Sum)}
	if h.IsFloatHistogram() {
		d.SampleCountFloat = ptr(h.GetCountFloat())
		d.ZeroCountFloat = ptr(h.GetZeroCountFloat())
		d.PositiveCount, d.NegativeCount = h.PositiveCounts, h.NegativeCounts
	} else {
		cnt, zc := h.GetCountInt(), h.GetZeroCountInt()
		d.SampleCount, d.ZeroCount = &cnt, &zc
		d.PositiveDelta, d.NegativeDelta = h.PositiveDeltas, h.NegativeDeltas
	}
	d.PositiveSpan = spansToDTO(h.PositiveSpans)
	d.NegativeSpan = spansToDTO(h.NegativeSpans)
	if len(d.PositiveSpan) == 0 && len(d.NegativeSpan) == 0 {
		d.PositiveSpan = []*dto.BucketSpan{{Offset: ptr[int32](0), Length: ptr[uint32](0)}}
	}
	return d
}

func spansToDTO(s []prompb.BucketSpan) []*dto.BucketSpan {
	out := make([]*dto.BucketSpan, len(s))
	for i, sp := range s {
		out[i] = &dto.BucketSpan{Offset: ptr(sp.Offset), Length: ptr(sp.Length)}
	}
	return out
}

func ptr[T any](v T) *T        { return &v }
func truncate(s string) string { return truncateTo(s, 128) }
func truncateTo(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// seriesString prints labels the way PromQL users read them, shortened.
func rwSeries(ls []prompb.Label) string {
	var b labels.ScratchBuilder
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	return truncateTo(b.Labels().String(), 256)
}

// metadataCache keeps the metadata Remote-Write 1.0 senders send in
// requests of their own (Prometheus every minute), so that relayed series
// carry it. Bounded: when full it starts over.
type metadataCache struct {
	mu sync.RWMutex // guards m
	m  map[string]prompb.MetricMetadata
}

// maxCachedFamilies bounds the cache; a large Prometheus has a few
// thousand metric families.
const maxCachedFamilies = 100_000

func newMetadataCache() *metadataCache {
	return &metadataCache{m: make(map[string]prompb.MetricMetadata)}
}

// update caches mds, but for entries whose family name, HELP or unit is
// longer than maxLen bytes (limits.max_metadata_length): they are not kept
// (the cache would hold them, and every relayed request of the family
// carry them, for good). It returns how many it left out.
func (c *metadataCache) update(mds []prompb.MetricMetadata, maxLen int) (skipped int) {
	if len(mds) == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m)+len(mds) > maxCachedFamilies {
		clear(c.m)
	}
	for _, md := range mds {
		if md.MetricFamilyName == "" {
			continue
		}
		if len(md.MetricFamilyName) > maxLen || len(md.Help) > maxLen || len(md.Unit) > maxLen {
			skipped++
			continue
		}
		if old, ok := c.m[md.MetricFamilyName]; !ok || old.Type != md.Type || old.Help != md.Help || old.Unit != md.Unit {
			// Copies: mds points into a pooled request body.
			md.MetricFamilyName, md.Help, md.Unit = strings.Clone(md.MetricFamilyName), strings.Clone(md.Help), strings.Clone(md.Unit)
			c.m[md.MetricFamilyName] = md
		}
	}
	return skipped
}

func (c *metadataCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

func (c *metadataCache) get(family string) (prompb.MetricMetadata, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	md, ok := c.m[family]
	return md, ok
}

// forNames returns the metadata of the families the named series belong to.
func (c *metadataCache) forNames(names map[string]struct{}) []prompb.MetricMetadata {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []prompb.MetricMetadata
	seen := make(map[string]struct{}, len(names))
	for n := range names {
		md, ok := familyMetadata(cachedMeta(c.m), n)
		if !ok {
			continue
		}
		if _, ok := seen[md.MetricFamilyName]; ok {
			continue
		}
		seen[md.MetricFamilyName] = struct{}{}
		out = append(out, md)
	}
	slices.SortFunc(out, func(a, b prompb.MetricMetadata) int { return cmp.Compare(a.MetricFamilyName, b.MetricFamilyName) })
	return out
}

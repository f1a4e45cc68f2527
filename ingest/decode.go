package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"slices"
	"strconv"
	"strings"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluice-metrics/sluice/aggregate"
)

// BodyLimits bounds what DecodeBody accepts.
type BodyLimits struct {
	// MaxDecompressedBytes caps the body after Content-Encoding is undone.
	// Zero or a negative value means the default of 64 MiB.
	MaxDecompressedBytes int64
}

// ErrBodyTooLarge is wrapped by DecodeBody errors when the decompressed body exceeds the limit (callers answer 413).
var ErrBodyTooLarge = errors.New("body too large")

// ErrUnsupportedEncoding is wrapped when Content-Encoding is neither empty, identity, gzip nor snappy (callers answer 415).
var ErrUnsupportedEncoding = errors.New("unsupported content encoding")

const (
	// defaultMaxDecompressedBytes applies when BodyLimits.MaxDecompressedBytes is not positive.
	defaultMaxDecompressedBytes = 64 << 20

	// Decompression buffers start at a few times the compressed size,
	// clamped to [minDecompressBuf, maxInitialBuf], and double from there.
	minDecompressBuf = 4 << 10
	maxInitialBuf    = 1 << 20
	// maxDecompressChunk bounds each chunk readAtMost reads into: a few
	// allocations for any body, none of them much larger than needed.
	maxDecompressChunk = 8 << 20

	protoMediaType   = "application/vnd.google.protobuf"
	protoParamProto  = "io.prometheus.client.MetricFamily"
	protoParamEncode = "delimited"
	openMetricsType  = "application/openmetrics-text"
	openMetricsEOF   = "# EOF"
	// textContentType is what client_golang sends with text pushes.
	textContentType = "text/plain; version=0.0.4; charset=utf-8"
	// protoContentType is what client_golang's push package sends by
	// default (expfmt.FmtProtoDelim).
	protoContentType = protoMediaType + "; proto=" + protoParamProto + "; encoding=" + protoParamEncode
)

// DecodeBody undoes contentEncoding and parses body (a Pushgateway push body) into metric families.
// Any other error means malformed input (callers answer 400 with err.Error() as the message, so messages must be clear, lower-case, and name what was wrong, e.g. "text format parsing error in line 3: expected float as value, got \"x\"" or "decompress gzip body: unexpected EOF").
//
// The format is chosen as follows: delimited protobuf when contentType is
// application/vnd.google.protobuf with proto=io.prometheus.client.MetricFamily
// and encoding=delimited; OpenMetrics when contentType is
// application/openmetrics-text or the body's last non-empty line is "# EOF";
// the Prometheus text format 0.0.4 otherwise. An empty body yields no
// families and no error. Text format families are sorted by name; protobuf
// and OpenMetrics families keep their input order.
func DecodeBody(contentType, contentEncoding string, body []byte, lim BodyLimits) ([]*dto.MetricFamily, error) {
	fams, _, _, err := decodeBody(contentType, contentEncoding, body, lim, nil, false)
	return fams, err
}

// A Decoder decodes push bodies as DecodeBody does, reusing its memory
// from one body to the next. The families Decode returns are valid until
// the next Decode or Reset; whatever is kept longer must be copied (as the
// aggregate package does). A Decoder is not safe for concurrent use.
type Decoder struct {
	text textParser
	// shaped: the last DecodePush parsed a text or protobuf body with
	// a fast parser, so text is a template for the next body (refill).
	// refilled: the last DecodePush took its body by refill, so it
	// returned the very families of the one before, with new values.
	shaped, refilled bool
}

// Decode is DecodeBody with the decoder's memory.
func (d *Decoder) Decode(contentType, contentEncoding string, body []byte, lim BodyLimits) ([]*dto.MetricFamily, error) {
	d.shaped, d.refilled = false, false
	fams, _, _, err := decodeBody(contentType, contentEncoding, body, lim, &d.text, false)
	return fams, err
}

// Source is what a push's families were decoded from: the body with its
// Content-Encoding undone, and its format. The write-ahead log records it
// (aggregate.Push.Body) and DecodeRecorded decodes it again on recovery.
type Source struct {
	Body   []byte
	Format aggregate.BodyFormat
}

// DecodePush is Decode that also returns the families' Source. Source.Body
// is valid as long as body is. A text or protobuf body of the same shape
// as the last one (the same bytes but for the sample values) is taken by
// its values alone, into the families of the last one (refill); the
// families are the same either way.
func (d *Decoder) DecodePush(contentType, contentEncoding string, body []byte, lim BodyLimits) ([]*dto.MetricFamily, Source, error) {
	fams, src, refilled, err := decodeBody(contentType, contentEncoding, body, lim, &d.text, d.shaped)
	d.refilled = refilled
	d.shaped = err == nil && (src.Format == aggregate.BodyText || src.Format == aggregate.BodyProtoDelimited) &&
		d.text.parsed && !d.text.shapeless && len(d.text.slots) > 0 && len(src.Body) <= maxShapeBody
	return fams, src, err
}

// DecodeRecorded decodes a push body the write-ahead log recorded (see
// Source) into the families DecodePush returned for it: it is an
// aggregate.BodyDecoder. The families are valid until the decoder's next
// use. No body limit applies: the body was within the limits when it was
// accepted.
func (d *Decoder) DecodeRecorded(format aggregate.BodyFormat, body []byte) ([]*dto.MetricFamily, error) {
	switch format {
	case aggregate.BodyText, aggregate.BodyOpenMetrics, aggregate.BodyProtoDelimited:
		if len(body) == 0 {
			return nil, nil
		}
		d.shaped, d.refilled = false, false
		return decodeFormat(format, body, int64(len(body)), &d.text)
	}
	return nil, fmt.Errorf("unknown recorded body format %d", format)
}

// Reset drops every reference to the last body, so that a pooled Decoder
// keeps none alive.
func (d *Decoder) Reset() {
	d.text.reset()
	d.shaped, d.refilled = false, false
}

// maxPooledBody is the size of the parser's copy of a body above which a
// Decoder's memory is not worth keeping in a pool: one unusually large
// push should not pin it. (The slabs keep chunks of at most maxReserve
// objects each, whatever the body.)
const maxPooledBody = 1 << 20

// large reports whether d holds the memory of a body too large to pool.
func (d *Decoder) large() bool { return cap(d.text.buf) > maxPooledBody }

// decodeBody is DecodeBody, parsing text with tp if not nil, that also
// returns the families' source. With template, a body of the shape tp
// parsed last is taken by refill, and refilled says so.
func decodeBody(contentType, contentEncoding string, body []byte, lim BodyLimits, tp *textParser, template bool) (_ []*dto.MetricFamily, _ Source, refilled bool, _ error) {
	limit := lim.MaxDecompressedBytes
	if limit <= 0 {
		limit = defaultMaxDecompressedBytes
	}
	data, err := decompress(contentEncoding, body, limit)
	if err != nil {
		return nil, Source{}, false, err
	}
	if len(data) == 0 {
		return nil, Source{}, false, nil
	}
	f, guessed := detectFormat(contentType, data)
	if template && !guessed && (f == aggregate.BodyText || f == aggregate.BodyProtoDelimited) && tp.refill(data, f == aggregate.BodyProtoDelimited) {
		return tp.out, Source{Body: data, Format: f}, true, nil
	}
	fams, err := decodeFormat(f, data, limit, tp)
	if err != nil && guessed {
		// OpenMetrics guessed from a closing "# EOF" alone: the text
		// format reads that line as a comment, as the Pushgateway does,
		// and takes what OpenMetrics refuses (an untyped TYPE, say).
		if tfams, terr := decodeFormat(aggregate.BodyText, data, limit, tp); terr == nil {
			fams, f, err = tfams, aggregate.BodyText, nil
		}
	}
	if err != nil {
		return nil, Source{}, false, err
	}
	return fams, Source{Body: data, Format: f}, false, nil
}

// decodeFormat parses a decompressed, non-empty body in format f.
func decodeFormat(f aggregate.BodyFormat, data []byte, limit int64, tp *textParser) ([]*dto.MetricFamily, error) {
	switch f {
	case aggregate.BodyProtoDelimited:
		if tp != nil {
			if fams, ok := tp.parseProto(data); ok {
				return fams, nil
			}
		}
		return decodeProtoDelimited(data, limit)
	case aggregate.BodyOpenMetrics:
		return decodeOpenMetrics(data)
	default:
		return decodeText(data, tp)
	}
}

// decompress undoes the Content-Encoding of body. It never produces more than
// limit bytes: decompression stops as soon as the output would exceed it.
func decompress(contentEncoding string, body []byte, limit int64) ([]byte, error) {
	enc := strings.TrimSpace(contentEncoding)
	var newReader func(io.Reader) (io.Reader, error)
	switch strings.ToLower(enc) {
	case "", "identity":
		if int64(len(body)) > limit {
			return nil, fmt.Errorf("%w: body of %d bytes exceeds %d bytes", ErrBodyTooLarge, len(body), limit)
		}
		return body, nil
	case "gzip":
		enc = "gzip"
		newReader = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case "snappy":
		enc = "snappy"
		newReader = func(r io.Reader) (io.Reader, error) { return snappy.NewReader(r), nil }
	default:
		return nil, fmt.Errorf("%w %q", ErrUnsupportedEncoding, enc)
	}
	if len(body) == 0 {
		// An empty body stays empty whatever it claims to be encoded with.
		return nil, nil
	}
	zr, err := newReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("decompress %s body: %w", enc, err)
	}
	out, err := readAtMost(zr, limit, len(body))
	if err != nil {
		if errors.Is(err, ErrBodyTooLarge) {
			return nil, err
		}
		return nil, fmt.Errorf("decompress %s body: %w", enc, err)
	}
	return out, nil
}

// readAtMost reads r to the end and fails with ErrBodyTooLarge once more
// than limit bytes came out of r, without reading further.
//
// It reads into chunks and joins them once at the end, so a body refused
// at the limit (a decompression bomb) costs limit bytes of memory, not the
// 1.5-2x that growing one buffer by doubling costs (the old buffer and the
// new one at each step).
func readAtMost(r io.Reader, limit int64, compressedLen int) ([]byte, error) {
	if limit > math.MaxInt-1 {
		limit = math.MaxInt - 1
	}
	hardCap := int(limit) + 1
	// Start from a guess of a few times the compressed size, bounded so that a
	// small bomb cannot reserve much before it has produced anything.
	next := min(max(compressedLen*4, minDecompressBuf), maxInitialBuf, hardCap)
	var chunks [][]byte
	total := 0
	for {
		buf := make([]byte, next)
		n, err := fill(r, buf)
		total += n
		if n > 0 {
			chunks = append(chunks, buf[:n])
		}
		if total > int(limit) {
			return nil, fmt.Errorf("%w: decompressed body exceeds %d bytes", ErrBodyTooLarge, limit)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		// Grow the chunks with the body (a few allocations for any size),
		// at most maxDecompressChunk, never past the limit.
		next = min(max(total, minDecompressBuf), maxDecompressChunk, hardCap-total)
	}
	if len(chunks) == 1 {
		return chunks[0], nil
	}
	out := make([]byte, 0, total)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, nil
}

// fill reads into buf until it is full or r fails; unlike io.ReadFull it
// passes r's own io.ErrUnexpectedEOF (a truncated gzip stream) through.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// detectFormat picks the parser for a non-empty, decompressed body.
//
// guessed reports OpenMetrics guessed from a closing "# EOF" line of a body
// whose Content-Type is not OpenMetrics: decodeBody then falls back to the
// text format if it does not parse as OpenMetrics, as the Pushgateway
// (which reads that line as a comment) would take it.
func detectFormat(contentType string, body []byte) (_ aggregate.BodyFormat, guessed bool) {
	if contentType == textContentType || contentType == "text/plain" || contentType == "" {
		// What client_golang sends (and curl's default): no parameters
		// to parse, so mime.ParseMediaType's allocations are skipped.
		if endsWithEOFLine(body) {
			return aggregate.BodyOpenMetrics, true
		}
		return aggregate.BodyText, false
	}
	if contentType == protoContentType {
		return aggregate.BodyProtoDelimited, false
	}
	if mediaType, params, err := mime.ParseMediaType(contentType); err == nil {
		switch mediaType {
		case protoMediaType:
			if params["proto"] == protoParamProto && params["encoding"] == protoParamEncode {
				return aggregate.BodyProtoDelimited, false
			}
		case openMetricsType:
			return aggregate.BodyOpenMetrics, false
		}
	}
	if endsWithEOFLine(body) {
		return aggregate.BodyOpenMetrics, true
	}
	return aggregate.BodyText, false
}

// endsWithEOFLine reports whether the last non-empty line of body is exactly "# EOF".
func endsWithEOFLine(body []byte) bool {
	trimmed := bytes.TrimRight(body, "\n")
	last := trimmed[bytes.LastIndexByte(trimmed, '\n')+1:]
	return string(last) == openMetricsEOF
}

// decodeText parses the Prometheus text format 0.0.4 and returns the
// families sorted by name. The fast parser uses tp's memory if tp is not
// nil.
func decodeText(body []byte, tp *textParser) ([]*dto.MetricFamily, error) {
	if tp == nil {
		tp = new(textParser)
	}
	if fams, ok := tp.parseBody(body); ok {
		return fams, nil
	}
	if tp.badCount != nil {
		return nil, tp.badCount
	}
	// Whatever the fast parser does not handle, expfmt parses (or rejects
	// with its own message).
	parser := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if len(byName) == 0 {
		return nil, nil
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		out = append(out, mf)
	}
	if err := checkSummaryCounts(body, byName); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// checkSummaryCounts finds, in a text body expfmt accepted, the _count
// sample of every summary and rejects one that is not a count, as the fast
// parser does: expfmt converts it to an integer unchecked, to 2^63 on
// amd64 and to 0 on arm64, so the families cannot tell.
func checkSummaryCounts(body []byte, byName map[string]*dto.MetricFamily) error {
	summaries := false
	for _, mf := range byName {
		summaries = summaries || mf.GetType() == dto.MetricType_SUMMARY
	}
	if !summaries {
		return nil
	}
	// A _count line is the summary's only inside its family: after its
	// "# TYPE <name> summary" line and before the next TYPE line (a
	// gauge named foo_count before summary foo is not foo's).
	current := ""
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 {
			continue
		}
		if line[0] == '#' {
			if f := bytes.Fields(line); len(f) >= 4 && string(f[1]) == "TYPE" {
				current = ""
				if byName[string(f[2])].GetType() == dto.MetricType_SUMMARY {
					current = string(f[2])
				}
			}
			continue
		}
		end := bytes.IndexAny(line, "{ \t")
		if current == "" || end < 0 || string(line[:end]) != current+"_count" {
			continue
		}
		rest := line[end:]
		if rest[0] == '{' {
			rest = rest[labelsEnd(rest):]
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(string(fields[0]), 64); err == nil {
			if err := summaryCountErr(current, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// labelsEnd returns the index just past the "}" that closes the label set
// b starts with, quoted values (and their escapes) skipped; len(b) if none.
func labelsEnd(b []byte) int {
	quoted := false
	for i := 1; i < len(b); i++ {
		switch {
		case quoted && b[i] == '\\':
			i++
		case b[i] == '"':
			quoted = !quoted
		case !quoted && b[i] == '}':
			return i + 1
		}
	}
	return len(b)
}

// decodeProtoDelimited parses a stream of varint-length-delimited
// MetricFamily messages. A family name that repeats replaces the earlier
// family in the earlier family's position.
func decodeProtoDelimited(body []byte, limit int64) ([]*dto.MetricFamily, error) {
	r := bytes.NewReader(body)
	var out []*dto.MetricFamily
	index := map[string]int{}
	for n := 1; r.Len() > 0; n++ {
		remaining := r.Len()
		// Never let a length prefix make protodelim allocate more than is
		// actually left in the body.
		opts := protodelim.UnmarshalOptions{MaxSize: min(limit, int64(remaining))}
		mf := &dto.MetricFamily{}
		if err := opts.UnmarshalFrom(r, mf); err != nil {
			if tooLarge, ok := errors.AsType[*protodelim.SizeTooLargeError](err); ok {
				left := remaining - protowire.SizeVarint(tooLarge.Size)
				return nil, fmt.Errorf("decode protobuf metric family %d: length prefix of %d bytes but only %d bytes left: %w", n, tooLarge.Size, max(left, 0), io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("decode protobuf metric family %d: %w", n, err)
		}
		if err := validateProtoFamily(mf); err != nil {
			return nil, fmt.Errorf("decode protobuf metric family %d: %w", n, err)
		}
		out = addFamily(out, index, mf)
	}
	return out, nil
}

// addFamily appends mf to out, or replaces the family of the same name
// already there (the last of a name wins); index maps names to places in
// out.
func addFamily(out []*dto.MetricFamily, index map[string]int, mf *dto.MetricFamily) []*dto.MetricFamily {
	if i, ok := index[mf.GetName()]; ok {
		out[i] = mf
		return out
	}
	index[mf.GetName()] = len(out)
	return append(out, mf)
}

// validateProtoFamily rejects families that the rest of the service cannot
// make sense of: no name, an unknown type, or metrics whose value does not
// match the family type. A family without a type is a counter, the field's
// proto2 default, as the Pushgateway reads it.
func validateProtoFamily(mf *dto.MetricFamily) error {
	if mf.GetName() == "" {
		return errors.New("metric family has no name")
	}
	if mf.Type == nil {
		mf.Type = dto.MetricType_COUNTER.Enum()
	}
	if _, known := dto.MetricType_name[int32(mf.GetType())]; !known {
		return fmt.Errorf("metric family %q has unknown type %d", mf.GetName(), int32(mf.GetType()))
	}
	for i, m := range mf.GetMetric() {
		var ok bool
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			ok = m.GetCounter() != nil
		case dto.MetricType_GAUGE:
			ok = m.GetGauge() != nil
		case dto.MetricType_SUMMARY:
			ok = m.GetSummary() != nil
		case dto.MetricType_UNTYPED:
			ok = m.GetUntyped() != nil
		default: // HISTOGRAM, GAUGE_HISTOGRAM
			ok = m.GetHistogram() != nil
		}
		if !ok {
			return fmt.Errorf("metric %d of %s metric family %q has no %s value", i+1, mf.GetType(), mf.GetName(), valueFieldName(mf.GetType()))
		}
	}
	return nil
}

func valueFieldName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_SUMMARY:
		return "summary"
	case dto.MetricType_UNTYPED:
		return "untyped"
	default:
		return "histogram"
	}
}

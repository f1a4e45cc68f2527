package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
)

// This file is a pooled remote_write decoder modelled on VictoriaMetrics'
// lib/prompb: the decoded request reuses its slices from request to
// request, and label names, label values and symbols are strings that
// point into the decompressed body instead of copies of it. A 2,000-series
// Remote-Write 1.0 request decodes without allocating once the pool is
// warm. Native histograms and exemplars (rare, and exemplars are dropped)
// go through the generated code, which allocates.
//
// It accepts and rejects exactly what the generated gogo-protobuf code
// (prompb.WriteRequest.Unmarshal, writev2.Request.Unmarshal) accepts and
// rejects, quirks included (10-byte varints whose overflow bits are
// dropped, packed fields read with the enclosing message's bound, groups
// skipped in unknown fields), and yields the same values except unknown
// fields, which it drops. FuzzDecodeRemoteWriteV1/V2 check that against
// the generated code. A general-purpose reader such as easyproto is
// stricter on some of those points, which would make the requests Sluice
// accepts depend on the decoder.

// rwRequest is a decoded remote_write request and the buffers behind it,
// reused through a bufPool.
//
// Lifetime rule: everything reachable from v1 and v2 (strings included)
// is valid until the rwRequest is reset or put back into its pool. Copy
// what must outlive the request.
type rwRequest struct {
	buf []byte // the decompressed body; strings point into it

	v1 prompb.WriteRequest
	// v1Wire: every series of v1 has its labels as one run of field-1
	// entries, each a Label of exactly a name then a value field (what
	// the generated code writes), so the body can be forwarded as is.
	v1Wire bool
	// v1ASCII[i]: the labels of v1.Timeseries[i] are all fastLabel's, in
	// one run, every byte ASCII: valid UTF-8, non-empty names.
	v1ASCII []bool
	// v1Runs has two offsets in the decompressed body per series of v1:
	// the start and end of its labels' run of Label messages. They are
	// meaningful only while v1Wire holds (aggregate.Write.RelayRuns).
	v1Runs []int32
	// v1Plain[i]: v1ASCII[i], and the labels of v1.Timeseries[i] are
	// strictly sorted by name, with __name__ and without clear_mode: all
	// that the decoder checks but the limits. v1MaxName and v1MaxValue
	// are the longest label name and value of such series.
	v1Plain               []bool
	v1MaxName, v1MaxValue int
	v2                    writev2.Request
	// exemplars counts the exemplars received; they are checked and
	// dropped, never stored.
	exemplars int

	// Arenas the series' slices are cut from (3-index slices: appending
	// to a series' slice never overwrites its neighbour).
	labels   []prompb.Label
	samples  []prompb.Sample
	hists    []prompb.Histogram
	refs     []uint32
	samples2 []writev2.Sample
	hists2   []writev2.Histogram

	// Scratch for splitting and relaying (rwDecoder).
	relay     prompb.WriteRequest
	relaySer  []prompb.TimeSeries
	relayLbls []prompb.Label
	relayFlts []prompb.Sample
	relayPB   []byte // the relay marshalled, for the WAL record
	relaySnap []byte // relayPB snappy-compressed
}

// reset empties r for the next request, keeping its buffers. Histograms
// are dropped: they hold slices of their own.
func (r *rwRequest) reset() {
	clear(r.v1.Timeseries)
	r.v1.Timeseries = r.v1.Timeseries[:0]
	clear(r.v1.Metadata)
	r.v1.Metadata = r.v1.Metadata[:0]
	clear(r.v2.Symbols)
	r.v2.Symbols = r.v2.Symbols[:0]
	clear(r.v2.Timeseries)
	r.v2.Timeseries = r.v2.Timeseries[:0]
	r.exemplars = 0
	r.v1Wire = false
	r.v1ASCII = r.v1ASCII[:0]
	r.v1Runs = r.v1Runs[:0]
	r.v1Plain = r.v1Plain[:0]
	r.v1MaxName, r.v1MaxValue = 0, 0
	r.labels = r.labels[:0]
	r.samples = r.samples[:0]
	clear(r.hists)
	r.hists = r.hists[:0]
	r.refs = r.refs[:0]
	r.samples2 = r.samples2[:0]
	clear(r.hists2)
	r.hists2 = r.hists2[:0]
	r.relay = prompb.WriteRequest{}
	clear(r.relaySer[:cap(r.relaySer)])
	r.relaySer = r.relaySer[:0]
	r.relayLbls = r.relayLbls[:0]
	r.relayFlts = r.relayFlts[:0]
}

// Errors of the wire format, worded for the client.
var (
	errPBEOF      = errors.New("unexpected end of data")
	errPBOverflow = errors.New("varint overflows 64 bits")
	errPBLength   = errors.New("negative length")
)

// pbReader reads protobuf wire format the way gogo-protobuf's generated
// code does. b is the enclosing message; i the read position.
type pbReader struct {
	b []byte
	i int
}

func (r *pbReader) done() bool { return r.i >= len(r.b) }

// varint reads up to ten bytes; bits beyond 64 are dropped, as gogo does.
// Callers truncate to the field's width (uint32, int32) the same way.
func (r *pbReader) varint() (uint64, error) {
	if r.i < len(r.b) && r.b[r.i] < 0x80 {
		v := uint64(r.b[r.i])
		r.i++
		return v, nil
	}
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, errPBOverflow
		}
		if r.i >= len(r.b) {
			return 0, errPBEOF
		}
		c := r.b[r.i]
		r.i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
}

// tag reads a field's key.
func (r *pbReader) tag() (field int32, wire int, err error) {
	k, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	field, wire = int32(k>>3), int(k&7)
	if wire == 4 {
		return 0, 0, errors.New("end-group marker outside a group")
	}
	if field <= 0 {
		return 0, 0, fmt.Errorf("illegal field number %d", field)
	}
	return field, wire, nil
}

// bytes reads a length-delimited field's contents (aliasing b).
func (r *pbReader) bytes() ([]byte, error) {
	v, err := r.varint()
	if err != nil {
		return nil, err
	}
	n := int(v)
	if n < 0 {
		return nil, errPBLength
	}
	end := r.i + n
	if end < 0 {
		return nil, errPBLength
	}
	if end > len(r.b) {
		return nil, errPBEOF
	}
	s := r.b[r.i:end:end]
	r.i = end
	return s, nil
}

// string reads a string field without copying: it points into b.
func (r *pbReader) string() (string, error) {
	b, err := r.bytes()
	if err != nil || len(b) == 0 {
		return "", err
	}
	return unsafe.String(&b[0], len(b)), nil
}

func (r *pbReader) fixed64() (uint64, error) {
	if r.i+8 > len(r.b) {
		return 0, errPBEOF
	}
	v := binary.LittleEndian.Uint64(r.b[r.i:])
	r.i += 8
	return v, nil
}

// skip skips the field whose key starts at start (unknown fields, as
// gogo's generated skip functions do, groups included).
func (r *pbReader) skip(start int) error {
	r.i = start
	depth := 0
	for r.i < len(r.b) {
		k, err := r.varint()
		if err != nil {
			return err
		}
		switch k & 7 {
		case 0:
			if _, err := r.varint(); err != nil {
				return err
			}
		case 1:
			r.i += 8
		case 2:
			v, err := r.varint()
			if err != nil {
				return err
			}
			if int(v) < 0 {
				return errPBLength
			}
			r.i += int(v)
		case 3:
			depth++
		case 4:
			if depth == 0 {
				return errors.New("unexpected end of group")
			}
			depth--
		case 5:
			r.i += 4
		default:
			return fmt.Errorf("illegal wire type %d", k&7)
		}
		if r.i < 0 {
			return errPBLength
		}
		if depth == 0 {
			if r.i > len(r.b) {
				return errPBEOF
			}
			return nil
		}
	}
	return errPBEOF
}

func wrongWire(field string, wire int) error {
	return fmt.Errorf("wrong wire type %d for field %s", wire, field)
}

// parseV1 decodes a prometheus.WriteRequest into r.v1.
func (r *rwRequest) parseV1(data []byte) error {
	r.v1Wire = true
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if wire != 2 {
				return wrongWire("timeseries", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			r.checkCanonical(start, p.i, b)
			r.v1.Timeseries = append(r.v1.Timeseries, prompb.TimeSeries{})
			ts := &r.v1.Timeseries[len(r.v1.Timeseries)-1]
			if err := r.parseSeriesV1(b, p.i-len(b), ts); err != nil {
				return fmt.Errorf("timeseries[%d]: %w", len(r.v1.Timeseries)-1, err)
			}
		case 3:
			if wire != 2 {
				return wrongWire("metadata", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			r.checkCanonical(start, p.i, b)
			r.v1.Metadata = append(r.v1.Metadata, prompb.MetricMetadata{})
			if err := parseMetadataV1(b, &r.v1.Metadata[len(r.v1.Metadata)-1]); err != nil {
				return fmt.Errorf("metadata[%d]: %w", len(r.v1.Metadata)-1, err)
			}
		default:
			r.v1Wire = false // the forward queues read only known fields
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendLabel appends the label name=value to ls. Within capacity it
// sets the two fields alone: the generated type's others (XXX_*, 64 bytes
// in all) are zero in every label the decoder makes, since every label
// goes in through here and nothing sets them, and so in every slot a
// reset request reuses. That saves the copy and the write barriers of a
// whole literal on the hottest line of the relay: the line was 6% of the
// relay's CPU profile, and BenchmarkRemoteWriteDecode/v1_unchanged went
// from a median of 495 to 436 µs per request (interleaved runs).
func appendLabel(ls []prompb.Label, name, value string) []prompb.Label {
	n := len(ls)
	if n == cap(ls) {
		return append(ls, prompb.Label{Name: name, Value: value})
	}
	ls = ls[:n+1]
	ls[n].Name, ls[n].Value = name, value
	return ls
}

// parseSeriesV1 reads one TimeSeries message, data, which starts at
// offset base of the body.
func (r *rwRequest) parseSeriesV1(data []byte, base int, ts *prompb.TimeSeries) error {
	l0, s0, h0 := len(r.labels), len(r.samples), len(r.hists)
	p := pbReader{b: data}
	labelsEnded := false // a field other than labels came after a label
	fast := true         // every label so far was fastLabel's
	run0, run1 := 0, 0   // the labels' bytes, if in one run
	// For v1Plain: fastLabel's labels sorted, with __name__, no
	// clear_mode; the longest name and value.
	sorted, hasName, hasMode := true, false, false
	maxName, maxValue := 0, 0
	for !p.done() {
		start := p.i
		if d := p.b[p.i:]; len(d) >= 2 && d[0] == 0x0a && d[1] < 0x80 {
			// The common case, a Label of short name and value written
			// as the generated code writes it, without the general
			// reader.
			if name, value, ok := fastLabel(d[2:], int(d[1])); ok {
				if labelsEnded {
					r.v1Wire, fast = false, false
				}
				if len(r.labels) == l0 {
					run0 = p.i
				} else if name <= r.labels[len(r.labels)-1].Name {
					sorted = false
				}
				switch name[0] { // fastLabel's names are not empty
				case '_':
					hasName = hasName || name == model.MetricNameLabel
				case 'c':
					hasMode = hasMode || name == aggregate.ModeLabel || name == aggregate.ModeLabelAlias
				}
				maxName, maxValue = max(maxName, len(name)), max(maxValue, len(value))
				r.labels = appendLabel(r.labels, name, value)
				p.i += 2 + int(d[1])
				run1 = p.i
				continue
			}
		}
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		if field != 1 && len(r.labels) > l0 {
			labelsEnded = true
		}
		if field == 2 && wire == 2 {
			if b, err := p.bytes(); err == nil {
				if s, ok := plainSample(b); ok {
					r.samples = append(r.samples, s)
					continue
				}
			}
			p.i = start
			_, _, _ = p.tag()
			r.v1Wire = false // not as the generated code writes it
		}
		switch field {
		case 1:
			if wire != 2 {
				return wrongWire("labels", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			var l prompb.Label
			if err := parseLabel(b, &l); err != nil {
				return fmt.Errorf("labels: %w", err)
			}
			// Not in the form fastLabel takes: forwarded re-encoded.
			r.v1Wire, fast = false, false
			r.labels = appendLabel(r.labels, l.Name, l.Value)
		case 2:
			if wire != 2 {
				return wrongWire("samples", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			var s prompb.Sample
			if err := parseSampleV1(b, &s); err != nil {
				return fmt.Errorf("samples: %w", err)
			}
			r.samples = append(r.samples, s)
		case 3:
			if wire != 2 {
				return wrongWire("exemplars", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			var ex prompb.Exemplar
			if err := ex.Unmarshal(b); err != nil {
				return fmt.Errorf("exemplars: %w", err)
			}
			r.exemplars++
		case 4:
			if wire != 2 {
				return wrongWire("histograms", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			r.checkCanonical(start, p.i, b)
			r.hists = append(r.hists, prompb.Histogram{})
			if err := r.hists[len(r.hists)-1].Unmarshal(b); err != nil {
				return fmt.Errorf("histograms: %w", err)
			}
		default:
			r.v1Wire = false // the forward queues read only known fields
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	if n := len(r.labels); n > l0 {
		ts.Labels = r.labels[l0:n:n]
	}
	ascii := fast && len(r.labels) > l0 && isASCII(data[run0:run1])
	r.v1ASCII = append(r.v1ASCII, ascii)
	plain := ascii && sorted && hasName && !hasMode
	r.v1Plain = append(r.v1Plain, plain)
	if plain {
		r.v1MaxName, r.v1MaxValue = max(r.v1MaxName, maxName), max(r.v1MaxValue, maxValue)
	}
	r.v1Runs = append(r.v1Runs, int32(base+run0), int32(base+run1))
	if n := len(r.samples); n > s0 {
		ts.Samples = r.samples[s0:n:n]
	}
	if n := len(r.hists); n > h0 {
		ts.Histograms = r.hists[h0:n:n]
	}
	return nil
}

// checkCanonical clears v1Wire unless the length-delimited field that
// starts at start and ends at end, with contents b, has a one-byte key and
// the shortest length prefix, as the generated code writes them. The
// forward queues read relayed bodies with a plain varint reader, which
// does not take what gogo also accepts (keys of more than five bytes,
// varints with bits past the 64th).
func (r *rwRequest) checkCanonical(start, end int, b []byte) {
	if end-start != 1+varintLen(uint64(len(b)))+len(b) {
		r.v1Wire = false
	}
}

// varintLen is the length of v's shortest varint encoding.
func varintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// plainSample decodes a Sample message as the generated code writes it:
// the value (fixed64, field 1) then the timestamp (varint, field 2),
// either left out when zero. ok is false for anything else, which
// parseSampleV1 then reads.
func plainSample(b []byte) (s prompb.Sample, ok bool) {
	if len(b) >= 9 && b[0] == 0x09 {
		s.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[1:9]))
		b = b[9:]
	}
	if len(b) == 0 {
		return s, true
	}
	if b[0] != 0x10 {
		return s, false
	}
	t, k := binary.Uvarint(b[1:])
	s.Timestamp = int64(t)
	return s, k > 0 && k == len(b)-1
}

// isASCII reports whether every byte of b is below 0x80.
func isASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// fastLabel decodes a Label message of n bytes at the start of d if it is
// exactly a name field then a value field, each shorter than 128 bytes;
// ok is false for anything else (parseLabel then reads it).
func fastLabel(d []byte, n int) (name, value string, ok bool) {
	if n < 4 || n > len(d) || d[0] != 0x0a || d[1] >= 0x80 {
		return "", "", false
	}
	k := int(d[1])
	if 2+k+2 > n || d[2+k] != 0x12 || d[3+k] >= 0x80 || 4+k+int(d[3+k]) != n || k == 0 || d[3+k] == 0 {
		return "", "", false
	}
	return unsafe.String(&d[2], k), unsafe.String(&d[4+k], int(d[3+k])), true
}

func parseLabel(data []byte, l *prompb.Label) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1, 2:
			if wire != 2 {
				return wrongWire("name/value", wire)
			}
			s, err := p.string()
			if err != nil {
				return err
			}
			if field == 1 {
				l.Name = s
			} else {
				l.Value = s
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseSampleV1(data []byte, s *prompb.Sample) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if wire != 1 {
				return wrongWire("value", wire)
			}
			v, err := p.fixed64()
			if err != nil {
				return err
			}
			s.Value = math.Float64frombits(v)
		case 2:
			if wire != 0 {
				return wrongWire("timestamp", wire)
			}
			v, err := p.varint()
			if err != nil {
				return err
			}
			s.Timestamp = int64(v)
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseMetadataV1(data []byte, md *prompb.MetricMetadata) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if wire != 0 {
				return wrongWire("type", wire)
			}
			v, err := p.varint()
			if err != nil {
				return err
			}
			md.Type = prompb.MetricMetadata_MetricType(int32(v))
		case 2, 4, 5:
			if wire != 2 {
				return wrongWire("metric_family_name/help/unit", wire)
			}
			s, err := p.string()
			if err != nil {
				return err
			}
			switch field {
			case 2:
				md.MetricFamilyName = s
			case 4:
				md.Help = s
			default:
				md.Unit = s
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseV2 decodes an io.prometheus.write.v2.Request into r.v2.
func (r *rwRequest) parseV2(data []byte) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 4:
			if wire != 2 {
				return wrongWire("symbols", wire)
			}
			s, err := p.string()
			if err != nil {
				return err
			}
			r.v2.Symbols = append(r.v2.Symbols, s)
		case 5:
			if wire != 2 {
				return wrongWire("timeseries", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			r.v2.Timeseries = append(r.v2.Timeseries, writev2.TimeSeries{})
			ts := &r.v2.Timeseries[len(r.v2.Timeseries)-1]
			if err := r.parseSeriesV2(b, ts); err != nil {
				return fmt.Errorf("timeseries[%d]: %w", len(r.v2.Timeseries)-1, err)
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *rwRequest) parseSeriesV2(data []byte, ts *writev2.TimeSeries) error {
	r0, s0, h0 := len(r.refs), len(r.samples2), len(r.hists2)
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			switch wire {
			case 0:
				v, err := p.varint()
				if err != nil {
					return err
				}
				r.refs = append(r.refs, uint32(v))
			case 2:
				// Packed. As in the generated code, the values are read
				// with the series' bound, not the field's.
				v, err := p.varint()
				if err != nil {
					return err
				}
				n := int(v)
				if n < 0 {
					return errPBLength
				}
				end := p.i + n
				if end < 0 {
					return errPBLength
				}
				if end > len(p.b) {
					return errPBEOF
				}
				for p.i < end {
					v, err := p.varint()
					if err != nil {
						return err
					}
					r.refs = append(r.refs, uint32(v))
				}
			default:
				return wrongWire("labels_refs", wire)
			}
		case 2:
			if wire != 2 {
				return wrongWire("samples", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			var s writev2.Sample
			if err := parseSampleV2(b, &s); err != nil {
				return fmt.Errorf("samples: %w", err)
			}
			r.samples2 = append(r.samples2, s)
		case 3:
			if wire != 2 {
				return wrongWire("histograms", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			r.hists2 = append(r.hists2, writev2.Histogram{})
			if err := r.hists2[len(r.hists2)-1].Unmarshal(b); err != nil {
				return fmt.Errorf("histograms: %w", err)
			}
		case 4:
			if wire != 2 {
				return wrongWire("exemplars", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			var ex writev2.Exemplar
			if err := ex.Unmarshal(b); err != nil {
				return fmt.Errorf("exemplars: %w", err)
			}
			r.exemplars++
		case 5:
			if wire != 2 {
				return wrongWire("metadata", wire)
			}
			b, err := p.bytes()
			if err != nil {
				return err
			}
			// Merged into what an earlier occurrence set, as generated code does.
			if err := parseMetadataV2(b, &ts.Metadata); err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	if n := len(r.refs); n > r0 {
		ts.LabelsRefs = r.refs[r0:n:n]
	}
	if n := len(r.samples2); n > s0 {
		ts.Samples = r.samples2[s0:n:n]
	}
	if n := len(r.hists2); n > h0 {
		ts.Histograms = r.hists2[h0:n:n]
	}
	return nil
}

func parseSampleV2(data []byte, s *writev2.Sample) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if wire != 1 {
				return wrongWire("value", wire)
			}
			v, err := p.fixed64()
			if err != nil {
				return err
			}
			s.Value = math.Float64frombits(v)
		case 2, 3:
			if wire != 0 {
				return wrongWire("timestamp/start_timestamp", wire)
			}
			v, err := p.varint()
			if err != nil {
				return err
			}
			if field == 2 {
				s.Timestamp = int64(v)
			} else {
				s.StartTimestamp = int64(v)
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseMetadataV2(data []byte, md *writev2.Metadata) error {
	p := pbReader{b: data}
	for !p.done() {
		start := p.i
		field, wire, err := p.tag()
		if err != nil {
			return err
		}
		switch field {
		case 1, 3, 4:
			if wire != 0 {
				return wrongWire("type/help_ref/unit_ref", wire)
			}
			v, err := p.varint()
			if err != nil {
				return err
			}
			switch field {
			case 1:
				md.Type = writev2.Metadata_MetricType(int32(v))
			case 3:
				md.HelpRef = uint32(v)
			default:
				md.UnitRef = uint32(v)
			}
		default:
			if err := p.skip(start); err != nil {
				return err
			}
		}
	}
	return nil
}

package aggregate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/sluice-metrics/sluice/configs"
)

// Operation record types, as stored in the write-ahead log. The values are
// part of the on-disk format: never renumber them.
const (
	RecordPush   uint8 = 1
	RecordDelete uint8 = 2
	RecordWipe   uint8 = 3
	RecordExpire uint8 = 4
	// RecordRelay is a remote_write request's series relayed unchanged to
	// the forward targets (those without clear_mode). Replay appends them
	// to the forward queues again: delivery is at-least-once.
	RecordRelay uint8 = 5
)

// Op is one state-changing operation: what the write-ahead log records so
// that replaying the log rebuilds the state exactly.
type Op struct {
	Type uint8
	// Time is the arrival time; replay applies the op at this time, so
	// windows and TTLs come out as they did.
	Time time.Time
	// Push is set for RecordPush.
	Push *Push
	// Group is the grouping key of RecordDelete.
	Group labels.Labels
	// Expired lists what a sweep removed (RecordExpire): whole groups, and
	// single series by key within live groups.
	ExpiredGroups []labels.Labels
	ExpiredSeries []string
	// Relay is set for RecordRelay: the series to relay, in Remote-Write
	// 1.0 form.
	Relay *prompb.WriteRequest
	// RelaySnappy, if set when encoding, is Relay already marshalled and
	// snappy-compressed (Write.RelaySnappy); EncodeOp copies it instead of
	// encoding Relay. Decoding never sets it.
	RelaySnappy []byte
}

// maxRecordBytes bounds decoding of corrupt records.
const maxRecordBytes = 1 << 30

// pushgatewayBit marks a push accepted under Pushgateway semantics in the
// method byte of a push record.
const pushgatewayBit = 0x80

// bodyBit in the method byte of a push record says that the record holds
// the push's body as it came (Push.Body) rather than its families encoded.
const bodyBit = 0x40

// typeHintBit in the method byte of a push record marks a push whose
// types are hints (Push.TypeHint, a remote_write request's): replay must
// let its series take the types the metrics already have, as the live
// push did.
const typeHintBit = 0x20

// EncodeOp serialises an op. Layout (all integers varint unless noted):
//
//	time      8 bytes, big-endian Unix nanoseconds
//	push:     method (1 byte, 0x80 = Pushgateway semantics, 0x40 = body) | group labels |
//	          n modes | n * (len | mode) | delimited MetricFamily protobufs to the end,
//	          or with 0x40: body format (1 byte, BodyFormat) | the body to the end
//	delete:   group labels
//	wipe:     nothing
//	expire:   n groups | n * group labels | m series | m * (len | key bytes)
//	relay:    format (1 byte) = 1 | snappy block (to the end) of a prometheus.WriteRequest
//	          protobuf; records written before the format byte (a protobuf
//	          right after the time) are still read
//	labels:   n | n * (len | name | len | value)
func EncodeOp(op *Op) ([]byte, error) { return AppendOp(nil, op) }

// AppendOp is EncodeOp appending to dst[:0], whose array it reuses when
// it is large enough.
func AppendOp(dst []byte, op *Op) ([]byte, error) {
	if op.Type == RecordPush {
		return appendPushOp(dst, op.Time, op.Push, configs.Mode.String)
	}
	if want := 9 + len(op.RelaySnappy); op.Type == RecordRelay && cap(dst) < want {
		dst = make([]byte, 0, want) // one allocation for a block's record
	}
	b := binary.BigEndian.AppendUint64(dst[:0], uint64(op.Time.UnixNano()))
	switch op.Type {
	case RecordDelete:
		return appendLabels(b, op.Group), nil
	case RecordWipe:
		return b, nil
	case RecordExpire:
		b = binary.AppendUvarint(b, uint64(len(op.ExpiredGroups)))
		for _, g := range op.ExpiredGroups {
			b = appendLabels(b, g)
		}
		b = binary.AppendUvarint(b, uint64(len(op.ExpiredSeries)))
		for _, k := range op.ExpiredSeries {
			b = appendString(b, k)
		}
		return b, nil
	case RecordRelay:
		return encodeRelay(b, op)
	}
	return nil, fmt.Errorf("encode op: unknown record type %d", op.Type)
}

// appendPushOp is AppendOp for a RecordPush op of p at time at, spelling
// modes with spell (configs.Mode.String, or a cache of it). Taking p
// rather than an Op lets a caller build p on its stack: an Op's pointees
// escape through AppendOp.
func appendPushOp(dst []byte, at time.Time, p *Push, spell func(configs.Mode) string) ([]byte, error) {
	b := dst[:0]
	withBody := bodyRecord(p)
	// Room for the whole record, mostly: the body, or families of some
	// 100 bytes per metric.
	payload := len(p.Body)
	if !withBody {
		payload = 0
		for _, f := range p.Families {
			payload += 112 * len(f.Metric)
		}
	}
	if want := 128 + 16*len(p.Modes) + payload; cap(b) < want {
		b = make([]byte, 0, want)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	m := byte(p.Method)
	if p.Semantics != nil && *p.Semantics == SemanticsPushgateway {
		m |= pushgatewayBit
	}
	if withBody {
		m |= bodyBit
	}
	if p.TypeHint {
		m |= typeHintBit
	}
	b = append(b, m)
	b = appendLabels(b, p.Group)
	b = binary.AppendUvarint(b, uint64(len(p.Modes)))
	// A push has a few distinct modes; spell each once.
	var spelled [8]struct {
		m configs.Mode
		s string
	}
	nSpelled := 0
	for _, md := range p.Modes {
		i := 0
		for i < nSpelled && spelled[i].m != md {
			i++
		}
		if i == nSpelled {
			if i == len(spelled) {
				i = 0 // full: start over (the cache only saves work)
				nSpelled = 0
			}
			spelled[i].m, spelled[i].s = md, spell(md)
			nSpelled++
		}
		b = appendString(b, spelled[i].s)
	}
	if withBody {
		// The body as it came: a copy, where encoding the families cost
		// about 5% of a push's CPU time.
		b = append(b, byte(p.BodyFormat))
		return append(b, p.Body...), nil
	}
	// What protodelim.MarshalTo writes, appended in place.
	out := b
	for _, f := range p.Families {
		var err error
		if out, err = appendFamilyDelimited(out, f); err != nil {
			return nil, fmt.Errorf("encode push record: %w", err)
		}
	}
	return out, nil
}

// DecodeOp parses a record written by EncodeOp. It never panics on bad
// input and returns an error naming what was wrong.
func DecodeOp(typ uint8, b []byte) (*Op, error) {
	if len(b) < 8 {
		return nil, errors.New("decode op: record shorter than its timestamp")
	}
	if len(b) > maxRecordBytes {
		return nil, errors.New("decode op: record too large")
	}
	op := &Op{Type: typ, Time: time.Unix(0, int64(binary.BigEndian.Uint64(b)))}
	r := &reader{b: b[8:]}
	switch typ {
	case RecordPush:
		m, err := r.byte()
		if err != nil {
			return nil, err
		}
		sem := SemanticsAggregate
		if m&pushgatewayBit != 0 {
			sem = SemanticsPushgateway
			m &^= pushgatewayBit
		}
		hasBody := m&bodyBit != 0
		hint := m&typeHintBit != 0
		m &^= bodyBit | typeHintBit
		if Method(m) != MethodPost && Method(m) != MethodPut {
			return nil, fmt.Errorf("decode push record: unknown method %d", m)
		}
		g, err := r.labels()
		if err != nil {
			return nil, err
		}
		p := &Push{Group: g, Method: Method(m), Semantics: &sem, Modes: []configs.Mode{}, TypeHint: hint}
		n, err := r.count()
		if err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			ms, err := r.string()
			if err != nil {
				return nil, err
			}
			md, err := configs.ParseMode(ms)
			if err != nil {
				return nil, fmt.Errorf("decode push record: %w", err)
			}
			p.Modes = append(p.Modes, md)
		}
		if hasBody {
			f, err := r.byte()
			if err != nil {
				return nil, err
			}
			if p.BodyFormat = BodyFormat(f); !p.BodyFormat.valid() {
				return nil, fmt.Errorf("decode push record: unknown body format %d", f)
			}
			// Not copied: it is decoded (Recover) before b is reused.
			p.Body = r.b
			op.Push = p
			break
		}
		br := bytes.NewReader(r.b)
		for br.Len() > 0 {
			f := &dto.MetricFamily{}
			if err := (protodelim.UnmarshalOptions{MaxSize: int64(br.Len())}).UnmarshalFrom(br, f); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("decode push record: %w", err)
			}
			p.Families = append(p.Families, f)
		}
		op.Push = p
	case RecordDelete:
		g, err := r.labels()
		if err != nil {
			return nil, err
		}
		op.Group = g
	case RecordWipe:
	case RecordExpire:
		n, err := r.count()
		if err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			g, err := r.labels()
			if err != nil {
				return nil, err
			}
			op.ExpiredGroups = append(op.ExpiredGroups, g)
		}
		if n, err = r.count(); err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			k, err := r.string()
			if err != nil {
				return nil, err
			}
			op.ExpiredSeries = append(op.ExpiredSeries, k)
		}
	case RecordRelay:
		req, err := decodeRelay(r.b)
		if err != nil {
			return nil, err
		}
		op.Relay = req
		r.b = nil
	default:
		return nil, fmt.Errorf("decode op: unknown record type %d", typ)
	}
	if typ != RecordPush && len(r.b) != 0 {
		return nil, fmt.Errorf("decode op: %d trailing bytes in record type %d", len(r.b), typ)
	}
	return op, nil
}

// bodyRecord reports whether p's record holds its body rather than its
// families.
func bodyRecord(p *Push) bool { return len(p.Body) > 0 && p.BodyFormat.valid() }

func (f BodyFormat) valid() bool { return f >= BodyText && f <= BodyProtoDelimited }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = binary.AppendUvarint(b, uint64(ls.Len()))
	ls.Range(func(l labels.Label) {
		b = appendString(b, l.Name)
		b = appendString(b, l.Value)
	})
	return b
}

// reader decodes the primitives of a record.
type reader struct{ b []byte }

var errShort = errors.New("decode op: record truncated")

func (r *reader) byte() (byte, error) {
	if len(r.b) == 0 {
		return 0, errShort
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, nil
}

func (r *reader) count() (int, error) {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > uint64(len(r.b)) {
		return 0, errShort
	}
	r.b = r.b[n:]
	return int(v), nil
}

func (r *reader) string() (string, error) {
	n, err := r.count()
	if err != nil || n > len(r.b) {
		return "", errShort
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s, nil
}

func (r *reader) labels() (labels.Labels, error) {
	n, err := r.count()
	if err != nil {
		return labels.EmptyLabels(), err
	}
	var sb labels.ScratchBuilder
	for i := 0; i < n; i++ {
		name, err := r.string()
		if err != nil {
			return labels.EmptyLabels(), err
		}
		value, err := r.string()
		if err != nil {
			return labels.EmptyLabels(), err
		}
		sb.Add(name, value)
	}
	sb.Sort()
	return sb.Labels(), nil
}

// relaySnappyFormat starts a relay record's payload: a snappy block of a
// prometheus.WriteRequest follows. A protobuf never starts with this byte
// (field number 0), so records from before the format byte, a bare
// protobuf, are told apart.
const relaySnappyFormat = 1

// encodeRelay appends a relay record's payload to b (the time): the
// snappy block given (op.RelaySnappy) or Relay marshalled and compressed.
// A 2,000-sample request takes about a quarter of its protobuf size.
func encodeRelay(b []byte, op *Op) ([]byte, error) {
	block := op.RelaySnappy
	if block == nil {
		if op.Relay == nil {
			return nil, errors.New("encode relay record: no request")
		}
		pb, err := op.Relay.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode relay record: %w", err)
		}
		out := slices.Grow(append(b, relaySnappyFormat), snappy.MaxEncodedLen(len(pb)))
		enc := snappy.Encode(out[len(out):cap(out)], pb)
		return out[:len(out)+len(enc)], nil
	}
	// Appended to b, whose array the caller may reuse (Store.Write pools
	// them): the time, the format, the block.
	return append(append(b, relaySnappyFormat), block...), nil
}

// decodeRelay parses a relay record's payload.
func decodeRelay(p []byte) (*prompb.WriteRequest, error) {
	pb := p
	if len(p) > 0 && p[0] == relaySnappyFormat {
		n, err := snappy.DecodedLen(p[1:])
		if err != nil {
			return nil, fmt.Errorf("decode relay record: %w", err)
		}
		if n > maxRecordBytes {
			return nil, fmt.Errorf("decode relay record: %d bytes uncompressed, more than %d", n, maxRecordBytes)
		}
		if pb, err = snappy.Decode(make([]byte, n), p[1:]); err != nil {
			return nil, fmt.Errorf("decode relay record: %w", err)
		}
	}
	req := &prompb.WriteRequest{}
	if err := req.Unmarshal(pb); err != nil {
		return nil, fmt.Errorf("decode relay record: %w", err)
	}
	return req, nil
}

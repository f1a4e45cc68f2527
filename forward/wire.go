package forward

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"unsafe"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// Relay frames (doc.go, "Backlog files") carry relayed remote_write series
// as the sender encoded them: the payload is a zero byte, the sample count,
// the lowest timestamp and a snappy-compressed prometheus.WriteRequest
// (the request body as received when Sluice relays it unchanged). A
// target that changes nothing in the series (Remote-Write 1.0, no
// external labels, no write_relabel_configs) writes the block as it is,
// keeps the uncompressed request in memory for its reader, and its
// shards copy each series' labels from those bytes: the relay path never
// builds labels.Labels nor re-encodes a label.

// wirePayloadMark starts a relay frame's payload; a window frame's
// payload starts with its sample count, never zero.
const wirePayloadMark = 0

// wireFrame builds a relay frame in e's frame buffer: count samples, the
// lowest timestamp minT, block the snappy-compressed WriteRequest.
func (e *frameEncoder) wireFrame(block []byte, count int, minT int64) []byte {
	f := slices.Grow(e.frame[:0], frameHeaderSize+1+2*binary.MaxVarintLen64+len(block))
	f = f[:frameHeaderSize]
	f = append(f, wirePayloadMark)
	f = binary.AppendUvarint(f, uint64(count))
	f = binary.AppendVarint(f, minT)
	f = append(f, block...)
	sealFrame(f)
	e.frame = f
	return f
}

// wireInfo describes a relay frame for sending it whole (whole.go): what
// the dispatcher checks and the metrics count without decoding it.
type wireInfo struct {
	// keys holds one key per series, in order: a hash (hash/maphash, with
	// the Manager's seed) of its labels as encoded (one run of Label
	// messages), 0 if it has none.
	keys          []uint64
	floats, hists int
	minT, maxT    int64 // 0 if no samples
}

// relayInfo counts req's samples and their lowest and highest timestamps,
// and keys raw's series with seed; raw is req encoded (Write.RelayRaw),
// nil for no keys. runs, if it has two offsets per series, gives each
// series' label run in raw, which raw is then not read for.
func relayInfo(req *prompb.WriteRequest, raw []byte, runs []int32, seed maphash.Seed) *wireInfo {
	info := &wireInfo{}
	first := true
	ts := func(t int64) {
		if first {
			info.minT, info.maxT, first = t, t, false
		}
		info.minT, info.maxT = min(info.minT, t), max(info.maxT, t)
	}
	for i := range req.Timeseries {
		s := &req.Timeseries[i]
		for k := range s.Samples {
			ts(s.Samples[k].Timestamp)
		}
		for k := range s.Histograms {
			ts(s.Histograms[k].Timestamp)
		}
		info.floats += len(s.Samples)
		info.hists += len(s.Histograms)
	}
	switch {
	case raw != nil && len(runs) == 2*len(req.Timeseries) && validRuns(runs, len(raw)):
		info.keys = make([]uint64, len(req.Timeseries))
		for i := range info.keys {
			info.keys[i] = runKey(raw[runs[2*i]:runs[2*i+1]], seed)
		}
	case raw != nil:
		info.keys = wireKeys(raw, seed, make([]uint64, 0, len(req.Timeseries)))
	}
	return info
}

// wireKeys appends the key of each series of raw, a prometheus.WriteRequest
// whose series' labels are each one run of Label messages, to dst.
func wireKeys(raw []byte, seed maphash.Seed, dst []uint64) []uint64 {
	for off := 0; off < len(raw); {
		field, ts, next, ok := pbField(raw, off)
		if !ok {
			return dst
		}
		off = next
		if field != 1 || ts == nil {
			continue
		}
		l0, l1, _ := labelRun(ts) // one run: raw is canonical
		var run []byte
		if l0 >= 0 {
			run = ts[l0:l1]
		}
		dst = append(dst, runKey(run, seed))
	}
	return dst
}

// runKey is the key of a series whose labels are the run of Label
// messages run; 0 for none.
func runKey(run []byte, seed maphash.Seed) uint64 {
	if len(run) == 0 {
		return 0
	}
	return maphash.Bytes(seed, run)
}

// validRuns reports whether runs are offset pairs within n bytes.
func validRuns(runs []int32, n int) bool {
	for i := 0; i+1 < len(runs); i += 2 {
		if runs[i] < 0 || runs[i] > runs[i+1] || int(runs[i+1]) > n {
			return false
		}
	}
	return true
}

// wireRaw decompresses a relay frame's block. A wire decoder's samples
// alias what it returns, so it is a new buffer each time; others reuse
// the decoder's.
func (d *frameDecoder) wireRaw(block []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(block)
	if err != nil || n > maxFrameBody {
		return nil, fmt.Errorf("%w: bad snappy block (decoded length %d): %v", errFrame, n, err)
	}
	var buf []byte
	if d.wire {
		buf = make([]byte, n)
	} else {
		if cap(d.raw) < n {
			d.raw = make([]byte, n)
		}
		buf = d.raw[:cap(d.raw)]
	}
	raw, err := snappy.Decode(buf, block)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFrame, err)
	}
	return raw, nil
}

// decodeWire appends the samples of an uncompressed relay frame body (a
// prometheus.WriteRequest) of count samples to dst. A wire decoder's
// samples alias raw, which must never be written again; others own their
// labels (built once per series and cached, like decodeBody's).
func (d *frameDecoder) decodeWire(raw []byte, count int, dst []sample) ([]sample, error) {
	d.newFrame()
	start := len(dst)
	fail := func(off int, what string) ([]sample, error) {
		return dst[:start], fmt.Errorf("%w: relay body: %s at byte %d", errFrame, what, off)
	}
	// Metadata first: it may follow the series it describes.
	var meta map[string]*prompb.MetricMetadata
	for off := 0; off < len(raw); {
		field, val, next, ok := pbField(raw, off)
		if !ok {
			return fail(off, "bad field")
		}
		if field == 3 && val != nil {
			md := d.wireMetadata(val)
			if md == nil {
				return fail(off, "bad metadata")
			}
			if meta == nil {
				meta = map[string]*prompb.MetricMetadata{}
			}
			meta[md.MetricFamilyName] = md
		}
		off = next
	}
	for off := 0; off < len(raw); {
		field, ts, next, ok := pbField(raw, off)
		if !ok {
			return fail(off, "bad field")
		}
		if field != 1 || ts == nil {
			off = next
			continue
		}
		var err error
		if dst, err = d.wireSeries(ts, meta, dst); err != nil {
			return fail(off, err.Error())
		}
		off = next
	}
	if got := len(dst) - start; got != count {
		return dst[:start], fmt.Errorf("%w: %d samples, header says %d", errFrame, got, count)
	}
	return dst, nil
}

// labelRun returns where the labels (field-1 Label messages) of a
// TimeSeries message start and end; l0 < 0 if it has none, an error if
// they are not one run.
func labelRun(ts []byte) (l0, l1 int, err error) {
	l0, l1 = -1, -1
	for off := 0; off < len(ts); {
		var (
			field, next int
			ok          bool
		)
		if off+1 < len(ts) && ts[off] == 0x0a && ts[off+1] < 0x80 {
			// A label shorter than 128 bytes: most of them.
			field, next, ok = 1, off+2+int(ts[off+1]), off+2+int(ts[off+1]) <= len(ts)
		} else {
			field, _, next, ok = pbField(ts, off)
		}
		if !ok {
			return l0, l1, errFrame
		}
		if field == 1 {
			if l0 < 0 {
				l0 = off
			} else if l1 != off {
				return l0, l1, fmt.Errorf("labels not in one run")
			}
			l1 = next
		}
		off = next
	}
	return l0, l1, nil
}

// wireSeries appends the samples of one TimeSeries message.
func (d *frameDecoder) wireSeries(ts []byte, meta map[string]*prompb.MetricMetadata, dst []sample) ([]sample, error) {
	l0, l1, err := labelRun(ts)
	if err != nil {
		return dst, err
	}
	if l0 < 0 {
		return dst, fmt.Errorf("series without labels")
	}
	var (
		wire = ts[l0:l1:l1]
		ls   labels.Labels
		size = len(wire)
	)
	if !d.wire {
		if ls, err = d.wireLabelSet(wire); err != nil {
			return dst, err
		}
		size = int(ls.ByteSize())
		wire = nil
	}
	var md *prompb.MetricMetadata
	if meta != nil {
		md = familyMetadata(meta, wireName(ts[l0:l1]))
	}
	for off := l1; off < len(ts); {
		var (
			field, next int
			val         []byte
			ok          bool
		)
		if off+1 < len(ts) && ts[off] == 0x12 && ts[off+1] < 0x80 {
			// A sample: always shorter than 128 bytes.
			next = off + 2 + int(ts[off+1])
			field, val, ok = 2, ts[off+2:min(next, len(ts))], next <= len(ts)
		} else {
			field, val, next, ok = pbField(ts, off)
		}
		if !ok {
			return dst, errFrame
		}
		switch field {
		case 2:
			t, v, ok := wireSample(val)
			if !ok {
				return dst, fmt.Errorf("bad sample")
			}
			dst = append(dst, sample{lset: ls, wire: wire, meta: md, t: t, v: v, size: size + 16})
		case 4:
			h := &prompb.Histogram{}
			if val == nil || h.Unmarshal(val) != nil {
				return dst, fmt.Errorf("bad histogram")
			}
			dst = append(dst, sample{lset: ls, wire: wire, meta: md, h: h, t: h.Timestamp, size: size + len(val)})
		}
		off = next
	}
	return dst, nil
}

// wireLabelSet builds (or finds cached) the labels of a run of Label
// messages.
func (d *frameDecoder) wireLabelSet(wire []byte) (labels.Labels, error) {
	if c := d.cache[string(wire)]; c != nil && c.md == nil && c.wire == nil {
		c.used = d.gen
		return c.ls, nil
	}
	k := string(wire) // the labels keep substrings of this copy
	d.sb.Reset()
	for off := 0; off < len(k); {
		_, l, next, ok := pbField(wire, off)
		if !ok || l == nil {
			return labels.EmptyLabels(), fmt.Errorf("bad label")
		}
		name, value, ok := wireLabel(l)
		if !ok {
			return labels.EmptyLabels(), fmt.Errorf("bad label")
		}
		base := next - len(l) // where l starts in wire
		d.sb.Add(k[base+name[0]:base+name[1]], k[base+value[0]:base+value[1]])
		off = next
	}
	d.sb.Sort()
	ls := d.sb.Labels()
	d.cache[k] = &decoded{ls: ls, used: d.gen}
	return ls, nil
}

// wireMetadata decodes (or finds cached) a MetricMetadata message.
func (d *frameDecoder) wireMetadata(b []byte) *prompb.MetricMetadata {
	if c := d.cache[string(b)]; c != nil && c.md != nil {
		c.used = d.gen
		return c.md
	}
	md := &prompb.MetricMetadata{}
	if md.Unmarshal(b) != nil {
		return nil
	}
	d.cache[string(b)] = &decoded{md: md, used: d.gen}
	return md
}

// wireName returns the value of the __name__ label in a run of Label
// messages, "" if none.
func wireName(wire []byte) string {
	for off := 0; off < len(wire); {
		_, l, next, ok := pbField(wire, off)
		if !ok || l == nil {
			return ""
		}
		if name, value, ok := wireLabel(l); ok && string(l[name[0]:name[1]]) == "__name__" {
			return unsafe.String(unsafe.SliceData(l[value[0]:]), value[1]-value[0])
		}
		off = next
	}
	return ""
}

// wireLabel returns the bounds of a Label message's name and value (the
// last of each, as the generated code keeps).
func wireLabel(l []byte) (name, value [2]int, ok bool) {
	for off := 0; off < len(l); {
		field, val, next, ok := pbField(l, off)
		if !ok {
			return name, value, false
		}
		if val != nil {
			at := [2]int{next - len(val), next}
			switch field {
			case 1:
				name = at
			case 2:
				value = at
			}
		}
		off = next
	}
	return name, value, true
}

// wireSample decodes a Sample message.
func wireSample(b []byte) (t int64, v float64, ok bool) {
	for off := 0; off < len(b); {
		field, wt := int(b[off]>>3), b[off]&7
		switch {
		case field == 1 && wt == 1 && off+9 <= len(b):
			v = math.Float64frombits(binary.LittleEndian.Uint64(b[off+1:]))
			off += 9
		case field == 2 && wt == 0:
			x, k := binary.Uvarint(b[off+1:])
			if k <= 0 {
				return 0, 0, false
			}
			t = int64(x)
			off += 1 + k
		default:
			_, _, next, ok := pbField(b, off)
			if !ok {
				return 0, 0, false
			}
			off = next
		}
	}
	return t, v, true
}

// pbField reads the protobuf field at b[off:]: its number, its contents
// if length-delimited (nil otherwise; empty contents are a non-nil empty
// slice), and where the next field starts. Groups are not taken: the
// bodies here were validated, and carry none.
func pbField(b []byte, off int) (field int, val []byte, next int, ok bool) {
	key, k := binary.Uvarint(b[off:])
	if k <= 0 {
		return 0, nil, 0, false
	}
	off += k
	switch key & 7 {
	case 0:
		_, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return 0, nil, 0, false
		}
		off += k
	case 1:
		off += 8
	case 2:
		n, k := binary.Uvarint(b[off:])
		if k <= 0 || n > uint64(len(b)-off-k) {
			return 0, nil, 0, false
		}
		off += k
		val = b[off : off+int(n) : off+int(n)]
		off += int(n)
	case 5:
		off += 4
	default:
		return 0, nil, 0, false
	}
	if off > len(b) {
		return 0, nil, 0, false
	}
	return int(key >> 3), val, off, true
}

package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// A backlog frame holds one window for one target (doc.go, "Backlog
// format"):
//
//	type <1b> = 1 | payload length <4b, big endian> | CRC32-C <4b, big endian> | payload
//	payload: samples <uvarint> | min timestamp <varint> | snappy block of the body
//
// The CRC covers every byte of the frame except itself, as in the WAL.
const (
	frameHeaderSize = 9
	frameTypeWindow = 1
	// maxFrameBody bounds the decoded body, checked with snappy.DecodedLen
	// before decoding: bytes that pass the CRC by chance must not make the
	// reader allocate gigabytes. A window of a million series is ~150 MB.
	maxFrameBody = 1 << 30
)

// castagnoli is built once, before any goroutine could race on the lazily
// built table inside hash/crc32.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errFrame marks bytes that are not a valid frame: a torn write, a CRC
// mismatch or garbage. Read errors of the file system are not errFrame.
var errFrame = errors.New("invalid backlog frame")

// frameEncoder builds frames, reusing its buffers from frame to frame. It is
// not safe for concurrent use.
type frameEncoder struct {
	body  []byte // the records, uncompressed
	frame []byte // header and payload of the last frame built
	// meta numbers the metadata defined in the body so far, from 1.
	meta    map[*prompb.MetricMetadata]uint64
	samples int
	minT    int64
	one     [1]prompb.Sample // for addSample, so that it does not allocate
}

func newFrameEncoder() *frameEncoder {
	e := &frameEncoder{meta: map[*prompb.MetricMetadata]uint64{}}
	e.reset()
	return e
}

// reset starts a new frame.
func (e *frameEncoder) reset() {
	e.body = e.body[:0]
	clear(e.meta)
	e.samples = 0
	e.minT = math.MaxInt64
}

// addSeries appends one series record. md may be nil; it is written in
// full the first time the frame refers to it, as a number afterwards. On
// error the frame is unusable until reset.
func (e *frameEncoder) addSeries(ls labels.Labels, md *prompb.MetricMetadata, floats []prompb.Sample, hists []prompb.Histogram) error {
	e.seriesHeader(ls, md, floats)
	e.body = binary.AppendUvarint(e.body, uint64(len(hists)))
	for i := range hists {
		if err := e.histogram(ls, &hists[i]); err != nil {
			return err
		}
	}
	return nil
}

// addSeriesPB is addSeries for labels sorted by name as a request carries
// them, with ext's labels (sorted) added where ls lacks them or has them
// empty, and empty values dropped, as labels.Builder would: no
// labels.Labels is built. ext may be nil.
func (e *frameEncoder) addSeriesPB(ls, ext []prompb.Label, md *prompb.MetricMetadata, floats []prompb.Sample, hists []prompb.Histogram) error {
	b := e.metadata(e.body, md)
	// One byte is left for the label count, which is written once the
	// labels are: a second byte, for 128 labels or more, moves them.
	at := len(b)
	b = append(b, 0)
	n := 0
	for it := (mergeIter{ls: ls, ext: ext}); ; n++ {
		name, value, ok := it.next()
		if !ok {
			break
		}
		b = appendString(b, name)
		b = appendString(b, value)
	}
	if n < 0x80 {
		b[at] = byte(n)
	} else {
		var c [binary.MaxVarintLen64]byte
		k := binary.PutUvarint(c[:], uint64(n))
		b = append(b, c[:k-1]...)
		copy(b[at+k:], b[at+1:len(b)-(k-1)])
		copy(b[at:], c[:k])
	}
	e.body = e.floats(b, floats)
	e.body = binary.AppendUvarint(e.body, uint64(len(hists)))
	for i := range hists {
		if err := e.histogram(pbLabels(ls), &hists[i]); err != nil {
			return err
		}
	}
	return nil
}

// pbLabels prints request labels in error messages.
type pbLabels []prompb.Label

func (ls pbLabels) String() string {
	var sb labels.ScratchBuilder
	for _, l := range ls {
		sb.Add(l.Name, l.Value)
	}
	return sb.Labels().String()
}

// mergeIter walks the union of two label lists sorted by name: ls's
// non-empty labels, and ext's where ls has none of that name (or an empty
// one).
type mergeIter struct {
	ls, ext []prompb.Label
	i, j    int
}

func (m *mergeIter) next() (name, value string, ok bool) {
	for {
		switch {
		case m.i < len(m.ls) && (m.j >= len(m.ext) || m.ls[m.i].Name < m.ext[m.j].Name):
			l := m.ls[m.i]
			m.i++
			if l.Value != "" {
				return l.Name, l.Value, true
			}
		case m.j < len(m.ext) && (m.i >= len(m.ls) || m.ext[m.j].Name < m.ls[m.i].Name):
			x := m.ext[m.j]
			m.j++
			if x.Value != "" {
				return x.Name, x.Value, true
			}
		case m.i < len(m.ls): // the same name in both
			l, x := m.ls[m.i], m.ext[m.j]
			m.i++
			m.j++
			if l.Value != "" {
				return l.Name, l.Value, true
			}
			if x.Value != "" {
				return x.Name, x.Value, true
			}
		default:
			return "", "", false
		}
	}
}

// addSample appends a series record holding the one sample s.
func (e *frameEncoder) addSample(s *sample) error {
	if s.h != nil {
		e.seriesHeader(s.lset, s.meta, nil)
		e.body = append(e.body, 1)
		return e.histogram(s.lset, s.h)
	}
	e.one[0] = prompb.Sample{Timestamp: s.t, Value: s.v}
	e.seriesHeader(s.lset, s.meta, e.one[:])
	e.body = append(e.body, 0)
	return nil
}

// seriesHeader appends a record's metadata, labels and float samples.
func (e *frameEncoder) seriesHeader(ls labels.Labels, md *prompb.MetricMetadata, floats []prompb.Sample) {
	b := e.metadata(e.body, md)
	b = binary.AppendUvarint(b, uint64(ls.Len()))
	ls.Range(func(l labels.Label) {
		b = appendString(b, l.Name)
		b = appendString(b, l.Value)
	})
	e.body = e.floats(b, floats)
}

// metadata appends a record's metadata reference (and definition).
func (e *frameEncoder) metadata(b []byte, md *prompb.MetricMetadata) []byte {
	switch ref, ok := e.meta[md]; {
	case md == nil:
		b = append(b, 0)
	case ok:
		b = binary.AppendUvarint(b, ref)
	default:
		ref = uint64(len(e.meta) + 1)
		e.meta[md] = ref
		b = binary.AppendUvarint(b, ref)
		b = binary.AppendUvarint(b, uint64(md.Type))
		b = appendString(b, md.MetricFamilyName)
		b = appendString(b, md.Help)
		b = appendString(b, md.Unit)
	}
	return b
}

// floats appends a record's float samples.
func (e *frameEncoder) floats(b []byte, floats []prompb.Sample) []byte {
	b = binary.AppendUvarint(b, uint64(len(floats)))
	for _, s := range floats {
		b = binary.AppendVarint(b, s.Timestamp)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.Value))
		e.minT = min(e.minT, s.Timestamp)
	}
	e.samples += len(floats)
	return b
}

// histogram appends one length-prefixed histogram.
func (e *frameEncoder) histogram(ls fmt.Stringer, h *prompb.Histogram) error {
	n := h.Size()
	b := binary.AppendUvarint(e.body, uint64(n))
	b = slices.Grow(b, n)
	if _, err := h.MarshalToSizedBuffer(b[len(b) : len(b)+n]); err != nil {
		return fmt.Errorf("marshal histogram of %s: %w", ls, err)
	}
	e.body = b[:len(b)+n]
	e.minT = min(e.minT, h.Timestamp)
	e.samples++
	return nil
}

// finish returns the frame of everything added since reset. It is valid
// until the next finish.
func (e *frameEncoder) finish() []byte {
	minT := e.minT
	if e.samples == 0 {
		minT = 0
	}
	f := slices.Grow(e.frame[:0], frameHeaderSize+2*binary.MaxVarintLen64+snappy.MaxEncodedLen(len(e.body)))
	f = f[:frameHeaderSize]
	f = binary.AppendUvarint(f, uint64(e.samples))
	f = binary.AppendVarint(f, minT)
	comp := snappy.Encode(f[len(f):cap(f)], e.body)
	f = f[:len(f)+len(comp)]
	sealFrame(f)
	e.frame = f
	return f
}

// sealFrame fills in the header of f, a window frame whose payload
// follows the header: type, payload length and CRC.
func sealFrame(f []byte) {
	f[0] = frameTypeWindow
	binary.BigEndian.PutUint32(f[1:5], uint32(len(f)-frameHeaderSize))
	crc := crc32.Update(crc32.Checksum(f[:5], castagnoli), castagnoli, f[frameHeaderSize:])
	binary.BigEndian.PutUint32(f[5:9], crc)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// payloadHeader returns the sample count and the lowest timestamp that
// start a payload, the snappy block after them, and whether the payload
// is a relay frame's (wire.go).
func payloadHeader(p []byte) (samples int, minT int64, block []byte, wire bool, err error) {
	if len(p) > 0 && p[0] == wirePayloadMark {
		p, wire = p[1:], true
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n == 0 || n > math.MaxInt32 {
		return 0, 0, nil, false, fmt.Errorf("%w: bad sample count", errFrame)
	}
	t, k2 := binary.Varint(p[k:])
	if k2 <= 0 {
		return 0, 0, nil, false, fmt.Errorf("%w: bad timestamp", errFrame)
	}
	return int(n), t, p[k+k2:], wire, nil
}

// readFrame reads the frame that starts at the current offset of r, off,
// and must end by limit. It returns the payload, which aliases buf (grown
// as needed) and is valid until buf is reused, and the payload's sample
// count. Bytes that are not a valid frame give an error wrapping errFrame;
// a failing read gives the read's error.
func readFrame(r io.Reader, off, limit int64, hdr *[frameHeaderSize]byte, buf *[]byte) ([]byte, int, error) {
	left := limit - off
	if left < frameHeaderSize {
		return nil, 0, fmt.Errorf("%w: %d bytes left, less than a header (torn write)", errFrame, left)
	}
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, readError(err)
	}
	if hdr[0] != frameTypeWindow {
		return nil, 0, fmt.Errorf("%w: unknown frame type %d", errFrame, hdr[0])
	}
	plen := int64(binary.BigEndian.Uint32(hdr[1:5]))
	if plen > left-frameHeaderSize {
		return nil, 0, fmt.Errorf("%w: frame runs past the end of the segment (torn write)", errFrame)
	}
	if int64(cap(*buf)) < plen {
		*buf = make([]byte, plen)
	}
	p := (*buf)[:plen]
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, 0, readError(err)
	}
	want := binary.BigEndian.Uint32(hdr[5:9])
	if got := crc32.Update(crc32.Checksum(hdr[:5], castagnoli), castagnoli, p); got != want {
		return nil, 0, fmt.Errorf("%w: checksum %08x, frame says %08x", errFrame, got, want)
	}
	n, _, _, _, err := payloadHeader(p)
	if err != nil {
		return nil, 0, err
	}
	return p, n, nil
}

// readError classifies a failed read: a file shorter than its recorded
// size is a torn tail.
func readError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: file shorter than expected (torn write)", errFrame)
	}
	return err
}

// frameDecoder turns payloads back into samples, reusing its buffers. It
// is not safe for concurrent use.
//
// A target's windows repeat the same series and families every interval,
// so the decoder keeps the labels and metadata it built, keyed by their
// encoded bytes, while one of the last cacheFrames frames used them: in
// the steady state a window decodes without building any.
type frameDecoder struct {
	// wire: give each sample its labels in their protobuf encoding
	// (sample.wire) instead of labels.Labels, for the Remote-Write 1.0
	// encoder, which copies them as they are.
	wire  bool
	arena []byte // wire labels are cut from it; never reused, only replaced
	raw   []byte
	sb    labels.ScratchBuilder
	meta  []*prompb.MetricMetadata // defined in the current frame, by number
	spans [][2]int                 // the current record's label strings
	cache map[string]*decoded
	gen   uint64 // frames decoded
	// Windows spanning frames (windowFrame): the timestamp of the last
	// window frame, how many frames in a row had it, how many the window
	// before had, and whether this frame's series go uncached.
	lastT        int64
	run, prevRun int
	nocache      bool
}

// decoded is a cached series or metadata; used is the last frame (gen)
// that used it.
type decoded struct {
	ls   labels.Labels
	wire []byte // a wire decoder's
	md   *prompb.MetricMetadata
	used uint64
}

// cacheFrames is how many frames a cached series or metadata outlives its
// last use.
const cacheFrames = 4

func newFrameDecoder() *frameDecoder {
	return &frameDecoder{sb: labels.NewScratchBuilder(16), cache: map[string]*decoded{}}
}

// newWireDecoder returns a frameDecoder whose samples carry their labels
// as protobuf bytes (sample.wire), lset left empty.
func newWireDecoder() *frameDecoder {
	d := newFrameDecoder()
	d.wire = true
	return d
}

// wireArenaSize is the size of the chunks wire labels are cut from. A
// series' wire labels are cached like labels (cacheFrames), so in the
// steady state nothing is cut; a chunk is freed once no sample and no
// cache entry uses it.
const wireArenaSize = 64 << 10

// decode appends the samples of a payload that passed its CRC to dst. The
// samples own their labels, metadata and histograms: nothing aliases the
// payload or the decoder's buffers. Labels and metadata are shared with
// other samples and must not be modified.
func (d *frameDecoder) decode(payload []byte, dst []sample) ([]sample, error) {
	count, minT, block, wire, err := payloadHeader(payload)
	if err != nil {
		return dst, err
	}
	if wire {
		raw, err := d.wireRaw(block)
		if err != nil {
			return dst, err
		}
		return d.decodeWire(raw, count, dst)
	}
	n, err := snappy.DecodedLen(block)
	if err != nil || n > maxFrameBody {
		return dst, fmt.Errorf("%w: bad snappy block (decoded length %d): %v", errFrame, n, err)
	}
	if cap(d.raw) < n {
		d.raw = make([]byte, n)
	}
	raw, err := snappy.Decode(d.raw[:cap(d.raw)], block)
	if err != nil {
		return dst, fmt.Errorf("%w: %v", errFrame, err)
	}
	d.windowFrame(minT)
	return d.decodeBody(raw, count, dst)
}

// decodeBody decodes an uncompressed body of count samples. Nothing of raw
// is kept.
func (d *frameDecoder) decodeBody(raw []byte, count int, dst []sample) ([]sample, error) {
	d.newFrame()
	p := bodyParser{raw: raw}
	clear(d.meta)
	d.meta = d.meta[:0]
	start := len(dst)
	for p.off < len(p.raw) {
		var md *prompb.MetricMetadata
		switch ref := p.uvarint(); {
		case ref == 0:
		case ref <= uint64(len(d.meta)):
			md = d.meta[ref-1]
		case ref == uint64(len(d.meta))+1:
			md = d.metadata(&p)
			d.meta = append(d.meta, md)
		default:
			p.fail()
		}
		var (
			ls   labels.Labels
			wire []byte
			size int
		)
		if d.wire {
			wire = d.wireLabels(&p)
			size = len(wire)
		} else {
			ls = d.labels(&p)
			size = int(ls.ByteSize())
		}
		if p.err {
			break
		}
		nf := p.uvarint()
		for i := uint64(0); i < nf && !p.err; i++ {
			t := p.varint()
			v := math.Float64frombits(p.uint64())
			dst = append(dst, sample{lset: ls, wire: wire, meta: md, t: t, v: v, size: size + 16})
		}
		nh := p.uvarint()
		for i := uint64(0); i < nh && !p.err; i++ {
			a, b := p.span()
			h := &prompb.Histogram{}
			if p.err || h.Unmarshal(raw[a:b]) != nil {
				p.fail()
				break
			}
			dst = append(dst, sample{lset: ls, wire: wire, meta: md, h: h, t: h.Timestamp, size: size + b - a})
		}
		if p.err {
			break
		}
	}
	if p.err {
		return dst[:start], fmt.Errorf("%w: malformed body at byte %d", errFrame, p.off)
	}
	if got := len(dst) - start; got != count {
		return dst[:start], fmt.Errorf("%w: %d samples, header says %d", errFrame, got, count)
	}
	return dst, nil
}

// windowFrame notes the timestamp of a window's frame, before
// decodeBody. The frames of one window share it (the flush hands a big
// window on in parts, a frame each). An entry not used for cacheFrames
// frames goes at the next sweep (every cacheFrames frames), so the series
// of a window of 2*cacheFrames frames or more are always gone before the
// next window could use them (windows of 5 to 7 frames still find some).
// Such a window's series are then not cached at all: caching them would
// hold several frames' worth of labels and cost a map insert per series
// for nothing.
func (d *frameDecoder) windowFrame(t int64) {
	if t == d.lastT {
		d.run++
	} else {
		d.lastT, d.prevRun, d.run = t, d.run, 1
	}
	d.nocache = max(d.run, d.prevRun) >= 2*cacheFrames
}

// newFrame starts a frame: cache entries unused for cacheFrames frames go.
func (d *frameDecoder) newFrame() {
	d.gen++
	if d.gen%cacheFrames == 0 {
		for k, c := range d.cache {
			if c.used+cacheFrames < d.gen {
				delete(d.cache, k)
			}
		}
	}
}

// metadata reads a metadata definition: type, family, help, unit.
func (d *frameDecoder) metadata(p *bodyParser) *prompb.MetricMetadata {
	start := p.off
	typ := p.uvarint()
	f0, f1 := p.span()
	h0, h1 := p.span()
	u0, u1 := p.span()
	if p.err {
		return nil
	}
	if c := d.cache[string(p.raw[start:p.off])]; c != nil && c.md != nil {
		c.used = d.gen
		return c.md
	}
	md := &prompb.MetricMetadata{
		Type:             prompb.MetricMetadata_MetricType(typ),
		MetricFamilyName: string(p.raw[f0:f1]),
		Help:             string(p.raw[h0:h1]),
		Unit:             string(p.raw[u0:u1]),
	}
	d.cache[string(p.raw[start:p.off])] = &decoded{md: md, used: d.gen}
	return md
}

// labels reads a record's labels.
func (d *frameDecoder) labels(p *bodyParser) labels.Labels {
	start := p.off
	nl := p.uvarint()
	if nl > uint64(len(p.raw)) {
		p.fail()
	}
	d.spans = d.spans[:0]
	for i := uint64(0); i < 2*nl && !p.err; i++ {
		a, b := p.span()
		d.spans = append(d.spans, [2]int{a, b})
	}
	if p.err {
		return labels.EmptyLabels()
	}
	key := p.raw[start:p.off]
	if c := d.cache[string(key)]; c != nil && c.md == nil && c.wire == nil {
		c.used = d.gen
		return c.ls
	}
	// Labels copies the strings it is given (stringlabels, the default) or
	// keeps them: give it copies, never the reused buffer.
	k := string(key)
	d.sb.Reset()
	for i := 0; i < len(d.spans); i += 2 {
		n, v := d.spans[i], d.spans[i+1]
		d.sb.Add(k[n[0]-start:n[1]-start], k[v[0]-start:v[1]-start])
	}
	ls := d.sb.Labels() // written sorted by the encoder
	if !d.nocache {
		d.cache[k] = &decoded{ls: ls, used: d.gen}
	}
	return ls
}

// wireLabels reads a record's labels and returns them as a
// prometheus.TimeSeries holds them: one field-1 Label message each (name
// field 1, value field 2), copied to the arena. Labels were written
// sorted, empty values dropped.
func (d *frameDecoder) wireLabels(p *bodyParser) []byte {
	start := p.off
	nl := p.uvarint()
	if nl > uint64(len(p.raw)) {
		p.fail()
	}
	d.spans = d.spans[:0]
	need := 0
	for i := uint64(0); i < nl && !p.err; i++ {
		n0, n1 := p.span()
		v0, v1 := p.span()
		d.spans = append(d.spans, [2]int{n0, n1}, [2]int{v0, v1})
		need += wireLabelSize(n1-n0, v1-v0)
	}
	if p.err {
		return nil
	}
	key := p.raw[start:p.off]
	if c := d.cache[string(key)]; c != nil && c.wire != nil {
		c.used = d.gen
		return c.wire
	}
	if d.arena == nil || cap(d.arena)-len(d.arena) < need {
		d.arena = make([]byte, 0, max(wireArenaSize, need))
	}
	from := len(d.arena)
	b := d.arena
	for i := 0; i < len(d.spans); i += 2 {
		n, v := d.spans[i], d.spans[i+1]
		b = appendWireLabel(b, p.raw[n[0]:n[1]], p.raw[v[0]:v[1]])
	}
	d.arena = b
	wire := b[from:len(b):len(b)]
	if !d.nocache {
		d.cache[string(key)] = &decoded{wire: wire, used: d.gen}
	}
	return wire
}

// wireLabelSize is the size of a field-1 Label message of a name and a
// value of these lengths.
func wireLabelSize(name, value int) int {
	inner := labelInnerSize(name, value)
	return 1 + uvarintLen(uint64(inner)) + inner
}

// labelInnerSize is the size of a Label message; empty fields are left
// out, as the generated code does.
func labelInnerSize(name, value int) int {
	n := 0
	if name > 0 {
		n += 1 + uvarintLen(uint64(name)) + name
	}
	if value > 0 {
		n += 1 + uvarintLen(uint64(value)) + value
	}
	return n
}

// appendWireLabel appends a field-1 Label message.
func appendWireLabel[S string | []byte](b []byte, name, value S) []byte {
	b = append(b, 0x0a)
	b = binary.AppendUvarint(b, uint64(labelInnerSize(len(name), len(value))))
	if len(name) > 0 {
		b = append(b, 0x0a)
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
	}
	if len(value) > 0 {
		b = append(b, 0x12)
		b = binary.AppendUvarint(b, uint64(len(value)))
		b = append(b, value...)
	}
	return b
}

// uvarintLen is the length of x as a uvarint.
func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// bodyParser reads a frame body. After the first error every read returns
// a zero value and err stays set.
type bodyParser struct {
	raw []byte
	off int
	err bool
}

func (p *bodyParser) fail() { p.err, p.off = true, len(p.raw) }

func (p *bodyParser) uvarint() uint64 {
	x, k := binary.Uvarint(p.raw[p.off:])
	if k <= 0 {
		p.fail()
		return 0
	}
	p.off += k
	return x
}

func (p *bodyParser) varint() int64 {
	x, k := binary.Varint(p.raw[p.off:])
	if k <= 0 {
		p.fail()
		return 0
	}
	p.off += k
	return x
}

func (p *bodyParser) uint64() uint64 {
	if len(p.raw)-p.off < 8 {
		p.fail()
		return 0
	}
	x := binary.LittleEndian.Uint64(p.raw[p.off:])
	p.off += 8
	return x
}

// span returns the bounds of a length-prefixed field.
func (p *bodyParser) span() (int, int) {
	n := p.uvarint()
	if p.err || n > uint64(len(p.raw)-p.off) {
		p.fail()
		return 0, 0
	}
	start := p.off
	p.off += int(n)
	return start, p.off
}

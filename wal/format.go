package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
)

// On-disk layout of one batch frame (FORMAT.md has the diagram):
//
//	type <1b> = 1 | payload length <4b, big endian> | CRC32-C <4b, big endian> | payload
//
// The CRC covers the type byte, the length and the payload: every byte of
// the frame except the CRC itself. The payload is a uvarint record count
// followed by that many records, each a type byte (never 0), a uvarint
// data length and the data.
const (
	frameHeaderSize = 9
	frameTypeBatch  = 1
)

// castagnoli is built once, before any goroutine could race on the lazily
// built table inside hash/crc32.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SegmentName is the file name of segment i: eight digits, like tsdb/wlog.
func SegmentName(i int) string { return fmt.Sprintf("%08d", i) }

// ParseSegmentName returns the index of a segment file name. Names that
// are not the canonical eight (or more) digit form are not segments.
func ParseSegmentName(name string) (int, bool) {
	if len(name) < 8 {
		return 0, false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(name)
	if err != nil || SegmentName(n) != name {
		return 0, false
	}
	return n, true
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// payloadLen returns the encoded size of recs as one batch payload, and
// an error if the batch is not a valid one.
func payloadLen(recs []Record) (int64, error) {
	if len(recs) == 0 {
		return 0, fmt.Errorf("%w: empty batch", ErrInvalidRecord)
	}
	n := int64(uvarintLen(uint64(len(recs))))
	for i := range recs {
		if recs[i].Type == 0 {
			return 0, fmt.Errorf("%w: record %d has the reserved type 0", ErrInvalidRecord, i)
		}
		l := len(recs[i].Data)
		n += 1 + int64(uvarintLen(uint64(l))) + int64(l)
	}
	return n, nil
}

// frameCRC computes the CRC of the frame that encodes recs without
// building it, so that appenders can do it before taking the WAL's lock.
// The few header and length bytes go through crcByte: slices of a local
// array passed to crc32.Update would escape, an allocation per Append.
func frameCRC(recs []Record, plen int64) uint32 {
	c := crcByte(0, frameTypeBatch)
	c = crcByte(c, byte(plen>>24))
	c = crcByte(c, byte(plen>>16))
	c = crcByte(c, byte(plen>>8))
	c = crcByte(c, byte(plen))
	c = crcUvarint(c, uint64(len(recs)))
	for i := range recs {
		c = crcByte(c, recs[i].Type)
		c = crcUvarint(c, uint64(len(recs[i].Data)))
		c = crc32.Update(c, castagnoli, recs[i].Data)
	}
	return c
}

// crcByte is crc32.Update(c, castagnoli, []byte{b}).
func crcByte(c uint32, b byte) uint32 {
	c = ^c
	c = castagnoli[byte(c)^b] ^ (c >> 8)
	return ^c
}

// crcUvarint is crc32.Update over the uvarint encoding of x.
func crcUvarint(c uint32, x uint64) uint32 {
	for x >= 0x80 {
		c = crcByte(c, byte(x)|0x80)
		x >>= 7
	}
	return crcByte(c, byte(x))
}

// appendFrame appends the frame for recs to dst; plen and crc come from
// payloadLen and frameCRC.
func appendFrame(dst []byte, recs []Record, plen int64, crc uint32) []byte {
	dst = append(dst, frameTypeBatch)
	dst = binary.BigEndian.AppendUint32(dst, uint32(plen))
	dst = binary.BigEndian.AppendUint32(dst, crc)
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	for i := range recs {
		dst = append(dst, recs[i].Type)
		dst = binary.AppendUvarint(dst, uint64(len(recs[i].Data)))
		dst = append(dst, recs[i].Data...)
	}
	return dst
}

// decodePayload parses a payload whose CRC has been verified into recs,
// whose Data alias p.
func decodePayload(p []byte, recs []Record) ([]Record, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 {
		return recs, errors.New("bad record count")
	}
	p = p[k:]
	// Every record takes at least two bytes; this bounds the loop on
	// garbage that happens to pass the CRC.
	if n == 0 || n > uint64(len(p))/2 {
		return recs, fmt.Errorf("record count %d does not fit the payload", n)
	}
	for i := uint64(0); i < n; i++ {
		if len(p) < 2 {
			return recs, fmt.Errorf("record %d truncated", i)
		}
		typ := p[0]
		if typ == 0 {
			return recs, fmt.Errorf("record %d has the reserved type 0", i)
		}
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l > uint64(len(p)-1-k) {
			return recs, fmt.Errorf("record %d has a bad length", i)
		}
		p = p[1+k:]
		recs = append(recs, Record{Type: typ, Data: p[:l:l]})
		p = p[l:]
	}
	if len(p) != 0 {
		return recs, fmt.Errorf("%d trailing bytes after %d records", len(p), n)
	}
	return recs, nil
}

// CorruptionError reports bytes in a segment that are not a valid frame:
// a frame cut short by a crash (a torn write), a CRC mismatch, or garbage.
// Open repairs such damage; Replay returns it only for damage Open did
// not check (see Open) or a from position that is not a frame boundary.
type CorruptionError struct {
	Segment int
	Offset  int64 // where the bad frame starts
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corruption in segment %s at offset %d: %v", SegmentName(e.Segment), e.Offset, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// errTorn marks a frame that runs past the end of its segment: what a
// crash in the middle of a write leaves behind.
var errTorn = errors.New("frame runs past the end of the segment (torn write)")

// segmentReader reads the frames of one segment in order.
type segmentReader struct {
	seg  int
	br   *bufio.Reader
	off  int64 // where the next frame starts
	end  int64 // bytes of the segment to read
	hdr  [frameHeaderSize]byte
	buf  []byte
	recs []Record
}

func (r *segmentReader) reset(seg int, rd io.Reader, off, end int64) {
	if r.br == nil {
		r.br = bufio.NewReaderSize(rd, 64<<10)
	} else {
		r.br.Reset(rd)
	}
	r.seg, r.off, r.end = seg, off, end
}

func (r *segmentReader) corrupt(err error) error {
	return &CorruptionError{Segment: r.seg, Offset: r.off, Err: err}
}

// next returns the records of the next batch, valid until the next call,
// and the offset just after the batch. It returns io.EOF at the end of the
// segment, a *CorruptionError for bytes that are not a valid frame, and
// any other error for a failed read.
func (r *segmentReader) next() ([]Record, int64, error) {
	left := r.end - r.off
	if left <= 0 {
		return nil, r.off, io.EOF
	}
	if left < frameHeaderSize {
		return nil, r.off, r.corrupt(errTorn)
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, r.off, r.readErr(err)
	}
	if r.hdr[0] != frameTypeBatch {
		return nil, r.off, r.corrupt(fmt.Errorf("unknown frame type %d", r.hdr[0]))
	}
	plen := int64(binary.BigEndian.Uint32(r.hdr[1:5]))
	if plen > left-frameHeaderSize {
		return nil, r.off, r.corrupt(errTorn)
	}
	if int64(cap(r.buf)) < plen {
		r.buf = make([]byte, plen)
	}
	p := r.buf[:plen]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return nil, r.off, r.readErr(err)
	}
	want := binary.BigEndian.Uint32(r.hdr[5:9])
	if got := crc32.Update(crc32.Checksum(r.hdr[:5], castagnoli), castagnoli, p); got != want {
		return nil, r.off, r.corrupt(fmt.Errorf("checksum %08x, frame says %08x", got, want))
	}
	recs, err := decodePayload(p, r.recs[:0])
	r.recs = recs[:0]
	if err != nil {
		return nil, r.off, r.corrupt(fmt.Errorf("malformed batch: %w", err))
	}
	r.off += frameHeaderSize + plen
	return recs, r.off, nil
}

// readErr classifies a failed read: a file shorter than its size said
// is a torn tail, anything else an I/O error.
func (r *segmentReader) readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.corrupt(errTorn)
	}
	return fmt.Errorf("read segment %s at offset %d: %w", SegmentName(r.seg), r.off, err)
}

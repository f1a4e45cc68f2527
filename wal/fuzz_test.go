package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzReader writes arbitrary bytes as one to three segment files, opens
// and replays them. Open must not fail or panic, and every batch Replay
// returns must be exactly the bytes on disk at its place, re-encoded
// independently here, with a CRC that verifies: the log is a prefix of
// valid frames, nothing invented, nothing skipped.
//
// The first input byte picks the number of segments; the rest is split
// evenly between them.
func FuzzReader(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, frameTypeBatch})
	for seed, segs := range [][][]batch{
		{{{recs: []Record{{Type: 1, Data: []byte("hello")}}}}},
		{{{recs: []Record{{Type: 1}, {Type: 2, Data: []byte("two records")}}}, {recs: []Record{{Type: 255, Data: make([]byte, 300)}}}}},
	} {
		var b []byte
		for _, s := range segs {
			for _, x := range s {
				b = append(b, encodeForTest(x.recs)...)
			}
		}
		f.Add(append([]byte{byte(seed)}, b...))
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<20 {
			return
		}
		dir := t.TempDir()
		var files [][]byte
		if len(in) > 0 {
			n := 1 + int(in[0]%3)
			rest := in[1:]
			for i := range n {
				files = append(files, rest[len(rest)*i/n:len(rest)*(i+1)/n])
			}
		}
		for i, b := range files {
			if err := os.WriteFile(filepath.Join(dir, SegmentName(i)), b, 0o666); err != nil {
				t.Fatal(err)
			}
		}
		fsys := &faultFS{FS: OSFS(), noSync: true}
		w, err := Open(dir, fsys, Options{SegmentSize: 2 << 20}, prometheus.NewRegistry(), nil)
		if err != nil {
			t.Fatalf("Open refused the bytes: %v", err)
		}
		defer w.Close()

		// Group the replayed records into batches by their end position.
		type got struct {
			end  Position
			recs []Record
		}
		var bs []got
		err = w.Replay(Position{}, func(pos Position, r Record) error {
			if len(bs) == 0 || bs[len(bs)-1].end != pos {
				bs = append(bs, got{end: pos})
			}
			b := &bs[len(bs)-1]
			b.recs = append(b.recs, Record{Type: r.Type, Data: bytes.Clone(r.Data)})
			return nil
		})
		if err != nil {
			t.Fatalf("Replay after Open: %v", err)
		}
		ref := referenceBatches(files)
		if len(ref) != len(bs) {
			t.Fatalf("replayed %d batches, the reference reader finds %d", len(bs), len(ref))
		}
		seg, start := 0, int64(0)
		for i, b := range bs {
			if b.end != ref[i].end || len(b.recs) != len(ref[i].recs) {
				t.Fatalf("batch %d: replayed %d records ending at %v, reference %d ending at %v", i, len(b.recs), b.end, len(ref[i].recs), ref[i].end)
			}
			if b.end.Segment != seg {
				if b.end.Segment < seg || b.end.Segment >= len(files) {
					t.Fatalf("batch ends at %v, after segment %d", b.end, seg)
				}
				seg, start = b.end.Segment, 0
			}
			frame := encodeForTest(b.recs)
			if b.end.Offset-start != int64(len(frame)) || !bytes.Equal(files[seg][start:b.end.Offset], frame) {
				t.Fatalf("batch ending at %v does not match the bytes on disk", b.end)
			}
			if !crcOK(files[seg][start:b.end.Offset]) {
				t.Fatalf("batch ending at %v has a bad CRC", b.end)
			}
			start = b.end.Offset
		}

		// The repaired log takes appends and replays them after the rest.
		pos, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("after")})
		if err != nil {
			t.Fatalf("Append after Open: %v", err)
		}
		if len(bs) > 0 && pos.Compare(bs[len(bs)-1].end) <= 0 {
			t.Fatalf("Append ends at %v, not after the last replayed batch %v", pos, bs[len(bs)-1].end)
		}
		n := 0
		err = w.Replay(Position{}, func(p Position, r Record) error {
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		for _, b := range bs {
			want += len(b.recs)
		}
		if n != want {
			t.Fatalf("replayed %d records after the Append, want %d", n, want)
		}
	})
}

// encodeForTest encodes a batch frame following FORMAT.md, independently
// of appendFrame.
func encodeForTest(recs []Record) []byte {
	var p []byte
	p = binary.AppendUvarint(p, uint64(len(recs)))
	for _, r := range recs {
		p = append(p, r.Type)
		p = binary.AppendUvarint(p, uint64(len(r.Data)))
		p = append(p, r.Data...)
	}
	hdr := []byte{frameTypeBatch, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	crc := crc32.Checksum(append(bytes.Clone(hdr), p...), crc32.MakeTable(crc32.Castagnoli))
	return append(binary.BigEndian.AppendUint32(hdr, crc), p...)
}

// crcOK checks a frame's CRC as FORMAT.md describes it.
func crcOK(frame []byte) bool {
	if len(frame) < frameHeaderSize {
		return false
	}
	covered := append(bytes.Clone(frame[:5]), frame[frameHeaderSize:]...)
	return crc32.Checksum(covered, crc32.MakeTable(crc32.Castagnoli)) == binary.BigEndian.Uint32(frame[5:9])
}

// referenceBatches is a deliberately naive reader of FORMAT.md: valid
// frames from the start of each segment, until the first invalid byte
// anywhere, after which nothing counts.
func referenceBatches(files [][]byte) []batch {
	var out []batch
	for seg, b := range files {
		off := 0
		for off < len(b) {
			rest := b[off:]
			if len(rest) < 9 || rest[0] != 1 {
				return out
			}
			plen := int(binary.BigEndian.Uint32(rest[1:5]))
			if plen > len(rest)-9 || !crcOK(rest[:9+plen]) {
				return out
			}
			recs, ok := referencePayload(rest[9 : 9+plen])
			if !ok {
				return out
			}
			off += 9 + plen
			out = append(out, batch{recs: recs, end: Position{seg, int64(off)}})
		}
	}
	return out
}

func referencePayload(p []byte) ([]Record, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n == 0 {
		return nil, false
	}
	p = p[k:]
	var recs []Record
	for ; n > 0; n-- {
		if len(p) == 0 || p[0] == 0 {
			return nil, false
		}
		typ := p[0]
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l > uint64(len(p[1+k:])) {
			return nil, false
		}
		recs = append(recs, Record{Type: typ, Data: p[1+k : 1+k+int(l)]})
		p = p[1+k+int(l):]
	}
	return recs, len(p) == 0
}

func TestEncodeForTestMatchesAppendFrame(t *testing.T) {
	recs := []Record{{Type: 1, Data: []byte("a")}, {Type: 200, Data: make([]byte, 1000)}, {Type: 3}}
	plen, err := payloadLen(recs)
	must(t, err)
	if got, want := appendFrame(nil, recs, plen, frameCRC(recs, plen)), encodeForTest(recs); !bytes.Equal(got, want) {
		t.Fatalf("appendFrame and the test encoder disagree:\n%x\n%x", got, want)
	}
}

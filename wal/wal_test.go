package wal

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name             string
		opts             Options
		batches          int
		maxRecs, maxData int
		minSegments      int
	}{
		{name: "one segment", opts: Options{}, batches: 100, maxRecs: 5, maxData: 300, minSegments: 1},
		{name: "many rotations", opts: Options{SegmentSize: 512}, batches: 300, maxRecs: 4, maxData: 60, minSegments: 20},
		{name: "batches nearly a segment each", opts: Options{SegmentSize: 256}, batches: 40, maxRecs: 2, maxData: 110, minSegments: 10},
		{name: "empty records", opts: Options{SegmentSize: 128}, batches: 200, maxRecs: 8, maxData: 0, minSegments: 5},
		{name: "interval mode", opts: Options{SegmentSize: 1024, Sync: SyncInterval}, batches: 200, maxRecs: 3, maxData: 100, minSegments: 5},
		{name: "large records", opts: Options{SegmentSize: 1 << 20}, batches: 20, maxRecs: 3, maxData: 200 << 10, minSegments: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bs := genBatches(rand.New(rand.NewPCG(1, 2)), tc.batches, tc.maxRecs, tc.maxData)
			w := openT(t, dir, OSFS(), tc.opts)
			appendAll(t, w, bs)
			for i := 1; i < len(bs); i++ {
				if bs[i].end.Compare(bs[i-1].end) <= 0 {
					t.Fatalf("batch %d ends at %v, not after batch %d at %v", i, bs[i].end, i-1, bs[i-1].end)
				}
			}
			segs, size := w.Segments(), w.Size()
			if segs < tc.minSegments {
				t.Fatalf("%d segments, want at least %d", segs, tc.minSegments)
			}
			if got := value(w.m.records); int(got) != len(flatten(bs)) {
				t.Errorf("records_appended_total %v, want %d", got, len(flatten(bs)))
			}
			if got := value(w.m.batches); int(got) != len(bs) {
				t.Errorf("batches_total %v, want %d", got, len(bs))
			}
			if got := value(w.m.bytes); int64(got) != size {
				t.Errorf("sluice_wal_bytes %v, Size %d", got, size)
			}
			must(t, w.Close())

			w = openT(t, dir, OSFS(), tc.opts)
			if w.Segments() != segs || w.Size() != size {
				t.Fatalf("reopened: %d segments, %d bytes; before: %d, %d", w.Segments(), w.Size(), segs, size)
			}
			if got := value(w.m.corruptions); got != 0 {
				t.Fatalf("clean log counted %v corruptions", got)
			}
			diffReplay(t, replayAll(t, w, Position{}), flatten(bs))

			for _, k := range []int{1, len(bs) / 3, len(bs) / 2, len(bs) - 1, len(bs)} {
				diffReplay(t, replayAll(t, w, bs[k-1].end), flatten(bs[k:]))
			}

			// Appending after a reopen continues the log.
			more := genBatches(rand.New(rand.NewPCG(3, 4)), 10, tc.maxRecs, tc.maxData)
			appendAll(t, w, more)
			if more[0].end.Compare(bs[len(bs)-1].end) <= 0 {
				t.Fatalf("append after reopen ends at %v, before the old end %v", more[0].end, bs[len(bs)-1].end)
			}
			must(t, w.Close())
			w = openT(t, dir, OSFS(), tc.opts)
			diffReplay(t, replayAll(t, w, Position{}), flatten(append(bs, more...)))
		})
	}
}

func TestTornTail(t *testing.T) {
	cases := []struct {
		name string
		opts Options
	}{
		// The last batch follows others in its segment.
		{name: "mid segment", opts: Options{}},
		// The last batch is the first of a new segment: three 62-byte
		// frames fill a segment, and the last one fits only in an empty one.
		{name: "segment start", opts: Options{SegmentSize: 200}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			golden := t.TempDir()
			// Six 62-byte frames, then a 172-byte one.
			bs := make([]batch, 6)
			for i := range bs {
				bs[i].recs = []Record{{Type: 7, Data: bytes.Repeat([]byte{byte(i)}, 50)}}
			}
			last := batch{recs: []Record{{Type: 1, Data: []byte("first")}, {Type: 2, Data: bytes.Repeat([]byte("x"), 150)}, {Type: 3}}}
			bs = append(bs, last)
			w := openT(t, golden, OSFS(), tc.opts)
			appendAll(t, w, bs)
			must(t, w.Close())

			end := bs[len(bs)-1].end
			start := end.Offset - frameLen(last.recs)
			if tc.opts.SegmentSize != 0 && start != 0 {
				t.Fatalf("test setup: last batch starts at %d, want a segment start (positions %s)", start, posList(bs))
			}
			seg := SegmentName(end.Segment)
			survivors := flatten(bs[:len(bs)-1])

			for cut := start + 1; cut < end.Offset; cut++ {
				dir := copyDir(t, golden)
				must(t, os.Truncate(filepath.Join(dir, seg), cut))

				w := openT(t, dir, OSFS(), tc.opts)
				if got := value(w.m.corruptions); got != 1 {
					t.Fatalf("cut at %d: corruptions_repaired_total %v, want 1", cut, got)
				}
				diffReplay(t, replayAll(t, w, Position{}), survivors)

				next := batch{recs: []Record{{Type: 9, Data: []byte("after repair")}}}
				pos, err := w.Append(context.Background(), next.recs...)
				if err != nil {
					t.Fatalf("cut at %d: Append after repair: %v", cut, err)
				}
				if want := (Position{end.Segment, start + frameLen(next.recs)}); pos != want {
					t.Fatalf("cut at %d: Append after repair ends at %v, want %v", cut, pos, want)
				}
				next.end = pos
				must(t, w.Close())

				w = openT(t, dir, OSFS(), tc.opts)
				if got := value(w.m.corruptions); got != 0 {
					t.Fatalf("cut at %d: repaired log counted %v corruptions on reopen", cut, got)
				}
				diffReplay(t, replayAll(t, w, Position{}), append(survivors, flatten([]batch{next})...))
				must(t, w.Close())
			}
		})
	}
}

func TestCorruptBytes(t *testing.T) {
	// 30 batches of one 100-byte record: 112-byte frames, 4 per segment.
	const frame = 112
	opts := Options{SegmentSize: 4 * frame}
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		keep    int // batches that survive
		segs    int // segment files left
		repairs float64
	}{
		{
			name:   "byte flipped mid last segment",
			damage: flip(7, frame+50), // segment 7 holds batches 28 and 29
			keep:   29, segs: 8, repairs: 1,
		},
		{
			name:   "byte flipped in an earlier segment",
			damage: flip(2, frame+3), // batch index 9, in segment 2
			keep:   9, segs: 3, repairs: 1,
		},
		{
			name:   "frame type byte damaged",
			damage: flip(3, 0),
			keep:   12, segs: 4, repairs: 1,
		},
		{
			name:   "length field damaged",
			damage: flip(5, frame+2),
			keep:   21, segs: 6, repairs: 1,
		},
		{
			name: "garbage after the last batch",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, SegmentName(7)), os.O_WRONLY|os.O_APPEND, 0)
				must(t, err)
				_, err = f.Write([]byte("garbage that is no frame"))
				must(t, err)
				must(t, f.Close())
			},
			keep: 30, segs: 8, repairs: 1,
		},
		{
			// What a crash leaves of the zeros written ahead of the log
			// (zeroAhead): the end of the log, cut without counting a
			// repair.
			name: "zeros after the last batch",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, SegmentName(7)), os.O_WRONLY|os.O_APPEND, 0)
				must(t, err)
				_, err = f.Write(make([]byte, 4096))
				must(t, err)
				must(t, f.Close())
			},
			keep: 30, segs: 8, repairs: 0,
		},
		{
			name: "zeros then a byte after the last batch",
			damage: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, SegmentName(7)), os.O_WRONLY|os.O_APPEND, 0)
				must(t, err)
				_, err = f.Write(append(make([]byte, 4096), 1))
				must(t, err)
				must(t, f.Close())
			},
			keep: 30, segs: 8, repairs: 1,
		},
		{
			name: "middle segment missing",
			damage: func(t *testing.T, dir string) {
				must(t, os.Remove(filepath.Join(dir, SegmentName(4))))
			},
			keep: 16, segs: 4, repairs: 1,
		},
		{
			name: "first segment cut mid frame",
			damage: func(t *testing.T, dir string) {
				must(t, os.Truncate(filepath.Join(dir, SegmentName(0)), 50))
			},
			keep: 0, segs: 1, repairs: 1,
		},
		{
			name: "stray files are not segments",
			damage: func(t *testing.T, dir string) {
				for _, n := range []string{"1", "0000000x", "00000001.tmp", "checkpoint.junk"} {
					must(t, os.WriteFile(filepath.Join(dir, n), []byte("junk"), 0o666))
				}
			},
			keep: 30, segs: 8, repairs: 0,
		},
	}
	golden := t.TempDir()
	bs := make([]batch, 30)
	for i := range bs {
		bs[i].recs = []Record{{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 100)}}
		if frameLen(bs[i].recs) != frame {
			t.Fatalf("frame is %d bytes, want %d", frameLen(bs[i].recs), frame)
		}
	}
	w := openT(t, golden, OSFS(), opts)
	appendAll(t, w, bs)
	must(t, w.Close())
	if n := len(segmentFiles(t, golden)); n != 8 {
		t.Fatalf("test setup: %d segments, want 8", n)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, golden)
			tc.damage(t, dir)
			w := openT(t, dir, OSFS(), opts)
			if got := value(w.m.corruptions); got != tc.repairs {
				t.Fatalf("corruptions_repaired_total %v, want %v", got, tc.repairs)
			}
			if got := len(segmentFiles(t, dir)); got != tc.segs || w.Segments() != tc.segs {
				t.Fatalf("%d segment files (Segments %d), want %d", got, w.Segments(), tc.segs)
			}
			diffReplay(t, replayAll(t, w, Position{}), flatten(bs[:tc.keep]))

			next := []batch{{recs: []Record{{Type: 2, Data: []byte("next")}}}}
			appendAll(t, w, next)
			must(t, w.Close())
			w = openT(t, dir, OSFS(), opts)
			if got := value(w.m.corruptions); got != 0 {
				t.Fatalf("reopen after repair counted %v corruptions", got)
			}
			diffReplay(t, replayAll(t, w, Position{}), flatten(append(bs[:tc.keep:tc.keep], next...)))
		})
	}
}

// flip returns a damage function that inverts one byte of a segment.
func flip(seg int, off int64) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		name := filepath.Join(dir, SegmentName(seg))
		b, err := os.ReadFile(name)
		must(t, err)
		b[off] ^= 0xff
		must(t, os.WriteFile(name, b, 0o666))
	}
}

func TestAppendErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		recs []Record
		want error
	}{
		{name: "no records", ctx: context.Background(), want: ErrInvalidRecord},
		{name: "reserved type 0", ctx: context.Background(), recs: []Record{{Type: 1}, {Type: 0, Data: []byte("x")}}, want: ErrInvalidRecord},
		{name: "larger than a segment", ctx: context.Background(), recs: []Record{{Type: 1, Data: make([]byte, 1024)}}, want: ErrRecordTooLarge},
		{name: "context canceled", ctx: canceled, recs: []Record{{Type: 1}}, want: context.Canceled},
	}
	w := openT(t, t.TempDir(), OSFS(), Options{SegmentSize: 1024})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := w.Append(tc.ctx, tc.recs...); !errors.Is(err, tc.want) {
				t.Fatalf("Append: %v, want %v", err, tc.want)
			}
			if got := value(w.m.appendErrors); got != float64(i+1) {
				t.Fatalf("append_errors_total %v, want %d", got, i+1)
			}
		})
	}
	// A batch of exactly one segment fits.
	exact := []Record{{Type: 1, Data: make([]byte, 1024-frameHeaderSize-1-1-2)}}
	if n := frameLen(exact); n != 1024 {
		t.Fatalf("test setup: frame of %d bytes", n)
	}
	if _, err := w.Append(context.Background(), exact...); err != nil {
		t.Fatalf("Append of a segment-sized batch: %v", err)
	}
	if got := replayAll(t, w, Position{}); len(got) != 1 || got[0].pos != (Position{0, 1024}) {
		t.Fatalf("replay of a segment-sized batch: %+v", got)
	}
}

func TestClose(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	w, err := Open(dir, OSFS(), Options{Sync: SyncInterval}, reg, nil)
	must(t, err)
	if _, err := Open(t.TempDir(), OSFS(), Options{}, reg, nil); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("second Open on one registry: %v; want a registration error", err)
	}
	if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())
	must(t, w.Close())

	cases := []struct {
		name string
		call func() error
	}{
		{"Append", func() error { _, err := w.Append(context.Background(), Record{Type: 1}); return err }},
		{"Cut", func() error { _, err := w.Cut(); return err }},
		{"TruncateBefore", func() error { return w.TruncateBefore(Position{}) }},
		{"Replay", func() error { return w.Replay(Position{}, func(Position, Record) error { return nil }) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrClosed) {
				t.Fatalf("%s after Close: %v, want ErrClosed", tc.name, err)
			}
		})
	}

	// Close unregistered the metrics, so the registry takes a new WAL.
	w, err = Open(dir, OSFS(), Options{}, reg, nil)
	must(t, err)
	defer w.Close()
	if got := replayAll(t, w, Position{}); len(got) != 1 {
		t.Fatalf("replayed %d records after Close in interval mode, want 1", len(got))
	}
}

func TestOptions(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero value", Options{}, true},
		{"interval without interval", Options{Sync: SyncInterval}, true},
		{"segment too small", Options{SegmentSize: 10}, false},
		{"segment too large", Options{SegmentSize: 2 << 30}, false},
		{"unknown sync mode", Options{Sync: 7}, false},
		{"negative interval", Options{Sync: SyncInterval, SyncInterval: -time.Second}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Open(t.TempDir(), nil, tc.opts, nil, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("Open: %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				must(t, w.Close())
			}
		})
	}
	for _, s := range []string{"always", "interval"} {
		m, err := ParseSyncMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseSyncMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseSyncMode("sometimes"); err == nil {
		t.Error("ParseSyncMode accepted an unknown mode")
	}
}

func TestReplayCallbackError(t *testing.T) {
	w := openT(t, t.TempDir(), OSFS(), Options{})
	appendAll(t, w, genBatches(rand.New(rand.NewPCG(7, 8)), 5, 3, 10))
	stop := errors.New("stop")
	n := 0
	err := w.Replay(Position{}, func(Position, Record) error {
		n++
		if n == 4 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 4 {
		t.Fatalf("Replay returned %v after %d records, want the callback's error after 4", err, n)
	}
	// A position inside a batch is not a frame boundary.
	var cerr *CorruptionError
	if err := w.Replay(Position{0, 3}, func(Position, Record) error { return nil }); !errors.As(err, &cerr) {
		t.Fatalf("Replay from inside a batch: %v, want a *CorruptionError", err)
	}
}

// TestZeroAhead checks the zeros written ahead of the log: a segment
// being written is longer than its batches, a crash leaves the zeros for
// Open to cut without counting a repair, and rotation and Close leave
// segments that are exactly their batches.
func TestZeroAhead(t *testing.T) {
	fileSize := func(t *testing.T, dir string, seg int) int64 {
		t.Helper()
		st, err := os.Stat(filepath.Join(dir, SegmentName(seg)))
		must(t, err)
		return st.Size()
	}
	rng := rand.New(rand.NewPCG(7, 7))
	bs := genBatches(rng, 300, 3, 600)
	opts := Options{SegmentSize: 64 << 10}
	dir := t.TempDir()
	w := openT(t, dir, nil, opts)
	appendAll(t, w, bs)
	last := bs[len(bs)-1].end
	if last.Segment == 0 {
		t.Fatalf("test setup: the batches fit in one segment (end %v)", last)
	}
	if got := fileSize(t, dir, last.Segment); got != opts.SegmentSize {
		t.Fatalf("segment being written is %d bytes, want the segment size %d (zeros ahead of the log end %v)", got, opts.SegmentSize, last)
	}
	for seg := 0; seg < last.Segment; seg++ {
		if got := fileSize(t, dir, seg); got >= opts.SegmentSize || got == 0 {
			t.Fatalf("full segment %d is %d bytes, want its batches only", seg, got)
		}
	}

	crashed := copyDir(t, dir) // what a kill -9 leaves
	w.Close()
	if got := fileSize(t, dir, last.Segment); got != last.Offset {
		t.Fatalf("after Close the last segment is %d bytes, want %d", got, last.Offset)
	}

	w = openT(t, crashed, nil, opts)
	defer w.Close()
	if got := value(w.m.corruptions); got != 0 {
		t.Fatalf("reopening after a crash counted %v repairs, want 0", got)
	}
	if got := fileSize(t, crashed, last.Segment); got != last.Offset {
		t.Fatalf("after Open the last segment is %d bytes, want %d", got, last.Offset)
	}
	diffReplay(t, replayAll(t, w, Position{}), flatten(bs))
	more := genBatches(rng, 3, 2, 100)
	appendAll(t, w, more)
	diffReplay(t, replayAll(t, w, Position{}), flatten(append(bs, more...)))
}

package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCutTruncateCheckpoint walks the start-up and checkpoint cycle:
// append, Cut, checkpoint at the cut, TruncateBefore, reopen, replay from
// the checkpoint.
func TestCutTruncateCheckpoint(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 512}
	rng := rand.New(rand.NewPCG(9, 10))
	w := openT(t, dir, OSFS(), opts)

	before := genBatches(rng, 40, 3, 40)
	appendAll(t, w, before)
	segsBefore := w.Segments()
	if segsBefore < 4 {
		t.Fatalf("test setup: %d segments", segsBefore)
	}
	cut, err := w.Cut()
	must(t, err)
	if want := (Position{before[len(before)-1].end.Segment + 1, 0}); cut != want {
		t.Fatalf("Cut = %v, want %v", cut, want)
	}
	// Cutting an empty segment returns its start and creates nothing.
	again, err := w.Cut()
	must(t, err)
	if again != cut || w.Segments() != segsBefore+1 {
		t.Fatalf("second Cut = %v with %d segments, want %v with %d", again, w.Segments(), cut, segsBefore+1)
	}

	after := genBatches(rng, 20, 3, 40)
	appendAll(t, w, after)
	if after[0].end.Segment != cut.Segment {
		t.Fatalf("first Append after Cut ends at %v, want segment %d", after[0].end, cut.Segment)
	}

	state := []byte("aggregate state as of the cut")
	must(t, WriteCheckpoint(dir, OSFS(), cut, state))
	sizeBefore := w.Size()
	must(t, w.TruncateBefore(cut))
	if w.Segments() != len(segmentFiles(t, dir)) || w.Size() >= sizeBefore {
		t.Fatalf("after TruncateBefore: Segments %d, %d files, Size %d (was %d)", w.Segments(), len(segmentFiles(t, dir)), w.Size(), sizeBefore)
	}
	if first := segmentFiles(t, dir)[0]; first != SegmentName(cut.Segment) {
		t.Fatalf("first segment after TruncateBefore(%v) is %s", cut, first)
	}
	if got, want := value(w.m.segments), float64(w.Segments()); got != want {
		t.Fatalf("sluice_wal_segments %v, want %v", got, want)
	}
	must(t, w.Close())

	w = openT(t, dir, OSFS(), opts)
	pos, data, ok, err := ReadCheckpoint(dir, OSFS())
	if err != nil || !ok || pos != cut || !bytes.Equal(data, state) {
		t.Fatalf("ReadCheckpoint = %v, %q, %v, %v; want %v, %q", pos, data, ok, err, cut, state)
	}
	diffReplay(t, replayAll(t, w, pos), flatten(after))

	// TruncateBefore never deletes the segment being written.
	must(t, w.TruncateBefore(Position{Segment: 1 << 30}))
	if w.Segments() != 1 || len(segmentFiles(t, dir)) != 1 {
		t.Fatalf("TruncateBefore past the end left %d segments, want the current one", w.Segments())
	}
	appendAll(t, w, after[:1])
}

func TestCheckpointFiles(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantPos Position
		want    string // data; "" with ok=false
		skipped int
	}{
		{
			name: "none",
		},
		{
			name: "newest wins, older removed",
			setup: func(t *testing.T, dir string) {
				must(t, WriteCheckpoint(dir, OSFS(), Position{1, 0}, []byte("one")))
				must(t, WriteCheckpoint(dir, OSFS(), Position{3, 0}, []byte("three")))
				if n := len(checkpointFiles(t, dir)); n != 1 {
					t.Fatalf("%d checkpoint files after two writes, want 1", n)
				}
			},
			wantPos: Position{3, 0}, want: "three",
		},
		{
			name: "same segment overwritten",
			setup: func(t *testing.T, dir string) {
				must(t, WriteCheckpoint(dir, OSFS(), Position{2, 0}, []byte("old")))
				must(t, WriteCheckpoint(dir, OSFS(), Position{2, 100}, []byte("new")))
			},
			wantPos: Position{2, 100}, want: "new",
		},
		{
			name: "empty data",
			setup: func(t *testing.T, dir string) {
				must(t, WriteCheckpoint(dir, OSFS(), Position{0, 0}, nil))
			},
			want: "", wantPos: Position{0, 0},
		},
		{
			name: "corrupt newest falls back to the previous",
			setup: func(t *testing.T, dir string) {
				writeBoth(t, dir)
				damage(t, filepath.Join(dir, checkpointName(3)), func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
			},
			wantPos: Position{1, 0}, want: "one", skipped: 1,
		},
		{
			name: "truncated newest falls back to the previous",
			setup: func(t *testing.T, dir string) {
				writeBoth(t, dir)
				damage(t, filepath.Join(dir, checkpointName(3)), func(b []byte) []byte { return b[:len(b)-1] })
			},
			wantPos: Position{1, 0}, want: "one", skipped: 1,
		},
		{
			name: "all corrupt",
			setup: func(t *testing.T, dir string) {
				writeBoth(t, dir)
				for _, s := range []int{1, 3} {
					damage(t, filepath.Join(dir, checkpointName(s)), func(b []byte) []byte { return b[:10] })
				}
			},
			skipped: 2,
		},
		{
			name: "renamed to another segment",
			setup: func(t *testing.T, dir string) {
				must(t, WriteCheckpoint(dir, OSFS(), Position{1, 0}, []byte("one")))
				must(t, os.Rename(filepath.Join(dir, checkpointName(1)), filepath.Join(dir, checkpointName(5))))
			},
			skipped: 1,
		},
		{
			name: "leftover checkpoint.tmp ignored",
			setup: func(t *testing.T, dir string) {
				must(t, WriteCheckpoint(dir, OSFS(), Position{1, 0}, []byte("one")))
				// A crash before the rename: a complete but unrenamed
				// checkpoint for a later position, and garbage.
				c, err := CreateCheckpoint(dir, OSFS(), Position{4, 0})
				must(t, err)
				_, err = c.Write([]byte("four"))
				must(t, err)
				must(t, c.finish())
			},
			wantPos: Position{1, 0}, want: "one",
		},
		{
			name: "only a garbage checkpoint.tmp",
			setup: func(t *testing.T, dir string) {
				must(t, os.WriteFile(filepath.Join(dir, checkpointTmp), []byte("partial"), 0o666))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			cp, ok, err := LoadCheckpoint(dir, OSFS())
			must(t, err)
			wantOK := tc.want != "" || tc.wantPos != (Position{}) || tc.name == "empty data"
			if ok != wantOK || cp.Pos != tc.wantPos || string(cp.Data) != tc.want {
				t.Fatalf("LoadCheckpoint = %v, %q, ok=%v; want %v, %q, ok=%v", cp.Pos, cp.Data, ok, tc.wantPos, tc.want, wantOK)
			}
			if len(cp.Skipped) != tc.skipped {
				t.Fatalf("skipped %v, want %d", cp.Skipped, tc.skipped)
			}
			for _, e := range cp.Skipped {
				var ce *CheckpointError
				if !errors.As(e, &ce) {
					t.Fatalf("skipped error %v is not a *CheckpointError", e)
				}
			}
			pos, data, ok2, err := ReadCheckpoint(dir, OSFS())
			if err != nil || ok2 != ok || pos != cp.Pos || !bytes.Equal(data, cp.Data) {
				t.Fatalf("ReadCheckpoint disagrees with LoadCheckpoint: %v %q %v %v", pos, data, ok2, err)
			}
		})
	}
	if _, ok, err := LoadCheckpoint(filepath.Join(t.TempDir(), "missing"), OSFS()); ok || err != nil {
		t.Fatalf("LoadCheckpoint of a missing dir: ok=%v err=%v; want none, nil", ok, err)
	}
}

// writeBoth leaves checkpoints for segments 1 and 3, as a crash between
// WriteCheckpoint's rename and its removal of the old one would.
func writeBoth(t *testing.T, dir string) {
	must(t, WriteCheckpoint(dir, OSFS(), Position{1, 0}, []byte("one")))
	old, err := os.ReadFile(filepath.Join(dir, checkpointName(1)))
	must(t, err)
	must(t, WriteCheckpoint(dir, OSFS(), Position{3, 0}, []byte("three")))
	must(t, os.WriteFile(filepath.Join(dir, checkpointName(1)), old, 0o666))
}

func damage(t *testing.T, name string, f func([]byte) []byte) {
	b, err := os.ReadFile(name)
	must(t, err)
	must(t, os.WriteFile(name, f(b), 0o666))
}

func checkpointFiles(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	must(t, err)
	var names []string
	for _, e := range entries {
		if len(e.Name()) > len(checkpointPrefix) && e.Name()[:len(checkpointPrefix)] == checkpointPrefix {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestCheckpointGuidesOpen: segments a checkpoint made redundant are not
// repaired (damage there must not cost newer data), and the append
// position never falls behind the checkpoint.
func TestCheckpointGuidesOpen(t *testing.T) {
	const frame = 112 // one 100-byte record
	opts := Options{SegmentSize: 4 * frame}
	build := func(t *testing.T) (string, []batch, Position) {
		dir := t.TempDir()
		w := openT(t, dir, OSFS(), opts)
		bs := make([]batch, 10)
		for i := range bs {
			bs[i].recs = []Record{{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 100)}}
		}
		appendAll(t, w, bs[:6])
		cut, err := w.Cut()
		must(t, err)
		appendAll(t, w, bs[6:])
		must(t, w.Close())
		// A crash before TruncateBefore: segments 0 and 1 are still there.
		must(t, WriteCheckpoint(dir, OSFS(), cut, []byte("state")))
		return dir, bs, cut
	}

	t.Run("damage before the checkpoint is left alone", func(t *testing.T) {
		dir, bs, cut := build(t)
		flip(0, 5)(t, dir)
		w := openT(t, dir, OSFS(), opts)
		if got := value(w.m.corruptions); got != 0 {
			t.Fatalf("corruptions_repaired_total %v, want 0", got)
		}
		diffReplay(t, replayAll(t, w, cut), flatten(bs[6:]))
		var cerr *CorruptionError
		if err := w.Replay(Position{}, func(Position, Record) error { return nil }); !errors.As(err, &cerr) {
			t.Fatalf("Replay through the damaged old segment: %v, want a *CorruptionError", err)
		}
	})

	t.Run("log lost past the checkpoint", func(t *testing.T) {
		dir, _, cut := build(t)
		for _, name := range segmentFiles(t, dir) {
			if idx, _ := ParseSegmentName(name); idx >= cut.Segment {
				must(t, os.Remove(filepath.Join(dir, name)))
			}
		}
		w := openT(t, dir, OSFS(), opts)
		pos, err := w.Append(context.Background(), Record{Type: 5, Data: []byte("new")})
		must(t, err)
		if pos.Compare(cut) <= 0 {
			t.Fatalf("Append after losing the log ends at %v, not after the checkpoint %v", pos, cut)
		}
		got := replayAll(t, w, cut)
		if len(got) != 1 || string(got[0].rec.Data) != "new" {
			t.Fatalf("Replay(checkpoint) = %+v, want the new record", got)
		}
	})

	t.Run("corruption cuts the log before the checkpoint's offset", func(t *testing.T) {
		dir := t.TempDir()
		w := openT(t, dir, OSFS(), opts)
		bs := make([]batch, 3)
		for i := range bs {
			bs[i].recs = []Record{{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 100)}}
		}
		appendAll(t, w, bs)
		must(t, w.Close())
		must(t, WriteCheckpoint(dir, OSFS(), bs[2].end, []byte("state")))
		flip(0, frame+1)(t, dir) // batch 1: the log now ends at bs[0].end
		w = openT(t, dir, OSFS(), opts)
		pos, err := w.Append(context.Background(), Record{Type: 5, Data: []byte("new")})
		must(t, err)
		if pos.Compare(bs[2].end) <= 0 {
			t.Fatalf("Append ends at %v, not after the checkpoint %v", pos, bs[2].end)
		}
		if got := replayAll(t, w, bs[2].end); len(got) != 1 {
			t.Fatalf("Replay(checkpoint) = %+v, want the new record", got)
		}
	})
}

// TestTruncateBeforeOrder: segments go oldest first, so a failure leaves
// a contiguous log.
func TestTruncateBeforeOrder(t *testing.T) {
	dir := t.TempDir()
	ffs := &removeFailFS{FS: OSFS(), fail: SegmentName(2)}
	w := openT(t, dir, ffs, Options{SegmentSize: 128})
	appendAll(t, w, genBatches(rand.New(rand.NewPCG(1, 1)), 30, 1, 40))
	if w.Segments() < 5 {
		t.Fatalf("test setup: %d segments", w.Segments())
	}
	if err := w.TruncateBefore(Position{Segment: 4}); err == nil {
		t.Fatal("TruncateBefore succeeded despite a failing Remove")
	}
	files := segmentFiles(t, dir)
	if files[0] != SegmentName(2) || w.Segments() != len(files) {
		t.Fatalf("after a failed TruncateBefore: files %v, Segments %d; want segment 2 first", files, w.Segments())
	}
	idx := make([]int, len(files))
	for i, f := range files {
		idx[i], _ = ParseSegmentName(f)
	}
	if !slices.IsSorted(idx) || idx[len(idx)-1]-idx[0] != len(idx)-1 {
		t.Fatalf("segments not contiguous: %v", idx)
	}
}

type removeFailFS struct {
	FS
	fail string
}

func (f *removeFailFS) Remove(name string) error {
	if filepath.Base(name) == f.fail {
		return errInjected
	}
	return f.FS.Remove(name)
}

// TestCheckpointWriterInParts writes a checkpoint of several buffers' worth
// in parts of random sizes and expects the file WriteCheckpoint's format
// describes (FORMAT.md), byte for byte, and the data back.
func TestCheckpointWriterInParts(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 3*checkpointBuffer+12345)
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	pos := Position{Segment: 7, Offset: 4096}
	c, err := CreateCheckpoint(dir, OSFS(), pos)
	must(t, err)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(300_000))
		_, err := c.Write(rest[:n])
		must(t, err)
		rest = rest[n:]
	}
	must(t, c.Commit())

	want := []byte("SLCP\x01")
	want = binary.BigEndian.AppendUint64(want, 7)
	want = binary.BigEndian.AppendUint64(want, 4096)
	want = binary.BigEndian.AppendUint64(want, uint64(len(data)))
	want = append(want, data...)
	want = binary.BigEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	got, err := os.ReadFile(filepath.Join(dir, "checkpoint.00000007"))
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatalf("checkpoint file: %d bytes, want %d as FORMAT.md lays it out", len(got), len(want))
	}
	cp, ok, err := LoadCheckpoint(dir, OSFS())
	must(t, err)
	if !ok || cp.Pos != pos || !bytes.Equal(cp.Data, data) {
		t.Fatalf("LoadCheckpoint: ok=%v pos=%v, %d bytes; want %v, %d bytes", ok, cp.Pos, len(cp.Data), pos, len(data))
	}
}

// tmpFailFS fails writes to checkpoint.tmp once it holds limit bytes (a
// full disk), and its fsync if syncErr is set.
type tmpFailFS struct {
	FS
	limit   int64
	syncErr error
}

func (f tmpFailFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || filepath.Base(name) != checkpointTmp {
		return file, err
	}
	return &tmpFailFile{File: file, fs: f}, nil
}

type tmpFailFile struct {
	File
	fs      tmpFailFS
	written int64
}

func (f *tmpFailFile) Write(b []byte) (int, error) {
	if f.written+int64(len(b)) > f.fs.limit {
		return 0, errors.New("no space left on device")
	}
	f.written += int64(len(b))
	return f.File.Write(b)
}

func (f *tmpFailFile) Sync() error {
	if f.fs.syncErr != nil {
		return f.fs.syncErr
	}
	return f.File.Sync()
}

// TestCheckpointWriterFailures: a checkpoint that cannot be written whole
// is never committed; the previous one stands and no checkpoint.tmp is
// left.
func TestCheckpointWriterFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fs      FS
		abort   bool
		wantErr string
	}{
		{name: "disk full while writing", fs: tmpFailFS{FS: OSFS(), limit: checkpointBuffer + 100}, wantErr: "no space left"},
		{name: "disk full once the data is written", fs: tmpFailFS{FS: OSFS(), limit: checkpointHeaderSize + 2*checkpointBuffer}, wantErr: "no space left"},
		{name: "fsync fails", fs: tmpFailFS{FS: OSFS(), limit: 1 << 40, syncErr: errors.New("input/output error")}, wantErr: "input/output error"},
		{name: "aborted", fs: OSFS(), abort: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, WriteCheckpoint(dir, OSFS(), Position{1, 0}, []byte("one")))
			c, err := CreateCheckpoint(dir, tc.fs, Position{2, 0})
			must(t, err)
			part := bytes.Repeat([]byte("x"), checkpointBuffer/2)
			for range 4 {
				_, _ = c.Write(part)
			}
			if tc.abort {
				c.Abort()
			} else if err := c.Commit(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Commit = %v, want an error with %q", err, tc.wantErr)
			}
			cp, ok, err := LoadCheckpoint(dir, OSFS())
			must(t, err)
			if !ok || cp.Pos != (Position{1, 0}) || string(cp.Data) != "one" {
				t.Fatalf("after a failed checkpoint: ok=%v %v %q, want the previous one", ok, cp.Pos, cp.Data)
			}
			if _, err := os.Stat(filepath.Join(dir, checkpointTmp)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("checkpoint.tmp left behind: %v", err)
			}
			if err := c.Commit(); err == nil {
				t.Fatal("a second Commit succeeded")
			}
		})
	}
}

// TestCorruptCheckpointIsCounted: a checkpoint that fails its check is
// counted in sluice_wal_corruptions_repaired_total when the log opens, as
// any other damage is: with no older checkpoint left, the state it held is
// lost, which an alert on that counter must see.
func TestCorruptCheckpointIsCounted(t *testing.T) {
	dir := t.TempDir()
	w := openT(t, dir, OSFS(), Options{})
	appendAll(t, w, []batch{{recs: []Record{{Type: 1, Data: []byte("x")}}}})
	cut, err := w.Cut()
	must(t, err)
	must(t, w.Close())
	must(t, WriteCheckpoint(dir, OSFS(), cut, []byte("the aggregate state")))
	names := checkpointFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("checkpoint files %v", names)
	}
	p := filepath.Join(dir, names[0])
	b, err := os.ReadFile(p)
	must(t, err)
	b[len(b)/2] ^= 0xff
	must(t, os.WriteFile(p, b, 0o666))
	w = openT(t, dir, OSFS(), Options{})
	if got := value(w.m.corruptions); got != 1 {
		t.Fatalf("corruptions_repaired_total %v, want 1 for the corrupt checkpoint", got)
	}
}

package wal

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// cutFS records the sizes segment files are truncated to, and which are
// removed, per file name.
type cutFS struct {
	FS
	mu      sync.Mutex
	cuts    map[string][]int64
	removed []string
}

func (c *cutFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c, name: filepath.Base(name)}, nil
}

func (c *cutFS) Remove(name string) error {
	c.mu.Lock()
	c.removed = append(c.removed, filepath.Base(name))
	c.mu.Unlock()
	return c.FS.Remove(name)
}

type cutFile struct {
	File
	fs   *cutFS
	name string
}

func (f *cutFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	f.fs.cuts[f.name] = append(f.fs.cuts[f.name], size)
	f.fs.mu.Unlock()
	return f.File.Truncate(size)
}

// fillSegments appends 64 KiB records until the log has n segments, and
// returns what it appended.
func fillSegments(t *testing.T, w *WAL, n int) []batch {
	t.Helper()
	var bs []batch
	for i := 0; w.Segments() < n; i++ {
		b := []batch{{recs: []Record{{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 64<<10)}}}}
		appendAll(t, w, b)
		bs = append(bs, b...)
	}
	return bs
}

// TestTruncateBeforeRemovesInChunks checks that a segment the checkpoint
// made redundant is cut removeChunk at a time from its end before it is
// unlinked, so that its blocks are freed (and, with discard, trimmed) in
// pieces an fsync of the log can wait behind, not all at once.
func TestTruncateBeforeRemovesInChunks(t *testing.T) {
	cfs := &cutFS{FS: OSFS(), cuts: map[string][]int64{}}
	dir := t.TempDir()
	w := openT(t, dir, cfs, Options{SegmentSize: 3*removeChunk + 1<<20})
	fillSegments(t, w, 3)
	sizes := []int64{fileSizeOf(t, dir, 0), fileSizeOf(t, dir, 1)}
	if sizes[0] <= 3*removeChunk {
		t.Fatalf("test setup: segment 0 is %d bytes", sizes[0])
	}
	cfs.mu.Lock()
	clear(cfs.cuts) // closing a segment cuts the zeros after its data
	cfs.mu.Unlock()
	must(t, w.TruncateBefore(Position{Segment: 2}))

	for seg, size := range sizes {
		name := SegmentName(seg)
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("segment %s after TruncateBefore: %v, want it removed", name, err)
		}
		var want []int64
		for s := size - removeChunk; s > 0; s -= removeChunk {
			want = append(want, s)
		}
		if got := cfs.cuts[name]; !slices.Equal(got, want) {
			t.Fatalf("segment %s (%d bytes) was cut to %v before its removal, want %v", name, size, got, want)
		}
	}
	if got := w.Segments(); got != 1 {
		t.Fatalf("%d segments after TruncateBefore, want 1", got)
	}
}

// TestTruncateBeforeRemovesWhatItCannotCut checks that a segment whose
// cutting fails is still removed.
func TestTruncateBeforeRemovesWhatItCannotCut(t *testing.T) {
	ffs := &faultFS{FS: OSFS()}
	dir := t.TempDir()
	w := openT(t, dir, ffs, Options{SegmentSize: 2*removeChunk + 1<<20})
	fillSegments(t, w, 2)
	ffs.arm(fault{op: "truncate", err: errInjected})
	must(t, w.TruncateBefore(Position{Segment: 1}))
	if _, err := os.Stat(filepath.Join(dir, SegmentName(0))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("segment 0 after TruncateBefore with a failing truncate: %v, want it removed", err)
	}
}

// TestSegmentCutShortByACrashDuringItsRemoval checks that a crash while a
// segment before the checkpoint was being cut (the segment left shorter,
// ending mid-frame) is harmless: the log opens without a repair, replays
// from the checkpoint as before, and the next truncation removes the
// segment.
func TestSegmentCutShortByACrashDuringItsRemoval(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	dir := t.TempDir()
	opts := Options{SegmentSize: 64 << 10}
	w := openT(t, dir, OSFS(), opts)
	before := genBatches(rng, 150, 3, 2000)
	appendAll(t, w, before)
	if w.Segments() < 3 {
		t.Fatalf("test setup: %d segments", w.Segments())
	}
	cp := before[len(before)-1].end
	// The checkpoint is stored, and the crash comes while segment 0 is
	// being cut: it ends in the middle of a frame.
	must(t, WriteCheckpoint(dir, OSFS(), cp, []byte("state")))
	after := genBatches(rng, 20, 3, 2000)
	appendAll(t, w, after)
	must(t, w.Close())
	must(t, os.Truncate(filepath.Join(dir, SegmentName(0)), fileSizeOf(t, dir, 0)/2+3))

	w = openT(t, dir, OSFS(), opts)
	if got := value(w.m.corruptions); got != 0 {
		t.Fatalf("sluice_wal_corruptions_repaired_total %v after reopening, want 0", got)
	}
	diffReplay(t, replayAll(t, w, cp), flatten(after))
	must(t, w.TruncateBefore(cp))
	if _, err := os.Stat(filepath.Join(dir, SegmentName(0))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("segment 0 after the next truncation: %v, want it removed", err)
	}
	appendAll(t, w, genBatches(rng, 5, 3, 2000))
}

package wal

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// holeFrom returns where the first hole at or after off starts in the
// file at path (its size if there is none), and its size.
func holeFrom(t *testing.T, path string, off int64) (hole, size int64) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	st, err := f.Stat()
	must(t, err)
	if off >= st.Size() {
		return st.Size(), st.Size()
	}
	hole, err = f.Seek(off, unix.SEEK_HOLE)
	must(t, err)
	return hole, st.Size()
}

// TestBackgroundZeroFillAfterRollback checks that after a failed append
// truncates the segment back to its last batch (and with it the zeros
// ahead), the filler writes the zeros again from the log's end: the
// segment is zero-filled to its full size with no hole after the log,
// so that the appends after the failure still overwrite bytes already
// in the file. A filler that kept its old idea of how far the zeros go
// would leave a hole where they were, and every append into it would
// allocate blocks again.
func TestBackgroundZeroFillAfterRollback(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	fsys := &faultFS{FS: OSFS(), createdOnly: true}
	opts := Options{SegmentSize: 8 << 20, BackgroundZeroFill: true}
	dir := t.TempDir()
	w := openT(t, dir, fsys, opts)
	defer w.Close()
	path := filepath.Join(dir, SegmentName(0))
	before := genBatches(rng, 100, 3, 2000)
	appendAll(t, w, before)
	end := before[len(before)-1].end.Offset
	eventually(t, "the filler did not zero-fill ahead", func() bool {
		hole, size := holeFrom(t, path, end)
		return size >= end+fillLead && hole == size
	})
	fsys.arm(fault{op: "sync", short: -1, err: errInjected})
	if _, err := w.Append(context.Background(), Record{Type: 9, Data: make([]byte, 5000)}); err == nil {
		t.Fatal("Append with a failing fsync succeeded")
	}
	if _, size := holeFrom(t, path, end); size != end {
		t.Fatalf("after the rollback the segment is %d bytes, want %d (its last batch)", size, end)
	}
	after := genBatches(rng, 20, 3, 2000)
	appendAll(t, w, after)
	end = after[len(after)-1].end.Offset
	eventually(t, "the filler did not zero-fill ahead of the log again, without a hole", func() bool {
		hole, size := holeFrom(t, path, end)
		return size >= end+fillLead && hole == size
	})
}

package wal

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentBelow counts the pages of the file at path before offset end
// that are in the page cache (mincore(2) over a read-only mapping).
func residentBelow(t *testing.T, path string, end int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (int64(len(m))+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for i, v := range vec {
		if int64(i)*page < end && v&1 != 0 {
			n++
		}
	}
	return n
}

// TestSyncedLogLeavesThePageCache: what is fsynced stops occupying the page
// cache a dropChunk at a time, in both sync modes, and a full segment
// leaves it whole when the log moves on; the log still reads back.
func TestSyncedLogLeavesThePageCache(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{name: "fsync always", opts: Options{SegmentSize: 8 << 20}},
		{name: "fsync interval", opts: Options{SegmentSize: 8 << 20, Sync: SyncInterval, SyncInterval: 20 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := Open(dir, OSFS(), tc.opts, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := make([]byte, 60<<10)
			for i := range rec {
				rec[i] = byte(i)
			}
			var pos Position
			for range 200 { // 12 MiB: a full segment and part of the next
				if pos, err = w.Append(context.Background(), Record{Type: 1, Data: rec}); err != nil {
					t.Fatal(err)
				}
			}
			if pos.Segment != 1 {
				t.Fatalf("log ends at %v, want it in the second segment", pos)
			}
			if tc.opts.Sync == SyncInterval {
				time.Sleep(200 * time.Millisecond) // a few fsyncs of the loop
			}
			// Nothing of the full segment stays; of the one being written,
			// nothing before the last dropChunk boundary under the synced
			// end (here the end of the log).
			full := residentBelow(t, filepath.Join(dir, SegmentName(0)), 1<<62)
			boundary := pos.Offset &^ (dropChunk - 1)
			live := residentBelow(t, filepath.Join(dir, SegmentName(1)), boundary)
			if boundary == 0 {
				t.Fatalf("the test wrote too little: log end %v", pos)
			}
			if full != 0 || live != 0 {
				t.Errorf("resident pages: %d of the full segment, %d of the first %d bytes of the segment being written; want none", full, live, boundary)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w, err = Open(dir, OSFS(), tc.opts, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			n := 0
			if err := w.Replay(Position{}, func(_ Position, r Record) error {
				if len(r.Data) != len(rec) || r.Data[len(rec)-1] != rec[len(rec)-1] {
					t.Fatalf("record %d: %d bytes, last %d", n, len(r.Data), r.Data[len(r.Data)-1])
				}
				n++
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if n != 200 {
				t.Errorf("replayed %d records, want 200", n)
			}
		})
	}
}

package wal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// TestFaultInjection fails one Append through a wrapping FS and checks
// that the error reaches the caller, that none of the batch is replayed
// after a reopen, and that the WAL stays usable exactly when it could
// roll the segment back.
func TestFaultInjection(t *testing.T) {
	// Five batches of one 100-byte record (112-byte frames) fill a segment
	// when segments are 560 bytes, so the next Append has to rotate.
	const frame = 112
	cases := []struct {
		name    string
		faults  []fault
		rotate  bool  // the failing Append starts a new segment
		want    error // errors.Is target; nil: any error
		sticky  bool  // the WAL refuses Appends afterwards
		repairs float64
	}{
		{name: "short write", faults: []fault{{op: "write", short: -1}}, want: io.ErrShortWrite},
		{name: "write error", faults: []fault{{op: "write", err: syscall.EIO}}, want: syscall.EIO},
		{name: "disk full mid write", faults: []fault{{op: "write", short: 40, err: syscall.ENOSPC}}, want: syscall.ENOSPC},
		{name: "fsync error", faults: []fault{{op: "sync", err: syscall.EIO}}, want: syscall.EIO},
		{name: "disk full in a new segment", rotate: true, faults: []fault{{op: "write", short: -1, err: syscall.ENOSPC}}, want: syscall.ENOSPC},
		{name: "segment creation fails", rotate: true, faults: []fault{{op: "create", err: syscall.ENOSPC}}, want: syscall.ENOSPC},
		{name: "directory fsync fails", rotate: true, faults: []fault{{op: "syncdir", err: syscall.EIO}}, want: syscall.EIO},
		{
			name:   "rollback truncation fails",
			faults: []fault{{op: "write", short: -1, err: syscall.ENOSPC}, {op: "truncate", err: syscall.EIO}},
			want:   syscall.ENOSPC, sticky: true,
			repairs: 1, // the half-written frame is a torn tail on reopen
		},
		{
			name:   "fsync of the rollback fails",
			faults: []fault{{op: "write", short: 20, err: syscall.EIO}, {op: "sync", err: syscall.EIO}},
			want:   syscall.EIO, sticky: true,
			repairs: 0, // the truncation itself went through
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := &faultFS{FS: OSFS()}
			opts := Options{SegmentSize: 1 << 20}
			if tc.rotate {
				opts.SegmentSize = 5 * frame
			}
			good := make([]batch, 5)
			for i := range good {
				good[i].recs = []Record{{Type: 1, Data: bytes.Repeat([]byte{byte(i)}, 100)}}
			}
			w := openT(t, dir, ffs, opts)
			appendAll(t, w, good)
			if tc.rotate && w.Segments() != 1 {
				t.Fatalf("test setup: %d segments before the failing append", w.Segments())
			}

			ffs.arm(tc.faults...)
			failed := []Record{{Type: 2, Data: []byte("must not survive")}, {Type: 3, Data: bytes.Repeat([]byte("y"), 200)}}
			_, err := w.Append(context.Background(), failed...)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Append: %v, want %v", err, tc.want)
			}
			if got := value(w.m.appendErrors); got != 1 {
				t.Fatalf("append_errors_total %v, want 1", got)
			}
			if (w.Err() != nil) != tc.sticky {
				t.Fatalf("Err() = %v, want sticky=%v", w.Err(), tc.sticky)
			}

			next := []batch{{recs: []Record{{Type: 4, Data: []byte("after the fault")}}}}
			if tc.sticky {
				if _, err := w.Append(context.Background(), next[0].recs...); err == nil {
					t.Fatal("Append after a failed rollback succeeded; want the sticky error")
				}
				next = nil
			} else {
				appendAll(t, w, next)
				wantSeg := 0
				if tc.rotate {
					wantSeg = 1
				}
				if next[0].end.Segment != wantSeg {
					t.Fatalf("Append after the fault ends at %v, want segment %d", next[0].end, wantSeg)
				}
			}
			w.Close()

			w = openT(t, dir, OSFS(), opts)
			if got := value(w.m.corruptions); got != tc.repairs {
				t.Fatalf("reopen: corruptions_repaired_total %v, want %v", got, tc.repairs)
			}
			diffReplay(t, replayAll(t, w, Position{}), flatten(append(good, next...)))
		})
	}
}

// TestGroupFailure checks that a failed fsync reaches every appender
// whose batch was in it, and only those.
func TestGroupFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		ffs := &faultFS{FS: OSFS()}
		w := openT(t, dir, ffs, Options{})

		// The first appender blocks inside its fsync, holding the token,
		// while three more queue up behind it as one group.
		gate := make(chan struct{})
		ffs.mu.Lock()
		ffs.onSync = func() { <-gate }
		ffs.mu.Unlock()

		type result struct {
			name string
			pos  Position
			err  error
		}
		results := make(chan result, 4)
		appendAsync := func(name string) {
			go func() {
				pos, err := w.Append(context.Background(), Record{Type: 1, Data: []byte(name)})
				results <- result{name, pos, err}
			}()
		}
		appendAsync("leader")
		synctest.Wait()
		for _, n := range []string{"b", "c", "d"} {
			appendAsync(n)
		}
		synctest.Wait()
		w.mu.Lock()
		queued := len(w.queue)
		w.mu.Unlock()
		if got := queued; got != 1 {
			t.Fatalf("%d groups queued, want the three followers in one", got)
		}

		ffs.arm(fault{op: "sync", err: syscall.EIO}) // the group's fsync
		ffs.mu.Lock()
		ffs.onSync = nil
		ffs.mu.Unlock()
		close(gate)

		var ok, failed []string
		for range 4 {
			r := <-results
			if r.err != nil {
				failed = append(failed, r.name)
			} else {
				ok = append(ok, r.name)
			}
		}
		if len(ok) != 1 || ok[0] != "leader" || len(failed) != 3 {
			t.Fatalf("succeeded %v, failed %v; want only the leader to succeed", ok, failed)
		}
		if w.Err() != nil {
			t.Fatalf("WAL unusable after a rolled-back fsync error: %v", w.Err())
		}
		if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("e")}); err != nil {
			t.Fatalf("Append after the failed group: %v", err)
		}
		var names []string
		must(t, w.Replay(Position{}, func(_ Position, r Record) error {
			names = append(names, string(r.Data))
			return nil
		}))
		if len(names) != 2 || names[0] != "leader" || names[1] != "e" {
			t.Fatalf("replayed %q, want [leader e]", names)
		}
	})
}

// TestIntervalMode checks on virtual time that SyncInterval acknowledges
// without fsync and fsyncs once per interval.
func TestIntervalMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := openT(t, t.TempDir(), OSFS(), Options{Sync: SyncInterval, SyncInterval: 5 * time.Second})
		base := value(w.m.fsyncs)
		for i := range 10 {
			if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte{byte(i)}}); err != nil {
				t.Fatal(err)
			}
		}
		if got := value(w.m.fsyncs) - base; got != 0 {
			t.Fatalf("%v fsyncs before the interval passed, want 0", got)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := value(w.m.fsyncs) - base; got != 1 {
			t.Fatalf("%v fsyncs after one interval, want 1", got)
		}
		// Nothing new was written: the next tick does not fsync.
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := value(w.m.fsyncs) - base; got != 1 {
			t.Fatalf("%v fsyncs after an idle interval, want 1", got)
		}
		if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("last")}); err != nil {
			t.Fatal(err)
		}
		must(t, w.Close())
		if got := value(w.m.fsyncs) - base; got != 2 {
			t.Fatalf("%v fsyncs after Close, want 2 (Close fsyncs)", got)
		}
	})
}

// TestIntervalSyncFailureIsSticky: a failed background fsync covers
// acknowledged appends, so the WAL stops acknowledging.
func TestIntervalSyncFailureIsSticky(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ffs := &faultFS{FS: OSFS()}
		w := openT(t, t.TempDir(), ffs, Options{Sync: SyncInterval, SyncInterval: time.Second})
		if _, err := w.Append(context.Background(), Record{Type: 1}); err != nil {
			t.Fatal(err)
		}
		ffs.arm(fault{op: "sync", err: syscall.EIO})
		time.Sleep(time.Second)
		synctest.Wait()
		if !errors.Is(w.Err(), syscall.EIO) {
			t.Fatalf("Err() = %v after a failed background fsync, want EIO", w.Err())
		}
		if _, err := w.Append(context.Background(), Record{Type: 1}); !errors.Is(err, syscall.EIO) {
			t.Fatalf("Append after a failed background fsync: %v, want the sticky EIO", err)
		}
	})
}

// TestIntervalAppendsDuringSync: in SyncInterval mode an append is a
// write(2); it does not wait for a background fsync that is slow.
func TestIntervalAppendsDuringSync(t *testing.T) {
	ffs := &faultFS{FS: OSFS()}
	dir := t.TempDir()
	w := openT(t, dir, ffs, Options{Sync: SyncInterval, SyncInterval: 10 * time.Millisecond})
	if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	release := holdBackgroundSync(t, ffs, w)
	done := make(chan error, 1)
	go func() {
		_, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("second")})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an append waited for the background fsync")
	}
	release()
	must(t, w.Close())
	if got := replayAll(t, openT(t, dir, OSFS(), Options{}), Position{}); len(got) != 3 {
		t.Fatalf("%d records after reopening, want 3", len(got))
	}
}

// TestIntervalSyncFailureAcrossRotation: a background fsync that fails
// while the segment is being left (Cut) still makes the failure sticky:
// the kernel reports a writeback error to one fsync only, and rotate's own
// fsync may not be the one.
func TestIntervalSyncFailureAcrossRotation(t *testing.T) {
	ffs := &faultFS{FS: OSFS()}
	w := openT(t, t.TempDir(), ffs, Options{Sync: SyncInterval, SyncInterval: 10 * time.Millisecond})
	if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	ffs.arm(fault{op: "sync", err: syscall.EIO})
	release := holdBackgroundSync(t, ffs, w)
	if _, err := w.Cut(); err != nil {
		t.Fatalf("Cut: %v", err)
	}
	release()
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(w.Err(), syscall.EIO) {
		if time.Now().After(deadline) {
			t.Fatalf("Err() = %v after a background fsync failed across a rotation, want EIO", w.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holdBackgroundSync makes the next segment fsync of w, an interval-mode
// WAL opened on ffs after the test's cleanup was set up, wait until the
// returned release is called (at the latest by the test's cleanup, before
// the WAL is closed); later fsyncs pass. It appends a record so that a
// tick has something to fsync, and returns once that fsync is waiting.
func holdBackgroundSync(t *testing.T, ffs *faultFS, w *WAL) (release func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	entered := make(chan struct{})
	var held atomic.Bool
	ffs.mu.Lock()
	ffs.onSync = func() {
		if held.CompareAndSwap(false, true) {
			close(entered)
			<-ch
		}
	}
	ffs.mu.Unlock()
	if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("hooked")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no background fsync within 5 s")
	}
	return release
}

//go:build unix

package wal

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLockDir checks that one WAL directory cannot be opened twice, within
// a process or from another one, and that Close and a failed Open release
// the lock.
func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, OSFS(), Options{}, prometheus.NewRegistry(), nil)
	must(t, err)

	_, err = Open(dir, OSFS(), Options{}, prometheus.NewRegistry(), nil)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Open of %s: %v; want ErrLocked naming the directory and another process", dir, err)
	}
	// flock(1) stands in for another Sluice process.
	if flock, lerr := exec.LookPath("flock"); lerr == nil {
		out, err := exec.Command(flock, "--nonblock", dir+"/"+LockFileName, "true").CombinedOutput()
		if err == nil {
			t.Fatalf("another process took the lock of an open WAL (%s)", out)
		}
	} else if os.Getenv("CI") != "" {
		t.Fatal("flock(1) not found (Debian package util-linux)")
	}

	if _, err := w.Append(context.Background(), Record{Type: 1, Data: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())

	// Closed: the directory can be opened again and keeps its records.
	w, err = Open(dir, OSFS(), Options{}, prometheus.NewRegistry(), nil)
	must(t, err)
	if got := replayAll(t, w, Position{}); len(got) != 1 {
		t.Fatalf("replayed %d records after reopening, want 1", len(got))
	}
	must(t, w.Close())

	// A failed Open (metrics registration here) releases the lock too.
	reg := prometheus.NewRegistry()
	w, err = Open(t.TempDir(), OSFS(), Options{}, reg, nil)
	must(t, err)
	defer w.Close()
	if _, err := Open(dir, OSFS(), Options{}, reg, nil); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Open with a taken registry: %v; want a registration error", err)
	}
	w2, err := Open(dir, OSFS(), Options{}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatalf("Open after a failed Open: %v; the failed Open kept the lock", err)
	}
	must(t, w2.Close())
}

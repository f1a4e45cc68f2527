package wal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// syncCounter is a File whose Sync is counted.
type syncCounter struct {
	File
	syncs int
}

func (s *syncCounter) Sync() error { s.syncs++; return nil }

func TestSyncFile(t *testing.T) {
	open := func(t *testing.T) *os.File {
		f, err := os.Create(filepath.Join(t.TempDir(), "f"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("batch")); err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name string
		file func(t *testing.T) File
		want error // nil: success
	}{
		{name: "open file", file: func(t *testing.T) File {
			f := open(t)
			t.Cleanup(func() { f.Close() })
			return f
		}},
		{name: "closed file reports os.ErrClosed", file: func(t *testing.T) File {
			f := open(t)
			f.Close()
			return f
		}, want: os.ErrClosed},
		{name: "pipe reports the kernel's error", file: func(t *testing.T) File {
			// fsync of a descriptor the kernel refuses: a pipe (EINVAL).
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			return w
		}, want: errors.New("any")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := syncFile(tc.file(t))
			switch {
			case tc.want == nil && err != nil:
				t.Errorf("syncFile: %v, want success", err)
			case tc.want != nil && err == nil:
				t.Errorf("syncFile succeeded, want an error")
			case errors.Is(tc.want, os.ErrClosed) && !errors.Is(err, os.ErrClosed):
				t.Errorf("syncFile: %v, want os.ErrClosed", err)
			}
		})
	}
	// Any other File (the tests' fault-injecting ones) is synced with its
	// own Sync, so injected fsync failures still happen.
	c := &syncCounter{}
	if err := syncFile(c); err != nil || c.syncs != 1 {
		t.Errorf("syncFile of a wrapped file: %v, %d Syncs, want its Sync called once", err, c.syncs)
	}
}

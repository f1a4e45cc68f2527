package wal

import (
	"io"
	"os"
)

// FS is the file system the WAL uses. OSFS is the real one; tests wrap it
// to inject short writes, fsync errors and a full disk. Implementations
// must be safe for concurrent use. The WAL uses one File from one
// goroutine at a time, except that in SyncInterval mode Sync may run
// while another goroutine writes, seeks, truncates or closes the file (as
// *os.File allows: a Sync racing Close fails with os.ErrClosed or
// completes).
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	Rename(oldpath, newpath string) error
	ReadDir(name string) ([]os.DirEntry, error)
	MkdirAll(path string, perm os.FileMode) error
	// SyncDir fsyncs a directory, making the creation, renaming or removal
	// of the files in it durable.
	SyncDir(name string) error
}

// File is an open file of an FS. Write must either write all of p or
// return an error (a short write without an error is treated as
// io.ErrShortWrite); Sync must not return before the data written so far
// is on stable storage.
type File interface {
	io.Reader
	io.Writer
	io.Seeker
	io.Closer
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
}

// OSFS returns the operating system's file system.
func OSFS() FS { return osFS{} }

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		// A nil *os.File in a non-nil File interface would defeat callers'
		// nil checks.
		return nil, err
	}
	return f, nil
}

func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

func (osFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

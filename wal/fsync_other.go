//go:build !linux

package wal

// syncFile is f.Sync where fsync is not issued as a raw system call (see
// fsync_linux.go).
func syncFile(f File) error { return f.Sync() }

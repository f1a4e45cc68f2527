//go:build !unix

package wal

import "io"

// LockDir does not lock on systems without flock(2).
func (osFS) LockDir(string) (io.Closer, error) { return nopCloser{}, nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

//go:build unix

package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// LockDir takes an exclusive lock on dir through the file LockFileName in
// it (flock(2), LOCK_EX|LOCK_NB). The lock is released when the returned
// Closer is closed or the process exits, including by kill -9, so a crash
// never leaves a stale lock behind.
func (osFS) LockDir(dir string) (io.Closer, error) {
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("wal: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("wal: directory %s is locked: another process (or another WAL in this one) holds %s: %w", dir, path, ErrLocked)
		}
		return nil, fmt.Errorf("wal: lock %s: %w", path, err)
	}
	return f, nil
}

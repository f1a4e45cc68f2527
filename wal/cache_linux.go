package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

// withFd calls fn with f's descriptor, kept open for the call, if f is an
// open *os.File, and reports whether it did. Files that are not (the
// tests' wrappers) are left to their own methods.
func withFd(f File, fn func(fd uintptr)) bool {
	of, ok := f.(*os.File)
	if !ok {
		return false
	}
	rc, err := of.SyscallConn()
	return err == nil && rc.Control(fn) == nil
}

// dropCache asks the kernel to evict f's cached pages in [off, off+n)
// (posix_fadvise POSIX_FADV_DONTNEED). They must be clean: the kernel only
// evicts pages already on disk, and starts writing back the others.
// Advice only: an error (a closed file, say) changes nothing the log
// depends on.
func dropCache(f File, off, n int64) {
	if n > 0 {
		withFd(f, func(fd uintptr) { _ = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED) })
	}
}

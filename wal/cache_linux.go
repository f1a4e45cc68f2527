package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to evict f's cached pages in [off, off+n)
// (posix_fadvise POSIX_FADV_DONTNEED). They must be clean: the kernel only
// evicts pages already on disk, and starts writing back the others. Files
// that are not an *os.File (the tests' wrappers) are left alone.
func dropCache(f File, off, n int64) {
	of, ok := f.(*os.File)
	if !ok || n <= 0 {
		return
	}
	rc, err := of.SyscallConn()
	if err != nil {
		return
	}
	// Advice only: an error (a closed file, say) changes nothing the log
	// depends on.
	_ = rc.Control(func(fd uintptr) { _ = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED) })
}

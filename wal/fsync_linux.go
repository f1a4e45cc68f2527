package wal

import (
	"errors"
	"os"
	"syscall"
)

// syncFile makes what was written to f durable. For an *os.File it calls
// fsync(2) as a raw system call: the goroutine keeps its processor (P)
// while the fsync runs instead of entering the runtime's syscall state.
//
// Why: in that state the runtime's monitor (sysmon) takes the processor
// away from an fsync that lasts past its 20 µs tick and hands it to
// another thread, and as long as it keeps doing so it polls every 20 µs
// instead of backing off to 10 ms. With an fsync per group commit (one or
// two thousand a second under load) the monitor's polling and the
// hand-overs cost 7-8% of Sluice's CPU time (perf). Interleaved runs of the
// real binary: 30,859-35,232 against 25,225-30,489 pushes/s at the
// maximum, half the context switches, and 0.391-0.451 against 0.450-0.583
// CPU seconds per million relayed samples.
//
// The price: while an fsync runs, its processor runs nothing else (the
// other processors steal its queued goroutines), and a garbage
// collection's stop-the-world pause waits for the fsync to return.
// Sluice runs with one processor more than the CPUs, and at least two
// (--runtime.extra-gomaxprocs, --runtime.min-gomaxprocs).
//
// Files that are not an *os.File (the tests' fault-injecting wrappers) are
// synced with their Sync.
func syncFile(f File) error {
	var serr error
	ok := withFd(f, func(fd uintptr) {
		for {
			_, _, e := syscall.RawSyscall(syscall.SYS_FSYNC, fd, 0, 0)
			if e == 0 {
				return
			}
			if !errors.Is(e, syscall.EINTR) {
				serr = e
				return
			}
		}
	})
	switch {
	case !ok:
		// Not an *os.File, or closed: Sync reports the latter as
		// os.ErrClosed.
		return f.Sync()
	case serr != nil:
		return &os.PathError{Op: "fsync", Path: f.(*os.File).Name(), Err: serr}
	}
	return nil
}

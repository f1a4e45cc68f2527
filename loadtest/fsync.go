package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fsyncResult is what loadtest fsync prints.
type fsyncResult struct {
	Dir      string  `json:"dir"`
	Size     int     `json:"bytes_per_fsync"`
	Count    int     `json:"fsyncs"`
	Busy     int     `json:"busy_threads"`
	Elapsed  float64 `json:"elapsed_seconds"`
	PerSec   float64 `json:"fsyncs_per_second"`
	P50      float64 `json:"latency_p50_ms"`
	P90      float64 `json:"latency_p90_ms"`
	P99      float64 `json:"latency_p99_ms"`
	P999     float64 `json:"latency_p999_ms"`
	Max      float64 `json:"latency_max_ms"`
	Over2500 int     `json:"over_2_5ms"`
}

// fsyncOpts configures fsyncProbe.
type fsyncOpts struct {
	dir      string
	size     int
	count    int
	interval time.Duration
	busy     int
}

// fsyncFileBytes bounds the probe's file: writes wrap around within it.
const fsyncFileBytes = 64 << 20

// cmdFsync measures the write(2)+fsync latency of the disk under dir the
// way the WAL's group commit uses it (SyncAlways): -size bytes written
// into an already allocated file, then fsynced, -count times, -interval
// apart; with -busy N, N threads spin meanwhile, to see how the disk does
// when the CPUs are busy.
func cmdFsync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fsync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o fsyncOpts
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory on the disk to measure (not a tmpfs)")
	fs.IntVar(&o.size, "size", 12<<10, "bytes written before each fsync")
	fs.IntVar(&o.count, "count", 5000, "fsyncs to time")
	fs.DurationVar(&o.interval, "interval", 0, "pause between fsyncs (0: back to back)")
	fs.IntVar(&o.busy, "busy", 0, "threads that spin on the CPUs during the measurement")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := fsyncProbe(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	_, err = fmt.Fprintf(stdout, "fsync of %d B in %s, %d times, %d busy threads: %.0f/s\n  latency    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  (%d over 2.5 ms)\n",
		r.Size, r.Dir, r.Count, r.Busy, r.PerSec, r.P50, r.P90, r.P99, r.P999, r.Max, r.Over2500)
	return err
}

// fsyncProbe runs the measurement of cmdFsync. It removes its file.
func fsyncProbe(ctx context.Context, o fsyncOpts) (fsyncResult, error) {
	if o.size <= 0 || o.size > fsyncFileBytes || o.count <= 0 || o.busy < 0 || o.interval < 0 {
		return fsyncResult{}, errors.New("-size must be 1 to 64 MiB, -count positive, -busy and -interval not negative")
	}
	f, err := os.CreateTemp(o.dir, "loadtest-fsync-*")
	if err != nil {
		return fsyncResult{}, fmt.Errorf("create the probe file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// Allocate the file first, as the WAL's zero-fill does, so that the
	// timed fsyncs write data only, not the file's new size.
	fileSize := min(fsyncFileBytes, o.size*o.count)
	fileSize -= fileSize % o.size
	if err := writeZeros(f, fileSize); err != nil {
		return fsyncResult{}, err
	}
	if err := f.Sync(); err != nil {
		return fsyncResult{}, fmt.Errorf("fsync the probe file: %w", err)
	}
	buf := make([]byte, o.size)
	for i := range buf {
		buf[i] = byte(i)
	}

	stop := startBusy(o.busy)
	lat := make([]time.Duration, 0, o.count)
	start := time.Now()
	var off int64
	for i := 0; i < o.count && ctx.Err() == nil; i++ {
		if i > 0 && o.interval > 0 {
			time.Sleep(o.interval)
		}
		t0 := time.Now()
		if _, err = f.WriteAt(buf, off); err == nil {
			err = f.Sync()
		}
		if err != nil {
			break
		}
		lat = append(lat, time.Since(t0))
		if off += int64(o.size); off >= int64(fileSize) {
			off = 0
		}
	}
	elapsed := time.Since(start)
	stop()
	if err != nil {
		return fsyncResult{}, fmt.Errorf("write and fsync the probe file: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fsyncResult{}, err
	}
	return summarizeFsyncs(o, lat, elapsed), nil
}

// summarizeFsyncs turns the latencies of a probe into its result. It
// sorts lat.
func summarizeFsyncs(o fsyncOpts, lat []time.Duration, elapsed time.Duration) fsyncResult {
	slices.Sort(lat)
	r := fsyncResult{Dir: o.dir, Size: o.size, Count: len(lat), Busy: o.busy, Elapsed: elapsed.Seconds(),
		P50: millis(percentile(lat, 50)), P90: millis(percentile(lat, 90)), P99: millis(percentile(lat, 99)),
		P999: millis(percentile(lat, 99.9))}
	if len(lat) > 0 {
		r.Max = millis(lat[len(lat)-1])
	}
	if r.Elapsed > 0 {
		r.PerSec = float64(len(lat)) / r.Elapsed
	}
	for _, d := range slices.Backward(lat) {
		if d <= 2500*time.Microsecond {
			break
		}
		r.Over2500++
	}
	return r
}

func writeZeros(f *os.File, n int) error {
	zeros := make([]byte, 1<<20)
	for off := 0; off < n; off += len(zeros) {
		if _, err := f.Write(zeros[:min(len(zeros), n-off)]); err != nil {
			return fmt.Errorf("allocate the probe file: %w", err)
		}
	}
	return nil
}

// startBusy starts n threads that spin until the returned func is called.
// GOMAXPROCS grows by n meanwhile, so that the spinners compete with the
// probe for CPUs, as other processes would, not for the Go scheduler's
// processors.
func startBusy(n int) (stop func()) {
	if n == 0 {
		return func() {}
	}
	prev := runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	var done atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // a thread of its own, as another process would be
			defer runtime.UnlockOSThread()
			for !done.Load() {
			}
		}()
	}
	return func() {
		done.Store(true)
		wg.Wait()
		runtime.GOMAXPROCS(prev)
	}
}

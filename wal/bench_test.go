package wal

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkAppend appends ~2 KiB records from 1 and 32 concurrent
// appenders in both sync modes on the real file system, and reports
// appends/s and fsyncs per append (group commit makes the latter fall
// with concurrency in SyncAlways mode). In SyncAlways mode it runs with
// the zeros ahead of the log written by the appends and by the
// background filler (zerofill=append, zerofill=background; Sluice runs
// with the latter).
func BenchmarkAppend(b *testing.B) {
	data := make([]byte, 2000)
	for i := range data {
		data[i] = byte(i)
	}
	type variant struct {
		mode       SyncMode
		appenders  int
		background bool
	}
	var variants []variant
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		for _, appenders := range []int{1, 32} {
			variants = append(variants, variant{mode, appenders, false})
			if mode == SyncAlways {
				variants = append(variants, variant{mode, appenders, true})
			}
		}
	}
	for _, v := range variants {
		mode, appenders := v.mode, v.appenders
		name := fmt.Sprintf("%s/appenders=%d", mode, appenders)
		if mode == SyncAlways {
			name += map[bool]string{false: "/zerofill=append", true: "/zerofill=background"}[v.background]
		}
		{
			b.Run(name, func(b *testing.B) {
				w := openT(b, b.TempDir(), OSFS(), Options{Sync: mode, SegmentSize: 64 << 20, BackgroundZeroFill: v.background})
				ctx := context.Background()
				rec := Record{Type: 1, Data: data}
				base := value(w.m.fsyncs)
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				b.ResetTimer()
				start := time.Now()
				if appenders == 1 {
					for range b.N {
						if _, err := w.Append(ctx, rec); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					procs := runtime.GOMAXPROCS(0)
					b.SetParallelism((appenders + procs - 1) / procs)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := w.Append(ctx, rec); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
				b.ReportMetric((value(w.m.fsyncs)-base)/float64(b.N), "fsyncs/append")
				must(b, w.Close())
			})
		}
	}
}

package aggregate

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-metrics/sluice/wal"
)

// BenchmarkDurableApply measures acknowledged pushes (25 series, 1,000
// groups) through the store and a real WAL, fsync per group commit vs
// fsync every second, from 64 concurrent pushers. Compare ns/op of the two
// to get the cost of group commit (SPEC 10: under 25%).
func BenchmarkDurableApply(b *testing.B) {
	for _, mode := range []wal.SyncMode{wal.SyncAlways, wal.SyncInterval} {
		b.Run(mode.String(), func(b *testing.B) {
			w, err := wal.Open(b.TempDir(), wal.OSFS(), wal.Options{Sync: mode, SyncInterval: time.Second},
				prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			c := NewCommitter(w)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = c.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			s := New(testSettings(), time.Now, c, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			s.SetReady()
			groups := benchGroups(b, "sum")
			b.SetParallelism(32) // 64 pushers on 2 cores, like concurrent HTTP clients
			b.ReportAllocs()
			b.ResetTimer()
			applyParallel(b, s, groups, 13)
		})
	}
}

package wal

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestGroupCommit runs 64 appenders × 20 Appends in SyncAlways mode on the
// real file system: every record must be replayed exactly once, each
// appender's records in its order, with far fewer fsyncs than Appends.
func TestGroupCommit(t *testing.T) {
	const appenders, perAppender = 64, 20
	cases := []struct {
		name string
		opts Options
	}{
		{name: "one segment", opts: Options{}},
		// Groups meet segment boundaries, which split them.
		{name: "small segments", opts: Options{SegmentSize: 4 << 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := openT(t, dir, OSFS(), tc.opts)
			base := value(w.m.fsyncs)

			var wg sync.WaitGroup
			errs := make(chan error, appenders)
			for a := range appenders {
				wg.Go(func() {
					var last Position
					for i := range perAppender {
						pos, err := w.Append(context.Background(),
							Record{Type: 1, Data: fmt.Appendf(nil, "%02d/%02d", a, i)},
							Record{Type: 2, Data: make([]byte, 100)})
						if err != nil {
							errs <- err
							return
						}
						if pos.Compare(last) <= 0 {
							errs <- fmt.Errorf("appender %d: Append %d ended at %v, not after %v", a, i, pos, last)
							return
						}
						last = pos
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			fsyncs := value(w.m.fsyncs) - base
			const total = appenders * perAppender
			t.Logf("%d concurrent Appends: %v fsyncs (%.3f per Append), %d segments", total, fsyncs, fsyncs/total, w.Segments())
			if fsyncs >= total/2 {
				t.Errorf("%v fsyncs for %d Appends; group commit should need far fewer than %d", fsyncs, total, total/2)
			}
			if got := value(w.m.batches); got != total {
				t.Errorf("batches_total %v, want %d", got, total)
			}
			must(t, w.Close())

			w = openT(t, dir, OSFS(), tc.opts)
			next := make([]int, appenders)
			n := 0
			must(t, w.Replay(Position{}, func(_ Position, r Record) error {
				if r.Type != 1 {
					return nil
				}
				var a, i int
				if _, err := fmt.Sscanf(string(r.Data), "%d/%d", &a, &i); err != nil {
					return err
				}
				if i != next[a] {
					return fmt.Errorf("appender %d: replayed Append %d, want %d", a, i, next[a])
				}
				next[a]++
				n++
				return nil
			}))
			if n != total {
				t.Fatalf("replayed %d batches, want %d", n, total)
			}
		})
	}
}

package aggregate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/wal"
)

// fakeAppender records what the Store relays.
type fakeAppender struct {
	mu   sync.Mutex
	reqs []*prompb.WriteRequest
	log  *[]string // if set, "append" is added on every Append
}

func (a *fakeAppender) Append(req *prompb.WriteRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, req)
	if a.log != nil {
		*a.log = append(*a.log, "append")
	}
}

func (a *fakeAppender) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reqs)
}

func relayReq(name string, ts int64, v float64) *prompb.WriteRequest {
	return &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "p"}},
			Samples: []prompb.Sample{{Timestamp: ts, Value: v}},
		}},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: name, Help: "H."}},
	}
}

// counterPush is a push of one counter series req_total{clear_mode=mode}
// with value v to group job=f.
func counterPush(name, mode string, v float64) *Push {
	return &Push{Group: groupLabels("job=f"), Method: MethodPost, Families: []*dto.MetricFamily{{
		Name: ptr(name), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr(ModeLabel), Value: ptr(mode)}}, Counter: &dto.Counter{Value: ptr(v)}}},
	}}}
}

func newWriteStore(t *testing.T, j Journal, a Appender) (*Store, *fakeClock) {
	t.Helper()
	clk := newClock()
	s := New(testSettings(), clk.now, j, a, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	return s, clk
}

// TestWriteRelayAndReplay: a Write journals the relay first, then the
// pushes; the relay reaches the Appender once durable; replaying the
// journal into a fresh Store relays it again and rebuilds the aggregate.
func TestWriteRelayAndReplay(t *testing.T) {
	j := &memJournal{}
	app := &fakeAppender{}
	s, _ := newWriteStore(t, j, app)
	ctx := context.Background()
	w := &Write{Relay: relayReq("temp", 1000, 21.5), Pushes: []*Push{counterPush("req_total", "sum", 1), counterPush("req_total", "sum", 2)}}
	res, err := s.Write(ctx, w)
	if err != nil || !res.Relayed || res.Pushes != 2 {
		t.Fatalf("Write = %+v, %v", res, err)
	}
	if app.count() != 1 || app.reqs[0] != w.Relay {
		t.Fatalf("relay appended %d times", app.count())
	}
	if got := expose(t, s); !strings.Contains(got, `req_total{instance="",job="f"} 3`) {
		t.Fatalf("aggregate:\n%s", got)
	}
	if len(j.recs) != 3 || j.recs[0].typ != RecordRelay || j.recs[1].typ != RecordPush || j.recs[2].typ != RecordPush {
		t.Fatalf("journal: %+v", j.recs)
	}

	app2 := &fakeAppender{}
	r, _ := newWriteStore(t, nil, app2)
	for _, rec := range j.recs {
		op, err := DecodeOp(rec.typ, rec.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Replay(op); err != nil {
			t.Fatal(err)
		}
	}
	if app2.count() != 1 {
		t.Fatalf("replay relayed %d requests, want 1", app2.count())
	}
	got := app2.reqs[0]
	if len(got.Timeseries) != 1 || got.Timeseries[0].Samples[0].Timestamp != 1000 || got.Timeseries[0].Samples[0].Value != 21.5 ||
		got.Timeseries[0].Labels[0].Value != "temp" || len(got.Metadata) != 1 || got.Metadata[0].Help != "H." {
		t.Fatalf("replayed relay: %+v", got)
	}
	if a, b := expose(t, s), expose(t, r); a != b {
		t.Fatalf("replay differs:\n%s\nvs\n%s", a, b)
	}
}

func TestWriteRejections(t *testing.T) {
	t.Run("stateless_rejection_applies_nothing", func(t *testing.T) {
		j := &memJournal{}
		app := &fakeAppender{}
		s, _ := newWriteStore(t, j, app)
		_, err := s.Write(context.Background(), &Write{Relay: relayReq("temp", 1, 1),
			Pushes: []*Push{counterPush("a_total", "sum", 1), counterPush("b_total", "avg", 1)}})
		if ae, ok := AsError(err); !ok || ae.Kind != KindInvalid || !strings.Contains(ae.Msg, `unknown clear_mode "avg"`) {
			t.Fatalf("err = %v", err)
		}
		if len(j.recs) != 0 || app.count() != 0 || expose(t, s) != "" {
			t.Fatalf("a rejected write changed something: %d records, %d relays, state:\n%s", len(j.recs), app.count(), expose(t, s))
		}
	})
	t.Run("stateful_rejection_is_partial", func(t *testing.T) {
		j := &memJournal{}
		app := &fakeAppender{}
		s, _ := newWriteStore(t, j, app)
		mustPush(t, s, "job=f", "# TYPE b_total gauge\nb_total 1\n")
		res, err := s.Write(context.Background(), &Write{Relay: relayReq("temp", 1, 1),
			Pushes: []*Push{counterPush("a_total", "sum", 1), counterPush("b_total", "sum", 1), counterPush("a_total", "sum", 1)}})
		if ae, ok := AsError(err); !ok || ae.Reason != ReasonTypeConflict {
			t.Fatalf("err = %v", err)
		}
		if !res.Relayed || res.Pushes != 1 || app.count() != 1 {
			t.Fatalf("result %+v, %d relays", res, app.count())
		}
		if got := expose(t, s); !strings.Contains(got, `a_total{instance="",job="f"} 1`) {
			t.Fatalf("the push before the rejected one must stay applied:\n%s", got)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		app := &fakeAppender{}
		s := New(testSettings(), newClock().now, &memJournal{}, app, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		_, err := s.Write(context.Background(), &Write{Relay: relayReq("temp", 1, 1)})
		if ae, ok := AsError(err); !ok || ae.Kind != KindUnavailable || app.count() != 0 {
			t.Fatalf("before recovery: %v, %d relays", err, app.count())
		}
	})
	t.Run("journal_failure", func(t *testing.T) {
		j := &memJournal{failing: errors.New("disk on fire")}
		app := &fakeAppender{}
		s, _ := newWriteStore(t, j, app)
		_, err := s.Write(context.Background(), &Write{Relay: relayReq("temp", 1, 1)})
		if ae, ok := AsError(err); !ok || ae.Kind != KindUnavailable || app.count() != 0 {
			t.Fatalf("journal failure: %v, %d relays", err, app.count())
		}
	})
}

// gateJournal holds every wait until open is closed, and logs events.
type gateJournal struct {
	open    chan struct{}
	entered chan struct{} // closed by the first Enqueue
	once    sync.Once
	mu      sync.Mutex
	log     []string
}

func (j *gateJournal) Enqueue(uint8, []byte) func(context.Context) error {
	j.once.Do(func() { close(j.entered) })
	return func(ctx context.Context) error {
		select {
		case <-j.open:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (j *gateJournal) Barrier(context.Context) error { return nil }

type eventLog struct {
	mu  *sync.Mutex
	log *[]string
}

func (e eventLog) add(s string) {
	e.mu.Lock()
	*e.log = append(*e.log, s)
	e.mu.Unlock()
}

type fakeCheckpointLog struct{ ev eventLog }

func (l fakeCheckpointLog) Cut() (wal.Position, error) { l.ev.add("cut"); return wal.Position{}, nil }
func (l fakeCheckpointLog) CreateCheckpoint(wal.Position) (wal.CheckpointFile, error) {
	return &memCheckpoint{commit: func([]byte) error { l.ev.add("truncate"); return nil }}, nil
}

// TestCheckpointWaitsForRelay: a checkpoint started while a relay waits
// for the log cuts the log only after the relay reached the Appender, and
// syncs the forward queues before it truncates.
func TestCheckpointWaitsForRelay(t *testing.T) {
	j := &gateJournal{open: make(chan struct{}), entered: make(chan struct{})}
	ev := eventLog{mu: &j.mu, log: &j.log}
	app := &fakeAppender{}
	s, _ := newWriteStore(t, j, appenderFunc(func(req *prompb.WriteRequest) { ev.add("append"); app.Append(req) }))
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(context.Background(), &Write{Relay: relayReq("temp", 1, 1)})
		done <- err
	}()
	<-j.entered // the relay record is enqueued; the Write waits for it
	cpDone := make(chan error, 1)
	go func() {
		cpDone <- s.Checkpoint(context.Background(), SyncBeforeTruncate(fakeCheckpointLog{ev}, func() error { ev.add("sync"); return nil }))
	}()
	// Let the checkpoint reach the state lock before the log lets the
	// relay through (a checkpoint that got there later would pass too:
	// this only makes the test able to catch a missing lock).
	time.Sleep(20 * time.Millisecond)
	close(j.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-cpDone; err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if strings.Join(j.log, ",") != "append,cut,sync,truncate" {
		t.Fatalf("events %v, want append,cut,sync,truncate", j.log)
	}
}

type appenderFunc func(*prompb.WriteRequest)

func (f appenderFunc) Append(req *prompb.WriteRequest) { f(req) }

func TestSyncBeforeTruncateKeepsLogOnError(t *testing.T) {
	var mu sync.Mutex
	var log []string
	ev := eventLog{mu: &mu, log: &log}
	l := SyncBeforeTruncate(fakeCheckpointLog{ev}, func() error { return errors.New("fsync: EIO") })
	f, err := l.CreateCheckpoint(wal.Position{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("err = %v", err)
	}
	if len(log) != 0 {
		t.Fatalf("the log was truncated although the sync failed: %v", log)
	}
}

// copyingLog is a Log that keeps a copy of every record it is given.
type copyingLog struct {
	mu   sync.Mutex
	recs []memRec
}

func (l *copyingLog) Append(_ context.Context, recs ...wal.Record) (wal.Position, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range recs {
		l.recs = append(l.recs, memRec{r.Type, bytes.Clone(r.Data)})
	}
	return wal.Position{}, nil
}

// TestConcurrentRelayRecords: relay records are written from pooled
// arrays, each back in the pool only once the log has it. Concurrent
// Writes through a Committer must each leave their own record, intact.
func TestConcurrentRelayRecords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block bool // the request also in snappy wire form (Write.RelaySnappy)
	}{
		{name: "encoded from the request"},
		{name: "copied from the wire block", block: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &copyingLog{}
			c := NewCommitter(log)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = c.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			s, _ := newWriteStore(t, c, &fakeAppender{})

			const writers, each = 8, 50
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						req := relayReq(fmt.Sprintf("m%d_%d", w, i), int64(1000+i), float64(w*each+i))
						wr := &Write{Relay: req}
						if tc.block {
							pb, err := req.Marshal()
							if err != nil {
								t.Error(err)
								return
							}
							wr.RelaySnappy = snappy.Encode(nil, pb)
						}
						if _, err := s.Write(context.Background(), wr); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()

			log.mu.Lock()
			defer log.mu.Unlock()
			seen := map[string]bool{}
			for _, r := range log.recs {
				op, err := DecodeOp(r.typ, r.data)
				if err != nil {
					t.Fatalf("a record does not decode: %v", err)
				}
				ts := op.Relay.Timeseries[0]
				name := ts.Labels[0].Value
				var w, i int
				if _, err := fmt.Sscanf(name, "m%d_%d", &w, &i); err != nil || ts.Samples[0].Value != float64(w*each+i) || ts.Samples[0].Timestamp != int64(1000+i) {
					t.Fatalf("record %s holds sample %+v", name, ts.Samples[0])
				}
				if seen[name] {
					t.Fatalf("record %s logged twice", name)
				}
				seen[name] = true
			}
			if len(seen) != writers*each {
				t.Fatalf("%d relay records, want %d", len(seen), writers*each)
			}
		})
	}
}

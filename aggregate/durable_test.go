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

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
)

// memJournal is a fake Journal keeping records in memory; failing makes
// every later wait return an error.
type memJournal struct {
	mu      sync.Mutex
	recs    []memRec
	failing error
}

type memRec struct {
	typ  uint8
	data []byte
}

func (j *memJournal) Enqueue(typ uint8, data []byte) func(context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failing != nil {
		err := j.failing
		return func(context.Context) error { return err }
	}
	j.recs = append(j.recs, memRec{typ, append([]byte(nil), data...)})
	return func(context.Context) error { return nil }
}

func (j *memJournal) Barrier(context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failing
}

// TestReplayRebuildsState applies a history through a journaled store,
// replays the journal into a fresh store under a different config, and
// expects the very same exposition.
func TestReplayRebuildsState(t *testing.T) {
	set := testSettings()
	set.SeriesTTL = time.Hour
	j := &memJournal{}
	clk := newClock()
	s := New(set, clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	ctx := context.Background()
	steps := []func(){
		func() { mustPush(t, s, "job=old", "# TYPE c_total counter\nc_total 100\n") },
		func() { clk.advance(2 * time.Hour) },
		func() {
			if err := s.Expire(ctx); err != nil {
				t.Fatal(err)
			}
		},
		// After expiry the counter restarts from zero; a replay that
		// skipped the expiry would show 105.
		func() { mustPush(t, s, "job=old", "# TYPE c_total counter\nc_total 5\n") },
		func() { mustPush(t, s, "job=f", "# TYPE req_total counter\nreq_total 2\ntemp 5\n") },
		func() {
			mustPush(t, s, "job=f", "# TYPE req_total counter\nreq_total 3\ntemp 7\nlat{clear_mode=\"p99_5m\"} 10\n")
		},
		func() {
			mustPush(t, s, "job=f", "lat{clear_mode=\"p99_5m\"} 30\nv{clear_mode=\"family\",ver=\"1\"} 1\n")
		},
		func() { mustPush(t, s, "job=f", "v{clear_mode=\"family\",ver=\"2\"} 1\n") },
		func() { mustPush(t, s, "job=gone", "x 1\n") },
		func() {
			if err := s.Delete(ctx, groupLabels("job=gone")); err != nil {
				t.Fatal(err)
			}
		},
		func() { mustPush(t, s, "job=f", "# TYPE req_total counter\nreq_total 1\n") },
	}
	for _, step := range steps {
		step()
		clk.advance(time.Second)
	}
	want := expose(t, s)

	// Replay into a store whose config would resolve modes differently.
	set2 := set
	set2.Aggregation.DefaultModes.Gauge = configs.Mode{Kind: configs.ModeSum}
	set2.Limits.MaxSeries = 1 // replay ignores limits: everything was accepted
	set2.Limits.MaxSeriesPerGroup = 1
	r := New(set2, clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	replayRecords(t, r, j.recs)
	if got := expose(t, r); got != want {
		t.Fatalf("replayed state differs\n got:\n%s\nwant:\n%s", got, want)
	}
	for _, line := range []string{`c_total{instance="",job="old"} 5`, `temp{instance="",job="f"} 12`, `req_total{instance="",job="f"} 6`,
		`lat{instance="",job="f"} 30`, `v{instance="",job="f",ver="2"} 1`} {
		if !strings.Contains(want, line) {
			t.Fatalf("test history did not produce %q:\n%s", line, want)
		}
	}
	if strings.Contains(want, `job="gone"`) || strings.Contains(want, `ver="1"`) {
		t.Fatalf("test history did not produce the expected state:\n%s", want)
	}
}

// TestReplayFamilyChanges: with Pushgateway semantics, pushes that change
// a metric's type or HELP in the one group that has it, and one refused
// while another group has it, replay to the same state, also into a Store
// started with the default semantics.
func TestReplayFamilyChanges(t *testing.T) {
	set := testSettings()
	set.Semantics = SemanticsPushgateway
	j := &memJournal{}
	clk := newClock()
	s := New(set, clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	steps := []struct {
		group, body string
		method      Method
		ok          bool
	}{
		{"job=a", "# HELP x First.\n# TYPE x counter\nx{clear_mode=\"sum\"} 5\n", MethodPut, true},
		{"job=a", "# HELP x Second.\n# TYPE x counter\nx{clear_mode=\"sum\"} 5\n", MethodPut, true},
		{"job=b", "# TYPE y counter\ny 1\n", MethodPut, true},
		{"job=a", "# HELP y Gauge.\n# TYPE y gauge\ny 2\n", MethodPost, false}, // b has y
		{"job=a", "# TYPE x gauge\nx 7\n", MethodPost, true},
		{"job=b", "# TYPE y gauge\ny 3\n", MethodPut, true},
	}
	for i, st := range steps {
		if err := push(t, s, st.group, st.method, st.body); (err == nil) != st.ok {
			t.Fatalf("step %d: error %v, want success %v", i, err, st.ok)
		}
		clk.advance(time.Second)
	}
	want := expose(t, s)
	if w := "# TYPE x gauge\nx{instance=\"\",job=\"a\"} 7\n# TYPE y gauge\ny{instance=\"\",job=\"b\"} 3\n"; want != w {
		t.Fatalf("test history did not produce the expected state\n got:\n%s\nwant:\n%s", want, w)
	}
	r := New(testSettings(), clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	replayRecords(t, r, j.recs)
	if got := expose(t, r); got != want {
		t.Fatalf("replayed state differs\n got:\n%s\nwant:\n%s", got, want)
	}
}

// replayRecords replays recs into r in order; a record that does not
// decode or replay fails the test.
func replayRecords(t *testing.T, r *Store, recs []memRec) {
	t.Helper()
	for i, rec := range recs {
		op, err := DecodeOp(rec.typ, rec.data)
		if err == nil {
			err = r.Replay(op)
		}
		if err != nil {
			t.Fatalf("replay record %d: %v", i, err)
		}
	}
}

func TestJournalFailureRefusesAndSkipsWindows(t *testing.T) {
	j := &memJournal{}
	s, _ := newTestStore(t, testSettings())
	s.journal = j
	s.SetReady()
	mustPush(t, s, "job=f", "x 1\n")
	j.failing = errors.New("fsync: input/output error")
	err := push(t, s, "job=f", MethodPost, "x 1\n")
	if e, ok := AsError(err); !ok || e.Kind != KindUnavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
	j.failing = nil
	err = push(t, s, "job=f", MethodPost, "x 1\n")
	if e, ok := AsError(err); !ok || e.Kind != KindUnavailable {
		t.Fatalf("the failure must be sticky until restart, got %v", err)
	}
	if s.Healthy() == nil {
		t.Fatal("Healthy must report the journal failure")
	}
	if _, err := s.GatherDurable(context.Background()); err == nil {
		t.Fatal("no durable window may be rendered after a journal failure")
	}
}

// orderJournal logs enqueues and barriers in order and holds every wait
// and barrier until open is closed.
type orderJournal struct {
	open chan struct{}
	mu   sync.Mutex
	log  []string
	seen chan struct{} // receives after every logged event
}

func (j *orderJournal) note(ev string) {
	j.mu.Lock()
	j.log = append(j.log, ev)
	j.mu.Unlock()
	select {
	case j.seen <- struct{}{}:
	default:
	}
}

func (j *orderJournal) events() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.log, ",")
}

func (j *orderJournal) gate(ctx context.Context) error {
	select {
	case <-j.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *orderJournal) Enqueue(typ uint8, _ []byte) func(context.Context) error {
	j.note(fmt.Sprintf("record%d", typ)) // RecordPush is 1
	return j.gate
}

func (j *orderJournal) Barrier(ctx context.Context) error {
	j.note("barrier")
	return j.gate(ctx)
}

// waitEvents waits until the journal's events are want.
func (j *orderJournal) waitEvents(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for j.events() != want {
		select {
		case <-j.seen:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("journal events %q, want %q", j.events(), want)
		}
	}
}

// TestFlushDoesNotStopPushes: a window is rendered while pushes go on;
// it waits until everything it shows is durable, and a push applied
// while it waits for that is in the next window, not this one.
func TestFlushDoesNotStopPushes(t *testing.T) {
	j := &orderJournal{open: make(chan struct{}), seen: make(chan struct{}, 1)}
	s, _ := newTestStore(t, testSettings())
	s.journal = j
	s.SetReady()
	pushed := make(chan error, 2)
	go func() { pushed <- push(t, s, "job=a", MethodPost, "a_total 1\n") }()
	j.waitEvents(t, "record1")

	window := make(chan []*dto.MetricFamily, 1)
	go func() {
		fams, err := s.GatherDurable(context.Background())
		if err != nil {
			t.Error(err)
		}
		window <- fams
	}()
	j.waitEvents(t, "record1,barrier")
	// The window is rendered and waits for the log; a push to another
	// group is applied meanwhile.
	go func() { pushed <- push(t, s, "job=b", MethodPost, "b_total 1\n") }()
	j.waitEvents(t, "record1,barrier,record1")
	select {
	case <-window:
		t.Fatal("the window was emitted before what it shows was durable")
	case <-time.After(20 * time.Millisecond):
	}
	close(j.open)
	for range 2 {
		if err := <-pushed; err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, f := range <-window {
		names = append(names, f.GetName())
	}
	if got := strings.Join(names, ","); got != "a_total,push_failure_time_seconds,push_time_seconds" {
		t.Fatalf("window families %s, want a_total and the push times only", got)
	}
	if got := expose(t, s); !strings.Contains(got, `b_total{instance="",job="b"} 1`) {
		t.Fatalf("the push made during the flush is missing afterwards:\n%s", got)
	}
}

// cutLog is a CheckpointLog that notes how many journal records precede
// its cut and keeps the checkpoint's data.
type cutLog struct {
	j    *memJournal
	cut  chan int // receives the record count at the cut
	data []byte
}

func (l *cutLog) Cut() (wal.Position, error) {
	l.j.mu.Lock()
	n := len(l.j.recs)
	l.j.mu.Unlock()
	l.cut <- n
	return wal.Position{}, nil
}

func (l *cutLog) CreateCheckpoint(wal.Position) (wal.CheckpointFile, error) {
	return &memCheckpoint{commit: func(data []byte) error {
		l.data = append([]byte(nil), data...)
		return nil
	}}, nil
}

// memCheckpoint is a wal.CheckpointFile in memory: Commit hands commit the
// data written.
type memCheckpoint struct {
	bytes.Buffer
	commit  func([]byte) error
	aborted bool
}

func (m *memCheckpoint) Commit() error { return m.commit(m.Bytes()) }
func (m *memCheckpoint) Abort()        { m.aborted = true }

// TestCheckpointWhilePushing: pushes go on while a checkpoint copies the
// state, and the checkpoint is the state at its cut, whichever of the
// checkpoint and a push gets to a group first: restoring it and
// replaying the records after the cut gives the live state, nothing
// counted twice or lost.
func TestCheckpointWhilePushing(t *testing.T) {
	for i := range 20 {
		j := &memJournal{}
		s, clk := newTestStore(t, testSettings())
		s.journal = j
		s.SetReady()
		for _, grp := range []string{"job=a", "job=b", "job=c"} {
			mustPush(t, s, grp, "# TYPE n_total counter\nn_total 1\nlat{clear_mode=\"p99_5m\"} 3\ng 1\n")
		}
		// Hold group a, so the checkpoint cannot copy it before a push
		// to it is under way.
		a := s.lookupGroup(groupLabels("job=a"))
		a.mu.Lock()
		l := &cutLog{j: j, cut: make(chan int, 1)}
		cpDone := make(chan error, 1)
		go func() { cpDone <- s.Checkpoint(context.Background(), l) }()
		cut := <-l.cut
		// Pushes to other groups go on during the copy.
		mustPush(t, s, "job=b", "# TYPE n_total counter\nn_total 10\nlat{clear_mode=\"p99_5m\"} 5\ng 2\n")
		mustPush(t, s, "job=new", "# TYPE n_total counter\nn_total 7\n")
		if err := s.Delete(context.Background(), groupLabels("job=c")); err != nil {
			t.Fatal(err)
		}
		mustPush(t, s, "job=c", "# TYPE n_total counter\nn_total 5\n")
		pushed := make(chan error, 1)
		go func() {
			pushed <- push(t, s, "job=a", MethodPost, "# TYPE n_total counter\nn_total 100\nlat{clear_mode=\"p99_5m\"} 9\ng 3\n")
		}()
		if i%2 == 0 {
			time.Sleep(time.Millisecond) // let the push reach a's lock first, sometimes
		}
		a.mu.Unlock()
		if err := <-pushed; err != nil {
			t.Fatal(err)
		}
		if err := <-cpDone; err != nil {
			t.Fatal(err)
		}
		clk.advance(time.Second)
		want := expose(t, s)

		r, _ := newTestStore(t, testSettings())
		r.now = clk.now
		if err := r.Restore(l.data); err != nil {
			t.Fatal(err)
		}
		for k, rec := range j.recs[cut:] {
			op, err := DecodeOp(rec.typ, rec.data)
			if err == nil {
				err = r.Replay(op)
			}
			if err != nil {
				t.Fatalf("replay record %d after the cut: %v", k, err)
			}
		}
		if got := expose(t, r); got != want {
			t.Fatalf("run %d: checkpoint + replay differs from the live state\n got:\n%s\nwant:\n%s", i, got, want)
		}
		if !strings.Contains(want, `n_total{instance="",job="a"} 101`) || !strings.Contains(want, `n_total{instance="",job="new"} 7`) ||
			!strings.Contains(want, `n_total{instance="",job="c"} 5`) {
			t.Fatalf("test history did not produce the expected state:\n%s", want)
		}
	}
}

// TestGatherWhileSeriesMoveGroups: a series that moves from one group to
// another (deleted with the first, pushed by the second) while a window
// is being rendered appears in it once.
func TestGatherWhileSeriesMoveGroups(t *testing.T) {
	set := testSettings()
	set.Semantics = SemanticsPushgateway // a PUT replaces the whole group
	s, _ := newTestStore(t, set)
	ctx := context.Background()
	// Groups of one-line pushes around the groups that trade the series,
	// so that a render takes a while.
	for i := range 200 {
		mustPush(t, s, fmt.Sprintf("job=pad%d", i), "pad 1\n")
	}
	mustPush(t, s, "job=x,instance=i", "pad 1\n")
	stop := make(chan struct{})
	moved := make(chan error, 1)
	go func() {
		defer close(moved)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// The same series {job="x",instance="i"} from one group, then
			// the other.
			body := "# TYPE m counter\nm{instance=\"i\"} 1\n"
			if err := push(t, s, "job=x", MethodPost, body); err != nil {
				moved <- err
				return
			}
			if err := s.Delete(ctx, groupLabels("job=x")); err != nil {
				moved <- err
				return
			}
			if err := push(t, s, "job=x,instance=i", MethodPost, "# TYPE m counter\nm 1\n"); err != nil {
				moved <- err
				return
			}
			// PUT without m: the group stays (a render that listed it
			// reaches it), the series goes.
			if err := push(t, s, "job=x,instance=i", MethodPut, "pad 1\n"); err != nil {
				moved <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-moved; err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		fams, err := s.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			seen := map[string]bool{}
			for _, m := range f.Metric {
				var b strings.Builder
				for _, l := range m.GetLabel() {
					b.WriteString(l.GetName() + "=" + l.GetValue() + ",")
				}
				if seen[b.String()] {
					t.Fatalf("gather %d: series %s{%s} twice", n, f.GetName(), b.String())
				}
				seen[b.String()] = true
			}
		}
	}
}

// TestChangedDefaultKeepsSeriesMode: after a reload changes a default, a
// push that names no clear_mode updates an existing series with the
// series' own mode (no 400), new series get the new default, and the
// record holds the mode applied, so replay under either config agrees.
func TestChangedDefaultKeepsSeriesMode(t *testing.T) {
	max1m, err := configs.ParseMode("max1m")
	if err != nil {
		t.Fatal(err)
	}
	before := testSettings()
	before.Aggregation.DefaultModes.Gauge = max1m
	after := testSettings() // gauges: replace
	j := &memJournal{}
	clk := newClock()
	s := New(before, clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	mustPush(t, s, "job=b", "# TYPE depth gauge\ndepth 5\n# TYPE sm summary\nsm{quantile=\"0.5\"} 1\nsm_sum 1\nsm_count 1\n")
	clk.advance(time.Second)
	s.SetSettings(after)
	mustPush(t, s, "job=b", "# TYPE depth gauge\ndepth 2\n# TYPE fresh gauge\nfresh 4\n")
	clk.advance(time.Second)
	mustPush(t, s, "job=b", "# TYPE depth gauge\ndepth 3\n# TYPE fresh gauge\nfresh 1\n")
	got := expose(t, s)
	for _, want := range []string{`depth{instance="",job="b"} 5`, `fresh{instance="",job="b"} 1`} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %s (depth keeps max1m, fresh gets replace):\n%s", want, got)
		}
	}
	// A value the series' mode refuses is still a 400, named for it.
	if err := push(t, s, "job=b", MethodPost, "# TYPE depth gauge\ndepth NaN\n"); err == nil || !strings.Contains(err.Error(), "max1m") {
		t.Errorf("NaN into the max1m series: %v, want a 400 naming max1m", err)
	}
	for name, set := range map[string]Settings{"old config": before, "new config": after} {
		r := New(set, clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		for i, rec := range j.recs {
			op, err := DecodeOp(rec.typ, rec.data)
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if err := r.Replay(op); err != nil {
				t.Fatalf("%s: replay record %d: %v", name, i, err)
			}
		}
		if r := expose(t, r); r != got {
			t.Errorf("replay under the %s differs\n got:\n%s\nwant:\n%s", name, r, got)
		}
	}
}

// slowJournal writes nothing until released: a disk that is slow, not
// failed.
type slowJournal struct{ release chan struct{} }

func (j *slowJournal) wait(ctx context.Context) error {
	select {
	case <-j.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *slowJournal) Enqueue(uint8, []byte) func(context.Context) error { return j.wait }
func (j *slowJournal) Barrier(ctx context.Context) error                 { return j.wait(ctx) }

// TestSlowLogSkipsTheWindowOnly: a window whose wait for the log times out
// is skipped, but the Store is not failed: once the disk catches up,
// pushes and windows go on (a failed Store refuses everything until a
// restart).
func TestSlowLogSkipsTheWindowOnly(t *testing.T) {
	j := &slowJournal{release: make(chan struct{})}
	clk := newClock()
	s := New(testSettings(), clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	pushed := make(chan error, 1)
	go func() { pushed <- push(t, s, "job=a", MethodPost, "x 1\n") }()
	if _, err := (Durable{Store: s, Timeout: 20 * time.Millisecond}).Gather(); err == nil {
		t.Fatal("the window did not wait for the log")
	}
	if err := s.Checkpoint(ctxTimeout(t, 20*time.Millisecond), &cutLog{}); err == nil {
		t.Fatal("the checkpoint did not wait for the log")
	}
	close(j.release) // the disk catches up
	if err := <-pushed; err != nil {
		t.Fatalf("the push that waited: %v", err)
	}
	if err := push(t, s, "job=a", MethodPost, "x 1\n"); err != nil {
		t.Fatalf("a push after the slow spell: %v (the Store must not be failed)", err)
	}
	fams, err := (Durable{Store: s, Timeout: time.Second}).Gather()
	if err != nil || len(fams) == 0 {
		t.Fatalf("the next window: %v", err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestStuckLogFails: a log that makes no progress through maxSlowWaits
// waits in a row is stuck, not slow: the Store fails (503 and not ready),
// so that an orchestrator restarts it, as on a write error.
func TestStuckLogFails(t *testing.T) {
	j := &slowJournal{release: make(chan struct{})} // never released
	defer close(j.release)
	clk := newClock()
	s := New(testSettings(), clk.now, j, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetReady()
	d := Durable{Store: s, Timeout: 10 * time.Millisecond}
	for i := 1; i < maxSlowWaits; i++ {
		if _, err := d.Gather(); err == nil {
			t.Fatal("a window did not wait")
		}
		if err := s.unavailable(); err != nil {
			t.Fatalf("failed after %d slow waits: %v", i, err)
		}
	}
	if _, err := d.Gather(); err == nil {
		t.Fatal("a window did not wait")
	}
	if err := s.unavailable(); err == nil || !strings.Contains(err.Error(), "no progress") {
		t.Fatalf("after %d waits in a row: %v, want the Store failed", maxSlowWaits, err)
	}
}

package aggregate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-metrics/sluice/wal"
)

// partsLog is a CheckpointLog whose checkpoint counts the writes it gets
// and can fail one; committed holds the data of the last commit.
type partsLog struct {
	writes    int
	failWrite int // the write that fails, 0: none
	committed []byte
	file      *partsFile
}

type partsFile struct {
	memCheckpoint
	l *partsLog
}

func (f *partsFile) Write(b []byte) (int, error) {
	f.l.writes++
	if f.l.writes == f.l.failWrite {
		return 0, errors.New("no space left on device")
	}
	return f.memCheckpoint.Write(b)
}

func (l *partsLog) Cut() (wal.Position, error) { return wal.Position{}, nil }
func (l *partsLog) CreateCheckpoint(wal.Position) (wal.CheckpointFile, error) {
	l.file = &partsFile{l: l}
	l.file.commit = func(b []byte) error { l.committed = bytes.Clone(b); return nil }
	return l.file, nil
}

// bigStore holds enough series for a checkpoint of several buffers.
func bigStore(t *testing.T) (*Store, *fakeClock) {
	t.Helper()
	s, clk := newTestStore(t, testSettings())
	var b strings.Builder
	for g := range 40 {
		b.Reset()
		b.WriteString("# TYPE req_total counter\n")
		for i := range 200 {
			fmt.Fprintf(&b, "req_total{route=\"/api/v1/resource/%d\",code=\"200\"} %d\n", i, i)
		}
		b.WriteString("lat{clear_mode=\"p99_5m\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n")
		mustPush(t, s, fmt.Sprintf("job=j%d", g), b.String())
	}
	return s, clk
}

// TestCheckpointInParts: a checkpoint larger than the capture buffer
// reaches the file in several writes and restores to the same state.
func TestCheckpointInParts(t *testing.T) {
	s, _ := bigStore(t)
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if len(l.committed) < 2*captureBuffer || l.writes < 2 {
		t.Fatalf("checkpoint of %d bytes in %d writes; the test wants several buffers", len(l.committed), l.writes)
	}
	if got := testutilGauge(s.metrics.checkpointBytes); got != float64(len(l.committed)) {
		t.Fatalf("sluice_checkpoint_bytes %v, want %d", got, len(l.committed))
	}
	assertRestores(t, s, l.committed, "restored state")
}

// assertRestores restores data into a new Store and expects s's state.
func assertRestores(t *testing.T, s *Store, data []byte, what string) {
	t.Helper()
	r, _ := newTestStore(t, testSettings())
	if err := r.Restore(data); err != nil {
		t.Fatal(err)
	}
	if got, want := expose(t, r), expose(t, s); got != want {
		t.Fatalf("%s differs:\n got:\n%s\nwant:\n%s", what, got, want)
	}
	// The series limits' count (buckets included) comes back too.
	if got, want := r.counted.Load(), s.counted.Load(); got != want {
		t.Fatalf("%s counts %d series for the limits, want %d", what, got, want)
	}
}

// TestCheckpointWriteFailure: a checkpoint whose file cannot be written is
// aborted, not committed, and says why.
func TestCheckpointWriteFailure(t *testing.T) {
	s, _ := bigStore(t)
	l := &partsLog{failWrite: 2}
	err := s.Checkpoint(context.Background(), l)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Checkpoint = %v, want the write error", err)
	}
	if l.committed != nil || !l.file.aborted {
		t.Fatalf("a checkpoint that failed to write was committed (%d bytes) or not aborted (%v)", len(l.committed), l.file.aborted)
	}
	// The next checkpoint works.
	l.failWrite = 0
	if err := s.Checkpoint(context.Background(), l); err != nil || l.committed == nil {
		t.Fatalf("next checkpoint: %v", err)
	}
}

// toVersion1 rewrites a version 2 snapshot (snapshotLayout 2) in the version 1 layout: the
// groups and the counts before the series, no trailer.
func toVersion1(t testing.TB, data []byte) []byte {
	t.Helper()
	body := data[len(snapshotMagic)+1:] // the version is one byte
	tr := body[len(body)-snapshotTrailer:]
	body = body[:len(body)-snapshotTrailer]
	ns, ng, at := binary.BigEndian.Uint64(tr), binary.BigEndian.Uint64(tr[8:]), binary.BigEndian.Uint64(tr[16:])
	out := append([]byte(snapshotMagic), 1)
	out = binary.AppendUvarint(out, ng)
	out = append(out, body[at:]...)
	out = binary.AppendUvarint(out, ns)
	return append(out, body[:at]...)
}

// TestRestoreVersion1: a checkpoint written before version 2 (the layout
// of Sluice until the checkpoint was streamed) still restores.
func TestRestoreVersion1(t *testing.T) {
	s, _ := bigStore(t)
	s.snapshotLayout = 2
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	assertRestores(t, s, toVersion1(t, l.committed), "version 1 restore")
}

// TestRestoreBadSnapshot: damaged snapshots are refused with an error.
func TestRestoreBadSnapshot(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	mustPush(t, s, "job=a", "x 1\n")
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	good := l.committed
	trailer := func(ns, ng, at uint64) []byte {
		b := bytes.Clone(good[:len(good)-snapshotTrailer])
		b = binary.BigEndian.AppendUint64(b, ns)
		b = binary.BigEndian.AppendUint64(b, ng)
		return binary.BigEndian.AppendUint64(b, at)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{name: "bad magic", data: append([]byte("XXXX"), good[4:]...), want: "bad magic"},
		{name: "unknown version", data: append([]byte("SLST\x04"), good[5:]...), want: "unsupported version"},
		{name: "no trailer", data: good[:len(snapshotMagic)+1+snapshotTrailer-1], want: "truncated trailer"},
		{name: "groups offset past the end", data: trailer(1, 1, 1<<40), want: "does not fit"},
		{name: "huge series count", data: trailer(1<<50, 1, 2), want: "does not fit"},
		{name: "cut short", data: append(bytes.Clone(good[:len(good)-snapshotTrailer-3]), good[len(good)-snapshotTrailer:]...), want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestStore(t, testSettings())
			err := r.Restore(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// FuzzRestore: no snapshot bytes make Restore panic.
func FuzzRestore(f *testing.F) {
	s, _ := newTestStore(f, testSettings())
	for _, text := range []string{"x 1\n", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\nlat{clear_mode=\"p99_5m\"} 3\n"} {
		mustPush(f, s, "job=a", text)
		l := &partsLog{}
		if err := s.Checkpoint(context.Background(), l); err != nil {
			f.Fatal(err)
		}
		f.Add(l.committed)
		f.Add(toVersion1(f, l.committed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, _ := newTestStore(t, testSettings())
		_ = r.Restore(data)
	})
}

// TestSeriesKeySharesLabels: every series' key is its labels' encoding
// (Labels.Bytes), after a push and after a restore, and under the default
// labels implementation it is the labels' own memory, not a copy.
func TestSeriesKeySharesLabels(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	if !s.keysInLabels {
		t.Log("this build's labels.Labels is not stringlabels: keys are copies")
	}
	mustPush(t, s, "job=a", "# TYPE req_total counter\nreq_total{code=\"200\"} 1\nlat{clear_mode=\"p99_5m\"} 3\n")
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	r, _ := newTestStore(t, testSettings())
	if err := r.Restore(l.committed); err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]*Store{"pushed": s, "restored": r} {
		n := 0
		for _, g := range st.groupList() {
			for key, se := range g.series {
				n++
				if key != se.key || se.key != string(se.lset.Bytes(nil)) {
					t.Fatalf("%s: series %v has key %q, want its labels' encoding", name, se.lset, se.key)
				}
				if d, ok := labelsData(se.lset); st.keysInLabels && (!ok || unsafe.StringData(d) != unsafe.StringData(se.key)) {
					t.Fatalf("%s: series %v: the key is a copy of the labels' bytes", name, se.lset)
				}
			}
		}
		if n != 2 {
			t.Fatalf("%s: %d series, want 2", name, n)
		}
	}
}

// TestRestoreVersion2: a checkpoint from before units were kept restores,
// with no unit.
func TestRestoreVersion2(t *testing.T) {
	s, _ := bigStore(t)
	s.snapshotLayout = 2
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if l.committed[len(snapshotMagic)] != 2 {
		t.Fatalf("written as version %d", l.committed[len(snapshotMagic)])
	}
	assertRestores(t, s, l.committed, "version 2 restore")
}

// TestUnitIsKept: a family's unit (OpenMetrics # UNIT, remote_write
// metadata) goes out with its metadata, and survives a checkpoint.
func TestUnitIsKept(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	fam := &dto.MetricFamily{Name: ptr("job_duration_seconds"), Help: ptr("Job duration."), Unit: ptr("seconds"),
		Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.5)}}}}
	if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=u"), Method: MethodPost, Families: []*dto.MetricFamily{fam}}); err != nil {
		t.Fatal(err)
	}
	unitOf := func(st *Store) string {
		t.Helper()
		rec := &recorder{}
		f := NewFlusher(15*time.Second, clk.now, rec, []Source{{Gatherer: st}}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
		f.Flush(f.WindowEnd(clk.t))
		for _, req := range rec.reqs {
			for _, m := range req.Metadata {
				if m.MetricFamilyName == "job_duration_seconds" {
					return m.Unit
				}
			}
		}
		t.Fatal("no metadata for job_duration_seconds")
		return ""
	}
	if u := unitOf(s); u != "seconds" {
		t.Errorf("unit in the window's metadata = %q, want seconds", u)
	}
	l := &partsLog{}
	if err := s.Checkpoint(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	r, _ := newTestStore(t, testSettings())
	if err := r.Restore(l.committed); err != nil {
		t.Fatal(err)
	}
	if u := unitOf(r); u != "seconds" {
		t.Errorf("unit after a checkpoint = %q, want seconds", u)
	}
}

package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openT opens a WAL on a fresh registry and closes it at the end of the
// test (a second Close is a no-op).
func openT(t testing.TB, dir string, fsys FS, opts Options) *WAL {
	t.Helper()
	w, err := Open(dir, fsys, opts, prometheus.NewRegistry(), testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func testLogger(t testing.TB) *slog.Logger {
	if tt, ok := t.(*testing.T); ok {
		return slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

func value(c prometheus.Collector) float64 {
	var m dto.Metric
	if err := c.(prometheus.Metric).Write(&m); err != nil {
		panic(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	panic("not a counter or gauge")
}

// batch is what one Append wrote, and where it ended.
type batch struct {
	recs []Record
	end  Position
}

// genBatches returns n batches of 1..maxRecs records of 0..maxData bytes
// each, every record unique.
func genBatches(rng *rand.Rand, n, maxRecs, maxData int) []batch {
	bs := make([]batch, n)
	for i := range bs {
		recs := make([]Record, 1+rng.IntN(maxRecs))
		for j := range recs {
			data := make([]byte, rng.IntN(maxData+1))
			for k := range data {
				data[k] = byte(rng.Uint32())
			}
			recs[j] = Record{Type: byte(1 + rng.IntN(255)), Data: data}
		}
		bs[i] = batch{recs: recs}
	}
	return bs
}

// appendAll appends the batches in order and records their end positions.
func appendAll(t testing.TB, w *WAL, bs []batch) {
	t.Helper()
	for i := range bs {
		pos, err := w.Append(context.Background(), bs[i].recs...)
		if err != nil {
			t.Fatalf("Append batch %d: %v", i, err)
		}
		bs[i].end = pos
	}
}

// replayed is one record Replay produced, its data copied.
type replayed struct {
	pos Position
	rec Record
}

func replayAll(t testing.TB, w *WAL, from Position) []replayed {
	t.Helper()
	var out []replayed
	err := w.Replay(from, func(pos Position, r Record) error {
		out = append(out, replayed{pos, Record{Type: r.Type, Data: bytes.Clone(r.Data)}})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%v): %v", from, err)
	}
	return out
}

// flatten is what replaying bs should produce.
func flatten(bs []batch) []replayed {
	var out []replayed
	for _, b := range bs {
		for _, r := range b.recs {
			out = append(out, replayed{b.end, r})
		}
	}
	return out
}

func diffReplay(t testing.TB, got, want []replayed) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.pos != w.pos || g.rec.Type != w.rec.Type || !bytes.Equal(g.rec.Data, w.rec.Data) {
			t.Fatalf("record %d: got pos %v type %d %d bytes, want pos %v type %d %d bytes",
				i, g.pos, g.rec.Type, len(g.rec.Data), w.pos, w.rec.Type, len(w.rec.Data))
		}
	}
}

// frameLen is the size of the frame Append writes for recs.
func frameLen(recs []Record) int64 {
	n, err := payloadLen(recs)
	if err != nil {
		panic(err)
	}
	return frameHeaderSize + n
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, ok := ParseSegmentName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	return names
}

// errInjected is the error faultFS returns unless a fault says otherwise.
var errInjected = errors.New("injected I/O error")

// fault is one armed failure of faultFS, consumed by the first operation
// on a segment file that matches op.
type fault struct {
	op string // "write", "sync", "truncate", "create", "syncdir"
	// For "write": how many bytes reach the file before the failure
	// (-1: half of them). err nil with short >= 0 is a silent short write.
	short int
	err   error
	times int // how many operations fail; 0 means 1, -1 forever
}

// faultFS wraps an FS and fails segment-file operations as armed. It
// never touches checkpoint files.
type faultFS struct {
	FS
	// noSync turns fsyncs into no-ops (for the fuzz target's speed).
	noSync bool
	// createdOnly leaves segment files opened without O_CREATE (in a new
	// log, the background zero-filler's) unwrapped.
	createdOnly bool

	mu     sync.Mutex // guards faults and onSync
	faults []fault
	onSync func() // called by every segment Sync before it syncs
}

func (f *faultFS) arm(fs ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, fs...)
}

func (f *faultFS) take(op string) (fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ft := range f.faults {
		if ft.op != op {
			continue
		}
		switch {
		case ft.times == 0 || ft.times == 1:
			f.faults = append(f.faults[:i], f.faults[i+1:]...)
		case ft.times > 1:
			f.faults[i].times--
		}
		return ft, true
	}
	return fault{}, false
}

func isSegment(name string) bool {
	_, ok := ParseSegmentName(filepath.Base(name))
	return ok
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if isSegment(name) && flag&os.O_CREATE != 0 {
		if ft, ok := f.take("create"); ok {
			return nil, ft.err
		}
	}
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !isSegment(name) || (f.createdOnly && flag&os.O_CREATE == 0) {
		return file, err
	}
	return &faultFile{File: file, fs: f}, nil
}

func (f *faultFS) SyncDir(name string) error {
	if ft, ok := f.take("syncdir"); ok {
		return ft.err
	}
	if f.noSync {
		return nil
	}
	return f.FS.SyncDir(name)
}

type faultFile struct {
	File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	ft, ok := f.fs.take("write")
	if !ok {
		return f.File.Write(p)
	}
	n := ft.short
	if n < 0 {
		n = len(p) / 2
	}
	n = min(n, len(p))
	if n > 0 {
		if _, err := f.File.Write(p[:n]); err != nil {
			return 0, err
		}
	}
	return n, ft.err
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	hook := f.fs.onSync
	f.fs.mu.Unlock()
	ft, faulty := f.fs.take("sync")
	if hook != nil {
		hook()
	}
	if faulty {
		return ft.err
	}
	if f.fs.noSync {
		return nil
	}
	return f.File.Sync()
}

func (f *faultFile) Truncate(size int64) error {
	if ft, ok := f.fs.take("truncate"); ok {
		return ft.err
	}
	return f.File.Truncate(size)
}

// Compile-time checks.
var (
	_ FS        = (*faultFS)(nil)
	_ io.Writer = (*faultFile)(nil)
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func posList(bs []batch) string {
	var b bytes.Buffer
	for _, x := range bs {
		fmt.Fprintf(&b, "%v ", x.end)
	}
	return b.String()
}

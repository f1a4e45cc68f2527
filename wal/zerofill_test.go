package wal

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// eventually polls cond every 5 ms until it holds or 10 s pass. For
// background work that has no completion signal; not a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fileSizeOf(t *testing.T, dir string, seg int) int64 {
	t.Helper()
	st, err := os.Stat(filepath.Join(dir, SegmentName(seg)))
	must(t, err)
	return st.Size()
}

// TestBackgroundZeroFill checks that with BackgroundZeroFill the zeros
// ahead of the log are written by the filler, fillLead ahead of the end,
// while an append writes only the first chunk of a segment; and that a
// crash, a reopen and Close treat the filler's zeros as they treat an
// append's.
func TestBackgroundZeroFill(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	bs := genBatches(rng, 200, 3, 300) // about 90 KiB: under one chunk
	opts := Options{SegmentSize: 16 << 20, BackgroundZeroFill: true}
	dir := t.TempDir()
	w := openT(t, dir, nil, opts)
	appendAll(t, w, bs)
	// The last batch ends the log exactly where the append's own zeros
	// end, so that only the filler's zeros lie beyond: Close must still
	// cut them.
	pad := batch{recs: []Record{{Type: 1, Data: make([]byte, fillChunk-bs[len(bs)-1].end.Offset-frameLen([]Record{{Type: 1}}))}}}
	for frameLen(pad.recs) > fillChunk-bs[len(bs)-1].end.Offset { // the length's varint grew
		pad.recs[0].Data = pad.recs[0].Data[1:]
	}
	bs = append(bs, pad)
	appendAll(t, w, bs[len(bs)-1:])
	last := bs[len(bs)-1].end
	if last != (Position{0, fillChunk}) {
		t.Fatalf("test setup: the batches end at %v, want %v", last, Position{0, fillChunk})
	}
	eventually(t, "the segment is not zero-filled fillLead past the log's end", func() bool {
		return fileSizeOf(t, dir, 0) >= last.Offset+fillLead
	})
	if got := value(w.m.zeroFill.WithLabelValues("append")); got != fillChunk {
		t.Fatalf("appends zero-filled %v bytes, want one chunk (%d): the first append of a segment finds none ready", got, fillChunk)
	}
	if got := value(w.m.zeroFill.WithLabelValues("background")); got < fillLead-fillChunk {
		t.Fatalf("the filler zero-filled %v bytes, want at least %d", got, fillLead-fillChunk)
	}

	crashed := copyDir(t, dir) // what a kill -9 leaves
	must(t, w.Close())
	if got := fileSizeOf(t, dir, 0); got != last.Offset {
		t.Fatalf("after Close the segment is %d bytes, want its batches only (%d)", got, last.Offset)
	}
	w = openT(t, crashed, nil, opts)
	if got := value(w.m.corruptions); got != 0 {
		t.Fatalf("reopening after a crash counted %v repairs, want 0", got)
	}
	diffReplay(t, replayAll(t, w, Position{}), flatten(bs))
	// The reopened log goes on from its end, zero-filled in the background
	// again.
	more := genBatches(rng, 3, 2, 100)
	appendAll(t, w, more)
	end := more[len(more)-1].end
	eventually(t, "the reopened segment is not zero-filled ahead of the log's end", func() bool {
		return fileSizeOf(t, crashed, 0) >= end.Offset+fillLead
	})
	diffReplay(t, replayAll(t, w, Position{}), flatten(append(bs, more...)))
}

// TestBackgroundZeroFillConcurrent appends from eight goroutines into 1 MiB
// segments, with Cuts in between, while the filler works: every
// acknowledged record is replayed where Append said, after Close and
// after a crash, and closed segments are exactly their batches.
func TestBackgroundZeroFillConcurrent(t *testing.T) {
	opts := Options{SegmentSize: 1 << 20, BackgroundZeroFill: true}
	dir := t.TempDir()
	w := openT(t, dir, nil, opts)

	const writers, perWriter = 8, 150
	results := make([][]batch, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 5))
			bs := genBatches(rng, perWriter, 3, 3000)
			for j := range bs {
				pos, err := w.Append(context.Background(), bs[j].recs...)
				if err != nil {
					t.Errorf("writer %d: Append %d: %v", i, j, err)
					return
				}
				bs[j].end = pos
			}
			results[i] = bs
		}()
	}
	cutsDone := make(chan struct{})
	go func() {
		defer close(cutsDone)
		for range 5 {
			if _, err := w.Cut(); err != nil {
				t.Errorf("Cut: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Wait()
	<-cutsDone
	if t.Failed() {
		return
	}
	var all []batch
	for _, bs := range results {
		all = append(all, bs...)
	}
	slices.SortFunc(all, func(a, b batch) int { return a.end.Compare(b.end) })
	want := flatten(all)
	last := all[len(all)-1].end
	if last.Segment < 3 {
		t.Fatalf("test setup: the log ends at %v, want several rotations", last)
	}

	crashed := copyDir(t, dir)
	diffReplay(t, replayAll(t, w, Position{}), want)
	must(t, w.Close())
	ends := map[int]int64{} // each segment's last batch end
	for _, b := range all {
		ends[b.end.Segment] = max(ends[b.end.Segment], b.end.Offset)
	}
	for _, name := range segmentFiles(t, dir) {
		seg, _ := ParseSegmentName(name)
		if got := fileSizeOf(t, dir, seg); got != ends[seg] {
			t.Fatalf("after Close segment %d is %d bytes, want its batches only (%d)", seg, got, ends[seg])
		}
	}
	w = openT(t, crashed, nil, opts)
	if got := value(w.m.corruptions); got != 0 {
		t.Fatalf("reopening after a crash counted %v repairs, want 0", got)
	}
	diffReplay(t, replayAll(t, w, Position{}), want)
}

// fillerFaultFS fails the filler's operations only: in a new log, the
// segment files the WAL opens without O_CREATE are the filler's.
type fillerFaultFS struct {
	FS
	op string // "open", "write" or "sync"
}

var errFiller = errors.New("injected filler error")

func (f *fillerFaultFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if !isSegment(name) || flag&os.O_CREATE != 0 || flag&os.O_WRONLY == 0 {
		return f.FS.OpenFile(name, flag, perm)
	}
	if f.op == "open" {
		return nil, errFiller
	}
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &fillerFaultFile{File: file, op: f.op}, nil
}

type fillerFaultFile struct {
	File
	op string
}

func (f *fillerFaultFile) Write(p []byte) (int, error) {
	if f.op == "write" {
		// Half of the chunk reaches the file, as on a disk that fills up.
		n, err := f.File.Write(p[:len(p)/2])
		if err != nil {
			return n, err
		}
		return n, errFiller
	}
	return f.File.Write(p)
}

func (f *fillerFaultFile) Sync() error {
	if f.op == "sync" {
		return errFiller
	}
	return f.File.Sync()
}

// TestBackgroundZeroFillFailure checks that a filler that cannot open,
// write or fsync the segment changes nothing the appends see: they write
// their own zeros, every batch is acknowledged and replayed, and Close
// leaves segments that are exactly their batches, also where a failed
// write had extended the file.
func TestBackgroundZeroFillFailure(t *testing.T) {
	for _, op := range []string{"open", "write", "sync"} {
		t.Run(op, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, 9))
			opts := Options{SegmentSize: 2 << 20, BackgroundZeroFill: true}
			dir := t.TempDir()
			w := openT(t, dir, &fillerFaultFS{FS: OSFS(), op: op}, opts)
			// Enough for the appends to need zeros beyond the first chunk.
			bs := genBatches(rng, 300, 3, 1500)
			appendAll(t, w, bs)
			last := bs[len(bs)-1].end
			if got := value(w.m.zeroFill.WithLabelValues("append")); got <= fillChunk {
				t.Fatalf("appends zero-filled %v bytes, want more than the first chunk (%d) once the filler failed", got, fillChunk)
			}
			if got := value(w.m.zeroFill.WithLabelValues("background")); got != 0 {
				t.Fatalf("the failing filler is counted for %v bytes, want 0", got)
			}
			diffReplay(t, replayAll(t, w, Position{}), flatten(bs))
			must(t, w.Close())
			if got := fileSizeOf(t, dir, last.Segment); got != last.Offset {
				t.Fatalf("after Close the last segment is %d bytes, want %d", got, last.Offset)
			}
		})
	}
}

// stallFillerFS holds the filler's first write until release is closed,
// after telling entered.
type stallFillerFS struct {
	FS
	entered, release chan struct{}
	once             sync.Once
}

func (f *stallFillerFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || !isSegment(name) || flag&os.O_CREATE != 0 || flag&os.O_WRONLY == 0 {
		return file, err
	}
	return &stallFillerFile{File: file, fs: f}, nil
}

type stallFillerFile struct {
	File
	fs *stallFillerFS
}

func (f *stallFillerFile) Write(p []byte) (int, error) {
	f.fs.once.Do(func() {
		close(f.fs.entered)
		<-f.fs.release
	})
	return f.File.Write(p)
}

// TestBackgroundZeroFillAppendWaitsForChunk checks that an append that
// needs the zeros the filler is writing waits for them instead of writing
// its batch where the filler's zeros are about to land.
func TestBackgroundZeroFillAppendWaitsForChunk(t *testing.T) {
	fsys := &stallFillerFS{FS: OSFS(), entered: make(chan struct{}), release: make(chan struct{})}
	w := openT(t, t.TempDir(), fsys, Options{SegmentSize: 16 << 20, BackgroundZeroFill: true})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(fsys.release) }) }
	defer release() // before openT's Close, which waits for the filler
	first := []batch{{recs: []Record{{Type: 1, Data: make([]byte, 1000)}}}}
	appendAll(t, w, first) // zero-fills the first chunk itself, then starts the filler on the second
	<-fsys.entered

	// This batch reaches into the chunk the filler is writing.
	data := make([]byte, fillChunk)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	second := []batch{{recs: []Record{{Type: 2, Data: data}}}}
	done := make(chan error, 1)
	go func() {
		pos, err := w.Append(context.Background(), second[0].recs...)
		second[0].end = pos
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Append into the chunk being zero-filled returned (%v) before the filler wrote it", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	must(t, <-done)
	diffReplay(t, replayAll(t, w, Position{}), flatten(append(first, second...)))
}

// TestBackgroundZeroFillRollback checks a failed append with the filler
// at work: the failed batch is rolled back, later appends go on, and the
// log replays exactly the acknowledged batches.
func TestBackgroundZeroFillRollback(t *testing.T) {
	for _, op := range []string{"write", "sync"} {
		t.Run(op, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(4, 4))
			fsys := &faultFS{FS: OSFS(), createdOnly: true}
			opts := Options{SegmentSize: 4 << 20, BackgroundZeroFill: true}
			dir := t.TempDir()
			w := openT(t, dir, fsys, opts)
			before := genBatches(rng, 100, 3, 2000)
			appendAll(t, w, before)
			eventually(t, "the filler did not zero-fill ahead", func() bool {
				return value(w.m.zeroFill.WithLabelValues("background")) > 0
			})
			fsys.arm(fault{op: op, short: -1, err: errInjected})
			if _, err := w.Append(context.Background(), Record{Type: 9, Data: make([]byte, 5000)}); err == nil {
				t.Fatalf("Append with a failing %s succeeded", op)
			}
			after := genBatches(rng, 100, 3, 2000)
			appendAll(t, w, after)
			all := append(before, after...)
			diffReplay(t, replayAll(t, w, Position{}), flatten(all))
			must(t, w.Close())
			last := all[len(all)-1].end
			if got := fileSizeOf(t, dir, last.Segment); got != last.Offset {
				t.Fatalf("after Close the last segment is %d bytes, want %d", got, last.Offset)
			}
		})
	}
}

package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults and bounds of Options.
const (
	// DefaultSegmentSize is small enough that TruncateBefore frees space in
	// steps of a few MiB, and large enough that rotating (one fsync, one
	// file creation, one directory fsync) is rare.
	DefaultSegmentSize = 16 << 20
	// DefaultSyncInterval bounds what SyncInterval mode can lose on a
	// machine crash to about a second of acknowledged appends.
	DefaultSyncInterval = time.Second

	minSegmentSize = 64
	// maxSegmentSize keeps frame lengths well inside their four bytes.
	maxSegmentSize = 1 << 30
)

var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("wal: closed")
	// ErrRecordTooLarge is returned by Append for a batch that does not
	// fit in one segment (records never span segments).
	ErrRecordTooLarge = errors.New("wal: batch larger than a segment")
	// ErrInvalidRecord is returned by Append for an empty batch or a
	// record of the reserved type 0.
	ErrInvalidRecord = errors.New("wal: invalid record")
	// ErrLocked is returned by Open when another process (or another open
	// WAL in this process) holds the directory's lock.
	ErrLocked = errors.New("wal: directory in use")
)

// LockFileName is the file in the WAL directory that Open locks
// exclusively (flock(2)), so that two Sluice processes cannot write one
// log. The lock goes with the process, so kill -9 leaves none behind.
const LockFileName = "lock"

// dirLocker is implemented by file systems that can lock a directory
// against other processes (OSFS). Open locks through it when fsys
// implements it; test file systems that wrap OSFS do not.
type dirLocker interface {
	LockDir(dir string) (io.Closer, error)
}

// Position is a place in the log: a segment and a byte offset in it.
// Positions order by Segment, then Offset.
type Position struct {
	Segment int
	Offset  int64
}

// Compare returns -1, 0 or +1 as p is before, at or after q.
func (p Position) Compare(q Position) int {
	switch {
	case p.Segment != q.Segment:
		if p.Segment < q.Segment {
			return -1
		}
		return 1
	case p.Offset < q.Offset:
		return -1
	case p.Offset > q.Offset:
		return 1
	}
	return 0
}

func (p Position) String() string { return fmt.Sprintf("%s@%d", SegmentName(p.Segment), p.Offset) }

// Record is one entry of the log. The WAL treats Data as opaque bytes.
type Record struct {
	Type uint8 // 0 is reserved and rejected by Append
	Data []byte
}

// SyncMode says when Append returns relative to stable storage.
type SyncMode int

const (
	// SyncAlways (the default) returns from Append only after its batch is
	// fsynced. Concurrent Appends share fsyncs (group commit). Nothing
	// acknowledged is lost on a process or machine crash.
	SyncAlways SyncMode = iota
	// SyncInterval returns from Append after write(2) and fsyncs every
	// Options.SyncInterval. A process crash (kill -9) loses nothing; a
	// machine crash or power loss loses up to one interval of
	// acknowledged appends.
	SyncInterval
)

func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode parses "always" or "interval".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "always":
		return SyncAlways, nil
	case "interval":
		return SyncInterval, nil
	}
	return 0, fmt.Errorf("wal: unknown fsync mode %q; allowed: always, interval", s)
}

// Options configure a WAL. The zero value is valid: 16 MiB segments,
// SyncAlways.
type Options struct {
	// SegmentSize is the size at which a new segment starts; a batch that
	// does not fit in one segment is refused. Default DefaultSegmentSize.
	SegmentSize  int64
	Sync         SyncMode
	SyncInterval time.Duration // for SyncInterval; default DefaultSyncInterval
	// BackgroundZeroFill writes the zeros ahead of the log's end from a
	// goroutine of the WAL's own instead of from the appends that reach
	// them (see zeroFiller). It opens the segment being written a second
	// time, through the FS.
	BackgroundZeroFill bool
}

func (o Options) withDefaults() (Options, error) {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < minSegmentSize || o.SegmentSize > maxSegmentSize {
		return o, fmt.Errorf("wal: segment size %d outside [%d, %d]", o.SegmentSize, minSegmentSize, maxSegmentSize)
	}
	switch o.Sync {
	case SyncAlways:
	case SyncInterval:
		if o.SyncInterval == 0 {
			o.SyncInterval = DefaultSyncInterval
		}
		if o.SyncInterval < 0 {
			return o, fmt.Errorf("wal: negative sync interval %v", o.SyncInterval)
		}
	default:
		return o, fmt.Errorf("wal: unknown sync mode %d", int(o.Sync))
	}
	return o, nil
}

// segInfo is one segment file: its index and the bytes of it that belong
// to the log.
type segInfo struct {
	idx  int
	size int64
}

// group is a run of batches bound for one segment that are written, and
// in SyncAlways mode fsynced, together. Appenders fill it under WAL.mu
// while it is queued; once the token holder has taken it off the queue
// only that holder touches it until it closes done.
type group struct {
	seg     int
	bufp    *[]byte // pooled; *bufp holds the frames
	records int
	batches int

	// Set by the token holder before done is closed.
	start int64 // offset of the group's first byte in its segment
	err   error
	done  chan struct{}
}

// bufPool recycles group buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// maxPooledBuf keeps one unusually large group from pinning its buffer.
const maxPooledBuf = 4 << 20

// WAL is a segmented write-ahead log. Append, Cut, TruncateBefore, Size,
// Segments, Err and Close are safe for concurrent use. Replay is meant for
// start-up, before the first Append, and must not run concurrently with
// TruncateBefore.
type WAL struct {
	dir    string
	fs     FS
	opts   Options
	lock   io.Closer // the directory lock; nil if fs cannot lock
	logger *slog.Logger
	reg    prometheus.Registerer
	m      *metrics

	// token is the I/O lock: a channel of capacity one, so that a waiting
	// appender can select on it and on its batch's completion at once. Its
	// holder owns the segment file and the four fields below: it writes,
	// fsyncs, rotates, rolls back and closes. The one exception is the
	// SyncInterval loop, which reads file under the token but fsyncs it
	// without (see syncLoop).
	token   chan struct{}
	file    File
	fileSeg int
	written int64 // bytes of file that are in the log (acknowledged or being acknowledged)
	// zeroed is the size of file: written plus the zeros written ahead of
	// it (see zeroAhead). The file offset is always written.
	zeroed int64
	zeros  []byte // a buffer of zeros for zeroAhead; allocated on first use
	// fill writes the zeros ahead in the background; nil without
	// Options.BackgroundZeroFill. It has file attached except while the
	// token holder truncates, rotates or closes it.
	fill   *zeroFiller
	synced int64 // bytes of file known to be on stable storage
	// dropped is how much of file's start has had its cached pages
	// evicted (dropSynced).
	dropped int64

	// mu guards the fields below. It is held for bookkeeping only, never
	// across I/O. Lock order: token, then mu.
	mu     sync.Mutex
	queue  []*group  // groups waiting for the token holder, in log order
	tail   Position  // where the next batch goes if every queued group succeeds
	segs   []segInfo // segment files in the log, ascending; the last is fileSeg's
	err    error     // sticky: the log can no longer vouch for its contents
	closed bool

	stop chan struct{} // closed by Close; stops the SyncInterval goroutine
	wg   sync.WaitGroup
}

// Open opens or creates the log in dir (creating dir if needed) and
// returns it positioned to append after the last valid batch.
//
// Bad bytes never make Open fail. A torn or corrupt tail in the last
// segment is cut off at the last valid batch; corruption in an earlier
// segment cuts that segment there and deletes every later segment (records
// after a gap cannot be trusted to make sense). Each repair is counted in
// sluice_wal_corruptions_repaired_total and logged. Open fails only when
// the file system does (listing, reading, truncating, creating files).
//
// Checkpoints (WriteCheckpoint) are expected in dir. Segments before the
// newest valid checkpoint's segment are redundant, so Open neither checks
// nor repairs them: damage there cannot cost newer data. And Open always
// leaves the append position at or after the checkpoint's, so that
// Replay(checkpoint) sees every later Append even if the log lost its end.
//
// Metrics are registered on reg (if not nil) and unregistered by Close.
func Open(dir string, fsys FS, opts Options, reg prometheus.Registerer, logger *slog.Logger) (*WAL, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if fsys == nil {
		fsys = OSFS()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := fsys.MkdirAll(dir, 0o777); err != nil {
		return nil, fmt.Errorf("wal: create directory: %w", err)
	}
	var lock io.Closer
	if l, ok := fsys.(dirLocker); ok {
		if lock, err = l.LockDir(dir); err != nil {
			return nil, err
		}
	}
	w := &WAL{
		lock:   lock,
		dir:    dir,
		fs:     fsys,
		opts:   o,
		logger: logger,
		reg:    reg,
		m:      newMetrics(),
		token:  make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	if err := w.recover(); err != nil {
		w.unlock()
		return nil, err
	}
	if err := w.m.register(reg); err != nil {
		w.file.Close()
		w.unlock()
		return nil, fmt.Errorf("wal: register metrics: %w", err)
	}
	if o.BackgroundZeroFill {
		w.fill = newZeroFiller(fsys, o.SegmentSize, logger, w.m.zeroFillBackground)
		w.fill.attach(w.path(w.fileSeg), w.zeroed)
	}
	if o.Sync == SyncInterval {
		w.wg.Add(1)
		go w.syncLoop()
	}
	return w, nil
}

func (w *WAL) path(idx int) string { return filepath.Join(w.dir, SegmentName(idx)) }

// recover checks the segments, repairs damage and opens the segment to
// append to.
func (w *WAL) recover() error {
	cp, haveCP, err := LoadCheckpoint(w.dir, w.fs)
	if err != nil {
		return err
	}
	for _, e := range cp.Skipped {
		// The log before a checkpoint is deleted once it is written, so
		// without an older checkpoint to fall back to, the state it held
		// is gone: counted and logged as an error, not a warning.
		w.m.corruptions.Inc()
		if haveCP {
			w.logger.Error("WAL: ignoring an unusable checkpoint; starting from an older one", "err", e)
		} else {
			w.logger.Error("WAL: ignoring an unusable checkpoint; no older one is left, so the aggregate state it held is lost and only the log after it is replayed", "err", e)
		}
	}
	checkFrom := 0
	if haveCP {
		checkFrom = cp.Pos.Segment
	}

	entries, err := w.fs.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("wal: list segments: %w", err)
	}
	var idxs []int
	for _, e := range entries {
		if i, ok := ParseSegmentName(e.Name()); ok && !e.IsDir() {
			idxs = append(idxs, i)
		}
	}
	slices.Sort(idxs)

	var (
		segs    []segInfo
		checked bool // whether segs ends with a checked segment
		r       segmentReader
	)
	for i, idx := range idxs {
		if idx < checkFrom {
			size, err := w.segmentSize(idx)
			if err != nil {
				return err
			}
			segs = append(segs, segInfo{idx, size})
			continue
		}
		if checked && idx != segs[len(segs)-1].idx+1 {
			prev := segs[len(segs)-1]
			cerr := &CorruptionError{Segment: prev.idx, Offset: prev.size,
				Err: fmt.Errorf("segments %s to %s are missing", SegmentName(prev.idx+1), SegmentName(idx-1))}
			if err := w.repair(cerr, idxs[i:], 0); err != nil {
				return err
			}
			break
		}
		valid, size, cerr, err := w.checkSegment(&r, idx)
		if err != nil {
			return err
		}
		if cerr == nil && valid < size {
			// Zeros written ahead of the log (zeroAhead) by a process
			// that did not close it: cut them, so that the segment is
			// exactly its batches again.
			if err := w.truncateSegment(idx, valid); err != nil {
				return err
			}
		}
		segs = append(segs, segInfo{idx, valid})
		checked = true
		if cerr != nil {
			if err := w.truncateSegment(idx, valid); err != nil {
				return err
			}
			if err := w.repair(cerr, idxs[i+1:], size-valid); err != nil {
				return err
			}
			break
		}
	}

	var end Position
	if len(segs) > 0 {
		last := segs[len(segs)-1]
		end = Position{last.idx, last.size}
	}
	if len(segs) == 0 || (haveCP && end.Compare(cp.Pos) < 0) {
		idx := 0
		if len(segs) > 0 {
			idx = end.Segment + 1
			w.logger.Warn("WAL: the log ends before the newest checkpoint; appending in a new segment so that positions keep increasing",
				"log_end", end, "checkpoint", cp.Pos)
		}
		if haveCP {
			c := cp.Pos.Segment
			if cp.Pos.Offset > 0 {
				c++
			}
			idx = max(idx, c)
		}
		f, err := w.createSegment(idx)
		if err != nil {
			return err
		}
		segs = append(segs, segInfo{idx, 0})
		w.file, w.fileSeg = f, idx
	} else {
		f, err := w.fs.OpenFile(w.path(end.Segment), os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("wal: open segment %s: %w", SegmentName(end.Segment), err)
		}
		// Not O_APPEND: batches overwrite the zeros written ahead of them
		// (zeroAhead), so writes go to the offset, kept at the log's end.
		if _, err := f.Seek(end.Offset, io.SeekStart); err != nil {
			f.Close()
			return fmt.Errorf("wal: seek segment %s: %w", SegmentName(end.Segment), err)
		}
		// A process that crashed may have left data in the page cache
		// only; make it durable before anything derived from replaying it
		// is acknowledged.
		if err := w.fsync(f); err != nil {
			f.Close()
			return fmt.Errorf("wal: fsync segment %s: %w", SegmentName(end.Segment), err)
		}
		w.file, w.fileSeg = f, end.Segment
		w.written, w.synced, w.zeroed, w.dropped = end.Offset, end.Offset, end.Offset, 0
	}
	w.segs = segs
	w.tail = Position{w.fileSeg, w.written}
	w.updateGauges()
	return nil
}

func (w *WAL) segmentSize(idx int) (int64, error) {
	f, err := w.fs.OpenFile(w.path(idx), os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("wal: open segment %s: %w", SegmentName(idx), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("wal: stat segment %s: %w", SegmentName(idx), err)
	}
	return st.Size(), nil
}

// checkSegment reads segment idx to its end and returns the length of its
// valid prefix, its size and, if the prefix is not all of it, why.
func (w *WAL) checkSegment(r *segmentReader, idx int) (valid, size int64, cerr *CorruptionError, err error) {
	f, err := w.fs.OpenFile(w.path(idx), os.O_RDONLY, 0)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("wal: open segment %s: %w", SegmentName(idx), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("wal: stat segment %s: %w", SegmentName(idx), err)
	}
	size = st.Size()
	r.reset(idx, f, 0, size)
	for {
		_, end, err := r.next()
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			return end, size, nil, nil
		case errors.As(err, &cerr):
			// Zeros to the end of the file are what zeroAhead wrote past
			// the last batch: the end of the log, not damage.
			zeros, zerr := zerosFrom(f, end)
			if zerr != nil {
				return 0, 0, nil, fmt.Errorf("wal: read segment %s: %w", SegmentName(idx), zerr)
			}
			if zeros {
				return end, size, nil, nil
			}
			return end, size, cerr, nil
		default:
			return 0, 0, nil, fmt.Errorf("wal: %w", err)
		}
	}
}

// zerosFrom reports whether every byte of f from off to its end is zero.
func zerosFrom(f File, off int64) (bool, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// truncateSegment cuts segment idx to size, durably.
func (w *WAL) truncateSegment(idx int, size int64) error {
	f, err := w.fs.OpenFile(w.path(idx), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: open segment %s for repair: %w", SegmentName(idx), err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("wal: truncate segment %s for repair: %w", SegmentName(idx), err)
	}
	if err := w.fsync(f); err != nil {
		f.Close()
		return fmt.Errorf("wal: fsync segment %s after repair: %w", SegmentName(idx), err)
	}
	return f.Close()
}

// repair deletes the segments in drop, newest first so that a crash in
// the middle never leaves a gap that looks like a complete log, then
// counts and logs the repair of cerr.
func (w *WAL) repair(cerr *CorruptionError, drop []int, lost int64) error {
	for i := len(drop) - 1; i >= 0; i-- {
		if size, err := w.segmentSize(drop[i]); err == nil {
			lost += size
		}
		if err := w.fs.Remove(w.path(drop[i])); err != nil {
			return fmt.Errorf("wal: remove segment %s after corruption: %w", SegmentName(drop[i]), err)
		}
	}
	if len(drop) > 0 {
		if err := w.fs.SyncDir(w.dir); err != nil {
			return fmt.Errorf("wal: sync directory after repair: %w", err)
		}
	}
	w.m.corruptions.Inc()
	w.logger.Warn("WAL: repaired a torn or corrupt log by cutting it at the last valid batch",
		"segment", SegmentName(cerr.Segment), "offset", cerr.Offset, "err", cerr.Err,
		"segments_deleted", len(drop), "bytes_dropped", lost)
	return nil
}

// createSegment creates segment idx empty and makes its creation durable.
func (w *WAL) createSegment(idx int) (File, error) {
	name := w.path(idx)
	// O_TRUNC: a file with this name is never part of the log (it can only
	// be left over from a creation whose directory fsync failed).
	f, err := w.fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("wal: create segment %s: %w", SegmentName(idx), err)
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		f.Close()
		_ = w.fs.Remove(name) // best effort; see O_TRUNC above
		return nil, fmt.Errorf("wal: sync directory after creating segment %s: %w", SegmentName(idx), err)
	}
	return f, nil
}

// Append writes recs to the log as one batch: after a crash either all of
// them are replayed or none. In SyncAlways mode it returns once the batch
// is fsynced, in SyncInterval mode once it is written. It returns the
// position just after the batch, which Replay passes along with each of
// its records.
//
// Concurrent Appends are written and fsynced together (group commit): an
// appender that finds the file idle writes the batches queued so far (up
// to a segment boundary) with one write(2) and one fsync while the others
// wait for it; the next group forms meanwhile.
//
// ctx is checked only before the batch is queued: once queued, Append
// waits for the outcome, since returning early would leave the caller
// unsure whether the batch is durable. On a write or fsync error every
// appender whose batch was in the failed write gets the error, none of
// those batches is in the log, and the segment is truncated back to its
// last complete batch. If that truncation fails too, the WAL refuses all
// further Appends with a sticky error (see Err). recs are not retained.
func (w *WAL) Append(ctx context.Context, recs ...Record) (Position, error) {
	pos, err := w.append(ctx, recs)
	if err != nil {
		w.m.appendErrors.Inc()
	}
	return pos, err
}

func (w *WAL) append(ctx context.Context, recs []Record) (Position, error) {
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	plen, err := payloadLen(recs)
	if err != nil {
		return Position{}, err
	}
	size := frameHeaderSize + plen
	if size > w.opts.SegmentSize {
		return Position{}, fmt.Errorf("%w: %d bytes, segments are %d", ErrRecordTooLarge, size, w.opts.SegmentSize)
	}
	crc := frameCRC(recs, plen)

	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return Position{}, ErrClosed
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return Position{}, err
	}
	if w.tail.Offset > 0 && w.tail.Offset+size > w.opts.SegmentSize {
		w.tail = Position{Segment: w.tail.Segment + 1}
	}
	var g *group
	if n := len(w.queue); n > 0 && w.queue[n-1].seg == w.tail.Segment {
		g = w.queue[n-1]
	} else {
		g = &group{seg: w.tail.Segment, bufp: bufPool.Get().(*[]byte), done: make(chan struct{})}
		w.queue = append(w.queue, g)
	}
	*g.bufp = appendFrame(*g.bufp, recs, plen, crc)
	end := int64(len(*g.bufp)) // relative to the group's start
	g.records += len(recs)
	g.batches++
	w.tail.Offset += size
	w.mu.Unlock()

	for {
		select {
		case <-g.done:
			if g.err != nil {
				return Position{}, g.err
			}
			return Position{Segment: g.seg, Offset: g.start + end}, nil
		case w.token <- struct{}{}:
			select {
			case <-g.done:
			default:
				// Groups are written in order and ours is still queued,
				// so the head of the queue is ours or an earlier one.
				w.commitNext()
			}
			<-w.token
		}
	}
}

// commitNext writes the group at the head of the queue and completes it.
// The caller holds the token.
func (w *WAL) commitNext() {
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.mu.Unlock()
		return
	}
	g := w.queue[0]
	// Shift rather than reslice, so that the backing array is reused: the
	// queue is short (groups wait only behind the one being written).
	n := copy(w.queue, w.queue[1:])
	w.queue[n] = nil
	w.queue = w.queue[:n]
	err := w.err
	w.mu.Unlock()

	if err == nil {
		err = w.write(g)
	} else {
		w.rollbackTail(g)
	}
	g.err = err
	if cap(*g.bufp) <= maxPooledBuf {
		*g.bufp = (*g.bufp)[:0]
		bufPool.Put(g.bufp)
	}
	g.bufp = nil
	close(g.done)
}

// write writes, and in SyncAlways mode fsyncs, one group. The caller
// holds the token.
func (w *WAL) write(g *group) error {
	if g.seg != w.fileSeg {
		if err := w.rotate(g.seg); err != nil {
			w.rollbackTail(g)
			return err
		}
	}
	buf := *g.bufp
	g.start = w.written
	err := w.zeroAhead(w.written + int64(len(buf)))
	if err == nil {
		var n int
		n, err = w.file.Write(buf)
		if err == nil && n < len(buf) {
			err = io.ErrShortWrite
		}
	}
	if err != nil {
		err = fmt.Errorf("wal: write segment %s: %w", SegmentName(w.fileSeg), err)
	} else if w.opts.Sync == SyncAlways {
		if serr := w.fsync(w.file); serr != nil {
			err = fmt.Errorf("wal: fsync segment %s: %w", SegmentName(w.fileSeg), serr)
		}
	}
	if err != nil {
		w.rollbackTail(g)
		w.rollback(err)
		return err
	}
	w.written += int64(len(buf))
	w.zeroed = max(w.zeroed, w.written)
	if w.fill != nil {
		w.fill.advance(w.written)
	}
	if w.opts.Sync == SyncAlways {
		w.synced = w.written
		w.dropSynced()
	}
	w.mu.Lock()
	w.segs[len(w.segs)-1].size = w.written
	w.updateGauges()
	w.mu.Unlock()
	w.m.records.Add(float64(g.records))
	w.m.batches.Add(float64(g.batches))
	return nil
}

// rollbackTail takes a group that will not be written out of the tail.
func (w *WAL) rollbackTail(g *group) {
	w.mu.Lock()
	if w.tail.Segment == g.seg {
		w.tail.Offset -= int64(len(*g.bufp))
	}
	w.mu.Unlock()
}

// rollback truncates the segment back to its last complete batch after a
// failed write or fsync, and makes that durable; if it cannot, the WAL
// turns unusable. The caller holds the token.
func (w *WAL) rollback(cause error) {
	if w.fill != nil {
		w.fill.detach()
		defer func() { w.fill.attach(w.path(w.fileSeg), w.zeroed) }()
	}
	if err := w.file.Truncate(w.written); err != nil {
		w.setSticky(fmt.Errorf("wal: truncate segment %s after a failed append (%v): %w", SegmentName(w.fileSeg), cause, err))
		return
	}
	w.zeroed = w.written
	if _, err := w.file.Seek(w.written, io.SeekStart); err != nil {
		w.setSticky(fmt.Errorf("wal: seek segment %s after a failed append (%v): %w", SegmentName(w.fileSeg), cause, err))
		return
	}
	// The truncation must be durable: otherwise a crash could bring back
	// the batch whose appenders were told it failed.
	if err := w.fsync(w.file); err != nil {
		w.setSticky(fmt.Errorf("wal: fsync segment %s after rolling back a failed append (%v): %w", SegmentName(w.fileSeg), cause, err))
		return
	}
	w.synced = w.written
	w.logger.Warn("WAL: append failed; rolled the segment back to its last complete batch",
		"segment", SegmentName(w.fileSeg), "offset", w.written, "err", cause)
}

func (w *WAL) setSticky(err error) {
	w.mu.Lock()
	first := w.err == nil
	if first {
		w.err = err
	}
	w.mu.Unlock()
	if first {
		w.logger.Error("WAL: unusable until restarted; refusing appends", "err", err)
	}
}

// rotate makes segment idx the one being written. The caller holds the
// token.
func (w *WAL) rotate(idx int) error {
	// Acknowledged data must not depend on a segment we stop tracking.
	if err := w.syncData(); err != nil {
		return err
	}
	f, err := w.createSegment(idx)
	if err != nil {
		return err
	}
	w.cutZeros()
	dropCache(w.file, w.dropped, w.synced-w.dropped) // all of it is synced
	if err := w.file.Close(); err != nil {
		w.logger.Warn("WAL: closing a full segment", "segment", SegmentName(w.fileSeg), "err", err)
	}
	w.file, w.fileSeg, w.written, w.synced, w.zeroed, w.dropped = f, idx, 0, 0, 0, 0
	if w.fill != nil {
		w.fill.attach(w.path(idx), 0)
	}
	w.mu.Lock()
	w.segs = append(w.segs, segInfo{idx, 0})
	w.updateGauges()
	w.mu.Unlock()
	return nil
}

// syncData fsyncs what was written since the last fsync. A failure here
// covers acknowledged data (SyncInterval mode), so it is sticky. The
// caller holds the token.
func (w *WAL) syncData() error {
	if w.synced >= w.written {
		return nil
	}
	if err := w.fsync(w.file); err != nil {
		err = fmt.Errorf("wal: fsync segment %s: %w", SegmentName(w.fileSeg), err)
		w.setSticky(err)
		return err
	}
	w.synced = w.written
	return nil
}

// zeroAheadBytes is how far ahead of the log's end the segment file is
// filled with zeros. Overwriting bytes that are already in the file
// changes no metadata, so an fsync after an append flushes the data alone
// instead of also committing the file system's journal (the new size):
// about half the CPU time and two thirds of the latency of an fsync on
// ext4. The zeros cost one write, and one fsync that commits the new
// size, per zeroAheadBytes of log.
const zeroAheadBytes = 4 << 20

// zeroAhead makes sure the segment file extends, with zeros, to at least
// end (and up to zeroAheadBytes further, within the segment size; with a
// background filler, fillChunk further, the filler doing the rest).
// Replay and Open take zeros after the last batch for the end of the
// segment. The caller holds the token.
func (w *WAL) zeroAhead(end int64) error {
	if end <= w.zeroed {
		return nil
	}
	ahead := int64(zeroAheadBytes)
	if w.fill != nil {
		zeroed, owned := w.fill.reserve(end)
		w.zeroed = max(w.zeroed, zeroed)
		if !owned {
			return nil
		}
		defer func() { w.fill.release(w.zeroed) }()
		ahead = fillChunk
	}
	target := max(end, min(w.zeroed+ahead, w.opts.SegmentSize))
	if w.zeros == nil {
		w.zeros = make([]byte, 256<<10)
	}
	if _, err := w.file.Seek(w.zeroed, io.SeekStart); err != nil {
		return fmt.Errorf("zero-fill ahead: %w", err)
	}
	from := w.zeroed
	defer func() { w.m.zeroFillAppend.Add(float64(w.zeroed - from)) }()
	for off := w.zeroed; off < target; {
		n, err := w.file.Write(w.zeros[:min(int64(len(w.zeros)), target-off)])
		off += int64(n)
		if err != nil {
			w.zeroed = max(w.zeroed, off)
			_, _ = w.file.Seek(w.written, io.SeekStart)
			return fmt.Errorf("zero-fill ahead: %w", err)
		}
	}
	w.zeroed = target
	if _, err := w.file.Seek(w.written, io.SeekStart); err != nil {
		return fmt.Errorf("zero-fill ahead: %w", err)
	}
	return nil
}

// cutZeros drops the zeros after the log's end from the segment being
// written, before it is closed: a full or closed segment is exactly its
// batches. Not fsynced: zeros left by a crash are cut by Open. The caller
// holds the token.
func (w *WAL) cutZeros() {
	if w.fill != nil {
		w.zeroed = max(w.zeroed, w.fill.detach())
	}
	if w.zeroed <= w.written {
		return
	}
	if err := w.file.Truncate(w.written); err != nil {
		w.logger.Warn("WAL: cutting the zeros after a segment's last batch", "segment", SegmentName(w.fileSeg), "err", err)
		return
	}
	w.zeroed = w.written
}

// dropChunk is how much synced log dropSynced lets accumulate before it
// evicts it from the page cache, and the alignment of what it evicts: the
// page cache holds a file in folios of up to 2 MiB, each aligned to its
// size, and evicts only those wholly inside the range, so a range ending
// elsewhere would leave the folio across its end behind for good.
const dropChunk = 2 << 20

// dropSynced evicts the pages of the segment being written that are on
// stable storage, a dropChunk at a time. Nothing reads them again while
// the process runs (recovery reads the disk), and keeping them cost more
// than memory: the page cache then grows by the log's whole rate (tens of
// MB/s at SPEC 10's push rates) until a checkpoint deletes the segments,
// and on a virtual machine whose host backs guest memory on first touch
// (the Firecracker development VM) each fresh page cost 6-9 µs to fill.
// Evicted pages go back to the kernel's free lists, where the next
// zeroAhead finds them: interleaved 1 GiB runs of the log's write pattern
// took 66 instead of 80 µs of CPU per append and fsync. Only synced bytes
// are evicted (the kernel keeps dirty pages anyway). The caller holds the
// token.
func (w *WAL) dropSynced() {
	if end := w.synced &^ (dropChunk - 1); end > w.dropped {
		dropCache(w.file, w.dropped, end-w.dropped)
		w.dropped = end
	}
}

// fsync makes what was written to f durable (syncFile), timed and counted.
func (w *WAL) fsync(f File) error {
	start := time.Now()
	err := syncFile(f)
	w.m.fsyncDuration.Observe(time.Since(start).Seconds())
	w.m.fsyncs.Inc()
	return err
}

// syncLoop fsyncs every SyncInterval in SyncInterval mode, without
// holding the token while the fsync runs.
func (w *WAL) syncLoop() {
	defer w.wg.Done()
	t := time.NewTicker(w.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		// The token is held only to read what to fsync and to record
		// the result: the fsync itself (milliseconds, sometimes tens)
		// runs without it, so appends, a write(2) each in this mode, go
		// on meanwhile instead of waiting for it.
		select {
		case <-w.stop:
			return
		case w.token <- struct{}{}:
		}
		f, seg, upto := w.file, w.fileSeg, w.written
		due := w.synced < upto
		<-w.token
		if !due {
			continue
		}
		err := w.fsync(f)
		select {
		case <-w.stop:
			return
		case w.token <- struct{}{}:
		}
		switch {
		case err != nil && !errors.Is(err, os.ErrClosed):
			// Sticky even if the segment changed meanwhile: the kernel
			// reports a writeback error to one fsync only, which may
			// have been this one rather than rotate's.
			w.setSticky(fmt.Errorf("wal: fsync segment %s: %w", SegmentName(seg), err))
		case err == nil && w.fileSeg == seg:
			w.synced = max(w.synced, upto)
			w.dropSynced()
		}
		// Closed: rotate fsynced the segment itself before closing it.
		<-w.token
	}
}

// updateGauges refreshes the size gauges. The caller holds mu.
func (w *WAL) updateGauges() {
	var n int64
	for _, s := range w.segs {
		n += s.size
	}
	w.m.bytes.Set(float64(n))
	w.m.segments.Set(float64(len(w.segs)))
}

// Replay calls fn for every record of every batch that starts at or after
// from, in log order, and stops at the end of the log. pos is the position
// just after the record's batch, as Append returned it. r.Data is valid
// only until fn returns. An error from fn stops Replay and is returned.
//
// from should be a position Append or Cut returned (or a checkpoint's):
// one inside a batch yields a *CorruptionError. Replay reads what Open
// found; it is meant for start-up, before the first Append.
func (w *WAL) Replay(from Position, fn func(pos Position, r Record) error) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	segs := slices.Clone(w.segs)
	w.mu.Unlock()

	if !slices.ContainsFunc(segs, func(s segInfo) bool { return s.idx == from.Segment }) {
		w.logger.Warn("WAL: replay starts at a segment that does not exist; records between it and the next segment were truncated or lost",
			"from", from, "first_segment", SegmentName(segs[0].idx), "last_segment", SegmentName(segs[len(segs)-1].idx))
	}
	var r segmentReader
	for _, s := range segs {
		if s.idx < from.Segment {
			continue
		}
		off := int64(0)
		if s.idx == from.Segment {
			off = from.Offset
		}
		if off >= s.size {
			continue
		}
		if err := w.replaySegment(&r, s, off, fn); err != nil {
			return err
		}
	}
	return nil
}

func (w *WAL) replaySegment(r *segmentReader, s segInfo, off int64, fn func(Position, Record) error) error {
	f, err := w.fs.OpenFile(w.path(s.idx), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: open segment %s: %w", SegmentName(s.idx), err)
	}
	defer f.Close()
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("wal: seek segment %s: %w", SegmentName(s.idx), err)
		}
	}
	r.reset(s.idx, f, off, s.size)
	for {
		recs, end, err := r.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		pos := Position{Segment: s.idx, Offset: end}
		for _, rec := range recs {
			if err := fn(pos, rec); err != nil {
				return err
			}
		}
	}
}

// Cut starts a new segment and returns the position of its start, a
// clean boundary for a checkpoint: every batch appended before Cut is
// before it, every batch appended after is at or after it, and, in both
// sync modes, everything before it is fsynced when Cut returns. If the
// current segment is still empty, Cut returns its start instead.
func (w *WAL) Cut() (Position, error) {
	w.token <- struct{}{}
	defer func() { <-w.token }()

	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return Position{}, ErrClosed
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return Position{}, err
	}
	pos := w.tail
	if pos.Offset > 0 {
		pos = Position{Segment: pos.Segment + 1}
	}
	w.tail = pos
	w.mu.Unlock()

	// Batches queued before the cut go before it.
	for {
		w.mu.Lock()
		more := len(w.queue) > 0 && w.queue[0].seg < pos.Segment
		w.mu.Unlock()
		if !more {
			break
		}
		w.commitNext()
	}
	if w.fileSeg != pos.Segment {
		if err := w.Err(); err != nil {
			return Position{}, err
		}
		if err := w.rotate(pos.Segment); err != nil {
			return Position{}, err
		}
	}
	if err := w.syncData(); err != nil {
		return Position{}, err
	}
	return pos, nil
}

// TruncateBefore deletes the segments before pos.Segment, oldest first.
// It never deletes the segment being written.
func (w *WAL) TruncateBefore(pos Position) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	limit := min(pos.Segment, w.segs[len(w.segs)-1].idx)
	var victims []int
	for _, s := range w.segs {
		if s.idx < limit {
			victims = append(victims, s.idx)
		}
	}
	w.mu.Unlock()
	if len(victims) == 0 {
		return nil
	}

	var err error
	removed := 0
	for _, idx := range victims {
		if e := w.removeSegment(idx); e != nil && !errors.Is(e, fs.ErrNotExist) {
			err = fmt.Errorf("wal: remove segment %s: %w", SegmentName(idx), e)
			break
		}
		removed++
	}
	if removed == 0 {
		return err
	}
	lastRemoved := victims[removed-1]
	w.mu.Lock()
	w.segs = slices.DeleteFunc(w.segs, func(s segInfo) bool { return s.idx <= lastRemoved })
	w.updateGauges()
	w.mu.Unlock()
	if e := w.fs.SyncDir(w.dir); e != nil && err == nil {
		err = fmt.Errorf("wal: sync directory after truncation: %w", e)
	}
	return err
}

// removeChunk and removePause pace the removal of a segment: it is cut
// removeChunk at a time from its end, with removePause after each cut,
// before it is unlinked. Unlinking a 128 MiB segment at once frees all
// its blocks in one go; on a file system mounted with discard (as cloud
// disks often are) that is one large discard, and every fsync of the
// log queued behind it: 15-19 ms on the development VM (fsyncs alone
// take 0.1-0.3 ms), pushes waiting the whole time.
const (
	removeChunk = 4 << 20
	removePause = 2 * time.Millisecond
)

// removeSegment deletes segment idx, which nothing reads any more,
// removeChunk at a time (see removeChunk). A crash halfway leaves the
// segment shorter, which is harmless: recovery does not read segments
// before the checkpoint, and the next checkpoint removes it.
func (w *WAL) removeSegment(idx int) error {
	path := w.path(idx)
	if f, err := w.fs.OpenFile(path, os.O_WRONLY, 0); err == nil {
		size, err := f.Seek(0, io.SeekEnd)
		for err == nil && size > removeChunk {
			size -= removeChunk
			if err = f.Truncate(size); err == nil {
				time.Sleep(removePause)
			}
		}
		_ = f.Close() // nothing was written; the unlink decides
	}
	return w.fs.Remove(path)
}

// Size returns the bytes of the log's segment files.
func (w *WAL) Size() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, s := range w.segs {
		n += s.size
	}
	return n
}

// Segments returns the number of segment files.
func (w *WAL) Segments() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.segs)
}

// Err returns the sticky error that makes the WAL refuse Appends, or nil
// while it is healthy (for a readiness check).
func (w *WAL) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close writes the batches still queued, fsyncs, closes the segment and
// unregisters the metrics. Appends waiting on it get their results;
// later calls of any method return ErrClosed. Close is idempotent: calls
// after the first return nil.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()

	close(w.stop)
	w.wg.Wait()

	w.token <- struct{}{}
	defer func() { <-w.token }()
	for {
		w.mu.Lock()
		n := len(w.queue)
		w.mu.Unlock()
		if n == 0 {
			break
		}
		w.commitNext()
	}
	err := w.syncData()
	w.mu.Lock()
	broken := w.err != nil
	w.mu.Unlock()
	if err == nil && !broken { // a broken log's files are left as they are for Open to repair
		w.cutZeros()
	}
	if w.fill != nil {
		w.fill.close()
	}
	if cerr := w.file.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("wal: close segment %s: %w", SegmentName(w.fileSeg), cerr)
	}
	w.m.unregister(w.reg)
	w.unlock()
	return err
}

// unlock releases the directory lock, if Open took one.
func (w *WAL) unlock() {
	if w.lock != nil {
		w.lock.Close()
		w.lock = nil
	}
}

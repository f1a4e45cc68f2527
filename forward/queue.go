package forward

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
)

// Files in a target's backlog directory (doc.go, "Backlog format").
const (
	cursorFile  = "cursor"
	cursorTmp   = "cursor.tmp"
	coalesceTmp = "coalesce.tmp"
	// cursorSize is segment <8b> | offset <8b> | CRC32-C of both <4b>.
	cursorSize = 20
)

const (
	// maxSegmentSize caps the segment size, which is max_backlog_bytes/16
	// otherwise: a fully sent segment is deleted whole, so smaller segments
	// free space sooner, and coalescing works on whole segments.
	maxSegmentSize = 8 << 20
	minSegmentSize = 64
	// cursorSyncInterval is how often at most the read cursor is written
	// and fsynced while batches are being accepted. After a crash, what was
	// sent in the last interval is sent again (at-least-once).
	cursorSyncInterval = 200 * time.Millisecond
)

var errQueueClosed = errors.New("backlog closed")

// segmentSize returns the size at which a backlog of the given limit
// starts a new segment.
func segmentSize(limit int64) int64 {
	return min(max(limit/16, minSegmentSize), maxSegmentSize)
}

// backlogLimit returns max_backlog_bytes, or its default for a
// configuration that bypassed Validate: a limit of 0 would coalesce away
// every window not yet read.
func backlogLimit(limit int64) int64 {
	if limit <= 0 {
		return configs.DefaultQueueConfig().MaxBacklogBytes
	}
	return limit
}

// queue is one target's backlog on disk: an append-only log of frames in
// numbered segments, one frame per window, and a persisted read cursor. It
// is bounded by max_backlog_bytes (coalesce.go).
//
// append may be called from any goroutine. Everything else (the read side:
// rewind, next, commit, syncCursor, enforceLimit) is for the one
// dispatcher goroutine of the target that owns the queue, or for stop once
// that goroutine ended; a replacing target's dispatcher starts only after
// the replaced one's ended.
type queue struct {
	dir    string
	fs     wal.FS
	logger *slog.Logger
	m      *targetMetrics

	mtx sync.Mutex // guards every field down to the reader's; never held across reads
	// limit is max_backlog_bytes; segSize derives from it.
	limit, segSize int64
	// full: the backlog went over its limit and has not come back to
	// half of it since (updateGaugesLocked), the coalescing's target.
	full      bool
	segs      []qseg   // ascending; appends go to the last one
	f         wal.File // the last segment, open for appending; nil until the first append after open or after a seal
	nextSeg   int      // index of the next segment created
	diskBytes int64    // sum of the segments' sizes
	samples   int64    // samples appended and not yet resolved (sent, dropped)
	// cursor: every frame before it is resolved; cursorSeen counts the
	// samples of cursor.Segment's frames before it.
	cursor     wal.Position
	cursorSeen int64
	// flushTo: frames ending at or before it were appended with flush.
	flushTo wal.Position
	// appended counts bytes ever appended; coalesceAfter holds coalescing
	// off until appended reaches it, after one that did not pay.
	appended, coalesceAfter int64
	closed                  bool
	// unsynced lists the segments sealed since the last sync without an
	// fsync; dirty says the segment appended to was written since then.
	unsynced []int
	dirty    bool

	// Reader state: rpos is the next frame to read, rseen the samples of
	// rpos.Segment's frames before it.
	rpos  wal.Position
	rseen int64
	rf    wal.File
	hdr   [frameHeaderSize]byte
	rbuf  []byte

	// mem holds the payloads of the last frames appended, in append
	// order, while the reader has not passed them: nextFrame takes a
	// frame from here instead of reading it back. memBytes is their total
	// size, at most memFrameBytes; spare holds payloads the reader is done
	// with (decoded; samples never alias a payload), for reuse by windows.
	// Guarded by mtx.
	mem      []memFrame
	memBytes int
	spare    [][]byte

	// Cursor persistence, also the dispatcher's.
	persisted   wal.Position
	lastPersist time.Time
}

// qseg is one segment file.
type qseg struct {
	idx     int
	size    int64 // bytes of whole frames; reads stop there
	samples int64 // samples in those frames
	frames  int
}

func (q *queue) path(name string) string { return filepath.Join(q.dir, name) }

func (q *queue) segPath(idx int) string { return q.path(wal.SegmentName(idx)) }

// openQueue opens (creating it if needed) the backlog in dir. It deletes
// segments the cursor has passed, checks every frame of the others (CRC
// included) and cuts each segment at its first invalid frame: the torn
// tail of a crash, or damage. Bad bytes are logged and never make it fail;
// only the file system does.
func openQueue(dir string, fsys wal.FS, limit int64, logger *slog.Logger, tm *targetMetrics) (*queue, error) {
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create backlog directory: %w", err)
	}
	limit = backlogLimit(limit)
	q := &queue{dir: dir, fs: fsys, logger: logger, m: tm, limit: limit, segSize: segmentSize(limit)}
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list backlog directory: %w", err)
	}
	var idxs []int
	for _, e := range entries {
		name := e.Name()
		if name == cursorTmp || name == coalesceTmp {
			// Left by a crash before the rename that would have used it.
			if err := fsys.Remove(q.path(name)); err != nil {
				return nil, fmt.Errorf("remove %s: %w", name, err)
			}
			continue
		}
		if i, ok := wal.ParseSegmentName(name); ok && !e.IsDir() {
			idxs = append(idxs, i)
		}
	}
	slices.Sort(idxs)

	cur, ok, err := readCursor(fsys, q.path(cursorFile))
	if errors.Is(err, errBadCursor) {
		logger.Warn("backlog cursor damaged; sending the whole backlog again", "dir", dir)
	} else if err != nil {
		return nil, err
	}
	if !ok && len(idxs) > 0 {
		cur = wal.Position{Segment: idxs[0]}
	}
	q.persisted = cur
	// Segments before the cursor's were sent; a crash came before their
	// deletion.
	for len(idxs) > 0 && idxs[0] < cur.Segment {
		if err := fsys.Remove(q.segPath(idxs[0])); err != nil {
			return nil, fmt.Errorf("remove sent backlog segment: %w", err)
		}
		idxs = idxs[1:]
	}
	q.nextSeg = cur.Segment + 1
	if len(idxs) > 0 {
		q.nextSeg = max(q.nextSeg, idxs[len(idxs)-1]+1)
		if idxs[0] != cur.Segment {
			cur = wal.Position{Segment: idxs[0]}
		}
	} else {
		// The cursor's segment is gone: the first one created starts it.
		cur = wal.Position{Segment: q.nextSeg}
	}

	var before int64 // samples before the cursor in its segment
	for _, idx := range idxs {
		cutAt := int64(-1)
		if idx == cur.Segment {
			cutAt = cur.Offset
		}
		s, boundary, n, err := q.scan(idx, cutAt)
		if err != nil {
			return nil, err
		}
		if idx == cur.Segment {
			cur.Offset, before = boundary, n
		}
		q.segs = append(q.segs, s)
		q.diskBytes += s.size
		q.samples += s.samples
	}
	q.samples -= before
	q.cursor, q.cursorSeen = cur, before
	q.rpos, q.rseen = cur, before
	if len(q.segs) > 0 {
		// What waits from before the restart goes out without waiting for
		// batch_send_deadline.
		last := q.segs[len(q.segs)-1]
		q.flushTo = wal.Position{Segment: last.idx, Offset: last.size}
	}
	q.updateGaugesLocked()
	if q.samples > 0 {
		logger.Info("resuming the backlog", "samples", q.samples, "bytes", q.unsentLocked(), "segments", len(q.segs))
	}
	return q, nil
}

// scan checks every frame of segment idx and cuts the file at the first
// invalid one. If cursor >= 0 it also returns the last frame boundary at
// or before cursor and the samples before that boundary.
func (q *queue) scan(idx int, cursor int64) (s qseg, boundary int64, before int64, err error) {
	s.idx = idx
	name := q.segPath(idx)
	f, err := q.fs.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return s, 0, 0, fmt.Errorf("open backlog segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, 0, 0, fmt.Errorf("stat backlog segment: %w", err)
	}
	size := fi.Size()
	br := bufio.NewReaderSize(f, 64<<10)
	var buf []byte
	for s.size < size {
		p, n, ferr := readFrame(br, s.size, size, &q.hdr, &buf)
		if ferr != nil {
			if !errors.Is(ferr, errFrame) {
				return s, 0, 0, fmt.Errorf("read backlog segment %s: %w", wal.SegmentName(idx), ferr)
			}
			q.logger.Warn("backlog segment damaged (a crash or a disk error); cutting it at its last valid frame",
				"segment", wal.SegmentName(idx), "offset", s.size, "bytes_dropped", size-s.size, "reason", ferr.Error())
			if err := q.truncate(name, s.size); err != nil {
				return s, 0, 0, err
			}
			break
		}
		s.size += frameHeaderSize + int64(len(p))
		s.samples += int64(n)
		s.frames++
		if cursor >= 0 && s.size <= cursor {
			boundary, before = s.size, s.samples
		}
	}
	return s, boundary, before, nil
}

func (q *queue) truncate(name string, size int64) error {
	f, err := q.fs.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("repair backlog segment: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("repair backlog segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("repair backlog segment: %w", err)
	}
	return f.Close()
}

// errBadCursor: the cursor file does not hold a valid cursor.
var errBadCursor = errors.New("damaged backlog cursor")

// readCursor returns the persisted cursor; ok is false if there is none,
// or it is damaged (errBadCursor), then the whole backlog is sent again.
func readCursor(fsys wal.FS, name string) (wal.Position, bool, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return wal.Position{}, false, nil
	}
	if err != nil {
		return wal.Position{}, false, fmt.Errorf("open backlog cursor: %w", err)
	}
	defer f.Close()
	var b [cursorSize + 1]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return wal.Position{}, false, fmt.Errorf("read backlog cursor: %w", err)
	}
	if n != cursorSize || crc32.Checksum(b[:16], castagnoli) != binary.BigEndian.Uint32(b[16:20]) {
		return wal.Position{}, false, errBadCursor
	}
	seg, off := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])
	if seg > 1<<31 || off > 1<<40 {
		return wal.Position{}, false, errBadCursor
	}
	return wal.Position{Segment: int(seg), Offset: int64(off)}, true, nil
}

// writeCursor replaces the cursor file: write a temporary file, fsync it,
// rename it. The directory is not fsynced: losing the rename in a machine
// crash only means sending again what the older cursor did not cover.
func writeCursor(fsys wal.FS, dir string, pos wal.Position) error {
	var b [cursorSize]byte
	binary.BigEndian.PutUint64(b[:8], uint64(pos.Segment))
	binary.BigEndian.PutUint64(b[8:16], uint64(pos.Offset))
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	tmp := filepath.Join(dir, cursorTmp)
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("write backlog cursor: %w", err)
	}
	_, err = f.Write(b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, filepath.Join(dir, cursorFile))
	}
	if err != nil {
		return fmt.Errorf("write backlog cursor: %w", err)
	}
	return nil
}

// setLimit applies a new max_backlog_bytes (a reloaded configuration).
func (q *queue) setLimit(limit int64) {
	limit = backlogLimit(limit)
	q.mtx.Lock()
	q.limit, q.segSize = limit, segmentSize(limit)
	q.coalesceAfter = 0
	q.mtx.Unlock()
}

// memFrameBytes bounds the frames a queue keeps in memory for its reader
// (queue.mem): enough for the windows appended while the shards send the
// previous ones, little enough that a target that is down costs only this
// much more memory.
const memFrameBytes = 4 << 20

// memFrame is a frame appended and kept in memory for the reader.
type memFrame struct {
	start   wal.Position // where the frame starts
	size    int64        // the frame's bytes on disk
	samples int
	payload []byte // a copy
	block   []byte // a relay frame's: the end of payload, its request compressed
	info    *wireInfo
	minT    int64
}

// bytes is what the frame counts against memFrameBytes.
func (m *memFrame) bytes() int {
	n := len(m.payload)
	if m.info != nil {
		n += 8 * len(m.info.keys)
	}
	return n
}

// append writes one frame of n samples. It never fsyncs: see doc.go,
// "Durability". A failed write is rolled back so that the segment ends
// with a whole frame; if even that fails the segment is sealed at its last
// whole frame and the next append starts a new one.
func (q *queue) append(frame []byte, n int, flush bool) error {
	return q.appendKeep(frame, n, flush, false)
}

// appendKeep is append that, if keep and there is room (memFrameBytes),
// also keeps a copy of the frame's payload for the reader: a target that
// keeps up then never reads back what was just written. The frame is on
// disk all the same, so what it means for durability is unchanged.
func (q *queue) appendKeep(frame []byte, n int, flush, keep bool) error {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	start, err := q.writeLocked(frame, n, flush)
	if err != nil {
		return err
	}
	if p := frame[frameHeaderSize:]; keep && q.memBytes+len(p) <= memFrameBytes {
		var c []byte
		if k := len(q.spare); k > 0 {
			c, q.spare = q.spare[k-1], q.spare[:k-1]
		}
		c = append(c[:0], p...)
		_, minT, _, _, _ := payloadHeader(c)
		q.keepLocked(memFrame{start: start, size: int64(len(frame)), samples: n, payload: c, minT: minT})
	}
	return nil
}

// appendWire appends a relay frame (wire.go) whose payload ends with
// the snappy block of its request, of blockLen bytes, and, if there is
// room, keeps a copy of the payload for the reader with info, which
// describes the request and is not copied. Otherwise it is append.
func (q *queue) appendWire(frame []byte, blockLen int, info *wireInfo, flush bool) error {
	n := info.floats + info.hists
	q.mtx.Lock()
	defer q.mtx.Unlock()
	start, err := q.writeLocked(frame, n, flush)
	if err != nil {
		return err
	}
	p := frame[frameHeaderSize:]
	m := memFrame{start: start, size: int64(len(frame)), samples: n, minT: info.minT, info: info}
	if q.memBytes+m.bytes()+len(p) <= memFrameBytes {
		// Not from spare: a whole frame's block is sent after the
		// reader is done with it.
		m.payload = bytes.Clone(p)
		m.block = m.payload[len(p)-blockLen:]
		q.keepLocked(m)
	}
	return nil
}

func (q *queue) keepLocked(m memFrame) {
	q.mem = append(q.mem, m)
	q.memBytes += m.bytes()
}

// writeLocked writes a frame of n samples at the end of the segment
// appended to (a new one if it does not fit) and returns where it starts.
func (q *queue) writeLocked(frame []byte, n int, flush bool) (wal.Position, error) {
	if q.closed {
		return wal.Position{}, errQueueClosed
	}
	size := int64(len(frame))
	if q.f == nil || (q.segs[len(q.segs)-1].size > 0 && q.segs[len(q.segs)-1].size+size > q.segSize) {
		if err := q.rotateLocked(); err != nil {
			return wal.Position{}, err
		}
	}
	last := &q.segs[len(q.segs)-1]
	if _, err := q.f.Write(frame); err != nil {
		if terr := q.f.Truncate(last.size); terr != nil {
			q.sealLocked()
		}
		return wal.Position{}, fmt.Errorf("write backlog segment %s: %w", wal.SegmentName(last.idx), err)
	}
	start := wal.Position{Segment: last.idx, Offset: last.size}
	last.size += size
	last.samples += int64(n)
	last.frames++
	q.dirty = true
	q.diskBytes += size
	q.samples += int64(n)
	q.appended += size
	if flush {
		q.flushTo = wal.Position{Segment: last.idx, Offset: last.size}
	}
	q.updateGaugesLocked()
	return start, nil
}

// rotateLocked starts a new segment. The previous one is not fsynced.
func (q *queue) rotateLocked() error {
	q.sealLocked()
	idx := q.nextSeg
	f, err := q.fs.OpenFile(q.segPath(idx), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("create backlog segment: %w", err)
	}
	q.nextSeg++
	q.segs = append(q.segs, qseg{idx: idx})
	q.f = f
	return nil
}

// sealLocked stops appending to the last segment.
func (q *queue) sealLocked() {
	if q.f != nil {
		if q.dirty {
			q.unsynced = append(q.unsynced, q.segs[len(q.segs)-1].idx)
			q.dirty = false
		}
		if err := q.f.Close(); err != nil {
			q.logger.Warn("close backlog segment", "err", err)
		}
		q.f = nil
	}
}

// sync makes every frame appended so far durable: it fsyncs the segment
// appended to, the segments sealed since the last sync (those since
// deleted need nothing) and the directory, which may have new segments.
// Appends wait meanwhile. Checkpoints call it (through Manager.Sync)
// before the write-ahead log drops relay records whose only other copy is
// here.
func (q *queue) sync() error {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	if q.closed || (!q.dirty && len(q.unsynced) == 0) {
		return nil
	}
	if q.f != nil && q.dirty {
		if err := q.f.Sync(); err != nil {
			return fmt.Errorf("fsync backlog segment: %w", err)
		}
	}
	for _, idx := range q.unsynced {
		f, err := q.fs.OpenFile(q.segPath(idx), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // sent and deleted
		}
		if err != nil {
			return fmt.Errorf("fsync backlog segment: %w", err)
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("fsync backlog segment %s: %w", wal.SegmentName(idx), err)
		}
	}
	if err := q.fs.SyncDir(q.dir); err != nil {
		return fmt.Errorf("fsync backlog directory: %w", err)
	}
	q.dirty, q.unsynced = false, q.unsynced[:0]
	return nil
}

// markFlush asks for everything appended so far to be sent without
// waiting for batch_send_deadline.
func (q *queue) markFlush() {
	q.mtx.Lock()
	if len(q.segs) > 0 {
		last := q.segs[len(q.segs)-1]
		q.flushTo = wal.Position{Segment: last.idx, Offset: last.size}
	}
	q.mtx.Unlock()
}

// unsentLocked returns the bytes of the frames at and after the cursor:
// sluice_forward_backlog_bytes, what max_backlog_bytes bounds.
func (q *queue) unsentLocked() int64 {
	if len(q.segs) > 0 && q.segs[0].idx == q.cursor.Segment {
		return q.diskBytes - q.cursor.Offset
	}
	return q.diskBytes
}

func (q *queue) updateGaugesLocked() {
	unsent := q.unsentLocked()
	switch {
	case unsent > q.limit:
		q.full = true
	case unsent <= q.limit/2:
		q.full = false
	}
	q.m.backlogBytes.Set(float64(unsent))
	q.m.queueSamples.Set(float64(q.samples))
}

// isFull reports whether the backlog is full: it went over
// max_backlog_bytes, so windows are being coalesced or dropped, and has
// not yet come back to half of it.
func (q *queue) isFull() bool {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return q.full
}

// overLimit reports whether the backlog is over max_backlog_bytes.
func (q *queue) overLimit() bool {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return q.unsentLocked() > q.limit
}

// pending returns the samples not yet resolved and the bytes they take.
func (q *queue) pending() (samples, bytes int64) {
	q.mtx.Lock()
	defer q.mtx.Unlock()
	return q.samples, q.unsentLocked()
}

// rewind moves the reader back to the cursor: frames read but not resolved
// are read again (by a replacing target, or after a restart).
func (q *queue) rewind() {
	q.closeReader()
	q.mtx.Lock()
	q.rpos, q.rseen = q.cursor, q.cursorSeen
	q.mtx.Unlock()
}

func (q *queue) closeReader() {
	if q.rf != nil {
		_ = q.rf.Close()
		q.rf = nil
	}
}

// readFrameRef is a frame the reader got: its payload as read from disk,
// or as kept in memory at append.
type readFrameRef struct {
	payload []byte // valid until the next read, or releaseFrame if mem
	block   []byte // a relay frame kept in memory: the end of payload, its request compressed
	info    *wireInfo
	mem     bool // payload was kept in memory
	end     wal.Position
	flush   bool
	samples int
	minT    int64
}

// decode appends the frame's samples to dst.
func (f *readFrameRef) decode(d *frameDecoder, dst []sample) ([]sample, error) {
	return d.decode(f.payload, dst)
}

// nextFrame returns the next frame, from memory if it was kept there
// (appendBody), else read from disk as next does.
func (q *queue) nextFrame() (readFrameRef, bool) {
	q.mtx.Lock()
	i := 0
	for i < len(q.mem) && q.mem[i].start.Compare(q.rpos) < 0 {
		i++ // passed: skipped, coalesced or dropped
	}
	q.dropMemLocked(i)
	var m memFrame
	hit, newSeg := false, false
	if len(q.mem) > 0 {
		start := q.mem[0].start
		hit = start == q.rpos
		if !hit && start.Offset == 0 {
			// The frame starts the segment after the reader's, which
			// the reader has read through (or which is gone: sent).
			j, found := slices.BinarySearchFunc(q.segs, q.rpos.Segment, func(s qseg, idx int) int { return s.idx - idx })
			if !found || q.rpos.Offset >= q.segs[j].size {
				if found {
					j++
				}
				hit = j < len(q.segs) && q.segs[j].idx == start.Segment
				newSeg = hit
			}
		}
	}
	if hit {
		m = q.mem[0]
		q.mem[0] = memFrame{}
		q.mem = q.mem[1:]
		q.memBytes -= m.bytes()
	}
	flushTo := q.flushTo
	q.mtx.Unlock()
	if !hit {
		p, end, flush, ok := q.next()
		if !ok {
			return readFrameRef{}, false
		}
		count, minT, _, _, _ := payloadHeader(p) // checked by next
		return readFrameRef{payload: p, end: end, flush: flush, samples: count, minT: minT}, true
	}
	if newSeg {
		q.closeReader()
		q.rpos, q.rseen = m.start, 0
	}
	q.rpos.Offset += m.size
	q.rseen += int64(m.samples)
	if q.rf != nil {
		// Keep the file reader where the next frame starts.
		if _, err := q.rf.Seek(q.rpos.Offset, io.SeekStart); err != nil {
			q.closeReader()
		}
	}
	return readFrameRef{payload: m.payload, block: m.block, info: m.info, mem: true, end: q.rpos,
		flush: q.rpos.Compare(flushTo) <= 0, samples: m.samples, minT: m.minT}, true
}

// releaseFrame gives back the memory of a frame from nextFrame once it is
// decoded.
func (q *queue) releaseFrame(f readFrameRef) {
	if !f.mem || f.payload == nil {
		return
	}
	q.mtx.Lock()
	if len(q.spare) < 4 {
		q.spare = append(q.spare, f.payload[:0])
	}
	q.mtx.Unlock()
}

// dropMemLocked forgets the first n frames kept in memory.
func (q *queue) dropMemLocked(n int) {
	for i := range q.mem[:n] {
		q.memBytes -= q.mem[i].bytes()
	}
	clear(q.mem[:n])
	q.mem = q.mem[n:]
	if len(q.mem) == 0 {
		q.mem = q.mem[:0:0] // let the array go
	}
}

// forgetMemLocked forgets the frames kept in memory of segments up to
// idx, which coalescing is rewriting.
func (q *queue) forgetMemLocked(idx int) {
	i := 0
	for i < len(q.mem) && q.mem[i].start.Segment <= idx {
		i++
	}
	q.dropMemLocked(i)
}

// next returns the payload of the next frame, valid until the next call,
// the position just after the frame, and whether it was appended with
// flush. ok is false when everything appended has been read. A frame that
// cannot be read ends its segment: the samples of the rest of it are
// counted as dropped (reason backlog_corrupt) and the reader moves on.
//
// The file is read without buffering, up to the size recorded under the
// mutex: never a byte of a write still in progress or rolled back.
func (q *queue) next() (payload []byte, end wal.Position, flush, ok bool) {
	for {
		q.mtx.Lock()
		i, _ := slices.BinarySearchFunc(q.segs, q.rpos.Segment, func(s qseg, idx int) int { return s.idx - idx })
		if i == len(q.segs) {
			q.mtx.Unlock()
			return nil, q.rpos, false, false
		}
		s := q.segs[i]
		last := i == len(q.segs)-1
		flushTo := q.flushTo
		q.mtx.Unlock()
		if s.idx != q.rpos.Segment {
			// The reader's segment is gone, or it was before the first.
			q.closeReader()
			q.rpos, q.rseen = wal.Position{Segment: s.idx}, 0
		}
		if q.rpos.Offset >= s.size {
			if last {
				return nil, q.rpos, false, false
			}
			q.closeReader()
			q.rpos, q.rseen = wal.Position{Segment: s.idx + 1}, 0
			continue
		}
		p, n, err := q.readAt(s)
		if err != nil {
			q.skipSegment(s, err)
			continue
		}
		q.rpos.Offset += frameHeaderSize + int64(len(p))
		q.rseen += int64(n)
		return p, q.rpos, q.rpos.Compare(flushTo) <= 0, true
	}
}

// readAt reads the frame at the reader's position in segment s.
func (q *queue) readAt(s qseg) ([]byte, int, error) {
	if q.rf == nil {
		f, err := q.fs.OpenFile(q.segPath(s.idx), os.O_RDONLY, 0)
		if err != nil {
			return nil, 0, err
		}
		if _, err := f.Seek(q.rpos.Offset, io.SeekStart); err != nil {
			f.Close()
			return nil, 0, err
		}
		q.rf = f
	}
	p, n, err := readFrame(q.rf, q.rpos.Offset, s.size, &q.hdr, &q.rbuf)
	if err != nil {
		q.closeReader()
	}
	return p, n, err
}

// skipSegment gives up on the rest of segment s after a failed read.
func (q *queue) skipSegment(s qseg, err error) {
	q.closeReader()
	q.mtx.Lock()
	lost := max(s.samples-q.rseen, 0)
	q.samples -= lost
	if q.segs[len(q.segs)-1].idx == s.idx {
		q.sealLocked() // append no more behind the damage
	}
	q.updateGaugesLocked()
	q.mtx.Unlock()
	q.m.dropped.WithLabelValues(reasonCorrupt).Add(float64(lost))
	q.logger.Error("cannot read the backlog; skipping the rest of the segment",
		"segment", wal.SegmentName(s.idx), "offset", q.rpos.Offset, "samples_dropped", lost, "err", err)
	q.rpos, q.rseen = wal.Position{Segment: s.idx + 1}, 0
}

// commit records that the frame ending at end, of n samples, and every
// frame before it are resolved. Segments wholly before the cursor are
// deleted, except the last one, which takes appends.
func (q *queue) commit(end wal.Position, n int) {
	q.mtx.Lock()
	if end.Segment != q.cursor.Segment {
		q.cursorSeen = 0
	}
	q.cursor = end
	q.cursorSeen += int64(n)
	q.samples -= int64(n)
	var gone []int
	for len(q.segs) > 1 && (q.segs[0].idx < end.Segment || (q.segs[0].idx == end.Segment && end.Offset >= q.segs[0].size)) {
		gone = append(gone, q.segs[0].idx)
		q.diskBytes -= q.segs[0].size
		q.segs = q.segs[1:]
	}
	q.updateGaugesLocked()
	q.mtx.Unlock()
	q.removeSegments(gone)
}

func (q *queue) removeSegments(idxs []int) {
	for _, idx := range idxs {
		if err := q.fs.Remove(q.segPath(idx)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.logger.Error("remove backlog segment", "segment", wal.SegmentName(idx), "err", err)
		}
	}
}

// cursorDue reports whether the cursor moved since it was persisted, and
// how long to wait before persisting it (0: now).
func (q *queue) cursorDue(now time.Time) (bool, time.Duration) {
	q.mtx.Lock()
	moved := q.cursor != q.persisted
	q.mtx.Unlock()
	if !moved {
		return false, 0
	}
	return true, max(cursorSyncInterval-now.Sub(q.lastPersist), 0)
}

// syncCursor persists the cursor if it moved.
func (q *queue) syncCursor(now time.Time) error {
	q.mtx.Lock()
	c := q.cursor
	q.mtx.Unlock()
	if c == q.persisted {
		return nil
	}
	q.lastPersist = now
	if err := writeCursor(q.fs, q.dir, c); err != nil {
		return err
	}
	q.persisted = c
	return nil
}

// close closes the files; later appends fail. The cursor is not persisted
// here (syncCursor).
func (q *queue) close() {
	q.closeReader()
	q.mtx.Lock()
	q.sealLocked()
	q.closed = true
	q.mtx.Unlock()
}

// remove closes the queue and deletes its directory.
func (q *queue) remove() error {
	q.close()
	return removeDir(q.fs, q.dir)
}

// removeDir deletes a backlog directory, which holds only files.
func removeDir(fsys wal.FS, dir string) error {
	entries, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete backlog: %w", err)
	}
	for _, e := range entries {
		if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("delete backlog: %w", err)
		}
	}
	if err := fsys.Remove(dir); err != nil {
		return fmt.Errorf("delete backlog: %w", err)
	}
	return nil
}

package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Checkpoint file layout (FORMAT.md has the diagram):
//
//	magic "SLCP" <4b> | version <1b> = 1 | segment <8b> | offset <8b> |
//	data length <8b> | data | CRC32-C <4b> of every byte before it
//
// Integers are big endian. The file is named checkpoint.<segment>, the
// segment written as eight digits like a segment file.
const (
	checkpointPrefix     = "checkpoint."
	checkpointTmp        = "checkpoint.tmp"
	checkpointMagic      = "SLCP"
	checkpointVersion    = 1
	checkpointHeaderSize = 4 + 1 + 8 + 8 + 8
)

// Checkpoint is a checkpoint read back by LoadCheckpoint.
type Checkpoint struct {
	// Pos is the log position the checkpoint was taken at: the state in
	// Data covers every record before it, so replay starts there.
	Pos  Position
	Data []byte
	// Skipped holds a *CheckpointError for every newer checkpoint file
	// that failed verification and was passed over, newest first. The
	// caller counts and logs them.
	Skipped []error
}

// CheckpointError reports a checkpoint file that cannot be used.
type CheckpointError struct {
	Name string // file name within the directory
	Err  error
}

func (e *CheckpointError) Error() string {
	return fmt.Sprintf("wal: checkpoint %s unusable: %v", e.Name, e.Err)
}

func (e *CheckpointError) Unwrap() error { return e.Err }

func checkpointName(seg int) string { return checkpointPrefix + SegmentName(seg) }

// WriteCheckpoint stores data as the checkpoint for pos in dir, atomically:
// it writes checkpoint.tmp, fsyncs it, renames it to checkpoint.<segment>,
// fsyncs dir, and then removes every other checkpoint. A crash at any point
// leaves either the previous checkpoint or the new one readable. Positions
// passed to successive calls must not decrease.
//
// An error from the final removal of old checkpoints leaves the new one
// in place and readable.
func WriteCheckpoint(dir string, fsys FS, pos Position, data []byte) error {
	w, err := CreateCheckpoint(dir, fsys, pos)
	if err != nil {
		return err
	}
	_, _ = w.Write(data) // an error is Commit's
	return w.Commit()
}

// CheckpointFile is a checkpoint being written a part at a time, so that
// the state never has to be in memory whole: what is written to it is the
// data; Commit makes it the checkpoint, Abort drops it.
type CheckpointFile interface {
	io.Writer
	Commit() error
	Abort()
}

// CheckpointWriter writes a checkpoint file in parts (CreateCheckpoint).
// It is not safe for concurrent use.
type CheckpointWriter struct {
	dir   string
	fsys  FS
	pos   Position
	f     File
	bw    *bufio.Writer
	n     int64 // data bytes written
	err   error // the first write error; Commit returns it
	done  bool
	after func() error // run after a commit (the WAL drops the log before pos)
}

// checkpointBuffer is the write buffer of a CheckpointWriter.
const checkpointBuffer = 1 << 20

// CreateCheckpoint starts the checkpoint for pos in dir: it creates
// checkpoint.tmp and writes data to it as it comes. Commit then fills in
// the header's data length, appends the CRC (reading the file back, from
// the page cache), and stores it as WriteCheckpoint does. The file format
// is WriteCheckpoint's.
func CreateCheckpoint(dir string, fsys FS, pos Position) (*CheckpointWriter, error) {
	if pos.Segment < 0 || pos.Offset < 0 {
		return nil, fmt.Errorf("wal: write checkpoint: invalid position %v", pos)
	}
	tmp := filepath.Join(dir, checkpointTmp)
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, fmt.Errorf("wal: write checkpoint: %w", err)
	}
	// bufio turns a short write into io.ErrShortWrite, as writeFull does.
	w := &CheckpointWriter{dir: dir, fsys: fsys, pos: pos, f: f, bw: bufio.NewWriterSize(f, checkpointBuffer)}
	// The header's data length is filled in by Commit.
	_, w.err = w.bw.Write(make([]byte, checkpointHeaderSize))
	return w, nil
}

// Write appends p to the checkpoint's data. A failed write fails the
// checkpoint: Commit returns the error.
func (w *CheckpointWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("wal: write checkpoint: %w", err)
	}
	return n, w.err
}

// Commit completes the checkpoint: header, CRC, fsync, rename to
// checkpoint.<segment>, directory fsync, removal of every other
// checkpoint. On an error before the rename the file is removed and the
// previous checkpoint stands.
func (w *CheckpointWriter) Commit() error {
	if w.done {
		return errors.New("wal: checkpoint already committed or aborted")
	}
	if err := w.finish(); err != nil {
		w.Abort()
		return fmt.Errorf("wal: write checkpoint: %w", err)
	}
	w.done = true
	if err := w.fsys.Rename(filepath.Join(w.dir, checkpointTmp), filepath.Join(w.dir, checkpointName(w.pos.Segment))); err != nil {
		return fmt.Errorf("wal: rename checkpoint: %w", err)
	}
	if err := w.fsys.SyncDir(w.dir); err != nil {
		return fmt.Errorf("wal: sync directory after checkpoint: %w", err)
	}
	if err := removeOtherCheckpoints(w.dir, w.fsys, w.pos.Segment); err != nil {
		return err
	}
	if w.after != nil {
		return w.after()
	}
	return nil
}

// finish writes the header and the CRC and fsyncs and closes the file.
func (w *CheckpointWriter) finish() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		return err
	}
	hdr := make([]byte, 0, checkpointHeaderSize)
	hdr = append(hdr, checkpointMagic...)
	hdr = append(hdr, checkpointVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(w.pos.Segment))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(w.pos.Offset))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(w.n))
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := writeFull(w.f, hdr); err != nil {
		return err
	}
	// The CRC covers the header, written last: read the data back.
	h := crc32.New(castagnoli)
	_, _ = h.Write(hdr) // never fails
	if n, err := io.CopyBuffer(h, io.LimitReader(w.f, w.n), make([]byte, checkpointBuffer)); err != nil || n != w.n {
		return fmt.Errorf("read the checkpoint back: %d of %d bytes: %w", n, w.n, errors.Join(err, io.ErrUnexpectedEOF))
	}
	crc := h.Sum32()
	if _, err := w.f.Seek(checkpointHeaderSize+w.n, io.SeekStart); err != nil {
		return err
	}
	if err := writeFull(w.f, binary.BigEndian.AppendUint32(nil, crc)); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// Abort drops the checkpoint being written (a no-op after Commit).
func (w *CheckpointWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.f != nil {
		_ = w.f.Close()
	}
	// Best effort: a stale checkpoint.tmp is ignored and overwritten.
	_ = w.fsys.Remove(filepath.Join(w.dir, checkpointTmp))
}

// removeOtherCheckpoints removes every checkpoint file of dir but
// checkpoint.<seg>.
func removeOtherCheckpoints(dir string, fsys FS, seg int) error {
	old, err := listCheckpoints(dir, fsys)
	if err != nil {
		return fmt.Errorf("wal: list old checkpoints: %w", err)
	}
	removed := false
	for _, c := range old {
		if c.seg == seg {
			continue
		}
		if err := fsys.Remove(filepath.Join(dir, c.name)); err != nil {
			return fmt.Errorf("wal: remove old checkpoint: %w", err)
		}
		removed = true
	}
	if removed {
		if err := fsys.SyncDir(dir); err != nil {
			return fmt.Errorf("wal: sync directory after removing old checkpoints: %w", err)
		}
	}
	return nil
}

// writeFull writes b to f, turning a short write into io.ErrShortWrite.
func writeFull(f File, b []byte) error {
	n, err := f.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// ReadCheckpoint returns the newest checkpoint in dir that verifies, and
// ok=false if there is none. Corrupt checkpoints are skipped;
// LoadCheckpoint also says which, for the caller to count. A leftover
// checkpoint.tmp (a crash during WriteCheckpoint) is ignored. err is set
// only when dir cannot be listed.
func ReadCheckpoint(dir string, fsys FS) (pos Position, data []byte, ok bool, err error) {
	c, ok, err := LoadCheckpoint(dir, fsys)
	return c.Pos, c.Data, ok, err
}

// LoadCheckpoint is ReadCheckpoint that also reports the corrupt
// checkpoints it skipped, in Checkpoint.Skipped (set even when ok=false).
// A missing dir means no checkpoint.
func LoadCheckpoint(dir string, fsys FS) (Checkpoint, bool, error) {
	cps, err := listCheckpoints(dir, fsys)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Checkpoint{}, false, nil
		}
		return Checkpoint{}, false, fmt.Errorf("wal: list checkpoints: %w", err)
	}
	var skipped []error
	for i := len(cps) - 1; i >= 0; i-- {
		pos, data, err := readCheckpointFile(fsys, filepath.Join(dir, cps[i].name), cps[i].seg)
		if err != nil {
			skipped = append(skipped, &CheckpointError{Name: cps[i].name, Err: err})
			continue
		}
		return Checkpoint{Pos: pos, Data: data, Skipped: skipped}, true, nil
	}
	return Checkpoint{Skipped: skipped}, false, nil
}

type checkpointRef struct {
	name string
	seg  int
}

// listCheckpoints returns the checkpoint files in dir, oldest first.
func listCheckpoints(dir string, fsys FS) ([]checkpointRef, error) {
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var cps []checkpointRef
	for _, e := range entries {
		name := e.Name()
		suffix, found := strings.CutPrefix(name, checkpointPrefix)
		if !found || e.IsDir() {
			continue
		}
		if seg, ok := ParseSegmentName(suffix); ok {
			cps = append(cps, checkpointRef{name: name, seg: seg})
		}
	}
	slices.SortFunc(cps, func(a, b checkpointRef) int { return a.seg - b.seg })
	return cps, nil
}

var errCheckpointShort = errors.New("shorter than its header and checksum")

func readCheckpointFile(fsys FS, name string, seg int) (Position, []byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return Position{}, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Position{}, nil, err
	}
	size := st.Size()
	if size < checkpointHeaderSize+4 {
		return Position{}, nil, errCheckpointShort
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return Position{}, nil, err
	}
	body, sum := b[:size-4], b[size-4:]
	if got, want := crc32.Checksum(body, castagnoli), binary.BigEndian.Uint32(sum); got != want {
		return Position{}, nil, fmt.Errorf("checksum %08x, file says %08x", got, want)
	}
	if string(body[:4]) != checkpointMagic || body[4] != checkpointVersion {
		return Position{}, nil, errors.New("not a version 1 checkpoint")
	}
	s := binary.BigEndian.Uint64(body[5:13])
	off := binary.BigEndian.Uint64(body[13:21])
	dlen := binary.BigEndian.Uint64(body[21:29])
	if dlen != uint64(len(body)-checkpointHeaderSize) {
		return Position{}, nil, fmt.Errorf("data length %d, file holds %d", dlen, len(body)-checkpointHeaderSize)
	}
	if s != uint64(seg) || off > 1<<62 {
		return Position{}, nil, fmt.Errorf("position %d/%d does not match the file name", s, off)
	}
	return Position{Segment: seg, Offset: int64(off)}, body[checkpointHeaderSize:], nil
}

// WriteCheckpoint stores data as the state at pos next to the log and then
// deletes the segments before pos, which the checkpoint made redundant.
func (w *WAL) WriteCheckpoint(pos Position, data []byte) error {
	if err := WriteCheckpoint(w.dir, w.fs, pos, data); err != nil {
		return err
	}
	return w.TruncateBefore(pos)
}

// CreateCheckpoint is WriteCheckpoint a part at a time: Commit stores the
// data written as the state at pos and then deletes the segments before
// pos.
func (w *WAL) CreateCheckpoint(pos Position) (CheckpointFile, error) {
	c, err := CreateCheckpoint(w.dir, w.fs, pos)
	if err != nil {
		return nil, err
	}
	c.after = func() error { return w.TruncateBefore(pos) }
	return c, nil
}

// LoadCheckpoint returns the newest valid checkpoint of the log's directory.
func (w *WAL) LoadCheckpoint() (Checkpoint, bool, error) { return LoadCheckpoint(w.dir, w.fs) }

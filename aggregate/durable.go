package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-metrics/sluice/wal"
)

// Journal makes operations durable before they are acknowledged. The
// write-ahead log implements it (see Committer).
type Journal interface {
	// Enqueue appends an encoded operation after every operation enqueued
	// before it. The Store calls it with its locks held, so it must not
	// block; the order of Enqueue calls is the order replay must follow.
	// The returned function blocks until the operation is durable, or
	// returns the error that kept it from becoming so. data is the
	// caller's again once that function has returned without a context
	// error: the Store reuses the memory of records.
	Enqueue(typ uint8, data []byte) (wait func(context.Context) error)
	// Barrier returns once every operation enqueued before it is durable.
	Barrier(ctx context.Context) error
}

// ReasonUnavailable counts operations refused because the journal failed.
const ReasonUnavailable = "wal_unavailable"

// waitDurable waits for an enqueued operation. A journal error is sticky:
// the in-memory state may now hold an operation the log does not, so the
// Store refuses everything until a restart rebuilds it from the log.
//
// It takes no context: the operation is applied and its record enqueued,
// and the log writes it even if the request went away. An answer other
// than the outcome would be wrong: a 503 to a push that then turns out
// durable (the HTTP server's shutdown cancels its requests' contexts)
// makes a client that retries count it twice. The server's shutdown waits
// for its requests, and the log runs until it is done.
func (s *Store) waitDurable(wait func(context.Context) error) error {
	if wait == nil {
		return nil
	}
	if err := wait(context.Background()); err != nil {
		s.fail(err)
		return &Error{Kind: KindUnavailable, Reason: ReasonUnavailable, Msg: "not stored: write-ahead log: " + err.Error()}
	}
	return nil
}

func (s *Store) fail(err error) {
	if s.broken.CompareAndSwap(nil, &err) {
		s.logger.Error("write-ahead log failed; refusing pushes until restart, which rebuilds the state from the log", "err", err)
	}
}

// unavailable returns the error operations get while the log is replayed
// or once the journal failed.
func (s *Store) unavailable() error {
	if s.journal != nil && !s.ready.Load() {
		return &Error{Kind: KindUnavailable, Reason: ReasonUnavailable, Msg: "Sluice is replaying its write-ahead log; retry shortly"}
	}
	if p := s.broken.Load(); p != nil {
		return &Error{Kind: KindUnavailable, Reason: ReasonUnavailable,
			Msg: "write-ahead log failed (" + (*p).Error() + "); Sluice accepts nothing until it is restarted"}
	}
	return nil
}

// Healthy returns the journal failure, if any, for /-/ready.
func (s *Store) Healthy() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// replaySettings are the settings replay applies ops with: the current
// aggregation rules but no limits, since every recorded op was accepted.
func (s *Store) replaySettings() *Settings {
	set := *s.settings.Load()
	set.Limits.MaxSeries = math.MaxInt
	set.Limits.MaxSeriesPerGroup = math.MaxInt
	set.Limits.MaxSeriesPerRequest = math.MaxInt
	set.Limits.MaxLabelsPerSeries = math.MaxInt
	set.Limits.MaxLabelNameLength = math.MaxInt
	set.Limits.MaxLabelValueLength = math.MaxInt
	return &set
}

// Replay applies a recorded operation at its recorded time without
// journaling it. It is used at start-up, before the Store serves requests.
func (s *Store) Replay(op *Op) error {
	ctx := context.Background()
	switch op.Type {
	case RecordPush:
		if err := s.applyPush(ctx, op.Push, op.Time, s.replaySettings(), nil); err != nil {
			return fmt.Errorf("replay push to %s: %w", groupString(op.Push.Group), err)
		}
	case RecordDelete:
		return s.deleteGroup(op.Group, op.Time, nil)
	case RecordWipe:
		for _, g := range s.groupList() {
			if err := s.deleteGroup(g.labels, op.Time, nil); err != nil {
				return err
			}
		}
	case RecordExpire:
		for _, gl := range op.ExpiredGroups {
			if err := s.deleteGroup(gl, op.Time, nil); err != nil {
				return err
			}
		}
		if len(op.ExpiredSeries) > 0 {
			s.removeSeriesKeys(op.ExpiredSeries)
		}
	case RecordRelay:
		s.replayRelay(op)
	default:
		return fmt.Errorf("replay: unknown record type %d", op.Type)
	}
	return nil
}

// removeSeriesKeys removes series by key, whatever their group.
func (s *Store) removeSeriesKeys(keys []string) {
	byGroup := map[*group][]string{}
	for _, k := range keys {
		sh := &s.shards[s.shardOf(k)]
		sh.mu.Lock()
		if se := sh.series[k]; se != nil {
			byGroup[se.group] = append(byGroup[se.group], k)
		}
		sh.mu.Unlock()
	}
	for g, ks := range byGroup {
		g.mu.Lock()
		if !g.deleted {
			s.beforeChange(g)
			s.removeKeysLocked(g, ks)
		}
		g.mu.Unlock()
	}
}

// GatherDurable is Gather for a flush: it renders, then waits until every
// operation enqueued so far is durable, so a window never shows a push
// that was not acknowledged. Operations go on while it renders: each one
// enqueues its record before it changes a group, under the group's lock,
// and Gather reads each group under that lock, so whatever a window shows
// was enqueued before the barrier that follows. If that barrier fails the
// window is not emitted.
func (s *Store) GatherDurable(ctx context.Context) ([]*dto.MetricFamily, error) {
	if err := s.unavailable(); err != nil {
		return nil, err
	}
	fams, err := s.Gather()
	if err != nil {
		return nil, err
	}
	if s.journal != nil {
		if err := s.waitLog(ctx); err != nil {
			return nil, err
		}
	}
	return fams, nil
}

// maxSlowWaits is how many waits for the log in a row may run out of time
// before the log counts as stuck rather than slow: then Sluice fails (503
// and not ready, so that an orchestrator restarts it) as on a write error.
// Windows wait an aggregation interval each, so at least 3 s, 45 s with
// the default 15 s.
const maxSlowWaits = 3

// waitLog waits until every operation enqueued so far is durable. A wait
// that runs out of time skips only what waited (failUnlessWait), unless
// the log made no progress through maxSlowWaits of them in a row.
func (s *Store) waitLog(ctx context.Context) error {
	if err := s.journal.Barrier(ctx); err != nil {
		s.failUnlessWait(err)
		return err
	}
	s.slowWaits.Store(0)
	return nil
}

// failUnlessWait fails the Store for a barrier's error, unless the barrier
// only ran out of time: a slow disk (a burst of pushes, a throttled volume)
// costs the window or the checkpoint that waited, not the whole process.
// Whatever the log has not written yet is still queued and is written once
// the disk catches up; the pushes it holds were not acknowledged before.
func (s *Store) failUnlessWait(err error) {
	switch {
	case errors.Is(err, context.Canceled):
		return // shutting down
	case errors.Is(err, context.DeadlineExceeded):
		if n := s.slowWaits.Add(1); n >= maxSlowWaits {
			s.fail(fmt.Errorf("the write-ahead log made no progress through %d waits in a row: %w", n, err))
			return
		}
		s.logger.Warn("the write-ahead log is slow: skipping what waited for it", "err", err)
		return
	}
	s.fail(err)
}

// Durable adapts GatherDurable to prometheus.Gatherer for the Flusher.
type Durable struct {
	Store   *Store
	Timeout time.Duration
}

// Gather implements prometheus.Gatherer.
func (d Durable) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout)
	defer cancel()
	fams, err := d.Store.GatherDurable(ctx)
	if err != nil {
		return nil, errors.Join(errors.New("window skipped"), err)
	}
	return fams, nil
}

// gatherChunks is GatherDurable a part at a time, for the Flusher: each
// chunk is handed on only once every operation enqueued before it was
// rendered is durable (a barrier per chunk; a barrier with nothing to
// write costs no fsync), and one more barrier follows the last chunk, so
// that what the window leaves out (a group deleted or expired after the
// last chunk's barrier, which the flush ends with staleness markers) is
// durable too. Each barrier has d.Timeout; the time the Flusher takes to
// hand a chunk on does not count. A failed barrier fails the Store and
// ends the window there.
func (d Durable) gatherChunks(size int, fn func(*flushChunk) error) error {
	s := d.Store
	if err := s.unavailable(); err != nil {
		return errors.Join(errors.New("window skipped"), err)
	}
	barrier := func() error {
		if s.journal == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.Timeout)
		defer cancel()
		if err := s.waitLog(ctx); err != nil {
			return fmt.Errorf("wait for the write-ahead log: %w", err)
		}
		return nil
	}
	err := s.gatherChunks(size, func(c *flushChunk) error {
		if err := barrier(); err != nil {
			return err
		}
		return fn(c)
	})
	if err != nil {
		return err
	}
	return barrier()
}

// CheckpointLog is what a checkpoint needs of the write-ahead log.
type CheckpointLog interface {
	// Cut starts a new segment and returns the position of its start.
	Cut() (wal.Position, error)
	// CreateCheckpoint starts the checkpoint of the state at pos: what is
	// written to it is the state; its Commit stores it and drops the log
	// before pos.
	CreateCheckpoint(pos wal.Position) (wal.CheckpointFile, error)
}

// checkpointWait bounds a checkpoint's wait for the log, during which
// every operation waits too.
const checkpointWait = 30 * time.Second

// Checkpoint writes the durable state so the log before it can go.
//
// Operations stop only while it waits for the journal and cuts the log:
// the state is then the state at the cut. It is copied afterwards, group
// by group, while operations go on; an operation that gets to a group
// before the checkpoint copies the group first (beforeChange), so each
// group is copied as it was at the cut. Groups created after the cut are
// left out: all of them is in the log after it. Writing the file happens
// last.
func (s *Store) Checkpoint(ctx context.Context, log CheckpointLog) error {
	if err := s.unavailable(); err != nil {
		return err
	}
	s.checkpointMu.Lock()
	defer s.checkpointMu.Unlock()
	start := time.Now()
	s.stateMu.Lock()
	if s.journal != nil {
		// Operations are stopped meanwhile: a stuck disk must not hold
		// them for longer than checkpointWait.
		wctx, cancel := context.WithTimeout(ctx, checkpointWait)
		err := s.waitLog(wctx)
		cancel()
		if err != nil {
			s.stateMu.Unlock()
			return err
		}
	}
	pos, err := log.Cut()
	if err != nil {
		s.stateMu.Unlock()
		return fmt.Errorf("cut write-ahead log segment: %w", err)
	}
	cf, err := log.CreateCheckpoint(pos)
	if err != nil {
		s.stateMu.Unlock()
		return fmt.Errorf("create checkpoint: %w", err)
	}
	c := s.newCapture(s.checkpoints.Add(1), cf)
	groups := s.groupList()
	s.capturing.Store(c)
	s.stateMu.Unlock()
	for _, g := range groups {
		g.mu.Lock()
		s.captureLocked(g, c)
		g.mu.Unlock()
	}
	s.capturing.Store(nil)
	size, err := c.finish()
	if err != nil {
		cf.Abort()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := cf.Commit(); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	s.metrics.checkpointBytes.Set(float64(size))
	s.metrics.checkpointDuration.Observe(time.Since(start).Seconds())
	return nil
}

// Restore loads a checkpoint into an empty Store, before replay.
func (s *Store) Restore(data []byte) error { return s.restore(data) }

// SetReady opens the Store for operations once recovery is done; until
// then they get a 503 that says the log is being replayed.
func (s *Store) SetReady() { s.ready.Store(true) }

// RunCheckpoints checkpoints every interval until ctx is done.
func (s *Store) RunCheckpoints(ctx context.Context, interval time.Duration, log CheckpointLog) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Checkpoint(ctx, log); err != nil {
				s.logger.Error("checkpoint", "err", err)
			}
		}
	}
}

// decodeRecordedBody sets p's families from the body its record holds.
func decodeRecordedBody(p *Push, decode BodyDecoder) error {
	if decode == nil {
		return errors.New("push record holds a body and no decoder was given")
	}
	fams, err := decode(p.BodyFormat, p.Body)
	if err != nil {
		return fmt.Errorf("decode recorded push body: %w", err)
	}
	p.Families, p.Body = fams, nil
	return nil
}

// RecoveryLog is what recovery reads: the newest checkpoint and the
// records after it.
type RecoveryLog interface {
	LoadCheckpoint() (wal.Checkpoint, bool, error)
	Replay(from wal.Position, fn func(pos wal.Position, r wal.Record) error) error
}

// Recover rebuilds an empty Store from the newest checkpoint and the log
// after it. decode turns the push bodies the log recorded (Push.Body) back
// into families; with nil, such records cannot be replayed. A record that
// does not decode or apply is logged and skipped (its CRC was valid, so it
// is a bug, not a torn write); it never stops Sluice from starting.
func Recover(s *Store, log RecoveryLog, decode BodyDecoder) error {
	cp, ok, err := log.LoadCheckpoint()
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	for _, e := range cp.Skipped {
		s.logger.Warn("skipped a corrupt checkpoint", "err", e)
	}
	from := wal.Position{}
	if ok {
		if err := s.Restore(cp.Data); err != nil {
			return fmt.Errorf("restore checkpoint at %s: %w", cp.Pos, err)
		}
		from = cp.Pos
	}
	n, bad := 0, 0
	err = log.Replay(from, func(pos wal.Position, r wal.Record) error {
		n++
		op, err := DecodeOp(r.Type, r.Data)
		if err == nil && op.Push != nil && op.Push.Body != nil {
			err = decodeRecordedBody(op.Push, decode)
		}
		if err == nil {
			err = s.Replay(op)
		}
		if err != nil {
			bad++
			s.logger.Error("skipped a write-ahead log record", "pos", pos.String(), "type", r.Type, "err", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	s.logger.Info("replayed the write-ahead log", "checkpoint", ok, "records", n, "skipped", bad)
	return nil
}

package aggregate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/wal"
)

// Write is one remote_write request as the Store applies it: the series to
// relay unchanged and the pushes built from the series to aggregate.
type Write struct {
	// Relay holds the series relayed unchanged (no clear_mode), in
	// Remote-Write 1.0 form; nil or empty if none. Ownership passes to
	// the Store, which hands it to the relay Appender, unless
	// RelayBorrowed.
	Relay *prompb.WriteRequest
	// RelayBorrowed: Relay (strings included) stays the caller's, which
	// reuses its memory once Write returns (the remote_write decoder's
	// pooled requests). The Store then hands it to a BorrowingAppender as
	// is, and a deep copy to any other Appender.
	RelayBorrowed bool
	// RelaySnappy is Relay as a snappy-compressed (block format)
	// prometheus.WriteRequest, what the relay's write-ahead log record
	// carries: for a request relayed unchanged, the body as received. It
	// must decode to Relay's series and metadata (exemplars and unknown
	// fields aside, which the forward queues ignore). Nil: Write encodes
	// Relay itself. It is read during Write only.
	RelaySnappy []byte
	// RelayRaw is what RelaySnappy decompresses to, with every series'
	// labels encoded as one run of Label messages of a name and a value
	// field each (what the generated code writes), so that a forward
	// queue can send series as they are. Nil: none. It is read during
	// Write only, and used only together with RelaySnappy.
	RelayRaw []byte
	// RelayRuns, if not nil, has two entries per Relay series, in order:
	// the start and end offsets in RelayRaw of its labels' run of Label
	// messages, which the forward queues key series by. Nil: they find
	// the runs themselves. Read during Write only.
	RelayRuns []int32
	// Pushes are applied in order; a series with several samples in the
	// request is in several of them, one sample each, oldest first.
	Pushes []*Push
	// DroppedQuantiles is the number of summary quantile samples the
	// caller left out of Pushes because they would have been summed
	// (clear_mode=sum), as a push's are; they count in
	// sluice_summary_quantiles_dropped_total once every push is applied.
	DroppedQuantiles int
}

// WriteResult says what of a Write was applied.
type WriteResult struct {
	// Relayed: Relay is durable and was handed to the relay Appender.
	Relayed bool
	// Pushes is the number of pushes applied, from the first on.
	Pushes int
}

// Write applies a remote_write request. Every push is first checked
// against everything that needs no stored state; if one fails, nothing is
// applied. Then, with the journal, the relay record is enqueued, the
// pushes are applied in order (each atomically, as Apply does), and Write
// waits until all that is durable before it hands Relay to the relay
// Appender and returns.
//
// A push rejected by the stored state (a type or mode conflict, a
// histogram layout change, a series limit) stops the Write there: the
// relay and the pushes before it stay applied (a partial write, reported
// in the result along with the error). The relay goes first because a
// relayed sample sent twice is the same sample, while an aggregated delta
// applied twice is counted twice: a sender retrying after a 503 must not
// find the aggregated part already applied.
//
// While a relay is in flight it holds s.stateMu for reading until the
// Appender has it, so a checkpoint (which takes it for writing, then
// syncs the forward queues, then drops the log before it; see
// SyncBeforeTruncate) never drops a relay record that is not yet in the
// forward queues.
func (s *Store) Write(ctx context.Context, w *Write) (WriteResult, error) {
	var res WriteResult
	if err := s.unavailable(); err != nil {
		return res, err
	}
	at := s.now()
	set := s.settings.Load()
	j := s.journal
	prs := make([]*prepared, len(w.Pushes))
	recs := make([][]byte, len(w.Pushes))
	for i, p := range w.Pushes {
		pr, rec, err := s.preparePush(p, at, set, j)
		if err != nil {
			return res, err
		}
		prs[i], recs[i] = pr, rec
	}
	relay := w.Relay
	if relay != nil && len(relay.Timeseries) == 0 {
		relay = nil
	}
	var relayRec []byte
	if relay != nil && j != nil {
		// The record's array comes from a pool and goes back once the
		// wait below returns: it waits with a context that is never
		// cancelled, so the log is done with the record by then.
		bufp, _ := s.relayRecs.Get().(*[]byte)
		if bufp == nil {
			bufp = new([]byte)
		}
		var err error
		if relayRec, err = AppendOp(*bufp, &Op{Type: RecordRelay, Time: at, Relay: relay, RelaySnappy: w.RelaySnappy}); err != nil {
			return res, fmt.Errorf("encode relay for the write-ahead log: %w", err)
		}
		defer func() {
			if cap(relayRec) <= maxPooledRecord {
				*bufp = relayRec[:0]
				s.relayRecs.Put(bufp)
			}
		}()
	}

	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	var relayWait func(context.Context) error
	if relayRec != nil {
		relayWait = j.Enqueue(RecordRelay, relayRec)
	}
	waits := make([]func(context.Context) error, 0, len(prs))
	var applyErr error
	for i, pr := range prs {
		wait, err := s.applyPrepared(pr, recs[i], at.UnixNano(), set, j)
		if err != nil {
			applyErr = err
			break
		}
		waits = append(waits, wait)
	}
	// The relay record is enqueued: once durable it is replayed after a
	// crash, so it goes to the forward queues now whatever the request's
	// context says.
	if err := s.waitDurable(relayWait); err != nil {
		return res, err
	}
	if relay != nil {
		res.Relayed = true
		if wa, ok := s.relay.(WireAppender); ok && w.RelayRaw != nil && w.RelaySnappy != nil {
			wa.AppendWire(relay, w.RelayRaw, w.RelaySnappy, w.RelayRuns)
		} else if b, ok := s.relay.(BorrowingAppender); ok && w.RelayBorrowed {
			b.AppendBorrowed(relay)
		} else if s.relay != nil && w.RelayBorrowed {
			s.relay.Append(cloneWriteRequest(relay))
		} else if s.relay != nil {
			s.relay.Append(relay)
		}
	}
	for i, wait := range waits {
		if err := s.waitDurable(wait); err != nil {
			return res, err
		}
		s.countApplied(prs[i])
		res.Pushes++
	}
	if applyErr == nil {
		s.metrics.quantilesDropped.Add(float64(w.DroppedQuantiles))
	}
	return res, applyErr
}

// BorrowingAppender is an Appender that can also take a request it does
// not own: AppendBorrowed reads req during the call only and keeps
// nothing of it (strings included) once it returns. forward.Manager is
// one; Write hands it the relayed series without copying them.
type BorrowingAppender interface {
	Appender
	AppendBorrowed(req *prompb.WriteRequest)
}

// WireAppender is a BorrowingAppender that can also take a relayed
// request in wire form: raw is req as an uncompressed
// prometheus.WriteRequest (Write.RelayRaw) and block the same
// snappy-compressed (Write.RelaySnappy), runs nil or the offsets of
// each series' label run in raw (Write.RelayRuns). Like AppendBorrowed,
// AppendWire reads them during the call only. forward.Manager is one: a target
// that changes nothing in the series writes block to its backlog as it
// is and sends series from raw without decoding them.
type WireAppender interface {
	BorrowingAppender
	AppendWire(req *prompb.WriteRequest, raw, block []byte, runs []int32)
}

// cloneWriteRequest deep-copies req, strings included, for an Appender
// that keeps what it is given.
func cloneWriteRequest(req *prompb.WriteRequest) *prompb.WriteRequest {
	out := &prompb.WriteRequest{
		Timeseries: make([]prompb.TimeSeries, len(req.Timeseries)),
		Metadata:   make([]prompb.MetricMetadata, len(req.Metadata)),
	}
	for i, ts := range req.Timeseries {
		c := prompb.TimeSeries{
			Labels:     make([]prompb.Label, len(ts.Labels)),
			Samples:    slices.Clone(ts.Samples),
			Histograms: slices.Clone(ts.Histograms),
		}
		for k, l := range ts.Labels {
			c.Labels[k] = prompb.Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)}
		}
		out.Timeseries[i] = c
	}
	for i, md := range req.Metadata {
		out.Metadata[i] = prompb.MetricMetadata{Type: md.Type, MetricFamilyName: strings.Clone(md.MetricFamilyName),
			Help: strings.Clone(md.Help), Unit: strings.Clone(md.Unit)}
	}
	return out
}

// replayRelay hands a recorded relay to the relay Appender again.
func (s *Store) replayRelay(op *Op) {
	if s.relay != nil && op.Relay != nil {
		s.relay.Append(op.Relay)
	}
}

// SyncBeforeTruncate wraps a CheckpointLog so that sync runs before each
// checkpoint drops the log before it. The forward queues are written
// without fsync; until they are synced, the log's relay records are the
// only durable copy of the relayed series. If sync fails, no checkpoint is
// written and the log is kept.
func SyncBeforeTruncate(log CheckpointLog, sync func() error) CheckpointLog {
	return syncedLog{CheckpointLog: log, sync: sync}
}

type syncedLog struct {
	CheckpointLog
	sync func() error
}

func (l syncedLog) CreateCheckpoint(pos wal.Position) (wal.CheckpointFile, error) {
	f, err := l.CheckpointLog.CreateCheckpoint(pos)
	if err != nil {
		return nil, err
	}
	return syncedFile{CheckpointFile: f, sync: l.sync}, nil
}

// syncedFile is a checkpoint whose Commit syncs first.
type syncedFile struct {
	wal.CheckpointFile
	sync func() error
}

func (f syncedFile) Commit() error {
	if err := f.sync(); err != nil {
		f.Abort()
		return fmt.Errorf("sync the forward queues before dropping the log: %w", err)
	}
	return f.CheckpointFile.Commit()
}

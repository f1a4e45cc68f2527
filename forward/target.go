package forward

import (
	"context"
	"log/slog"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
)

// maxShards is the fixed number of shards (concurrent senders) per target:
// min(queue_config.max_shards, maxShards). Dynamic resharding, as in
// Prometheus, is not implemented: Sluice sends one window per interval,
// and four senders of max_samples_per_send samples each keep up with far
// more series than one replica aggregates.
const maxShards = 4

// target forwards to one remote_write endpoint. It is created by
// newTarget, started by start and stopped by stop or halt, each once;
// append may be called between creation and stop, concurrently.
//
// Append writes each window to the target's backlog on disk (queue). One
// dispatcher goroutine reads the backlog in order and hands each sample to
// the shard of its series, up to queue_config.capacity samples read ahead
// per shard; the shards send. Once every sample of a frame is resolved
// (sent, or dropped for good) and so are the frames before it, the
// dispatcher moves the backlog's cursor past it.
type target struct {
	cfg  configs.RemoteWriteConfig
	name string
	// wire: Remote-Write 1.0 without external labels or
	// write_relabel_configs, so relayed series are written and sent as
	// they came (relay frames, wire.go).
	wire    bool
	ext     labels.Labels     // external labels, added where missing
	extPB   []prompb.Label    // ext as request labels, for appends without relabelling
	extMap  map[string]string // as given to ApplyConfig, to detect changes
	logger  *slog.Logger
	metrics targetMetrics
	client  *client
	now     func() time.Time
	shards  []*shard
	q       *queue // the backlog; a target replaced by a reload hands it over

	encMtx       sync.Mutex // guards enc and writeFailing
	enc          *frameEncoder
	writeFailing bool // backlog_write was logged since the last successful append

	// Owned by the dispatcher goroutine (then by finish).
	dec     *frameDecoder // a wire decoder for Remote-Write 1.0
	coalDec *frameDecoder
	coalEnc *frameEncoder
	track   tracker

	readerWake chan struct{} // capacity 1: a frame was appended, a shard has room or resolved a batch
	readDone   chan struct{} // closed by the dispatcher when, draining, every frame is in the shards

	// Whole relay frames (whole.go): the dispatcher hands them to the
	// lanes through wholeJobs (room for one per lane, so it never
	// blocks), the lanes hand them back through finished once resolved.
	// lanesDone is closed when the dispatcher ends.
	wholeJobs chan wholeJob
	lanesDone chan struct{}
	finMtx    sync.Mutex
	finished  []wholeJob
	// shardSamples counts the samples handed to the shards and not yet
	// resolved: whole frames wait until it is 0.
	shardSamples atomic.Int64

	// ctx is cancelled when a stop runs out of time or a halt: it aborts
	// requests in flight, backoff sleeps and a coalescing.
	ctx    context.Context
	cancel context.CancelFunc
	// drain is closed by stop: everything in the backlog is sent, then the
	// goroutines exit.
	drain chan struct{}
	wg    sync.WaitGroup // dispatcher and shard goroutines

	statusMtx sync.Mutex // guards lastSend, lastErr, lastErrAt, highestTs
	lastSend  time.Time
	lastErr   string
	lastErrAt time.Time
	highestTs int64
}

// newTarget builds a target on the backlog q (nil only for a target that
// is never started).
func newTarget(cfg configs.RemoteWriteConfig, ext map[string]string, userAgent string,
	logger *slog.Logger, m *metrics, now func() time.Time, q *queue) (*target, error) {
	name := cfg.DisplayName()
	t := &target{
		cfg:        cfg,
		name:       name,
		ext:        labels.FromMap(ext),
		extPB:      prompb.FromLabels(labels.FromMap(ext), nil),
		extMap:     maps.Clone(ext),
		logger:     logger.With("remote_name", name),
		metrics:    m.forTarget(name),
		now:        now,
		q:          q,
		enc:        newFrameEncoder(),
		dec:        newFrameDecoder(),
		coalDec:    newFrameDecoder(),
		coalEnc:    newFrameEncoder(),
		readerWake: make(chan struct{}, 1),
		readDone:   make(chan struct{}),
		lanesDone:  make(chan struct{}),
		drain:      make(chan struct{}),
	}
	if cfg.ProtobufMessage != configs.ProtoMsgV2 {
		// The 1.0 encoder copies each series' labels as the frame
		// decoder encoded them: no labels.Labels per series.
		t.dec = newWireDecoder()
		t.wire = len(ext) == 0 && len(cfg.WriteRelabelConfigs) == 0
	}
	c, err := newClient(&t.cfg, userAgent, &t.metrics)
	if err != nil {
		return nil, err
	}
	t.client = c
	t.ctx, t.cancel = context.WithCancel(context.Background())
	n := min(cfg.QueueConfig.MaxShards, maxShards)
	t.shards = make([]*shard, n)
	if t.wire {
		t.wholeJobs = make(chan wholeJob, n)
	}
	for i := range t.shards {
		t.shards[i] = &shard{
			t:    t,
			wake: make(chan struct{}, 1),
			buf:  newRing(cfg.QueueConfig.Capacity),
			enc:  newEncoder(cfg.ProtobufMessage),
		}
	}
	return t, nil
}

// start launches the dispatcher, one goroutine per shard and, for whole
// relay frames, as many lanes.
func (t *target) start() {
	t.wg.Add(len(t.shards) + 1)
	go t.dispatch()
	for _, s := range t.shards {
		go s.run()
	}
	if t.wholeJobs != nil {
		t.wg.Add(cap(t.wholeJobs))
		for range cap(t.wholeJobs) {
			go t.lane()
		}
	}
}

// stop makes the target send everything in its backlog until ctx is done,
// then aborts the sends. What is left stays in the backlog, which stop
// leaves open (the caller closes or removes it). No append may run
// concurrently or later. It returns the number of samples left.
func (t *target) stop(ctx context.Context) int64 {
	close(t.drain)
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.cancel()
		<-done
	}
	t.finish()
	left, _ := t.q.pending()
	return left
}

// halt stops the target at once, for a replacement that takes over its
// backlog: batches in flight are aborted and will be read again.
func (t *target) halt() {
	t.cancel()
	t.wg.Wait()
	t.finish()
}

// finish runs once the goroutines have ended: what the shards held stays
// in the backlog, the cursor moves past the frames resolved and is
// persisted.
func (t *target) finish() {
	t.cancel()
	var left []sample
	for _, s := range t.shards {
		s.mtx.Lock()
		left = s.buf.pop(left[:0], s.buf.len())
		s.mtx.Unlock()
		t.releaseBytes(left)
		clear(left)
	}
	for len(t.wholeJobs) > 0 {
		// Handed on, never sent: they stay in the backlog.
		j := <-t.wholeJobs
		t.metrics.queueBytes.Sub(float64(j.bytes))
	}
	t.commitResolved(nil)
	if err := t.q.syncCursor(t.now()); err != nil {
		t.logger.Error("persist the backlog cursor; what it would have skipped is sent again after a restart", "err", err)
	}
	t.client.close()
}

// sameConfig reports whether the running target already matches cfg and
// ext, so that a reload can keep it (and its queue) untouched.
func (t *target) sameConfig(cfg *configs.RemoteWriteConfig, ext map[string]string) bool {
	if !maps.Equal(t.extMap, ext) || len(t.cfg.WriteRelabelConfigs) != len(cfg.WriteRelabelConfigs) {
		return false
	}
	for i, a := range t.cfg.WriteRelabelConfigs {
		b := cfg.WriteRelabelConfigs[i]
		// Compiled regexps are compared by their source.
		ac, bc := *a, *b
		if ac.Regex.String() != bc.Regex.String() {
			return false
		}
		ac.Regex, bc.Regex = relabel.Regexp{}, relabel.Regexp{}
		if !reflect.DeepEqual(ac, bc) {
			return false
		}
	}
	// The Prometheus settings Sluice ignores change nothing: no restart
	// (which would send a batch in flight again) for them.
	a, b := t.cfg.WithoutIgnored(), cfg.WithoutIgnored()
	a.WriteRelabelConfigs, b.WriteRelabelConfigs = nil, nil
	// ProxyConfig caches a func once used; compare what the user wrote.
	a.HTTPClientConfig.ProxyConfig = proxyFields(a.HTTPClientConfig.ProxyConfig)
	b.HTTPClientConfig.ProxyConfig = proxyFields(b.HTTPClientConfig.ProxyConfig)
	return reflect.DeepEqual(a, b)
}

func proxyFields(p commoncfg.ProxyConfig) commoncfg.ProxyConfig {
	return commoncfg.ProxyConfig{
		ProxyURL:             p.ProxyURL,
		NoProxy:              p.NoProxy,
		ProxyFromEnvironment: p.ProxyFromEnvironment,
		ProxyConnectHeader:   p.ProxyConnectHeader,
	}
}

// append applies external labels and write_relabel_configs to the series
// and writes them as one frame to the backlog. It never waits for a send.
// flush asks for the window to be sent without waiting for
// batch_send_deadline.
func (t *target) append(in []inSeries, flush bool) {
	var (
		lb       *labels.Builder
		sb       labels.ScratchBuilder
		relabels = t.cfg.WriteRelabelConfigs
		dropped  int
		total    int
		encErr   error
	)
	if len(relabels) > 0 {
		lb = labels.NewBuilder(labels.EmptyLabels())
	}
	t.encMtx.Lock()
	defer t.encMtx.Unlock()
	e := t.enc
	e.reset()
	for i := range in {
		s := &in[i]
		n := len(s.ts.Samples) + len(s.ts.Histograms)
		total += n
		if lb == nil {
			// The common case: no labels.Labels, external labels merged
			// as the record is written.
			if encErr == nil {
				encErr = e.addSeriesPB(s.lbls, t.extPB, s.meta, s.ts.Samples, s.ts.Histograms)
			}
			continue
		}
		lb.Reset(s.lset(&sb))
		t.ext.Range(func(l labels.Label) {
			if lb.Get(l.Name) == "" {
				lb.Set(l.Name, l.Value)
			}
		})
		keep := relabel.ProcessBuilder(lb, relabels...)
		ls := lb.Labels()
		if !keep || ls.IsEmpty() {
			dropped += n
			continue
		}
		if encErr == nil {
			encErr = e.addSeries(ls, s.meta, s.ts.Samples, s.ts.Histograms)
		}
	}
	if dropped > 0 {
		t.drop(reasonRelabel, dropped)
	}
	if encErr != nil {
		t.drop(reasonEncode, total-dropped)
		t.logger.Error("dropping a window: cannot encode it for the backlog", "samples", total-dropped, "err", encErr)
		return
	}
	if e.samples == 0 {
		if flush {
			t.q.markFlush()
			t.flushShards()
			t.wakeReader()
		}
		return
	}
	t.appended(t.q.appendKeep(e.finish(), e.samples, flush, true), e.samples)
}

// appendWire writes relayed series as a relay frame (wire.go): block is
// a prometheus.WriteRequest, snappy-compressed; info describes it. Only
// for a target with wire set. The window is sent promptly, as with
// append's flush.
func (t *target) appendWire(block []byte, info *wireInfo) {
	count := info.floats + info.hists
	if count == 0 {
		return
	}
	t.encMtx.Lock()
	defer t.encMtx.Unlock()
	frame := t.enc.wireFrame(block, count, info.minT)
	t.appended(t.q.appendWire(frame, len(block), info, true), count)
}

// appended accounts for the outcome of writing a frame of n samples to
// the backlog. encMtx is held.
func (t *target) appended(err error, n int) {
	if err != nil {
		t.drop(reasonBacklogWrite, n)
		if !t.writeFailing {
			t.writeFailing = true
			t.logger.Error("cannot write to the backlog, dropping windows (logged once until a write succeeds)",
				"samples", n, "err", err)
		}
		return
	}
	if t.writeFailing {
		t.writeFailing = false
		t.logger.Info("the backlog takes windows again")
	}
	t.wakeReader()
}

// flushShards makes the shards send what they hold without waiting for
// batch_send_deadline.
func (t *target) flushShards() {
	for _, s := range t.shards {
		s.mtx.Lock()
		s.flush = s.flush || s.buf.len() > 0
		s.mtx.Unlock()
		s.poke()
	}
}

func (t *target) wakeReader() {
	select {
	case t.readerWake <- struct{}{}:
	default:
	}
}

// drop counts n samples dropped for reason.
func (t *target) drop(reason string, n int) {
	t.metrics.dropped.WithLabelValues(reason).Add(float64(n))
}

// releaseBytes accounts for samples that left memory (resolved, or left
// in the backlog by a stop).
func (t *target) releaseBytes(batch []sample) {
	bytes := 0
	for i := range batch {
		bytes += batch[i].size
	}
	t.metrics.queueBytes.Sub(float64(bytes))
}

// resolve records that batch, handed to a shard, was sent or dropped for
// good.
func (t *target) resolve(batch []sample) {
	t.shardSamples.Add(-int64(len(batch)))
	for len(batch) > 0 {
		n := frameRun(batch)
		t.track.resolve(batch[0].frame, n)
		batch = batch[n:]
	}
	t.wakeReader()
}

// frameRun is the number of samples at the start of batch that come from
// its first sample's frame.
func frameRun(batch []sample) int {
	for i := 1; i < len(batch); i++ {
		if batch[i].frame != batch[0].frame {
			return i
		}
	}
	return len(batch)
}

// commitResolved moves the backlog's cursor past the resolved frames at
// the head of the tracker. buf is scratch space, returned for reuse.
func (t *target) commitResolved(buf []trackedFrame) []trackedFrame {
	buf = t.track.popResolved(buf[:0])
	for _, f := range buf {
		t.q.commit(f.end, f.samples)
	}
	return buf
}

// dispatch is the dispatcher goroutine: it moves the cursor, persists it,
// keeps the backlog under its limit and hands frames to the shards.
func (t *target) dispatch() {
	defer t.wg.Done()
	defer close(t.lanesDone)
	q := t.q
	q.rewind()
	var (
		n        = len(t.shards)
		pend     = make([][]sample, n) // the current frame's samples for each shard
		pendOff  = make([]int, n)      // how many of them the shard took
		flush    bool                  // the current frame was appended with flush
		decoded  []sample
		resolved []trackedFrame
		drain    = t.drain
		draining bool
		timer    = time.NewTimer(time.Hour)
		timerOn  bool
		failing  bool // a cursor write failed (logged once until one succeeds)
		// Whole relay frames (whole.go): the frame read but not yet
		// handed on, the series of those in flight, the lanes' job
		// slots not in use.
		held     readFrameRef
		holding  bool
		inflight = newKeySet(cap(t.wholeJobs))
		free     []int // job slots free, of cap(t.wholeJobs)
		fin      []wholeJob
	)
	for i := range cap(t.wholeJobs) {
		free = append(free, i)
	}
	timer.Stop()
	defer timer.Stop()
	for {
		fin = t.takeFinished(fin[:0])
		for i := range fin {
			inflight.drop(fin[i].slot)
			free = append(free, fin[i].slot)
		}
		clear(fin)
		resolved = t.commitResolved(resolved)
		if moved, wait := q.cursorDue(t.now()); moved && wait == 0 {
			if err := q.syncCursor(t.now()); err != nil {
				if !failing {
					t.logger.Error("persist the backlog cursor (logged once until it works again)", "err", err)
				}
				failing = true
			} else {
				failing = false
			}
		} else if moved && !timerOn {
			timer.Reset(wait)
			timerOn = true
		}
		if q.overLimit() {
			q.enforceLimit(t.ctx, t.coalDec, t.coalEnc)
		}

		caughtUp := false
		for {
			handed := true
			for i, s := range t.shards {
				if pendOff[i] < len(pend[i]) {
					pendOff[i] += s.push(pend[i][pendOff[i]:], flush)
				}
				if pendOff[i] < len(pend[i]) {
					handed = false
				} else if len(pend[i]) > 0 {
					clear(pend[i])
					pend[i], pendOff[i] = pend[i][:0], 0
				}
			}
			if !handed {
				break // a shard is full; it wakes us when it has room
			}
			if !holding {
				var ok bool
				if held, ok = q.nextFrame(); !ok {
					caughtUp = true
					break
				}
				holding = true
			}
			f := held
			if t.canSendWhole(&f) && t.shardSamples.Load() == 0 {
				if len(free) == 0 || inflight.hasAny(f.info.keys) {
					break // a lane wakes us when it is done
				}
				// This frame and those after it that may join it: a
				// series' samples in one request arrive in order.
				var j wholeJob
				samples := 0
				for {
					held, holding = readFrameRef{}, false
					j.frames = append(j.frames, wholeFrame{block: f.block, info: f.info,
						seq: t.track.add(f.end, f.samples, f.samples, f.minT)})
					j.bytes += len(f.payload)
					samples += f.samples
					var ok bool
					if f, ok = q.nextFrame(); !ok {
						break
					}
					held, holding = f, true
					if !t.canSendWhole(&f) || samples+f.samples > t.cfg.QueueConfig.MaxSamplesPerSend ||
						inflight.hasAny(f.info.keys) {
						break
					}
				}
				j.slot, free = free[len(free)-1], free[:len(free)-1]
				for i := range j.frames {
					inflight.add(j.slot, j.frames[i].info.keys)
				}
				t.metrics.queueBytes.Add(float64(j.bytes))
				t.wholeJobs <- j
				continue
			}
			if len(free) < cap(t.wholeJobs) {
				break // the shards wait for the whole frames in flight
			}
			held, holding = readFrameRef{}, false
			end, fl, count, minT, fresh := f.end, f.flush, f.samples, f.minT, f.mem
			var err error
			decoded, err = f.decode(t.dec, decoded[:0])
			q.releaseFrame(f)
			if err != nil {
				// It passed its CRC: never expected.
				t.drop(reasonCorrupt, count)
				t.logger.Error("dropping a backlog frame that does not decode", "samples", count, "err", err)
				t.track.add(end, count, 0, minT)
				continue
			}
			seq := t.track.add(end, len(decoded), len(decoded), minT)
			t.shardSamples.Add(int64(len(decoded)))
			for i := range decoded {
				s := &decoded[i]
				s.frame, s.fresh = seq, fresh
				idx := 0
				if n > 1 {
					idx = int(s.hash() % uint64(n))
				}
				pend[idx] = append(pend[idx], *s)
			}
			clear(decoded)
			flush = fl
		}
		if oldest, ok := t.track.oldest(); ok {
			t.metrics.backlogOldest.Set(float64(oldest) / 1000)
		} else {
			t.metrics.backlogOldest.Set(0)
		}
		if draining && caughtUp {
			select {
			case <-t.readDone:
			default:
				close(t.readDone)
			}
			if t.track.len() == 0 {
				return
			}
		}

		select {
		case <-t.ctx.Done():
			return
		case <-drain:
			draining, drain = true, nil
		case <-t.readerWake:
		case <-timer.C:
			timerOn = false
		}
	}
}

// sent records a batch the target accepted.
func (t *target) sent(batch []sample) {
	var floats, hists int
	highest := int64(0)
	for i := range batch {
		if batch[i].h != nil {
			hists++
		} else {
			floats++
		}
		highest = max(highest, batch[i].t)
	}
	t.sentCounts(floats, hists, highest)
}

// sentCounts records floats and histograms the target accepted, the
// highest timestamp among them.
func (t *target) sentCounts(floats, hists int, highest int64) {
	t.metrics.samplesSent.Add(float64(floats))
	t.metrics.histogramsSent.Add(float64(hists))
	t.statusMtx.Lock()
	t.lastSend = t.now()
	if highest > t.highestTs {
		t.highestTs = highest
		t.metrics.highestSent.Set(float64(highest) / 1000)
	}
	t.statusMtx.Unlock()
}

// setError records a send error (already redacted) for the status page.
func (t *target) setError(err error) {
	t.statusMtx.Lock()
	t.lastErr = err.Error()
	t.lastErrAt = t.now()
	t.statusMtx.Unlock()
}

func (t *target) status() TargetStatus {
	samples, bytes := t.q.pending()
	t.statusMtx.Lock()
	defer t.statusMtx.Unlock()
	return TargetStatus{
		Name:            t.name,
		URL:             configs.RedactURL(t.cfg.URL),
		ProtobufMessage: t.cfg.ProtobufMessage,
		Shards:          len(t.shards),
		QueuedSamples:   samples,
		BacklogBytes:    bytes,
		BacklogFull:     t.q.isFull(),
		LastSend:        t.lastSend,
		LastError:       t.lastErr,
		LastErrorTime:   t.lastErrAt,
	}
}

// tracker follows the frames handed to the shards until each is resolved:
// every one of its samples sent or dropped for good. The cursor only ever
// moves past resolved frames, in order.
type tracker struct {
	mtx    sync.Mutex     // guards frames, head and base
	frames []trackedFrame // frames[head+i] has sequence number base+i
	head   int            // frames before it were popped
	base   uint64
}

type trackedFrame struct {
	end     wal.Position // just after the frame in the backlog
	samples int
	pending int // samples not yet resolved
	minT    int64
}

// add tracks a frame of samples samples, pending of them unresolved, and
// returns its sequence number.
func (tr *tracker) add(end wal.Position, samples, pending int, minT int64) uint64 {
	tr.mtx.Lock()
	defer tr.mtx.Unlock()
	if tr.head > 0 && tr.head >= len(tr.frames)/2 {
		// Reuse the front rather than grow: O(1) amortised.
		n := copy(tr.frames, tr.frames[tr.head:])
		clear(tr.frames[n:])
		tr.frames, tr.head = tr.frames[:n], 0
	}
	tr.frames = append(tr.frames, trackedFrame{end: end, samples: samples, pending: pending, minT: minT})
	return tr.base + uint64(len(tr.frames)-tr.head-1)
}

func (tr *tracker) resolve(seq uint64, n int) {
	tr.mtx.Lock()
	tr.frames[tr.head+int(seq-tr.base)].pending -= n
	tr.mtx.Unlock()
}

// popResolved moves the resolved frames at the head to dst.
func (tr *tracker) popResolved(dst []trackedFrame) []trackedFrame {
	tr.mtx.Lock()
	defer tr.mtx.Unlock()
	i := tr.head
	for i < len(tr.frames) && tr.frames[i].pending == 0 {
		i++
	}
	dst = append(dst, tr.frames[tr.head:i]...)
	tr.base += uint64(i - tr.head)
	tr.head = i
	return dst
}

// oldest returns the lowest timestamp of the oldest unresolved frame.
func (tr *tracker) oldest() (int64, bool) {
	tr.mtx.Lock()
	defer tr.mtx.Unlock()
	if tr.head == len(tr.frames) {
		return 0, false
	}
	return tr.frames[tr.head].minT, true
}

func (tr *tracker) len() int {
	tr.mtx.Lock()
	defer tr.mtx.Unlock()
	return len(tr.frames) - tr.head
}

// shard is one sender of a target. A series always maps to the same shard
// and a shard sends one batch at a time, retrying it until it is accepted
// or dropped, so samples of a series arrive in order. A batch holds
// samples of one backlog frame, or of several fresh ones (ring.headRun):
// after a crash the frames after the persisted cursor are sent again, and
// a receiver that rejects a whole request for one out-of-order sample
// (Prometheus) then rejects only already-stored windows, never a new one
// sent with them.
type shard struct {
	t    *target
	wake chan struct{} // capacity 1: something was pushed

	mtx    sync.Mutex // guards buf, oldest and flush
	buf    *ring
	oldest time.Time // when buf last went from empty to non-empty
	flush  bool      // send all of buf without waiting for the deadline

	// Owned by the shard's goroutine.
	enc   *encoder
	batch []sample
}

// push adds as many of batch's samples as there is room for and returns
// how many. It never blocks on a send.
func (s *shard) push(batch []sample, flush bool) int {
	s.mtx.Lock()
	k := min(len(batch), s.buf.room())
	if k == 0 {
		s.mtx.Unlock()
		return 0
	}
	if s.buf.len() == 0 {
		s.oldest = time.Now()
	}
	bytes := 0
	for i := range batch[:k] {
		s.buf.push(batch[i])
		bytes += batch[i].size
	}
	s.flush = s.flush || flush
	s.t.metrics.queueBytes.Add(float64(bytes))
	s.mtx.Unlock()
	s.poke()
	return k
}

func (s *shard) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run sends batches until the target stops. A batch goes out when the
// shard holds max_samples_per_send samples that may share a batch, when
// the next samples may not join them (so waiting cannot fill it), when a push asked for a flush (Append delivers whole windows:
// waiting could only add latency), when batch_send_deadline has passed
// since the first buffered sample, or while draining for a stop.
func (s *shard) run() {
	t := s.t
	defer t.wg.Done()
	var (
		perSend  = t.cfg.QueueConfig.MaxSamplesPerSend
		deadline = time.Duration(t.cfg.QueueConfig.BatchSendDeadline)
		timer    = time.NewTimer(deadline)
		drain    = t.drain
		readDone <-chan struct{} // the dispatcher's, once draining
		draining bool
		finished bool // the dispatcher handed over every frame
	)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mtx.Lock()
		n := s.buf.len()
		head := s.buf.headRun(perSend)
		ready := head >= perSend || (n > 0 && (s.flush || draining || head < n))
		var wait time.Duration
		if n > 0 && !ready {
			wait = deadline - time.Since(s.oldest)
			ready = wait <= 0
		}
		if ready {
			s.batch = s.buf.pop(s.batch[:0], head)
		}
		if s.buf.len() == 0 {
			s.flush = false
		}
		s.mtx.Unlock()

		if ready {
			t.wakeReader() // there is room again
			if !s.send(s.batch) {
				return
			}
			clear(s.batch) // release labels and histograms
			continue
		}
		if finished && n == 0 {
			return // drained
		}
		var expired <-chan time.Time
		if n > 0 {
			timer.Reset(wait)
			expired = timer.C
		}
		select {
		case <-t.ctx.Done():
			return
		case <-drain:
			draining, drain, readDone = true, nil, t.readDone
		case <-readDone:
			finished, readDone = true, nil
		case <-s.wake:
		case <-expired:
		}
		timer.Stop()
	}
}

// send delivers one batch, retrying recoverable errors with capped
// exponential backoff (or the server's Retry-After). It returns false if
// the target's context was cancelled: the batch stays in the backlog.
func (s *shard) send(batch []sample) bool {
	defer s.t.releaseBytes(batch)
	return s.sendOne(batch)
}

// sendOne is send without the memory accounting.
func (s *shard) sendOne(batch []sample) bool {
	t := s.t
	body, err := s.enc.encode(batch)
	if err != nil {
		t.drop(reasonEncode, len(batch))
		t.logger.Error("dropping batch: cannot encode it", "samples", len(batch), "err", err)
		t.resolve(batch)
		return true
	}
	aborted, err := t.deliver(body, len(batch))
	switch {
	case aborted:
		return false
	case err == nil:
		t.sent(batch)
	case frameRun(batch) < len(batch):
		// Fresh frames batched together: one sender's bad sample must
		// not drop the others' samples. Each frame again, alone.
		for len(batch) > 0 {
			n := frameRun(batch)
			if !s.sendOne(batch[:n]) {
				return false
			}
			batch = batch[n:]
		}
		return true
	default:
		t.dropRejected(err, len(batch))
	}
	t.resolve(batch)
	return true
}

// inSeries is one series of a WriteRequest as every target reads it.
type inSeries struct {
	lbls []prompb.Label // sorted by name
	meta *prompb.MetricMetadata
	ts   *prompb.TimeSeries
}

// lset builds the series' labels (for write_relabel_configs).
func (s *inSeries) lset(sb *labels.ScratchBuilder) labels.Labels {
	sb.Reset()
	for _, l := range s.lbls {
		sb.Add(l.Name, l.Value)
	}
	return sb.Labels()
}

package forward

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
)

// maxShards is the fixed number of shards (concurrent senders) per target:
// min(queue_config.max_shards, maxShards). Dynamic resharding, as in
// Prometheus, is not implemented: Sluice sends one window per interval,
// and four senders of max_samples_per_send samples each keep up with far
// more series than one replica aggregates.
const maxShards = 4

// target forwards to one remote_write endpoint. It is created by
// newTarget, started by start and stopped by stop, each once; append may be
// called between start and stop, concurrently.
type target struct {
	cfg     configs.RemoteWriteConfig
	name    string
	ext     labels.Labels     // external labels, added where missing
	extMap  map[string]string // as given to ApplyConfig, to detect changes
	logger  *slog.Logger
	metrics targetMetrics
	client  *client
	now     func() time.Time
	shards  []*shard

	// ctx is cancelled when a stop runs out of time: it aborts requests in
	// flight and backoff sleeps.
	ctx    context.Context
	cancel context.CancelFunc
	// drain is closed by stop: shards send what they hold, then exit.
	drain chan struct{}
	wg    sync.WaitGroup // shard goroutines

	queued        atomic.Int64 // samples buffered or being sent
	shutdownDrops atomic.Int64 // samples dropped with reason shutdown

	statusMtx sync.Mutex // guards lastSend, lastErr, lastErrAt, highestTs
	lastSend  time.Time
	lastErr   string
	lastErrAt time.Time
	highestTs int64
}

func newTarget(cfg configs.RemoteWriteConfig, ext map[string]string, userAgent string,
	logger *slog.Logger, m *metrics, now func() time.Time) (*target, error) {
	name := cfg.DisplayName()
	t := &target{
		cfg:     cfg,
		name:    name,
		ext:     labels.FromMap(ext),
		extMap:  maps.Clone(ext),
		logger:  logger.With("remote_name", name),
		metrics: m.forTarget(name),
		now:     now,
		drain:   make(chan struct{}),
	}
	c, err := newClient(&t.cfg, userAgent, &t.metrics)
	if err != nil {
		return nil, err
	}
	t.client = c
	t.ctx, t.cancel = context.WithCancel(context.Background())
	n := min(cfg.QueueConfig.MaxShards, maxShards)
	t.shards = make([]*shard, n)
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

// start launches one goroutine per shard.
func (t *target) start() {
	t.wg.Add(len(t.shards))
	for _, s := range t.shards {
		go s.run()
	}
}

// stop makes the shards send what they hold until ctx is done, then aborts
// the sends and drops the rest (reason shutdown). No append may run
// concurrently or later. It returns the number of samples dropped for the
// shutdown.
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
	t.cancel()
	var left []sample
	for _, s := range t.shards {
		s.mtx.Lock()
		left = s.buf.pop(left[:0], s.buf.len())
		s.mtx.Unlock()
		if len(left) > 0 {
			t.drop(reasonShutdown, len(left))
			t.shutdownDrops.Add(int64(len(left)))
			t.release(left)
		}
	}
	t.client.close()
	return t.shutdownDrops.Load()
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
	a, b := t.cfg, *cfg
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
// and hands their samples to the shards. It only copies into buffers and
// never waits for a send. flush asks the shards to send without waiting
// for batch_send_deadline.
func (t *target) append(in []inSeries, flush bool) {
	var (
		lb       *labels.Builder
		relabels = t.cfg.WriteRelabelConfigs
		perShard = make([][]sample, len(t.shards))
		dropped  int
	)
	if t.ext.Len() > 0 || len(relabels) > 0 {
		lb = labels.NewBuilder(labels.EmptyLabels())
	}
	for i := range in {
		s := &in[i]
		ls := s.lset
		if lb != nil {
			lb.Reset(ls)
			t.ext.Range(func(l labels.Label) {
				if lb.Get(l.Name) == "" {
					lb.Set(l.Name, l.Value)
				}
			})
			keep := relabel.ProcessBuilder(lb, relabels...)
			if keep {
				ls = lb.Labels()
			}
			if !keep || ls.IsEmpty() {
				dropped += len(s.ts.Samples) + len(s.ts.Histograms)
				continue
			}
		}
		idx := 0
		if len(t.shards) > 1 {
			idx = int(ls.Hash() % uint64(len(t.shards)))
		}
		size := int(ls.ByteSize())
		for _, smp := range s.ts.Samples {
			perShard[idx] = append(perShard[idx], sample{lset: ls, meta: s.meta, t: smp.Timestamp, v: smp.Value, size: size + 16})
		}
		for j := range s.ts.Histograms {
			h := &s.ts.Histograms[j]
			perShard[idx] = append(perShard[idx], sample{lset: ls, meta: s.meta, h: h, t: h.Timestamp, size: size + h.Size()})
		}
	}
	if dropped > 0 {
		t.drop(reasonRelabel, dropped)
	}
	for i, batch := range perShard {
		if len(batch) > 0 || flush {
			t.shards[i].push(batch, flush)
		}
	}
}

// drop counts n samples dropped for reason.
func (t *target) drop(reason string, n int) {
	t.metrics.dropped.WithLabelValues(reason).Add(float64(n))
}

// hold accounts for samples entering the queue; release for samples that
// left it (sent or dropped).
func (t *target) hold(n, bytes int) {
	t.queued.Add(int64(n))
	t.metrics.queueSamples.Add(float64(n))
	t.metrics.queueBytes.Add(float64(bytes))
}

func (t *target) release(batch []sample) {
	bytes := 0
	for i := range batch {
		bytes += batch[i].size
	}
	t.hold(-len(batch), -bytes)
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
	t.statusMtx.Lock()
	defer t.statusMtx.Unlock()
	return TargetStatus{
		Name:            t.name,
		URL:             configs.RedactURL(t.cfg.URL),
		ProtobufMessage: t.cfg.ProtobufMessage,
		Shards:          len(t.shards),
		QueuedSamples:   t.queued.Load(),
		LastSend:        t.lastSend,
		LastError:       t.lastErr,
		LastErrorTime:   t.lastErrAt,
	}
}

// shard is one sender of a target. A series always maps to the same shard
// and a shard sends one batch at a time, retrying it until it is accepted
// or dropped, so samples of a series arrive in order.
type shard struct {
	t    *target
	wake chan struct{} // capacity 1: something was pushed

	mtx      sync.Mutex // guards buf, oldest, flush and dropping
	buf      backlog
	oldest   time.Time // when buf last went from empty to non-empty
	flush    bool      // send all of buf without waiting for the deadline
	dropping bool      // queue_full was logged since the last successful send

	// Owned by the shard's goroutine.
	enc   *encoder
	batch []sample
}

// push buffers batch, evicting the oldest samples when the buffer is full.
// It never blocks on a send.
func (s *shard) push(batch []sample, flush bool) {
	t := s.t
	var evicted, evictedBytes, bytes int
	s.mtx.Lock()
	if s.buf.len() == 0 && len(batch) > 0 {
		s.oldest = time.Now()
	}
	for _, x := range batch {
		bytes += x.size
		if ev, ok := s.buf.push(x); ok {
			evicted++
			evictedBytes += ev.size
		}
	}
	s.flush = s.flush || flush
	logDrop := evicted > 0 && !s.dropping
	if evicted > 0 {
		s.dropping = true
	}
	// Accounted under the lock, so that the sender never releases samples
	// that were not yet held.
	t.hold(len(batch)-evicted, bytes-evictedBytes)
	s.mtx.Unlock()

	if evicted > 0 {
		t.drop(reasonQueueFull, evicted)
		if logDrop {
			t.logger.Warn("forward queue full, dropping the oldest samples (logged once until a send succeeds)",
				"dropped", evicted, "capacity", t.cfg.QueueConfig.Capacity)
		}
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run sends batches until the target stops. A batch goes out when the
// shard holds max_samples_per_send samples, when a push asked for a flush
// (Append delivers whole windows: waiting could only add latency), when
// batch_send_deadline has passed since the first buffered sample, or while
// draining for a stop.
func (s *shard) run() {
	t := s.t
	defer t.wg.Done()
	var (
		perSend  = t.cfg.QueueConfig.MaxSamplesPerSend
		deadline = time.Duration(t.cfg.QueueConfig.BatchSendDeadline)
		timer    = time.NewTimer(deadline)
		drain    = t.drain
		draining bool
	)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mtx.Lock()
		n := s.buf.len()
		ready := n >= perSend || (n > 0 && (s.flush || draining))
		var wait time.Duration
		if n > 0 && !ready {
			wait = deadline - time.Since(s.oldest)
			ready = wait <= 0
		}
		if ready {
			s.batch = s.buf.pop(s.batch[:0], perSend)
		}
		if s.buf.len() == 0 {
			s.flush = false
		}
		s.mtx.Unlock()

		if ready {
			if !s.send(s.batch) {
				return
			}
			clear(s.batch) // release labels and histograms
			continue
		}
		if draining {
			return // nothing left
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
			draining, drain = true, nil
		case <-s.wake:
		case <-expired:
		}
		timer.Stop()
	}
}

// send delivers one batch, retrying recoverable errors with capped
// exponential backoff (or the server's Retry-After). It returns false if
// the target's context was cancelled, the batch then being dropped with
// reason shutdown.
func (s *shard) send(batch []sample) bool {
	t := s.t
	defer t.release(batch)
	body, err := s.enc.encode(batch)
	if err != nil {
		t.drop(reasonEncode, len(batch))
		t.logger.Error("dropping batch: cannot encode it", "samples", len(batch), "err", err)
		return true
	}
	q := t.cfg.QueueConfig
	backoff := time.Duration(q.MinBackoff)
	for attempt := 0; ; attempt++ {
		err := t.client.store(t.ctx, body, attempt)
		if err == nil {
			t.sent(batch)
			s.mtx.Lock()
			s.dropping = false
			s.mtx.Unlock()
			if attempt > 0 {
				t.logger.Info("batch sent after retries", "samples", len(batch), "retries", attempt)
			}
			return true
		}
		if t.ctx.Err() != nil {
			t.drop(reasonShutdown, len(batch))
			t.shutdownDrops.Add(int64(len(batch)))
			return false
		}
		t.setError(err)
		var rerr recoverableError
		if !errors.As(err, &rerr) {
			reason := "error"
			var serr *statusError
			if errors.As(err, &serr) {
				reason = strconv.Itoa(serr.code)
			}
			t.drop(reason, len(batch))
			t.logger.Error("dropping batch: non-recoverable error", "samples", len(batch), "reason", reason, "err", err.Error())
			return true
		}
		sleep := backoff
		if rerr.retryAfter > 0 {
			sleep = rerr.retryAfter
		}
		level := slog.LevelDebug
		if attempt == 0 {
			level = slog.LevelWarn // once per batch; retries of it are debug
		}
		t.logger.Log(t.ctx, level, "send failed, retrying batch", "samples", len(batch), "retry_in", sleep, "err", err.Error())
		timer := time.NewTimer(sleep)
		select {
		case <-t.ctx.Done():
			timer.Stop()
			t.drop(reasonShutdown, len(batch))
			t.shutdownDrops.Add(int64(len(batch)))
			return false
		case <-timer.C:
		}
		t.metrics.samplesRetried.Add(float64(len(batch)))
		backoff = min(2*backoff, time.Duration(q.MaxBackoff))
	}
}

// inSeries is one series of a WriteRequest with its labels converted once
// for every target.
type inSeries struct {
	lset labels.Labels
	meta *prompb.MetricMetadata
	ts   *prompb.TimeSeries
}

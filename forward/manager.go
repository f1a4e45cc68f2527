package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
)

// defaultReloadDrain is how long ApplyConfig lets a removed or replaced
// target send what it holds before dropping the rest: long enough for a
// live target to take a window or two, short enough that a reload naming
// a dead target does not hang.
const defaultReloadDrain = 5 * time.Second

// TargetStatus is one target's state for a status page. It holds no
// secret: the URL is redacted and errors were scrubbed.
type TargetStatus struct {
	// Name is the target's DisplayName.
	Name string `json:"name"`
	// URL is the target's URL without credentials or query.
	URL string `json:"url"`
	// ProtobufMessage is configs.ProtoMsgV1 or configs.ProtoMsgV2.
	ProtobufMessage string `json:"protobufMessage"`
	// Shards is the number of concurrent senders.
	Shards int `json:"shards"`
	// QueuedSamples counts samples buffered or being sent.
	QueuedSamples int64 `json:"queuedSamples"`
	// LastSend is when the target last accepted a batch; zero if never.
	LastSend time.Time `json:"lastSend"`
	// LastError is the most recent send error, empty if none yet. It is
	// kept after later successes; compare LastErrorTime with LastSend.
	LastError string `json:"lastError,omitempty"`
	// LastErrorTime is when LastError happened.
	LastErrorTime time.Time `json:"lastErrorTime"`
}

// Manager forwards write requests to every configured target.
//
// Lock order: reloadMtx, then mtx.
type Manager struct {
	logger    *slog.Logger
	userAgent string
	metrics   *metrics
	now       func() time.Time
	// reloadDrain bounds the drain of targets removed by ApplyConfig.
	reloadDrain time.Duration

	// reloadMtx serialises ApplyConfig and Stop, which stop targets without
	// holding mtx (so that Append never waits for a drain).
	reloadMtx sync.Mutex

	mtx     sync.RWMutex // guards targets and stopped
	targets []*target    // in configuration order
	stopped bool
}

// NewManager returns a Manager with no target. It starts nothing; targets
// start with ApplyConfig. Its metrics are registered on reg (if not nil).
// userAgent is sent as User-Agent.
func NewManager(logger *slog.Logger, reg prometheus.Registerer, userAgent string) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		logger:      logger,
		userAgent:   userAgent,
		metrics:     newMetrics(reg),
		now:         time.Now,
		reloadDrain: defaultReloadDrain,
	}
}

// ApplyConfig makes the running targets match cfgs: new ones start, removed
// ones stop (draining briefly), changed ones are replaced. Safe to call
// again on config reload. Returns an error (and changes nothing) if an HTTP
// client cannot be built.
//
// A target is identified by its DisplayName. One whose configuration and
// external labels are unchanged keeps running with its queue. A replaced
// target's queue is not carried over: the old one drains for up to
// reloadDrain, then drops what is left (reason "shutdown"). ApplyConfig
// returns once removed targets have stopped and their metric series are
// deleted. cfgs must have passed Validate.
func (m *Manager) ApplyConfig(cfgs []configs.RemoteWriteConfig, externalLabels map[string]string) error {
	m.reloadMtx.Lock()
	defer m.reloadMtx.Unlock()

	m.mtx.RLock()
	old, stopped := m.targets, m.stopped
	m.mtx.RUnlock()
	if stopped {
		return errors.New("apply remote_write config: forward manager is stopped")
	}

	running := make(map[string]*target, len(old))
	for _, t := range old {
		running[t.name] = t
	}
	next := make([]*target, 0, len(cfgs))
	names := make(map[string]bool, len(cfgs))
	var created []*target
	for i := range cfgs {
		cfg := &cfgs[i]
		name := cfg.DisplayName()
		if names[name] {
			return fmt.Errorf("remote_write[%d]: duplicate target %s", i, name)
		}
		names[name] = true
		if t := running[name]; t != nil && t.sameConfig(cfg, externalLabels) {
			next = append(next, t)
			delete(running, name)
			continue
		}
		t, err := newTarget(*cfg, externalLabels, m.userAgent, m.logger, m.metrics, m.now)
		if err != nil {
			// Nothing started yet: the running targets stay as they are.
			for _, t := range created {
				t.cancel()
				t.client.close()
			}
			return err
		}
		next = append(next, t)
		created = append(created, t)
	}

	for _, t := range created {
		t.start()
	}
	m.mtx.Lock()
	m.targets = next
	m.mtx.Unlock()

	// Appends now go to next only; stop what it no longer holds.
	ctx, cancel := context.WithTimeout(context.Background(), m.reloadDrain)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range running {
		wg.Go(func() {
			if n := t.stop(ctx); n > 0 {
				t.logger.Warn("target removed or replaced before its queue drained", "dropped", n)
			}
		})
	}
	wg.Wait()
	for name := range running {
		if !names[name] {
			m.metrics.delete(name)
		}
	}
	if len(created) > 0 || len(running) > 0 {
		m.logger.Info("remote_write targets configured", "targets", len(next),
			"started", len(created), "stopped", len(running))
	}
	return nil
}

// Append hands one window's output to every target. Ownership of req
// passes to the Manager: the caller must not touch it again, and the
// Manager never modifies it. Append converts labels, applies each
// target's external labels and relabelling and copies the samples into
// the targets' buffers; it never waits for a send, so a slow or dead
// target cannot block it (a full buffer drops its oldest samples instead).
// The samples are sent promptly, without waiting for batch_send_deadline.
// After Stop, Append does nothing.
func (m *Manager) Append(req *prompb.WriteRequest) {
	m.append(req, true)
}

func (m *Manager) append(req *prompb.WriteRequest, flush bool) {
	if req == nil {
		return
	}
	m.mtx.RLock()
	defer m.mtx.RUnlock()
	if len(m.targets) == 0 {
		return
	}
	in := convert(req)
	for _, t := range m.targets {
		t.append(in, flush)
	}
}

// convert turns req's series into labels once for all targets and finds
// each series' metadata.
func convert(req *prompb.WriteRequest) []inSeries {
	var meta map[string]*prompb.MetricMetadata
	if len(req.Metadata) > 0 {
		meta = make(map[string]*prompb.MetricMetadata, len(req.Metadata))
		for i := range req.Metadata {
			md := &req.Metadata[i]
			meta[md.MetricFamilyName] = md
		}
	}
	sb := labels.NewScratchBuilder(16)
	in := make([]inSeries, 0, len(req.Timeseries))
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
			continue
		}
		sb.Reset()
		for _, l := range ts.Labels {
			sb.Add(l.Name, l.Value)
		}
		sb.Sort()
		ls := sb.Labels()
		in = append(in, inSeries{lset: ls, meta: familyMetadata(meta, ls.Get(model.MetricNameLabel)), ts: ts})
	}
	return in
}

// familyMetadata finds the metadata of the family a series belongs to: its
// name, or its name without the suffix a histogram, summary or counter
// adds to its series.
func familyMetadata(meta map[string]*prompb.MetricMetadata, name string) *prompb.MetricMetadata {
	if meta == nil {
		return nil
	}
	if md := meta[name]; md != nil {
		return md
	}
	i := strings.LastIndexByte(name, '_')
	if i <= 0 {
		return nil
	}
	md := meta[name[:i]]
	if md == nil {
		return nil
	}
	const (
		counter   = prompb.MetricMetadata_COUNTER
		histogram = prompb.MetricMetadata_HISTOGRAM
		gaugeHist = prompb.MetricMetadata_GAUGEHISTOGRAM
		summary   = prompb.MetricMetadata_SUMMARY
	)
	var ok bool
	switch name[i:] {
	case "_bucket":
		ok = md.Type == histogram || md.Type == gaugeHist
	case "_count", "_sum":
		ok = md.Type == histogram || md.Type == gaugeHist || md.Type == summary
	case "_total":
		ok = md.Type == counter
	case "_created":
		ok = md.Type == counter || md.Type == histogram || md.Type == summary
	}
	if !ok {
		return nil
	}
	return md
}

// Stop stops accepting, lets every queue drain until ctx is done, then
// drops what is left (counted, reason "shutdown") and returns. It returns
// an error naming how many samples were dropped, nil if everything was
// delivered (or dropped for another reason). Metrics are kept for a last
// scrape. Later calls return nil.
func (m *Manager) Stop(ctx context.Context) error {
	m.reloadMtx.Lock()
	defer m.reloadMtx.Unlock()
	m.mtx.Lock()
	ts := m.targets
	m.targets, m.stopped = nil, true
	m.mtx.Unlock()

	drops := make([]int64, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Go(func() { drops[i] = t.stop(ctx) })
	}
	wg.Wait()
	var errs []error
	for i, t := range ts {
		if drops[i] > 0 {
			errs = append(errs, fmt.Errorf("remote_write %s: %d samples not delivered before shutdown", t.name, drops[i]))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop forwarding: %w", errors.Join(errs...))
	}
	return nil
}

// Targets reports each target's state, in configuration order.
func (m *Manager) Targets() []TargetStatus {
	m.mtx.RLock()
	defer m.mtx.RUnlock()
	out := make([]TargetStatus, 0, len(m.targets))
	for _, t := range m.targets {
		out = append(out, t.status())
	}
	return out
}

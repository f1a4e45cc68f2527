package forward

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
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
	// QueuedSamples counts samples waiting to be sent: in the backlog on
	// disk, read ahead or being sent.
	QueuedSamples int64 `json:"queuedSamples"`
	// BacklogBytes is the size on disk of the backlog not yet sent.
	BacklogBytes int64 `json:"backlogBytes"`
	// BacklogFull: the backlog went over max_backlog_bytes (windows are
	// coalesced or dropped) and has not yet come back to half of it.
	BacklogFull bool `json:"backlogFull"`
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
	// dir holds one backlog directory per target; fs is how it is
	// accessed (tests inject faults).
	dir string
	fs  wal.FS
	// keySeed seeds the series keys of relay frames (wireInfo.keys),
	// which are compared only within this process.
	keySeed maphash.Seed

	// reloadMtx serialises ApplyConfig and Stop, which stop targets without
	// holding mtx (so that Append never waits for a drain). It also guards
	// cleaned.
	reloadMtx sync.Mutex
	// cleaned: the first ApplyConfig deleted the backlogs of targets no
	// longer configured.
	cleaned bool

	mtx     sync.RWMutex // guards targets and stopped
	targets []*target    // in configuration order
	stopped bool
}

// NewManager returns a Manager with no target. It starts nothing; targets
// start with ApplyConfig. Its metrics are registered on reg (if not nil).
// userAgent is sent as User-Agent. dir holds the targets' backlogs, one
// subdirectory each; it is created if needed, and what it holds is sent
// once the targets are configured again.
func NewManager(logger *slog.Logger, reg prometheus.Registerer, userAgent, dir string) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		logger:      logger,
		userAgent:   userAgent,
		metrics:     newMetrics(reg),
		now:         time.Now,
		reloadDrain: defaultReloadDrain,
		dir:         dir,
		fs:          wal.OSFS(),
		keySeed:     maphash.MakeSeed(),
	}
}

// ApplyConfig makes the running targets match cfgs: new ones start (with
// what their backlog directory holds from an earlier run), removed ones
// stop and their backlog is deleted, changed ones are replaced. Safe to
// call again on config reload. Returns an error (and changes nothing) if
// an HTTP client cannot be built or a backlog cannot be opened.
//
// A target is identified by its DisplayName. One whose configuration and
// external labels are unchanged keeps running. A changed one is replaced
// by a target on the same backlog: the old one stops at once (a batch in
// flight is sent again by the new one), nothing is lost. A removed target
// sends what it holds for up to reloadDrain; what is left is dropped
// (reason "shutdown") with its directory. The first ApplyConfig also
// deletes the directories of targets that are no longer configured.
// ApplyConfig returns once removed targets have stopped and their metric
// series are deleted. cfgs must have passed Validate.
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
	wasRunning := make(map[string]bool, len(old))
	for _, t := range old {
		running[t.name] = t
		wasRunning[t.name] = true
	}
	var (
		next      = make([]*target, 0, len(cfgs))
		names     = make(map[string]bool, len(cfgs))
		dirs      = make(map[string]bool, len(cfgs))
		created   []*target
		opened    []*queue
		replaced  = map[*target]*target{} // running target -> its replacement
		replacing = map[*target]bool{}    // the replacements
	)
	fail := func(err error) error {
		// Nothing started yet: the running targets stay as they are.
		for _, t := range created {
			t.cancel()
			t.client.close()
			if !wasRunning[t.name] {
				// A new name's metrics would stay behind on /metrics
				// for a target that does not exist.
				m.metrics.delete(t.name)
			}
		}
		for _, q := range opened {
			q.close()
			if n, _ := q.pending(); n == 0 {
				_ = removeDir(q.fs, q.dir)
			}
		}
		return err
	}
	for i := range cfgs {
		cfg := &cfgs[i]
		name := cfg.DisplayName()
		if names[name] {
			return fail(fmt.Errorf("remote_write[%d]: duplicate target %s", i, name))
		}
		names[name] = true
		dirs[queueDirName(name)] = true
		prev := running[name]
		if prev != nil && prev.sameConfig(cfg, externalLabels) {
			next = append(next, prev)
			delete(running, name)
			continue
		}
		t, err := newTarget(*cfg, externalLabels, m.userAgent, m.logger, m.metrics, m.now, nil)
		if err != nil {
			if !wasRunning[name] {
				m.metrics.delete(name) // made before the client failed
			}
			return fail(err)
		}
		if prev != nil {
			t.q = prev.q
			replaced[prev], replacing[t] = t, true
			delete(running, name)
		} else {
			dir := filepath.Join(m.dir, queueDirName(name))
			q, err := openQueue(dir, m.fs, cfg.QueueConfig.MaxBacklogBytes, t.logger, &t.metrics)
			if err != nil {
				t.cancel()
				t.client.close()
				return fail(fmt.Errorf("remote_write %s: open backlog in %s: %w", name, dir, err))
			}
			t.q = q
			opened = append(opened, q)
		}
		next = append(next, t)
		created = append(created, t)
	}
	if !m.cleaned {
		m.cleaned = true
		m.removeStale(dirs)
	}

	for _, t := range created {
		if !replacing[t] {
			t.start()
		}
	}
	m.mtx.Lock()
	m.targets = next
	m.mtx.Unlock()

	// Appends now go to next only. A replacement takes over its backlog
	// once the target it replaces has stopped reading it.
	for prev, t := range replaced {
		prev.halt()
		t.q.setLimit(t.cfg.QueueConfig.MaxBacklogBytes)
		t.start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.reloadDrain)
	defer cancel()
	var wg sync.WaitGroup
	for _, t := range running {
		wg.Go(func() {
			if n := t.stop(ctx); n > 0 {
				t.drop(reasonShutdown, int(n))
				t.logger.Warn("target removed before its backlog was sent; dropping it", "dropped", n)
			}
			if err := t.q.remove(); err != nil {
				t.logger.Error("delete the backlog of a removed target", "err", err)
			}
		})
	}
	wg.Wait()
	for name := range running {
		m.metrics.delete(name)
	}
	if len(created) > 0 || len(running) > 0 {
		m.logger.Info("remote_write targets configured", "targets", len(next),
			"started", len(created)-len(replaced), "replaced", len(replaced), "stopped", len(running))
	}
	return nil
}

// removeStale deletes the backlog directories in m.dir that belong to no
// configured target (dirs): targets removed while Sluice was not running.
func (m *Manager) removeStale(dirs map[string]bool) {
	entries, err := m.fs.ReadDir(m.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.logger.Error("list backlog directories", "dir", m.dir, "err", err)
		}
		return
	}
	for _, e := range entries {
		if !e.IsDir() || dirs[e.Name()] {
			continue
		}
		dir := filepath.Join(m.dir, e.Name())
		m.logger.Warn("deleting the backlog of a target that is no longer configured", "dir", dir)
		if err := removeDir(m.fs, dir); err != nil {
			m.logger.Error("delete a stale backlog", "dir", dir, "err", err)
		}
	}
}

// queueDirName is the backlog directory of a target: its name when that is
// a plain file name of at most 64 bytes, else the name with every other
// byte replaced by '_', cut to 64 bytes, plus a hash of the exact name, so
// that two targets never share a directory.
func queueDirName(name string) string {
	var b strings.Builder
	changed := name == "" || name[0] == '.' || len(name) > 64
	for i := 0; i < len(name) && b.Len() < 64; i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
			changed = true
		}
	}
	if changed {
		h := fnv.New32a()
		_, _ = h.Write([]byte(name))
		fmt.Fprintf(&b, "-%08x", h.Sum32())
	}
	return b.String()
}

// Append hands one window's output to every target. Ownership of req
// passes to the Manager: the caller must not touch it again, and the
// Manager never modifies it. Append applies each target's external labels
// and relabelling and writes the window to each target's backlog on disk;
// it never waits for a send, so a slow or dead target cannot block it (a
// full backlog coalesces its oldest windows). The samples are sent
// promptly, without waiting for batch_send_deadline. After Stop, Append
// does nothing.
func (m *Manager) Append(req *prompb.WriteRequest) {
	m.append(req, true)
}

// AppendBorrowed is Append for a request the caller keeps: the Manager
// reads req (strings included) during the call only and keeps nothing of
// it once AppendBorrowed returns, so the caller may reuse its memory
// (aggregate.BorrowingAppender; the remote_write decoder's pooled
// requests).
func (m *Manager) AppendBorrowed(req *prompb.WriteRequest) {
	m.append(req, true)
}

// AppendWire is AppendBorrowed for relayed series also given in wire form
// (aggregate.WireAppender): raw is req as an uncompressed
// prometheus.WriteRequest whose series' labels are each one run of Label
// messages of a name and a value field, block raw snappy-compressed. A
// target that changes nothing in the series (Remote-Write 1.0, no
// external labels, no write_relabel_configs) writes block to its backlog
// as it is and sends the series' labels from raw's bytes; others take req
// as AppendBorrowed does. runs, if not nil, holds the start and end
// offsets in raw of each series' labels (aggregate.Write.RelayRuns), which
// spares finding them again. All are read during the call only.
func (m *Manager) AppendWire(req *prompb.WriteRequest, raw, block []byte, runs []int32) {
	if req == nil {
		return
	}
	m.mtx.RLock()
	defer m.mtx.RUnlock()
	var (
		in   []inSeries
		info *wireInfo
	)
	for _, t := range m.targets {
		if t.wire {
			if info == nil {
				info = relayInfo(req, raw, runs, m.keySeed)
			}
			t.appendWire(block, info)
			continue
		}
		if in == nil {
			in = convert(req)
		}
		t.append(in, true)
	}
}

// append reads req during the call only: each target encodes what it
// needs into its backlog frame before append returns.
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

// convert finds each series' metadata, once for all targets. Labels stay
// the request's own (no labels.Labels per series); a series whose labels
// are not sorted by name gets a sorted copy.
func convert(req *prompb.WriteRequest) []inSeries {
	var meta map[string]*prompb.MetricMetadata
	if len(req.Metadata) > 0 {
		meta = make(map[string]*prompb.MetricMetadata, len(req.Metadata))
		for i := range req.Metadata {
			md := &req.Metadata[i]
			meta[md.MetricFamilyName] = md
		}
	}
	in := make([]inSeries, 0, len(req.Timeseries))
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 {
			continue
		}
		ls := ts.Labels
		name := ""
		for k, l := range ls {
			if k > 0 && l.Name < ls[k-1].Name {
				ls = slices.Clone(ls)
				slices.SortStableFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
				break
			}
		}
		if meta != nil {
			for _, l := range ls {
				if l.Name == model.MetricNameLabel {
					name = l.Value
					break
				}
			}
		}
		in = append(in, inSeries{lbls: ls, meta: familyMetadata(meta, name), ts: ts})
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

// Sync makes every window appended so far durable in the backlogs on disk
// (Append never fsyncs): it fsyncs each target's segments written since the
// last Sync and their directory. The write-ahead log calls it before a
// checkpoint drops relayed series whose only other copy is the backlog.
// It returns the first error, after trying every target.
func (m *Manager) Sync() error {
	m.mtx.RLock()
	defer m.mtx.RUnlock()
	var errs []error
	for _, t := range m.targets {
		if err := t.q.sync(); err != nil {
			errs = append(errs, fmt.Errorf("remote_write %s: %w", t.name, err))
		}
	}
	return errors.Join(errs...)
}

// Stop stops accepting, lets every target send its backlog until ctx is
// done, then stops. What is not sent stays in the backlogs, with their
// cursor persisted, and is sent after the next start. It returns an error
// naming how many samples each target still holds, nil if everything was
// delivered (or dropped for another reason). Metrics are kept for a last
// scrape. Later calls return nil.
func (m *Manager) Stop(ctx context.Context) error {
	m.reloadMtx.Lock()
	defer m.reloadMtx.Unlock()
	m.mtx.Lock()
	ts := m.targets
	m.targets, m.stopped = nil, true
	m.mtx.Unlock()

	left := make([]int64, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Go(func() {
			left[i] = t.stop(ctx)
			t.q.close()
		})
	}
	wg.Wait()
	var errs []error
	for i, t := range ts {
		if left[i] > 0 {
			errs = append(errs, fmt.Errorf("remote_write %s: %d samples not delivered before shutdown; they stay in the backlog for the next start", t.name, left[i]))
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

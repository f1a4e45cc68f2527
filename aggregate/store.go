// Package aggregate holds Sluice's aggregation state: pushed series merged
// per clear_mode, grouped by grouping key, sharded by series hash.
//
// Concurrency: a push locks its group (so pushes to one group apply in
// arrival order, as on a Pushgateway), claims the metric families it uses,
// then locks, in ascending order, the shards whose maps it reads or changes
// (those of series new to the group, or removed), validates everything
// against the stored state, and only then mutates. A series' fields are
// guarded by its group's mutex.
// A rejected push therefore changes nothing. Pushes to different groups and
// different series do not contend. Lock order: group.mu, then shard
// mutexes in ascending index, then famMu (a claim takes it alone, for a
// moment; releasing a family, a family change and joinFamily take it under
// shard locks), then groupsMu (under group.mu only).
package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// Semantics selects how pushes are applied (--push.semantics).
type Semantics uint8

const (
	// SemanticsAggregate merges every push by clear_mode (the default).
	SemanticsAggregate Semantics = iota
	// SemanticsPushgateway behaves like a Pushgateway: every type defaults
	// to replace, PUT replaces the whole group, POST the pushed families.
	SemanticsPushgateway
)

// Method is the HTTP method of a push; it matters only for Pushgateway
// semantics. In aggregate semantics PUT and POST both merge.
type Method uint8

// Push methods.
const (
	MethodPost Method = iota
	MethodPut
)

// Push is one decoded push request: the unit the Store applies atomically.
type Push struct {
	// Group is the grouping key: job (if any) and the path's label pairs.
	Group    labels.Labels
	Method   Method
	Families []*dto.MetricFamily
	// Mode, if not empty, is the clear_mode the grouping key gave
	// (…/clear_mode/<mode>): it applies to every series of the push and
	// overrides their own, as grouping labels override body labels. Group
	// does not hold it. Replay does not need it: Modes has what it
	// resolved to.
	Mode string

	// Set only when replaying the write-ahead log: the resolved mode of
	// every series in push order, and the semantics in force.
	Modes     []configs.Mode
	Semantics *Semantics
	// TypeHint: the families' types are a guess, not the sender's word
	// (a remote_write request's: from metadata that may come only later,
	// or not again after a restart, else from the name). A float series
	// of a metric that exists then takes the metric's type instead of
	// being refused for another, so that metadata arriving a minute late
	// does not turn every request into a 400.
	TypeHint bool

	// Body, if set, is the decompressed body Families were decoded from,
	// in BodyFormat. The write-ahead log then records it as it is instead
	// of encoding Families, and Recover decodes it again with the same
	// decoder (BodyDecoder). Families must be exactly what that decoder
	// returns for it.
	Body       []byte
	BodyFormat BodyFormat

	// Shape, if set, remembers what the store made of an earlier push
	// with the same families (see Shape); Apply fills it.
	Shape *Shape
}

// BodyFormat is the format of a recorded push body. The values are part of
// the write-ahead log's format: never renumber them.
type BodyFormat uint8

const (
	BodyText           BodyFormat = 1 // Prometheus text format 0.0.4
	BodyOpenMetrics    BodyFormat = 2 // OpenMetrics text
	BodyProtoDelimited BodyFormat = 3 // varint-delimited MetricFamily protobufs
)

// BodyDecoder decodes a push body recorded in the write-ahead log back into
// the families the push carried (ingest.DecodeRecordedBody). The families
// may point into body.
type BodyDecoder func(format BodyFormat, body []byte) ([]*dto.MetricFamily, error)

// Settings are the parts of the configuration a reload may change.
type Settings struct {
	Aggregation configs.AggregationConfig
	Limits      configs.LimitsConfig
	SeriesTTL   time.Duration
	Semantics   Semantics
	// OwnFamilies holds the type of each of Sluice's own metric families
	// (Go, process, build info), which GET /metrics exposes next to the
	// aggregated series: a push may add series to one of them, but not
	// with another type (400, as on the Pushgateway). Read only.
	OwnFamilies map[string]dto.MetricType
}

// Store is the aggregation state. All methods are safe for concurrent use.
type Store struct {
	journal Journal // nil: no durability
	// snapshotLayout is the snapshot version checkpoints are written in:
	// 0 for snapshotVersion; tests set an older one to check that it is
	// still read.
	snapshotLayout uint64
	relay          Appender // where relayed remote_write series go; nil: nowhere
	broken         atomic.Pointer[error]
	// slowWaits counts the waits for the log in a row that ran out of
	// time (waitLog).
	slowWaits atomic.Int32
	ready     atomic.Bool // with a journal: recovery is done
	// stateMu orders operations against durable snapshots: every
	// operation holds it for reading while it validates, enqueues its
	// record and mutates; a checkpoint holds it for writing while it waits
	// for the journal and cuts the log, so that the state then is the
	// state at one position of the log (copied group by group afterwards:
	// see Checkpoint). It is taken before any other lock.
	stateMu sync.RWMutex

	now      func() time.Time
	logger   *slog.Logger
	settings atomic.Pointer[Settings]
	metrics  *storeMetrics

	// groupsMu guards the groups map (not the groups themselves).
	groupsMu sync.Mutex
	groups   map[string]*group

	// famMu guards families. Claims take it for reading; creating and
	// deleting an entry take it for writing.
	famMu    sync.RWMutex
	families map[string]*family

	shards []shard
	// counted is what the series show as, in a scrape and in a store:
	// one each, plus their extra (max_series counts that). One atomic,
	// so that concurrent pushes reserve against the same total.
	counted atomic.Int64
	// checkpointMu serialises checkpoints. capturing is the checkpoint
	// being taken, nil between checkpoints; checkpoints counts them (a
	// group whose captured field equals it is in the current one).
	checkpointMu sync.Mutex
	capturing    atomic.Pointer[capture]
	checkpoints  atomic.Int64
	modeCounts   [configs.ModeWindowQuantile + 1]atomic.Int64

	// prepPool recycles the prepared state of pushes (*prepared).
	prepPool sync.Pool
	// relayRecs recycles the arrays of relay records (*[]byte).
	relayRecs sync.Pool
	// modes are the clear_mode spellings pushes used, parsed.
	modes modeTable

	// keysInLabels says that a series' key can share its labels' memory
	// (labelsData works in this build).
	keysInLabels bool
	// directKeys says that appendLabelsKey writes what Labels.Bytes does
	// in this build, so prepare encodes series keys without building
	// their Labels.
	directKeys bool
}

type shard struct {
	// mu guards series, the map. The fields of a series are guarded by
	// its group's lock (group.mu), which every reader and writer of them
	// holds; a series is added to or removed from a shard's map with both
	// locks held.
	mu     sync.Mutex
	series map[string]*series
	_      [40]byte // keep neighbouring shard mutexes off one cache line
}

// group is one grouping key.
type group struct {
	key    string
	labels labels.Labels

	// mu serialises pushes to the group and guards every field below and
	// the mutable fields of the group's series (see shard.mu).
	mu          sync.Mutex
	series      map[string]*series
	lastPush    int64 // Unix nanoseconds of the last successful push; 0 = never
	lastFailure int64 // Unix nanoseconds of the last rejected push; 0 = never
	deleted     bool  // removed from Store.groups; a push must look up again
	// extra sums the series' extra (max_series_per_group counts it).
	extra int
	// captured is the last checkpoint that has this group's state (or
	// that started after the group was created: nothing to copy).
	captured int64
}

// family is the type registry entry of one metric name.
type family struct {
	name       string
	typ        dto.MetricType // output type
	pushedType dto.MetricType
	// classic: a series of it shows (in remote_write output too) as
	// _bucket/_count/_sum: a summary, or a histogram with classic
	// buckets. checked: the names its series show under were checked for
	// other families (suffixClash's first way, which remote_write skips).
	// Both are set once and stay (joinFamily).
	classic, checked atomic.Bool
	mode             configs.Mode // mode of the first series; only for messages
	help             string
	unit             string       // from OpenMetrics # UNIT or remote_write metadata
	refs             atomic.Int64 // live series plus in-flight pushes holding it
}

// New builds a Store. journal makes operations durable before they are
// acknowledged; nil keeps state in memory only. relay receives the
// remote_write series relayed unchanged (Write), once they are durable,
// and again when the log is replayed; nil drops them. It starts nothing;
// Run expires old series.
func New(set Settings, now func() time.Time, journal Journal, relay Appender, reg prometheus.Registerer, logger *slog.Logger) *Store {
	n := 16 * runtime.GOMAXPROCS(0)
	s := &Store{
		journal:  journal,
		relay:    relay,
		now:      now,
		logger:   logger,
		groups:   make(map[string]*group),
		families: make(map[string]*family),
		shards:   make([]shard, n),
	}
	for i := range s.shards {
		s.shards[i].series = make(map[string]*series)
	}
	s.settings.Store(&set)
	s.directKeys = directKeysWork()
	s.keysInLabels = labelsDataWorks()
	s.metrics = newStoreMetrics(reg, s)
	return s
}

// SetSettings replaces the reloadable settings. Existing series keep their
// mode; new defaults, TTLs and limits apply from the next push or sweep.
func (s *Store) SetSettings(set Settings) { s.settings.Store(&set) }

// Settings returns the settings in force.
func (s *Store) Settings() Settings { return *s.settings.Load() }

func (s *Store) shardOf(key string) int { return s.shardOfHash(xxhash.Sum64String(key)) }

// shardOfHash is shardOf for a key's xxhash.
func (s *Store) shardOfHash(h uint64) int { return int(h % uint64(len(s.shards))) }

// groupKey returns the key of the group ls: its encoding, as a string
// sharing ls's memory when keysInLabels (a group keeps its labels anyway),
// else as a copy.
func groupKey(ls labels.Labels, keysInLabels bool) string {
	if keysInLabels {
		if d, ok := labelsData(ls); ok {
			return d
		}
	}
	return string(ls.Bytes(nil))
}

// Apply validates a push against the stored state and applies it
// atomically: either every series is updated or, on error, nothing is.
// With a journal it returns only once the push is durable. Errors are
// *Error values naming the problem.
func (s *Store) Apply(ctx context.Context, p *Push) error {
	if err := s.unavailable(); err != nil {
		return err
	}
	return s.applyPush(ctx, p, s.now(), s.settings.Load(), s.journal)
}

func (s *Store) applyPush(ctx context.Context, p *Push, at time.Time, set *Settings, j Journal) error {
	pr, rec, err := s.preparePush(p, at, set, j)
	if err != nil {
		return err
	}
	s.stateMu.RLock()
	wait, err := s.applyPrepared(pr, rec, at.UnixNano(), set, j)
	s.stateMu.RUnlock()
	if err == nil {
		if err = s.waitDurable(wait); err != nil {
			pr.rec = nil // the log may still be writing it
		}
	}
	if err == nil {
		s.countApplied(pr)
	}
	s.releasePrepared(pr)
	return err
}

// preparePush validates a push against everything that does not depend on
// the stored state and, with a journal, encodes its record. A rejected
// push marks its group's last failure.
func (s *Store) preparePush(p *Push, at time.Time, set *Settings, j Journal) (*prepared, []byte, error) {
	pr, err := s.prepare(p, set)
	if err != nil {
		s.recordFailure(p.Group, at.UnixNano())
		return nil, nil, err
	}
	pr.src, pr.at = p, at
	var rec []byte
	if j != nil {
		if rec, err = s.encodePush(pr); err != nil {
			return nil, nil, fmt.Errorf("encode push for the write-ahead log: %w", err)
		}
		pr.rec = rec
	}
	return pr, rec, nil
}

// encodePush encodes pr's push record, with the modes in pr.modes, into
// pr.rec's array.
func (s *Store) encodePush(pr *prepared) ([]byte, error) {
	p := pr.src
	fams := p.Families
	if pr.adopted {
		fams = adoptedFamilies(fams, pr.updates)
	}
	return appendPushOp(pr.rec[:0], pr.at, &Push{
		Group: p.Group, Method: p.Method, Families: fams, Modes: pr.modes, Semantics: &pr.semantics,
		TypeHint: p.TypeHint, Body: p.Body, BodyFormat: p.BodyFormat}, s.modes.spell)
}

// applyPrepared checks a prepared push against the stored state and
// applies it, enqueueing rec (if not nil) to j. The caller holds
// s.stateMu for reading. It returns the wait for durability (nil without
// a record).
func (s *Store) applyPrepared(pr *prepared, rec []byte, now int64, set *Settings, j Journal) (func(context.Context) error, error) {
	var wait func(context.Context) error
	g := s.lockGroup(pr)
	s.beforeChange(g)
	err := s.applyLocked(g, pr, set, now, func() {
		if rec != nil {
			// pr.rec is rec, unless applyLocked encoded it again with
			// the modes it applied.
			wait = j.Enqueue(RecordPush, pr.rec)
		}
	})
	if err != nil {
		if g.lastPush != 0 {
			g.lastFailure = now
		} else if len(g.series) == 0 {
			// The group was created for this push only; a rejected push
			// leaves no trace.
			s.removeGroupLocked(g)
		}
	} else {
		g.lastPush = now
	}
	g.mu.Unlock()
	return wait, err
}

// countApplied counts what an applied push ingested.
func (s *Store) countApplied(pr *prepared) {
	s.metrics.samplesIngested.Add(float64(len(pr.updates)))
	s.metrics.timestampsIgnored.Add(float64(pr.timestamps))
	s.metrics.quantilesDropped.Add(float64(pr.droppedQuants))
}

// recordFailure sets push_failure_time_seconds of an existing group, as the
// Pushgateway does for pushes it rejects. A group that does not exist is
// not created: a rejected push changes no series and no group set.
func (s *Store) recordFailure(groupLabels labels.Labels, now int64) {
	g := s.lookupGroup(groupLabels)
	if g == nil {
		return
	}
	g.mu.Lock()
	if !g.deleted && g.lastPush != 0 {
		g.lastFailure = now
	}
	g.mu.Unlock()
}

// lookupGroup returns an existing group, unlocked, or nil.
func (s *Store) lookupGroup(groupLabels labels.Labels) *group {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	return s.groups[groupKey(groupLabels, s.keysInLabels)]
}

// lockGroup returns the push's group, created if needed, with its mutex held.
func (s *Store) lockGroup(pr *prepared) *group {
	for {
		s.groupsMu.Lock()
		g := s.groups[pr.groupKey]
		if g == nil {
			// Created after every checkpoint so far began: none of
			// them has anything of it to copy.
			g = &group{key: pr.groupKey, labels: pr.group, series: make(map[string]*series),
				captured: s.checkpoints.Load()}
			s.groups[pr.groupKey] = g
		}
		s.groupsMu.Unlock()
		g.mu.Lock()
		if !g.deleted {
			return g
		}
		g.mu.Unlock()
	}
}

// pending is an update checked against the stored state, ready to commit.
type pending struct {
	u     *update
	s     *series // existing, or new and not yet inserted
	isNew bool
	extra int32 // the series' extra after the update
	value float64
	hist  *histState
	summ  *summaryState
}

func (s *Store) applyLocked(g *group, pr *prepared, set *Settings, now int64, enqueue func()) error {
	if g.lastPush == 0 && len(g.series) == 0 && pr.src.Modes == nil {
		// A new group: each shows push_time_seconds and
		// push_failure_time_seconds, so groups count against max_series
		// too (empty pushes would make them without bound otherwise).
		s.groupsMu.Lock()
		n := len(s.groups)
		s.groupsMu.Unlock()
		if n > set.Limits.MaxSeries {
			return limited(ReasonLimitTotal, "max_series", "a new group would make %d groups, more than limits.max_series (%d): each group shows push_time_seconds; existing groups still accept pushes",
				n, set.Limits.MaxSeries)
		}
	}
	// The updates' series in the group (whose lock is held); a new one
	// is looked for in its shard below.
	found := slices.Grow(pr.found[:0], len(pr.updates))[:len(pr.updates)]
	pr.found = found
	inGroup := 0
	for i := range pr.updates {
		u := &pr.updates[i]
		se := g.series[u.key]
		found[i] = se
		if se == nil {
			continue
		}
		inGroup++
		if pr.typeHint && se.typ != u.typ && floatType(se.typ) && floatType(u.typ) {
			if err := pr.adopt(g, i, se.typ); err != nil {
				return err
			}
		}
		// A series keeps its mode: a push that names none (its mode is
		// the default) is applied with the mode of the series it
		// updates, which a config reload may have made another default.
		// (A series of another type is not remoded: the push either
		// replaces its family, below, or is refused for the type.)
		if u.defaulted && se.mode != u.mode && se.typ == u.typ && se.mode.Kind != configs.ModeFamily && u.mode.Kind != configs.ModeFamily {
			if err := pr.remode(g, i, se.mode); err != nil {
				return err
			}
		}
	}
	// Claim the families so their types cannot change underneath us.
	// The list is the pooled prepared's, so that it costs no allocation.
	claimed := claimSet{list: pr.claimed[:0]}
	var fc famChanges
	defer func() {
		fc.unlock(s) // before the releases, which take famMu
		for _, f := range claimed.list {
			s.release(f)
		}
		pr.claimed = claimed.list
	}()
	for i := range pr.updates {
		u := &pr.updates[i]
		if f := claimed.get(u.name); f != nil {
			if f.typ != u.outType && pr.adoptable(u, f) {
				if err := pr.adopt(g, i, f.pushedType); err != nil {
					return err
				}
			}
			if f.typ != u.outType {
				return typeConflict(u, f)
			}
			continue
		}
		if c := fc.candidate(u.name); c != nil {
			if c.u.outType != u.outType {
				return invalid(ReasonTypeConflict, "metric %q is pushed as both %s and %s", u.name, typeName(c.u.outType), typeName(u.outType))
			}
			continue
		}
		if pr.typeHint {
			if f := s.family(u.name); f != nil && f.typ != u.outType && pr.adoptable(u, f) {
				if err := pr.adopt(g, i, f.pushedType); err != nil {
					return err
				}
			}
		}
		f, changes, err := s.claimFor(pr, u)
		if err != nil {
			return err
		}
		if changes {
			fc.cands = append(fc.cands, famCandidate{u: u, old: f})
			continue
		}
		claimed.add(f)
	}
	if (pr.remoded || pr.adopted) && pr.rec != nil {
		// The record must hold the modes and types applied, for replay:
		// the families a type was taken from may not be there then (the
		// push that made one failed, or is logged after this one).
		rec, err := s.encodePush(pr)
		if err != nil {
			return fmt.Errorf("encode push for the write-ahead log: %w", err)
		}
		pr.rec = rec
	}
	// The series of a family the push gives another type are replaced,
	// not updated: they are removed below and pushed anew. (If the
	// family turns out not to be the group's alone, resolve refuses the
	// push.)
	if len(fc.cands) > 0 {
		for i, se := range found {
			if se != nil && fc.swapped(se.fam) {
				found[i] = nil
				inGroup--
			}
		}
	}

	// Series the push removes: the whole group (PUT, Pushgateway
	// semantics) or the replaced families, minus what the push updates.
	// Updates are distinct, so when every series of the group is among
	// them, as in a job's repeated push, nothing is removed.
	var removed []*series
	if (pr.replaceAll || len(pr.replaceNames) > 0) && inGroup < len(g.series) {
		keys := make(map[string]struct{}, len(pr.updates))
		for i := range pr.updates {
			keys[pr.updates[i].key] = struct{}{}
		}
		for k, se := range g.series {
			if _, ok := keys[k]; ok && !fc.swapped(se.fam) {
				continue
			}
			if pr.replaceAll || pr.replaceNames[se.name] {
				removed = append(removed, se)
			}
		}
	}

	// Lock, in ascending order, the shards whose maps this push reads or
	// changes: those of the series new to the group (looked up, then
	// added) and of the removed ones. The fields of a series are guarded
	// by its group's lock, held here, so a series the group already has
	// is updated without its shard's: a job's repeated push takes no
	// shard lock at all. (Sorting and locking the shard of every update
	// was 2-3% of a push's CPU profile.)
	idx := pr.shardIdx[:0]
	for i := range pr.updates {
		if found[i] == nil {
			idx = append(idx, pr.updates[i].shard)
		}
	}
	for _, se := range removed {
		idx = append(idx, s.shardOf(se.key))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	pr.shardIdx = idx
	for _, i := range idx {
		s.shards[i].mu.Lock()
	}
	defer func() {
		for _, i := range idx {
			s.shards[i].mu.Unlock()
		}
	}()

	if err := fc.resolve(s, g, &claimed); err != nil {
		return err
	}
	var flags []famFlags
	for i := range pr.updates {
		u := &pr.updates[i]
		ff, err := s.joinFamily(claimed.get(u.name), u, pr.typeHint, pr.src.Modes != nil, fc.locked)
		if err != nil {
			return err
		}
		if ff.checked || ff.classic {
			flags = append(flags, ff)
		}
	}

	// Check every update against the stored state; mutate nothing yet.
	pend := slices.Grow(pr.pend[:0], len(pr.updates))[:len(pr.updates)]
	pr.pend = pend
	newCount := 0
	for i := range pr.updates {
		u := &pr.updates[i]
		// The group's own map is small and usually holds the series; the
		// shard's (every group's series) is asked only for a new one.
		existing := found[i]
		if existing == nil {
			existing = s.shards[u.shard].series[u.key]
			if existing != nil && fc.swapped(existing.fam) {
				existing = nil // removed below
			}
		}
		if existing != nil && existing.group != g {
			return invalid(ReasonOtherGroup, "series %s was already pushed by group %s; a series belongs to one grouping key",
				seriesString(u.labelSet(g.labels)), groupString(existing.group.labels))
		}
		p, err := next(g, u, existing, s.keysInLabels)
		if err != nil {
			return err
		}
		if existing == nil {
			newCount++
		}
		pend[i] = p
	}
	// The limits count the series a store sees: a classic histogram's
	// buckets, a summary's quantiles (exposedExtra). growth is what the
	// push adds to that beyond its new series, gone what it removes.
	growth, gone := 0, len(removed)
	for i := range pend {
		p := &pend[i]
		p.extra = exposedExtra(p.hist, p.summ)
		if !p.isNew && p.hist == nil && p.summ == nil {
			p.extra = p.s.extra // a float update: as it was
		}
		growth += int(p.extra)
		if !p.isNew {
			growth -= int(p.s.extra)
		}
	}
	for _, se := range removed {
		gone += int(se.extra)
	}
	if newCount > 0 || growth > 0 {
		if live := len(g.series) + g.extra - gone + newCount + growth; live > set.Limits.MaxSeriesPerGroup {
			return limited(ReasonLimitGroup, "max_series_per_group", "group %s would have %d series, more than %d (limits.max_series_per_group; each bucket of a classic histogram counts); pushes that add no series still pass",
				groupString(g.labels), live, set.Limits.MaxSeriesPerGroup)
		}
		// Reserve the new series; removals below give their slots back.
		total := s.counted.Add(int64(newCount + growth))
		if total-int64(gone) > int64(set.Limits.MaxSeries) {
			s.counted.Add(-int64(newCount + growth))
			return limited(ReasonLimitTotal, "max_series", "sluice holds %d series, the limit is %d (limits.max_series; each bucket of a classic histogram counts); pushes that add no series still pass",
				total-int64(newCount+growth), set.Limits.MaxSeries)
		}
	} else {
		s.counted.Add(int64(growth)) // no new series, and growth <= 0
	}

	// Commit: the record goes to the journal first, in the order the
	// locks give conflicting operations.
	enqueue()
	for _, ff := range flags {
		ff.apply()
	}
	fc.commit(s)
	for _, se := range removed {
		s.removeSeriesLocked(g, se)
	}
	s.metrics.seriesRemoved.WithLabelValues("replaced").Add(float64(len(removed)))
	for i := range pend {
		p := &pend[i]
		se := p.s
		g.extra += int(p.extra - se.extra) // se.extra is 0 for a new one
		se.extra = p.extra
		if p.isNew {
			se.fam = claimed.get(se.name)
			se.name = se.fam.name // the family's copy, not the push's
			se.fam.refs.Add(1)
			s.shards[p.u.shard].series[se.key] = se
			g.series[se.key] = se
			s.modeCounts[se.mode.Kind].Add(1)
		}
		se.lastPush = now
		switch {
		case se.win != nil:
			se.win.add(p.u.obs.value, now)
		case p.hist != nil:
			se.hist = p.hist
		case p.summ != nil:
			se.summ = p.summ
		default:
			se.value = p.value
		}
	}
	return nil
}

// claimSet holds the families a push claimed. A push usually names a
// handful, so they are found by scanning from the end (updates of one
// family are adjacent); a map takes over for pushes with many.
type claimSet struct {
	list   []*family
	byName map[string]*family
}

// manyFamilies is the count above which claimSet indexes by name.
const manyFamilies = 16

func (c *claimSet) get(name string) *family {
	if c.byName != nil {
		return c.byName[name]
	}
	for i := len(c.list) - 1; i >= 0; i-- {
		if c.list[i].name == name {
			return c.list[i]
		}
	}
	return nil
}

func (c *claimSet) add(f *family) {
	c.list = append(c.list, f)
	switch {
	case c.byName != nil:
		c.byName[f.name] = f
	case len(c.list) > manyFamilies:
		c.byName = make(map[string]*family, 2*len(c.list))
		for _, g := range c.list {
			c.byName[g.name] = g
		}
	}
}

// next computes a series' state after an update without changing it.
func next(g *group, u *update, se *series, keysInLabels bool) (pending, error) {
	p := pending{u: u, s: se}
	if se == nil {
		p.isNew = true
		// The key and labels are copied out of the push's slabs, which
		// the series must not keep alive. The key is the labels'
		// encoding: it shares their memory where it can.
		lset := u.labelSet(g.labels)
		p.s = &series{key: seriesKey(lset, u.key, keysInLabels), lset: lset, name: u.name, group: g, typ: u.typ, mode: u.mode}
		if u.mode.Windowed() {
			p.s.win = newWindow(u.mode)
		}
		p.value, p.hist, p.summ = u.obs.value, u.obs.hist, u.obs.summ
		return p, nil
	}
	if se.mode != u.mode {
		return p, invalid(ReasonModeConflict, "series %s is aggregated with clear_mode=%s, this push says %s; a series keeps its mode until it expires or its group is deleted",
			seriesString(u.labelSet(g.labels)), se.mode, u.mode)
	}
	if se.typ != u.typ {
		return p, invalid(ReasonTypeConflict, "series %s has type %s, this push says %s",
			seriesString(u.labelSet(g.labels)), typeName(se.typ), typeName(u.typ))
	}
	if u.mode.Kind != configs.ModeSum {
		p.value, p.hist, p.summ = u.obs.value, u.obs.hist, u.obs.summ
		return p, nil
	}
	switch {
	case u.obs.hist != nil:
		if !se.hist.sameLayout(u.obs.hist) {
			return p, invalid(ReasonLayoutChange, "histogram %s: bucket layout changed from %s to %s; summing different layouts would corrupt the cumulative counts (delete the group or use clear_mode=replace to change it)",
				seriesString(u.labelSet(g.labels)), layoutString(se.hist), layoutString(u.obs.hist))
		}
		h, err := se.hist.plusInto(u.obs.hist) // the update's own: next runs once per update
		if err != nil {
			return p, invalid(ReasonBadHistogram, "histogram %s: cannot merge native histograms: %v", seriesString(u.labelSet(g.labels)), err)
		}
		p.hist = h
	case u.obs.summ != nil:
		p.summ = &summaryState{count: se.summ.count + u.obs.summ.count, sum: se.summ.sum + u.obs.summ.sum}
	default:
		p.value = se.value + u.obs.value
	}
	return p, nil
}

// claim claims u's family, making it if there is none, and then refuses
// a new family whose series names another family's would share
// (suffixClash). hinted (a remote_write push) refuses only a clash with
// series that show: a native histogram x and the classic x_count, x_sum
// and x_bucket series a Prometheus sends beside it
// (always_scrape_classic_histograms) are separate series there, and a 400
// would drop every such request; a series beside a summary's _count is a
// clash there too. A family restored from a checkpoint is checked by
// nothing (restored is set).
func (s *Store) claim(u *update, hinted, restored bool) (*family, error) {
	s.famMu.RLock()
	f := s.families[u.name]
	if f != nil && f.typ == u.outType {
		f.refs.Add(1)
		s.famMu.RUnlock()
		return f, nil
	}
	s.famMu.RUnlock()
	if f != nil {
		return nil, typeConflict(u, f)
	}
	s.famMu.Lock()
	defer s.famMu.Unlock()
	f = s.families[u.name]
	if f == nil {
		if !restored {
			if err := s.suffixClash(u, hinted); err != nil {
				return nil, err
			}
		}
		f = newFamily(u, !hinted && !restored)
		s.families[f.name] = f
	}
	if f.typ != u.outType {
		return nil, typeConflict(u, f)
	}
	f.refs.Add(1)
	return f, nil
}

// family returns the family of that name, unclaimed, or nil.
func (s *Store) family(name string) *family {
	s.famMu.RLock()
	defer s.famMu.RUnlock()
	return s.families[name]
}

// composite reports whether a metric of type t shows as several series.
func composite(t dto.MetricType) bool {
	return t == dto.MetricType_HISTOGRAM || t == dto.MetricType_GAUGE_HISTOGRAM || t == dto.MetricType_SUMMARY
}

// seriesSuffixes are the suffixes of the series a metric of composite type
// t shows as.
func seriesSuffixes(t dto.MetricType) []string {
	if t == dto.MetricType_SUMMARY {
		return []string{"_count", "_sum"}
	}
	return []string{"_count", "_sum", "_bucket"}
}

// showsClassic reports whether u's series shows, in remote_write output
// too, as _bucket/_count/_sum series.
func showsClassic(u *update) bool {
	h := u.obs.hist
	return u.outType == dto.MetricType_SUMMARY || h != nil && (h.native == nil || len(h.bounds) > 0)
}

// suffixClash returns an error if u's metric, as a new family, would share
// a series name with another: a histogram's or summary's _count and _sum
// series (and a histogram's _bucket) with a metric of that name. A scrape
// would drop one of them, and a store see two series as one. The caller
// holds famMu.
//
// hinted (remote_write) checks only the second way, against families
// whose series show under those names in remote_write output too
// (classic).
func (s *Store) suffixClash(u *update, hinted bool) error {
	if composite(u.outType) && !hinted {
		if err := s.compositeClash(u.name, u.outType); err != nil {
			return err
		}
	}
	for _, sfx := range []string{"_count", "_sum", "_bucket"} {
		base, ok := strings.CutSuffix(u.name, sfx)
		if !ok {
			continue
		}
		if f := s.families[base]; f != nil && composite(f.typ) && slices.Contains(seriesSuffixes(f.typ), sfx) && (!hinted || f.classic.Load()) {
			return invalid(ReasonTypeConflict, "metric %q would collide with the %s series of %s %q; a name has one metric",
				u.name, sfx, typeName(f.typ), f.name)
		}
	}
	return nil
}

// compositeClash returns an error if a family has the name of a series a
// metric name of composite type t shows as. The caller holds famMu.
func (s *Store) compositeClash(name string, t dto.MetricType) error {
	for _, sfx := range seriesSuffixes(t) {
		if f := s.families[name+sfx]; f != nil {
			return invalid(ReasonTypeConflict, "%s %q would collide with metric %q (its %s series have that name); a name has one metric",
				typeName(t), name, f.name, sfx)
		}
	}
	return nil
}

// joinFamily checks u, of a push (hinted: remote_write) that claimed f,
// against what f's flags say was checked: a family that remote_write made
// was not checked the first way (suffixClash), so a push API series that
// joins it is; a series that shows classic series in a family that had
// none marks it, so that remote_write series named like them are refused
// from then on. It returns the flags to set once the push commits (a
// refused push changes nothing). A replayed push is not checked (it was
// accepted once; the flags it met then may not be rebuilt the same way).
// locked: the caller holds famMu for writing.
func (s *Store) joinFamily(f *family, u *update, hinted, replay, locked bool) (famFlags, error) {
	check := !hinted && !replay && composite(f.typ) && !f.checked.Load()
	mark := showsClassic(u) && !f.classic.Load()
	set := famFlags{f: f, checked: check, classic: mark}
	if !check && (!mark || replay) {
		return set, nil
	}
	if !locked {
		s.famMu.Lock()
		defer s.famMu.Unlock()
	}
	// A series that shows classic ones checks their names even in a
	// checked family: remote_write may have made such a name since, while
	// the family had none (suffixClash lets it then).
	if composite(f.typ) {
		if err := s.compositeClash(f.name, f.typ); err != nil {
			return famFlags{}, err
		}
	}
	return set, nil
}

// famFlags are the flags a push sets on a family it joins, when it commits.
type famFlags struct {
	f                *family
	checked, classic bool
}

func (ff famFlags) apply() {
	if ff.checked {
		ff.f.checked.Store(true)
	}
	if ff.classic {
		ff.f.classic.Store(true)
	}
}

// newFamily is the family of u's metric as u gives it, with no reference;
// checked: the names its series show under were checked (family.checked).
func newFamily(u *update, checked bool) *family {
	// Clone: the push's strings may share memory with its whole body
	// (see ingest's text decoder), which the family must not keep.
	f := &family{name: strings.Clone(u.name), typ: u.outType, pushedType: u.typ, mode: u.mode, help: strings.Clone(u.help), unit: strings.Clone(u.unit)}
	f.classic.Store(showsClassic(u))
	f.checked.Store(checked)
	return f
}

// claimFor claims u's family, or, when the push may replace it whole
// (see famChanges) and the stored one is not as u gives it, returns it
// (nil if there is none) unclaimed, with changes set.
func (s *Store) claimFor(pr *prepared, u *update) (f *family, changes bool, err error) {
	if pr.semantics != SemanticsPushgateway || !(pr.replaceAll || pr.replaceNames[u.name]) {
		f, err = s.claim(u, pr.typeHint, false)
		return f, false, err
	}
	s.famMu.RLock()
	defer s.famMu.RUnlock()
	f = s.families[u.name]
	if f != nil && f.sameAs(u) {
		f.refs.Add(1)
		return f, false, nil
	}
	return f, true, nil
}

// sameAs reports whether u gives f's metric as f has it: the same type,
// HELP and unit.
func (f *family) sameAs(u *update) bool {
	return f.typ == u.outType && f.pushedType == u.typ && f.help == u.help && f.unit == u.unit
}

// seriesOf counts g's series of family f. The caller holds g.mu.
func (g *group) seriesOf(f *family) int {
	n := 0
	for _, se := range g.series {
		if se.fam == f {
			n++
		}
	}
	return n
}

// famChanges are the families a push may change. With Pushgateway
// semantics a push that replaces a family in its group (a PUT, or a POST
// of that name) replaces it whole when the group alone holds it, as on a
// Pushgateway, whose consistency check then finds nothing else of that
// name: it may give the metric another type (the group's series of it are
// then pushed anew), another HELP or another unit. While other groups
// hold it, its type stays (the push is refused), and so do its HELP and
// unit (the first stays, as the Pushgateway keeps one of the HELP texts
// its groups disagree on).
//
// Whether the group alone holds a family is settled by resolve, which
// takes famMu for writing (after the shard locks, the order in which
// release takes them) and keeps it until the push commits or fails, so
// that no other push claims the family in between.
type famChanges struct {
	cands  []famCandidate
	locked bool
	swaps  []famChange // another type: new takes old's name
	texts  []famChange // the same type: old takes new's HELP and unit
	added  []*family   // families new to the Store
}

// famCandidate is a family the push may change: old is the one stored
// when it was claimed (nil if none), u the push's first series of it.
type famCandidate struct {
	u   *update
	old *family
}

// famChange is a family a push replaces: old by new (another type), or
// old's HELP and unit by new's.
type famChange struct{ old, new *family }

func (fc *famChanges) candidate(name string) *famCandidate {
	for i := range fc.cands {
		if fc.cands[i].u.name == name {
			return &fc.cands[i]
		}
	}
	return nil
}

// swapped reports whether f is a family the push may give another type.
func (fc *famChanges) swapped(f *family) bool {
	for _, c := range fc.cands {
		if c.old == f && f != nil && (f.typ != c.u.outType || f.pushedType != c.u.typ) {
			return true
		}
	}
	for _, c := range fc.swaps {
		if c.old == f {
			return true
		}
	}
	return false
}

// resolve decides each candidate under famMu, held for writing from here
// on, and adds what the push claims to claimed. A family replaced since
// the candidate was taken had no series in g (g's lock is held, and a
// family with series in g changes only by a push to g), so the series
// swapped marked are the same either way.
func (fc *famChanges) resolve(s *Store, g *group, claimed *claimSet) error {
	if len(fc.cands) == 0 {
		return nil
	}
	s.famMu.Lock()
	fc.locked = true
	for _, c := range fc.cands {
		u := c.u
		f := s.families[u.name]
		switch {
		case f == nil:
			if err := s.suffixClash(u, false); err != nil {
				return err
			}
			f = newFamily(u, true)
			fc.added = append(fc.added, f)
		case f.sameAs(u):
		case f.refs.Load() != int64(g.seriesOf(f)):
			// Other groups hold it, or pushes to them are claiming it.
			if f.typ != u.outType {
				return typeConflictShared(u, f)
			}
		case f.typ != u.outType || f.pushedType != u.typ:
			if err := s.suffixClash(u, false); err != nil {
				return err
			}
			nf := newFamily(u, true)
			fc.swaps = append(fc.swaps, famChange{old: f, new: nf})
			f = nf
		default:
			fc.texts = append(fc.texts, famChange{old: f, new: newFamily(u, false)})
		}
		f.refs.Add(1)
		claimed.add(f)
	}
	return nil
}

// commit makes the changes and lets other pushes claim families again.
// Nothing else reads a changed family meanwhile: its only series are the
// group's, whose lock the push holds, and no push can claim it.
func (fc *famChanges) commit(s *Store) {
	for _, f := range fc.added {
		s.families[f.name] = f
	}
	for _, c := range fc.swaps {
		s.families[c.new.name] = c.new
	}
	for _, c := range fc.texts {
		c.old.help, c.old.unit = c.new.help, c.new.unit
	}
	fc.unlock(s)
}

func (fc *famChanges) unlock(s *Store) {
	if fc.locked {
		fc.locked = false
		s.famMu.Unlock()
	}
}

func (s *Store) release(f *family) {
	if f.refs.Add(-1) > 0 {
		return
	}
	s.famMu.Lock()
	if f.refs.Load() == 0 && s.families[f.name] == f {
		delete(s.families, f.name)
	}
	s.famMu.Unlock()
}

// typeConflictShared is typeConflict for a push that would replace the
// family if its group alone held it.
func typeConflictShared(u *update, f *family) error {
	e := typeConflict(u, f)
	e.Msg += " and other groups have series of it (a PUT or POST may change a metric's type only in the one group that has it)"
	return e
}

func typeConflict(u *update, f *family) *Error {
	how := func(t dto.MetricType, pushed dto.MetricType, m configs.Mode) string {
		if m.Windowed() {
			return "gauge (windowed clear_mode=" + m.String() + " of " + typeName(pushed) + " values)"
		}
		return typeName(t)
	}
	return invalid(ReasonTypeConflict, "metric %q pushed as %s, but it is stored as %s; a metric name has one type",
		u.name, how(u.outType, u.typ, u.mode), how(f.typ, f.pushedType, f.mode))
}

// removeSeriesLocked drops a series. The caller holds g.mu and the series'
// shard mutex.
func (s *Store) removeSeriesLocked(g *group, se *series) {
	delete(s.shards[s.shardOf(se.key)].series, se.key)
	delete(g.series, se.key)
	s.counted.Add(-1 - int64(se.extra))
	g.extra -= int(se.extra)
	s.modeCounts[se.mode.Kind].Add(-1)
	s.release(se.fam)
}

// removeGroupLocked drops a group and all its series. The caller holds g.mu
// and no shard mutex.
func (s *Store) removeGroupLocked(g *group) int {
	n := len(g.series)
	for _, se := range g.series {
		sh := &s.shards[s.shardOf(se.key)]
		sh.mu.Lock()
		s.removeSeriesLocked(g, se)
		sh.mu.Unlock()
	}
	g.deleted = true
	s.groupsMu.Lock()
	if s.groups[g.key] == g {
		delete(s.groups, g.key)
	}
	s.groupsMu.Unlock()
	return n
}

// Delete removes a group and its series. Deleting an unknown group is not
// an error (the Pushgateway answers 202 either way). With a journal it
// returns once the deletion is durable.
func (s *Store) Delete(ctx context.Context, groupLabels labels.Labels) error {
	if err := s.unavailable(); err != nil {
		return err
	}
	return s.deleteGroup(groupLabels, s.now(), s.journal)
}

func (s *Store) deleteGroup(groupLabels labels.Labels, at time.Time, j Journal) error {
	var wait func(context.Context) error
	s.stateMu.RLock()
	if g := s.lookupGroup(groupLabels); g != nil {
		g.mu.Lock()
		if !g.deleted {
			s.beforeChange(g)
			if j != nil {
				rec, _ := EncodeOp(&Op{Type: RecordDelete, Time: at, Group: groupLabels})
				wait = j.Enqueue(RecordDelete, rec)
			}
			n := s.removeGroupLocked(g)
			s.metrics.seriesRemoved.WithLabelValues("deleted").Add(float64(n))
		}
		g.mu.Unlock()
	}
	s.stateMu.RUnlock()
	return s.waitDurable(wait)
}

// Wipe removes every group.
func (s *Store) Wipe(ctx context.Context) error {
	for _, g := range s.groupList() {
		if err := s.Delete(ctx, g.labels); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) groupList() []*group {
	s.groupsMu.Lock()
	defer s.groupsMu.Unlock()
	out := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	return out
}

// Expire drops series and groups not pushed to for their TTL: the rule's
// TTL for the group if one matches, else --series.ttl. With a journal
// every removal is recorded, so a replay does not resurrect totals that a
// later push restarted from zero.
func (s *Store) Expire(ctx context.Context) error {
	if err := s.unavailable(); err != nil {
		return err
	}
	set := s.settings.Load()
	at := s.now()
	now := at.UnixNano()
	for _, g := range s.groupList() {
		var wait func(context.Context) error
		s.stateMu.RLock()
		g.mu.Lock()
		if g.deleted || g.lastPush == 0 {
			g.mu.Unlock()
			s.stateMu.RUnlock()
			continue
		}
		s.beforeChange(g)
		ttl := set.Aggregation.TTLFor(func(n string) string { return g.labels.Get(n) }, set.SeriesTTL).Nanoseconds()
		if now-g.lastPush >= ttl {
			if s.journal != nil {
				rec, _ := EncodeOp(&Op{Type: RecordExpire, Time: at, ExpiredGroups: []labels.Labels{g.labels}})
				wait = s.journal.Enqueue(RecordExpire, rec)
			}
			n := s.removeGroupLocked(g)
			s.metrics.seriesRemoved.WithLabelValues("expired").Add(float64(n))
		} else {
			var keys []string
			for _, se := range g.series {
				if now-se.lastPush >= ttl {
					keys = append(keys, se.key)
				}
			}
			if len(keys) > 0 && s.journal != nil {
				rec, _ := EncodeOp(&Op{Type: RecordExpire, Time: at, ExpiredSeries: keys})
				wait = s.journal.Enqueue(RecordExpire, rec)
			}
			s.removeKeysLocked(g, keys)
			s.metrics.seriesRemoved.WithLabelValues("expired").Add(float64(len(keys)))
		}
		g.mu.Unlock()
		s.stateMu.RUnlock()
		if err := s.waitDurable(wait); err != nil {
			return err
		}
		if ctx.Err() != nil {
			// Shutting down: the rest expires at the next start. (The
			// wait above does not end early: what is applied is logged.)
			return nil
		}
	}
	return nil
}

// removeKeysLocked removes the given series of a group. The caller holds
// g.mu and no shard mutex.
func (s *Store) removeKeysLocked(g *group, keys []string) {
	for _, k := range keys {
		se := g.series[k]
		if se == nil {
			continue
		}
		sh := &s.shards[s.shardOf(k)]
		sh.mu.Lock()
		s.removeSeriesLocked(g, se)
		sh.mu.Unlock()
	}
}

// Run expires old series every interval until ctx is done.
func (s *Store) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Expire(ctx); err != nil {
				s.logger.Error("expire series", "err", err)
			}
		}
	}
}

// Gather returns the current aggregated series and the per-group push
// timestamps as metric families, sorted by name. It implements
// prometheus.Gatherer so /metrics can merge it with Sluice's own registry.
// It renders what a flush does (gatherChunks), as one chunk: each group
// under its lock, so it shows every operation on it entirely or not at
// all; operations go on meanwhile.
func (s *Store) Gather() ([]*dto.MetricFamily, error) {
	type rendered struct {
		lset labels.Labels
		m    *dto.Metric
	}
	type famSeries struct {
		fam    *dto.MetricFamily
		groups bool
		series []rendered
	}
	byName := make(map[string]*famSeries)
	_ = s.gatherChunks(math.MaxInt, func(c *flushChunk) error {
		for _, f := range c.fams {
			fs := byName[f.name]
			if fs == nil {
				fs = &famSeries{fam: &dto.MetricFamily{Name: ptr(f.name), Type: ptr(f.typ)}, groups: f.groups}
				if f.help != "" {
					fs.fam.Help = ptr(f.help)
				}
				byName[f.name] = fs
			}
			for _, se := range f.series {
				var m *dto.Metric
				if f.groups {
					m = &dto.Metric{Label: groupLabelPairs(se.lset), Gauge: &dto.Gauge{Value: ptr(se.value)}}
				} else {
					m = labelledMetric(se.lset, f.typ, se.value, se.m)
				}
				fs.series = append(fs.series, rendered{se.lset, m})
			}
		}
		return nil
	})
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, fs := range byName {
		f := fs.fam
		if fs.groups {
			for _, r := range fs.series {
				f.Metric = append(f.Metric, r.m)
			}
			sortMetrics(f.Metric)
			out = append(out, f)
			continue
		}
		// Sorting the label sets is much cheaper than sorting rendered
		// metrics by their label pairs.
		slices.SortFunc(fs.series, func(a, b rendered) int { return labels.Compare(a.lset, b.lset) })
		f.Metric = make([]*dto.Metric, 0, len(fs.series))
		for i := range fs.series {
			// A series rendered twice: its group was deleted after it
			// was rendered and another group pushed it before that one
			// was. One sample per series.
			if i > 0 && labels.Equal(fs.series[i].lset, fs.series[i-1].lset) {
				continue
			}
			f.Metric = append(f.Metric, fs.series[i].m)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out, nil
}

// flushChunk is a part of the Store's series for a flush: whole groups,
// each rendered under its lock. A chunk is read during the call it is
// passed to only.
type flushChunk struct {
	fams []flushFamily
	n    int // series in fams
}

// flushFamily is the series of one metric family in a chunk.
type flushFamily struct {
	name, help, unit string
	typ              dto.MetricType
	// groups: each series' labels are a grouping key; the series is named
	// name and gets instance="" when the key has no instance (the
	// push-time families, as groupLabelPairs renders them).
	groups bool
	series []flushSeries
}

// flushSeries is one series of a chunk. lset is the Store's own (with
// __name__), or a grouping key.
type flushSeries struct {
	lset  labels.Labels
	value float64
	m     *dto.Metric // a histogram or summary, without labels; nil for a float
}

// gatherChunks is Gather for a flush, a part at a time: it renders about
// size series (whole groups) into a chunk, hands it to fn and goes on,
// until every group is done or fn returns an error, which it returns. A
// series carries the Store's labels rather than a copy, and nothing is
// sorted: a flush never holds more than a chunk of rendered series. A
// family that ended and started again while groups were being rendered
// shows its series from before the restart only.
func (s *Store) gatherChunks(size int, fn func(*flushChunk) error) error {
	now := s.now().UnixNano()
	shown := make(map[string]*family) // the family each name stands for in this window
	var (
		c   flushChunk
		idx = make(map[*family]int) // index of a family in c.fams
		pt  = flushFamily{name: pushTimeName, typ: dto.MetricType_GAUGE, groups: true,
			help: "Last Unix time when changing this group in Sluice succeeded."}
		pf = flushFamily{name: pushFailureTimeName, typ: dto.MetricType_GAUGE, groups: true,
			help: "Last Unix time when changing this group in Sluice failed."}
	)
	// The chunk's slices are reused for the next chunk (fn reads a chunk
	// during the call only): a flush of a million series then allocates
	// a few chunks' worth, not a million series' worth of garbage.
	var spare [][]flushSeries
	send := func() error {
		stored := len(c.fams) // the Store's families; the push-time ones follow
		if len(pt.series) > 0 {
			c.fams = append(c.fams, pt, pf)
			c.n += 2 * len(pt.series)
		}
		err := fn(&c)
		for i := range c.fams[:stored] {
			clear(c.fams[i].series) // keep no ended series' labels alive
			spare = append(spare, c.fams[i].series[:0])
		}
		clear(c.fams)
		c.fams, c.n = c.fams[:0], 0
		clear(idx)
		clear(pt.series)
		clear(pf.series)
		pt.series, pf.series = pt.series[:0], pf.series[:0]
		return err
	}
	for _, g := range s.groupList() {
		g.mu.Lock()
		if g.deleted {
			g.mu.Unlock()
			continue
		}
		for _, se := range g.series {
			v, m, ok := se.current(now) // g.mu is enough to read its series
			if !ok {
				continue
			}
			if f := shown[se.name]; f == nil {
				shown[se.name] = se.fam
			} else if f != se.fam {
				// The family ended and started again (maybe with another
				// type) while groups were being rendered: its series from
				// before stand for this window, the new one comes next.
				continue
			}
			i, ok := idx[se.fam]
			if !ok {
				i = len(c.fams)
				idx[se.fam] = i
				ff := flushFamily{name: se.name, help: se.fam.help, unit: se.fam.unit, typ: se.fam.typ}
				if n := len(spare); n > 0 {
					ff.series, spare = spare[n-1], spare[:n-1]
				}
				c.fams = append(c.fams, ff)
			}
			c.fams[i].series = append(c.fams[i].series, flushSeries{lset: se.lset, value: v, m: m})
			c.n++
		}
		last, fail := g.lastPush, g.lastFailure
		g.mu.Unlock()
		if last != 0 {
			pt.series = append(pt.series, flushSeries{lset: g.labels, value: unixSeconds(last)})
			pf.series = append(pf.series, flushSeries{lset: g.labels, value: unixSeconds(fail)})
		}
		if c.n+2*len(pt.series) >= size {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if c.n+len(pt.series) > 0 {
		return send()
	}
	return nil
}

func unixSeconds(nanos int64) float64 {
	if nanos == 0 {
		return 0
	}
	return float64(nanos) / 1e9
}

// groupLabelPairs are the labels of a group's push-time series: the grouping
// key plus instance="" when the key has no instance.
func groupLabelPairs(ls labels.Labels) []*dto.LabelPair {
	var out []*dto.LabelPair
	hasInstance := ls.Has("instance")
	ls.Range(func(l labels.Label) {
		out = append(out, &dto.LabelPair{Name: ptr(l.Name), Value: ptr(l.Value)})
	})
	if !hasInstance {
		out = append(out, &dto.LabelPair{Name: ptr("instance"), Value: ptr("")})
		sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	}
	return out
}

func sortMetrics(ms []*dto.Metric) {
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i].GetLabel(), ms[j].GetLabel()
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k].GetName() != b[k].GetName() {
				return a[k].GetName() < b[k].GetName()
			}
			if a[k].GetValue() != b[k].GetValue() {
				return a[k].GetValue() < b[k].GetValue()
			}
		}
		return len(a) < len(b)
	})
}

func groupString(ls labels.Labels) string {
	if ls.IsEmpty() {
		return "{}"
	}
	return ls.String()
}

func typeName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_GAUGE_HISTOGRAM:
		return "gaugehistogram"
	}
	return strings.ToLower(t.String())
}

func layoutString(h *histState) string {
	s := "le=["
	for i, b := range h.bounds {
		if i > 0 {
			s += " "
		}
		if i == 8 {
			s += "..."
			break
		}
		s += formatLabelFloat(b)
	}
	s += "]"
	if h.native != nil {
		s += "+native"
	}
	return s
}

// GroupSnapshot is one group as the /api/v1/metrics JSON API shows it.
type GroupSnapshot struct {
	Labels      labels.Labels
	LastPush    time.Time
	LastFailure time.Time // zero if no push to the group was ever rejected
	Families    []FamilySnapshot
}

// FamilySnapshot is one metric family within a group.
type FamilySnapshot struct {
	Family   *dto.MetricFamily
	LastPush time.Time // the latest push to any of the family's series
	Modes    []string  // the distinct clear_modes of its series
}

// Groups returns every group with its series, sorted by grouping key.
func (s *Store) Groups() []GroupSnapshot {
	now := s.now().UnixNano()
	var out []GroupSnapshot
	for _, g := range s.groupList() {
		g.mu.Lock()
		if g.deleted || g.lastPush == 0 {
			g.mu.Unlock()
			continue
		}
		gs := GroupSnapshot{Labels: g.labels, LastPush: time.Unix(0, g.lastPush)}
		if g.lastFailure != 0 {
			gs.LastFailure = time.Unix(0, g.lastFailure)
		}
		byName := map[string]*FamilySnapshot{}
		for _, se := range g.series {
			m := se.metric(now) // g.mu is enough to read its series
			if m == nil {
				continue
			}
			fs := byName[se.name]
			if fs == nil {
				fs = &FamilySnapshot{Family: &dto.MetricFamily{Name: ptr(se.name), Type: ptr(se.fam.typ)}}
				if se.fam.help != "" {
					fs.Family.Help = ptr(se.fam.help)
				}
				byName[se.name] = fs
			}
			fs.Family.Metric = append(fs.Family.Metric, m)
			if t := time.Unix(0, se.lastPush); t.After(fs.LastPush) {
				fs.LastPush = t
			}
			if mode := se.mode.String(); !slices.Contains(fs.Modes, mode) {
				fs.Modes = append(fs.Modes, mode)
			}
		}
		g.mu.Unlock()
		for _, fs := range byName {
			sortMetrics(fs.Family.Metric)
			sort.Strings(fs.Modes)
			gs.Families = append(gs.Families, *fs)
		}
		sort.Slice(gs.Families, func(i, j int) bool { return gs.Families[i].Family.GetName() < gs.Families[j].Family.GetName() })
		out = append(out, gs)
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels, out[j].Labels) < 0 })
	return out
}

package aggregate

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// The control label and Gravel's spelling of it.
const (
	ModeLabel      = "clear_mode"
	ModeLabelAlias = "clearmode"
)

// Names of the per-group timestamps, as the Pushgateway exposes them.
const (
	pushTimeName        = "push_time_seconds"
	pushFailureTimeName = "push_failure_time_seconds"
)

// reservedPrefix marks Sluice's own metrics; pushes may not use it.
const reservedPrefix = "sluice_"

// update is one series of a push after validation, before it is applied.
type update struct {
	key  string      // the series key: the label set's encoding
	m    *dto.Metric // the pushed metric, for labelSet
	hash uint64      // xxhash of key
	// k0 and k1 locate key in the push's key arena while prepare builds it.
	k0, k1  int32
	name    string
	typ     dto.MetricType
	outType dto.MetricType
	help    string
	unit    string
	mode    configs.Mode
	// defaulted: mode came from default_modes (the push named none), so
	// an existing series of another mode takes the push with its own
	// (applyLocked).
	defaulted bool
	obs       observation
	shard     int
}

// prepared is a push that passed every check that needs no state.
type prepared struct {
	groupKey string
	group    labels.Labels
	updates  []update
	// replaceAll: every series of the group not in updates is removed
	// (PUT with Pushgateway semantics).
	replaceAll bool
	// replaceNames: every series of these names in the group that is not
	// in updates is removed (family mode, or POST with Pushgateway semantics).
	replaceNames map[string]bool

	// modes are the resolved modes of every series, in push order; the
	// write-ahead log records them so replay does not depend on the config.
	modes     []configs.Mode
	semantics Semantics
	typeHint  bool // Push.TypeHint
	adopted   bool // an update took another type (adopt)

	timestamps    int // samples whose client timestamp was ignored
	droppedQuants int // summary quantiles dropped in sum mode

	// src and at are the push and its time, kept to encode its record
	// again when applyLocked gave a defaulted update its series' mode
	// (remoded): the record must hold the modes applied.
	src     *Push
	at      time.Time
	remoded bool

	// arena holds the keys of all updates, which point into it; see
	// prepare and releasePrepared.
	arena []byte
	// rec is the push's write-ahead log record. Its array is reused by
	// a later push only once the log is done with it: the record was
	// not enqueued, or it is durable (applyPush).
	rec []byte
	// shardIdx, found, pend and claimed are applyLocked's scratch space.
	shardIdx []int
	found    []*series
	pend     []pending
	claimed  []*family
}

// maxPooledUpdates bounds the pushes whose prepared state is pooled: one
// huge push should not pin its arrays.
const maxPooledUpdates = 4096

// maxPooledRecord bounds the record array kept with a pooled push.
const maxPooledRecord = 64 << 10

// newPrepared returns an empty prepared push from the Store's pool.
func (s *Store) newPrepared() *prepared {
	if pr, _ := s.prepPool.Get().(*prepared); pr != nil {
		return pr
	}
	return &prepared{}
}

// releasePrepared returns pr to the Store's pool once nothing uses it or
// the keys of its updates any more (they point into pr.arena, which the
// next push overwrites). Whatever outlives a push (a new series' key and
// labels, a family's name) is copied, so this is once the push is applied
// or rejected.
func (s *Store) releasePrepared(pr *prepared) {
	if cap(pr.updates) > maxPooledUpdates {
		return
	}
	clear(pr.updates)
	rec := pr.rec[:0]
	if cap(rec) > maxPooledRecord {
		rec = nil
	}
	clear(pr.pend)
	clear(pr.found)
	clear(pr.claimed)
	// src, at and remoded are zeroed with the rest.
	*pr = prepared{updates: pr.updates[:0], modes: pr.modes[:0], arena: pr.arena[:0], rec: rec,
		shardIdx: pr.shardIdx[:0], found: pr.found[:0], pend: pr.pend[:0], claimed: pr.claimed[:0]}
	s.prepPool.Put(pr)
}

// prepare validates a push against everything that does not depend on the
// stored state and turns it into updates. It touches no state. With a
// Shape it checks only the values of a push of a known shape, and
// remembers the shape of one it prepares in full.
func (s *Store) prepare(p *Push, set *Settings) (*prepared, error) {
	sh := p.Shape
	if sh == nil || p.Modes != nil {
		return s.prepareFull(p, set)
	}
	if pr := s.prepareShaped(p, sh, set); pr != nil {
		return pr, nil
	}
	pr, err := s.prepareFull(p, set)
	if err == nil {
		sh.fill(pr, p, set)
	}
	return pr, err
}

// prepareFull is prepare without a Shape.
func (s *Store) prepareFull(p *Push, set *Settings) (*prepared, error) {
	sem := set.Semantics
	if p.Semantics != nil {
		sem = *p.Semantics // replay: the semantics the push was accepted under
	}
	lim := set.Limits
	get := func(n string) string { return p.Group.Get(n) }
	defaults := set.Aggregation.DefaultModes
	if r := set.Aggregation.RuleFor(get); r != nil {
		defaults = r.DefaultModes
	}
	pr := s.newPrepared()
	pr.groupKey, pr.group, pr.semantics, pr.typeHint = groupKey(p.Group, s.keysInLabels), p.Group, sem, p.TypeHint
	if sem == SemanticsPushgateway && p.Method == MethodPut {
		pr.replaceAll = true
	}
	if p.Modes == nil {
		// The path's labels go on every series: the same length limits
		// as the body's (a replayed push was accepted once).
		var err error
		p.Group.Range(func(l labels.Label) {
			if err == nil {
				err = checkGroupLabel(l, lim)
			}
		})
		if err != nil {
			return nil, err
		}
		// The group's push_time_seconds carries them all, and instance.
		if n := p.Group.Len() + boolInt(!p.Group.Has("instance")); n > lim.MaxLabelsPerSeries {
			return nil, &Error{Kind: KindTooLarge, Reason: ReasonLimitLabels, Limit: "max_labels_per_series", Msg: "grouping key " + groupString(p.Group) +
				" makes series of " + itoa(n) + " labels, more than " + itoa(lim.MaxLabelsPerSeries) + " (limits.max_labels_per_series)"}
		}
	}
	total := 0
	for _, fam := range p.Families {
		total += len(fam.GetMetric())
	}
	total = max(min(total, lim.MaxSeriesPerRequest), 0) // sizes only; the limit is checked below
	pr.updates = slices.Grow(pr.updates[:0], total)
	pr.modes = slices.Grow(pr.modes[:0], total)
	// The keys of all series go into one arena, sized from the first
	// series (the series of a push tend to be alike); they are cut out of
	// it once the loop is done. Label sets are built only for new series
	// (update.labelSet).
	keyArena := pr.arena[:0]
	var seen map[uint64]int // key hash -> first update with it; for big pushes only
	if total > smallPush {
		seen = make(map[uint64]int, total)
	}
	var (
		parsed modeCache
		sb     labels.ScratchBuilder // when !s.directKeys
		tmp    labels.Labels
		keyBuf = make([]byte, 0, 256)
		cur    = make([]labels.Label, 0, 16)
	)
	curSet := func() labels.Labels { return labels.New(cur...) }
	nSeries := 0
	for _, fam := range p.Families {
		name := fam.GetName()
		if name == pushTimeName || name == pushFailureTimeName {
			// Sluice sets these itself, as the Pushgateway does.
			continue
		}
		if !model.LegacyValidation.IsValidMetricName(name) {
			return nil, invalid(ReasonBadMetricName, "invalid metric name %q", truncateName(name))
		}
		if len(name) > lim.MaxLabelValueLength && p.Modes == nil {
			// The name is the value of __name__, as remote_write sees it.
			return nil, &Error{Kind: KindTooLarge, Reason: ReasonLimitLabelSize, Limit: "max_label_value_length", Msg: "metric name " +
				quote(truncateName(name)) + " is longer than " + itoa(lim.MaxLabelValueLength) + " bytes (limits.max_label_value_length)"}
		}
		if strings.HasPrefix(name, reservedPrefix) {
			return nil, invalid(ReasonReservedName, "metric name %q uses the prefix %q reserved for Sluice's own metrics", name, reservedPrefix)
		}
		// A scrape refuses the whole exposition over one such text (a
		// Prometheus scraping Sluice loses every group).
		if !utf8.ValidString(fam.GetHelp()) || !utf8.ValidString(fam.GetUnit()) {
			return nil, invalid(ReasonBadMetricName, "metric %q: HELP text or unit is not valid UTF-8", name)
		}
		typ := fam.GetType()
		// One of Sluice's own families (replay is exempt: accepted once)?
		own, isOwn := set.OwnFamilies[name]
		isOwn = isOwn && p.Modes == nil
		for _, m := range fam.GetMetric() {
			if m.TimestampMs != nil {
				pr.timestamps++
			}
			var (
				modeText string
				hasMode  bool
				err      error
			)
			cur, modeText, hasMode, err = seriesLabels(cur[:0], name, m, p.Group, &lim)
			if err != nil {
				return nil, err
			}
			if n := len(cur) - 1; n > lim.MaxLabelsPerSeries {
				return nil, &Error{Kind: KindTooLarge, Reason: ReasonLimitLabels, Limit: "max_labels_per_series", Msg: "series " + seriesString(curSet()) +
					" has " + itoa(n) + " labels, more than " + itoa(lim.MaxLabelsPerSeries) + " (limits.max_labels_per_series)"}
			}
			for i := 1; i < len(cur); i++ {
				if cur[i].Name == cur[i-1].Name {
					return nil, invalid(ReasonDuplicate, "metric %q has label %q more than once", name, cur[i].Name)
				}
			}
			// A histogram's buckets carry le, a summary's quantiles
			// quantile: one of the series' own would make two (a scrape
			// refuses the family, a store the whole request).
			if r := reservedLabel(typ); r != "" && p.Modes == nil && slices.ContainsFunc(cur, func(l labels.Label) bool { return l.Name == r }) {
				return nil, invalid(ReasonBadLabel, "%s %q must not have an explicit %q label (its %s carry one), in the body or the grouping key",
					typeName(typ), name, r, map[string]string{"le": "buckets", "quantile": "quantiles"}[r])
			}
			// The key is the label set's own encoding (Labels.Bytes), as
			// the checkpoint rebuilds it.
			if s.directKeys {
				keyBuf = appendLabelsKey(keyBuf[:0], cur)
			} else {
				sb.Reset()
				for _, l := range cur {
					sb.Add(l.Name, l.Value)
				}
				sb.Overwrite(&tmp)
				keyBuf = tmp.Bytes(keyBuf)
			}
			hash := xxhash.Sum64(keyBuf)
			if dupOf(pr.updates, seen, keyArena, keyBuf, hash) {
				return nil, invalid(ReasonDuplicate, "series %s appears more than once in the push", seriesString(curSet()))
			}
			if seen != nil {
				if _, ok := seen[hash]; !ok {
					seen[hash] = len(pr.updates)
				}
			}
			if cap(keyArena) == 0 {
				keyArena = make([]byte, 0, len(keyBuf)*total+64)
			}
			k0 := len(keyArena)
			keyArena = append(keyArena, keyBuf...)

			mode := defaultMode(defaults, typ, sem)
			defaulted := false
			if p.Modes != nil {
				// Replay: the mode resolved when the push was accepted,
				// whatever the config says now.
				if len(pr.modes) >= len(p.Modes) {
					return nil, invalid(ReasonUnknownMode, "replayed push has fewer recorded modes than series")
				}
				mode = p.Modes[len(pr.modes)]
			} else if p.Mode != "" {
				pm, err := parsed.parse(p.Mode, &s.modes)
				if err != nil {
					return nil, invalid(ReasonUnknownMode, "grouping key: %v", err)
				}
				mode = pm
			} else if hasMode {
				pm, err := parsed.parse(modeText, &s.modes)
				if err != nil {
					return nil, invalid(ReasonUnknownMode, "series %s: %v", seriesString(curSet()), err)
				}
				mode = pm
			} else {
				defaulted = true
			}
			if isOwn && outputType(typ, mode) != own {
				return nil, invalid(ReasonTypeConflict, "metric %q is one of Sluice's own metrics (%s on GET /metrics); this push sends it as %s (a push may add series to it only with the same type)",
					name, typeName(own), typeName(outputType(typ, mode)))
			}
			obs, quants, err := observe(name, curSet, typ, mode, m)
			if err != nil {
				return nil, err
			}
			// The series it shows as, as stored (a summary summed drops
			// its quantiles; a native histogram's +Inf-only classic part
			// shows nothing): what the series limits count.
			nSeries += 1 + int(exposedExtra(obs.hist, obs.summ))
			if nSeries > lim.MaxSeriesPerRequest {
				return nil, &Error{Kind: KindTooLarge, Reason: ReasonLimitRequest, Limit: "max_series_per_request", Msg: "push has more than " +
					itoa(lim.MaxSeriesPerRequest) + " series (limits.max_series_per_request; each bucket of a classic histogram and each quantile of a summary counts)"}
			}
			pr.droppedQuants += quants
			u := update{
				hash: hash, k0: int32(k0), k1: int32(len(keyArena)), m: m,
				name: name, typ: typ, outType: outputType(typ, mode),
				help: cutText(fam.GetHelp(), lim.MaxMetadataLength), unit: cutText(fam.GetUnit(), lim.MaxMetadataLength), mode: mode, defaulted: defaulted, obs: obs, shard: s.shardOfHash(hash),
			}
			pr.modes = append(pr.modes, mode)
			if mode.Kind == configs.ModeFamily || (sem == SemanticsPushgateway && p.Method == MethodPost) {
				if pr.replaceNames == nil {
					pr.replaceNames = make(map[string]bool)
				}
				pr.replaceNames[name] = true
			}
			pr.updates = append(pr.updates, u)
		}
	}
	// The keys are strings over the arena, not a copy of it: the arena is
	// not written again until releasePrepared, after which no key is used
	// (see there).
	pr.arena = keyArena
	keys := unsafe.String(unsafe.SliceData(keyArena), len(keyArena))
	for i := range pr.updates {
		u := &pr.updates[i]
		u.key = keys[u.k0:u.k1]
	}
	return pr, nil
}

// remode gives update i the mode of the series it updates, checking its
// value against that mode. The group's lock is held.
func (pr *prepared) remode(g *group, i int, mode configs.Mode) error {
	u := &pr.updates[i]
	obs, quants, err := observe(u.name, func() labels.Labels { return u.labelSet(g.labels) }, u.typ, mode, typedMetric(u.m, u.typ))
	if err != nil {
		return err
	}
	if u.mode.Kind == configs.ModeSum && u.m.Summary != nil {
		pr.droppedQuants -= len(u.m.Summary.GetQuantile()) // counted for the default mode
	}
	pr.droppedQuants += quants
	u.mode, u.outType, u.obs = mode, outputType(u.typ, mode), obs
	pr.modes[i] = mode
	pr.remoded = true
	return nil
}

// adoptable reports whether update u of a push whose types are hints can
// take the type of family f: both float types, and f's type what u's
// mode makes of it (a windowed mode makes a gauge of anything).
func (pr *prepared) adoptable(u *update, f *family) bool {
	return pr.typeHint && floatType(u.typ) && floatType(f.pushedType) && outputType(f.pushedType, u.mode) == f.typ
}

// adopt gives update i, of a push whose types are hints, the type typ of
// the metric or series it updates, checking its value against it (a
// counter summed with clear_mode=sum must not go down). The pushed metric
// stays as it came; the push's record is encoded again with the types
// taken (adoptedFamilies). The group's lock is held.
func (pr *prepared) adopt(g *group, i int, typ dto.MetricType) error {
	u := &pr.updates[i]
	obs, _, err := observe(u.name, func() labels.Labels { return u.labelSet(g.labels) }, typ, u.mode, typedMetric(u.m, typ))
	if err != nil {
		return err
	}
	u.typ, u.outType, u.obs = typ, outputType(typ, u.mode), obs
	pr.adopted = true
	return nil
}

// adoptedFamilies is fams with the types updates took (adopt): what the
// push's record holds, so that replay applies the types applied live.
func adoptedFamilies(fams []*dto.MetricFamily, updates []update) []*dto.MetricFamily {
	typ := make(map[string]dto.MetricType)
	for i := range updates {
		if u := &updates[i]; floatType(u.typ) {
			typ[u.name] = u.typ
		}
	}
	out := make([]*dto.MetricFamily, len(fams))
	for i, f := range fams {
		t, ok := typ[f.GetName()]
		if !ok || t == f.GetType() {
			out[i] = f
			continue
		}
		nf := &dto.MetricFamily{Name: f.Name, Help: f.Help, Unit: f.Unit, Type: t.Enum(), Metric: make([]*dto.Metric, len(f.Metric))}
		for j, m := range f.Metric {
			nf.Metric[j] = typedMetric(m, t)
		}
		out[i] = nf
	}
	return out
}

// typedMetric is m, or for a float metric whose value is in another type's
// field (an update that adopted a type), a copy with it in typ's.
func typedMetric(m *dto.Metric, typ dto.MetricType) *dto.Metric {
	if !floatType(typ) || (typ == dto.MetricType_COUNTER) == (m.Counter != nil) && (typ == dto.MetricType_GAUGE) == (m.Gauge != nil) {
		return m
	}
	c := &dto.Metric{Label: m.Label, TimestampMs: m.TimestampMs}
	setFloatValue(c, typ, floatValue(m))
	return c
}

// setFloatValue puts v in m's field for type typ: Counter, Gauge, else
// Untyped.
func setFloatValue(m *dto.Metric, typ dto.MetricType, v float64) {
	switch typ {
	case dto.MetricType_COUNTER:
		m.Counter = &dto.Counter{Value: &v}
	case dto.MetricType_GAUGE:
		m.Gauge = &dto.Gauge{Value: &v}
	default:
		m.Untyped = &dto.Untyped{Value: &v}
	}
}

// floatType reports whether t is a type of one float value.
func floatType(t dto.MetricType) bool {
	return t == dto.MetricType_COUNTER || t == dto.MetricType_GAUGE || t == dto.MetricType_UNTYPED
}

// floatValue is the value of a counter, gauge or untyped metric.
func floatValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	default:
		return m.Untyped.GetValue()
	}
}

// reservedLabel is the label a metric of type t must not have itself.
func reservedLabel(t dto.MetricType) string {
	switch t {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "le"
	case dto.MetricType_SUMMARY:
		return "quantile"
	}
	return ""
}

// cutText is s cut to at most n bytes, at a character boundary: a HELP
// text or unit the Store keeps, and sends with every window, is bounded
// by limits.max_metadata_length.
func cutText(s string, n int) string {
	if n <= 0 || len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// smallPush is the number of series up to which prepare finds duplicate
// series by scanning the earlier ones rather than through a map.
const smallPush = 64

// dupOf reports whether key (with hash) is the key of an earlier update.
// Keys of updates are still offsets into arena. seen, if not nil, maps a
// hash to the first update with it.
func dupOf(us []update, seen map[uint64]int, arena, key []byte, hash uint64) bool {
	from := 0
	if seen != nil {
		i, ok := seen[hash]
		if !ok {
			return false
		}
		from = i
	}
	for i := from; i < len(us); i++ {
		if u := &us[i]; u.hash == hash && string(arena[u.k0:u.k1]) == string(key) {
			return true
		}
	}
	return false
}

func defaultMode(d configs.DefaultModes, typ dto.MetricType, sem Semantics) configs.Mode {
	if sem == SemanticsPushgateway {
		return configs.Mode{Kind: configs.ModeReplace}
	}
	switch typ {
	case dto.MetricType_COUNTER:
		return d.Counter
	case dto.MetricType_GAUGE:
		return d.Gauge
	case dto.MetricType_HISTOGRAM:
		return d.Histogram
	case dto.MetricType_GAUGE_HISTOGRAM:
		// A snapshot, like a gauge's value: summing pushes of it means
		// nothing. (default_modes has no field of its own for it.)
		return configs.Mode{Kind: configs.ModeReplace}
	case dto.MetricType_SUMMARY:
		return d.Summary
	}
	return d.Untyped
}

func checkLabel(metric, name, value string, lim configs.LimitsConfig) error {
	if !model.LegacyValidation.IsValidLabelName(name) {
		return invalid(ReasonBadLabel, "metric %q: invalid label name %q", metric, name)
	}
	if strings.HasPrefix(name, "__") {
		return invalid(ReasonBadLabel, "metric %q: label name %q is reserved (starts with __)", metric, name)
	}
	if !utf8.ValidString(value) {
		return invalid(ReasonBadLabel, "metric %q: label %q has a value that is not valid UTF-8", metric, name)
	}
	if len(name) > lim.MaxLabelNameLength {
		return &Error{Kind: KindTooLarge, Reason: ReasonLimitLabelSize, Limit: "max_label_name_length", Msg: "metric " + quote(metric) + ": label name " +
			quote(name) + " is longer than " + itoa(lim.MaxLabelNameLength) + " bytes (limits.max_label_name_length)"}
	}
	if len(value) > lim.MaxLabelValueLength {
		return &Error{Kind: KindTooLarge, Reason: ReasonLimitLabelSize, Limit: "max_label_value_length", Msg: "metric " + quote(metric) + ": value of label " +
			quote(name) + " is longer than " + itoa(lim.MaxLabelValueLength) + " bytes (limits.max_label_value_length)"}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkGroupLabel checks a grouping key's label against the label length
// limits.
func checkGroupLabel(l labels.Label, lim configs.LimitsConfig) error {
	if len(l.Name) > lim.MaxLabelNameLength {
		return &Error{Kind: KindTooLarge, Reason: ReasonLimitLabelSize, Limit: "max_label_name_length", Msg: "grouping key: label name " +
			quote(truncateName(l.Name)) + " is longer than " + itoa(lim.MaxLabelNameLength) + " bytes (limits.max_label_name_length)"}
	}
	if len(l.Value) > lim.MaxLabelValueLength {
		return &Error{Kind: KindTooLarge, Reason: ReasonLimitLabelSize, Limit: "max_label_value_length", Msg: "grouping key: value of label " +
			quote(l.Name) + " is longer than " + itoa(lim.MaxLabelValueLength) + " bytes (limits.max_label_value_length)"}
	}
	return nil
}

// truncateName shortens a name for a message.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// labelSet returns the labels of the update's series in group g (the
// push's group); for new series and error messages only.
func (u *update) labelSet(g labels.Labels) labels.Labels {
	var buf [16]labels.Label
	ls, _, _, _ := seriesLabels(buf[:0], u.name, u.m, g, nil)
	return labels.New(ls...)
}

// seriesLabels appends the sorted labels of the series of metric m of
// family name, pushed to group, to dst: the metric name, the body labels
// that the grouping labels do not override, the grouping labels and an
// empty instance if there is none. It returns the value of the mode label
// (clear_mode or clearmode), which is not a label of the series. With lim
// it checks every body label and fails on the first problem.
func seriesLabels(dst []labels.Label, name string, m *dto.Metric, group labels.Labels, lim *configs.LimitsConfig) (_ []labels.Label, modeText string, hasMode bool, err error) {
	dst = append(dst, labels.Label{Name: model.MetricNameLabel, Value: name})
	hasInstance := false
	for _, lp := range m.GetLabel() {
		ln, lv := lp.GetName(), lp.GetValue()
		if ln == ModeLabel || ln == ModeLabelAlias {
			if lv == "" {
				continue // an empty label is no label, as in Prometheus
			}
			if hasMode && lim != nil {
				return nil, "", false, invalid(ReasonUnknownMode, "metric %q carries both %s and %s; use one", name, ModeLabel, ModeLabelAlias)
			}
			modeText, hasMode = lv, true
			continue
		}
		if lim != nil {
			if err := checkLabel(name, ln, lv, *lim); err != nil {
				return nil, "", false, err
			}
		}
		if lv == "" && ln != "instance" {
			// An empty label is no label, as in Prometheus: {a=""} and {}
			// are one series, which a store receives both as. (An empty
			// instance stays, as Sluice adds one to every series.)
			continue
		}
		if group.Has(ln) {
			continue // grouping labels override body labels
		}
		hasInstance = hasInstance || ln == "instance"
		dst = append(dst, labels.Label{Name: ln, Value: lv})
	}
	group.Range(func(l labels.Label) { dst = append(dst, l) })
	if !hasInstance && !group.Has("instance") {
		dst = append(dst, labels.Label{Name: "instance", Value: ""})
	}
	sortLabels(dst)
	return dst, modeText, hasMode, nil
}

// appendLabelsKey appends to b the encoding Labels.Bytes gives the sorted
// labels ls in Prometheus' default build (stringlabels): each name and
// value preceded by its length, in one byte below 255, else 255 and three
// bytes little-endian. Store.directKeys says whether this build agrees.
func appendLabelsKey(b []byte, ls []labels.Label) []byte {
	for _, l := range ls {
		b = appendKeyString(b, l.Name)
		b = appendKeyString(b, l.Value)
	}
	return b
}

func appendKeyString(b []byte, s string) []byte {
	if n := len(s); n < 255 {
		b = append(b, byte(n))
	} else {
		b = append(b, 255, byte(n), byte(n>>8), byte(n>>16))
	}
	return append(b, s...)
}

// directKeysWork reports whether appendLabelsKey matches Labels.Bytes, on
// labels with short and long strings.
func directKeysWork() bool {
	ls := []labels.Label{{Name: "__name__", Value: "m"}, {Name: "a", Value: strings.Repeat("v", 300)}, {Name: "b", Value: ""}}
	return string(appendLabelsKey(nil, ls)) == string(labels.New(ls...).Bytes(nil))
}

// labelsData returns the string in which ls holds its encoding (what
// Labels.Bytes copies), without a copy, under the default stringlabels
// implementation of labels.Labels (one string); false under another.
// Store.keysInLabels says whether it can be trusted in this build.
func labelsData(ls labels.Labels) (string, bool) {
	if unsafe.Sizeof(ls) != unsafe.Sizeof("") {
		return "", false
	}
	return *(*string)(unsafe.Pointer(&ls)), true
}

// labelsDataWorks reports whether labelsData returns Labels.Bytes, on
// labels with short and long strings.
func labelsDataWorks() bool {
	ls := labels.FromStrings("__name__", "m", "a", strings.Repeat("v", 300), "b", "")
	d, ok := labelsData(ls)
	return ok && d == string(ls.Bytes(nil))
}

// seriesKey returns a new series' key: key, the encoding of lset, as a
// string sharing lset's memory when keysInLabels, else as a copy. At a
// million series the copy would be about 80 bytes per series.
func seriesKey(lset labels.Labels, key string, keysInLabels bool) string {
	if keysInLabels {
		if d, ok := labelsData(lset); ok && d == key {
			return d
		}
	}
	return strings.Clone(key)
}

// sortLabels sorts ls by name: by insertion for the few labels of a usual
// series (which arrive nearly sorted), else with slices.SortFunc.
func sortLabels(ls []labels.Label) {
	if len(ls) > 16 {
		slices.SortFunc(ls, func(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) })
		return
	}
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
}

// modeCache remembers the modes a push spelled out: its series repeat a
// few clear_mode values, each looked up once per push.
type modeCache struct {
	n     int
	texts [8]string
	modes [8]configs.Mode
}

// parse returns the mode text spells, from the push's own cache, else
// from the Store's table t.
func (c *modeCache) parse(text string, t *modeTable) (configs.Mode, error) {
	for i := range c.n {
		if c.texts[i] == text {
			return c.modes[i], nil
		}
	}
	m, err := t.parse(text)
	if err != nil {
		return m, err
	}
	if c.n < len(c.texts) {
		c.texts[c.n], c.modes[c.n] = text, m
		c.n++
	}
	return m, nil
}

// modeTable remembers the clear_mode spellings a Store has parsed, for
// every push: pushes repeat a handful of them, and parsing a windowed one
// (a duration, a quantile) cost about 2% of a push's CPU time when each
// push parsed its own. Unknown spellings are not remembered (they fail
// the push), and the table stops growing at maxModeTable entries so that
// clients spelling ever new windows cannot grow it without bound; those
// are parsed each time.
type modeTable struct {
	m sync.Map // string -> configs.Mode
	n atomic.Int32
	// spellings maps a parsed mode to its canonical spelling, which every
	// push record holds (Mode.String allocates).
	spellings sync.Map // configs.Mode -> string
	nSpelled  atomic.Int32
}

// maxModeTable bounds the spellings a modeTable keeps.
const maxModeTable = 256

func (t *modeTable) parse(text string) (configs.Mode, error) {
	if v, ok := t.m.Load(text); ok {
		return v.(configs.Mode), nil
	}
	m, err := configs.ParseMode(text)
	if err != nil {
		return m, err
	}
	if t.n.Load() < maxModeTable {
		// text may point into the push's body: keep a copy.
		if _, loaded := t.m.LoadOrStore(strings.Clone(text), m); !loaded {
			t.n.Add(1)
		}
	}
	return m, nil
}

// spell returns m.String(), remembered for up to maxModeTable modes.
func (t *modeTable) spell(m configs.Mode) string {
	if v, ok := t.spellings.Load(m); ok {
		return v.(string)
	}
	s := m.String()
	if t.nSpelled.Load() < maxModeTable {
		if _, loaded := t.spellings.LoadOrStore(m, s); !loaded {
			t.nSpelled.Add(1)
		}
	}
	return s
}

// observe extracts the pushed value of one metric and checks it against its
// type and mode. It returns how many summary quantiles it dropped.
func observe(name string, lset func() labels.Labels, typ dto.MetricType, mode configs.Mode, m *dto.Metric) (observation, int, error) {
	id := func() string { return seriesString(lset()) }
	if mode.Windowed() && (typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_GAUGE_HISTOGRAM || typ == dto.MetricType_SUMMARY) {
		return observation{}, 0, invalid(ReasonModeConflict, "series %s: clear_mode %s is for counters, gauges and untyped metrics, not %s",
			id(), mode, strings.ToLower(typ.String()))
	}
	var v float64
	switch typ {
	case dto.MetricType_COUNTER:
		if m.Counter == nil {
			return observation{}, 0, invalid(ReasonTypeConflict, "series %s: metric of type counter has no counter value", id())
		}
		v = m.Counter.GetValue()
	case dto.MetricType_GAUGE:
		if m.Gauge == nil {
			return observation{}, 0, invalid(ReasonTypeConflict, "series %s: metric of type gauge has no gauge value", id())
		}
		v = m.Gauge.GetValue()
	case dto.MetricType_UNTYPED:
		if m.Untyped == nil {
			return observation{}, 0, invalid(ReasonTypeConflict, "series %s: metric of type untyped has no value", id())
		}
		v = m.Untyped.GetValue()
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		if m.Histogram == nil {
			return observation{}, 0, invalid(ReasonTypeConflict, "series %s: metric of type histogram has no histogram value", id())
		}
		h, err := histFromDTO(m.Histogram)
		if err != nil {
			return observation{}, 0, invalid(ReasonBadHistogram, "series %s: %v", id(), err)
		}
		if mode.Kind == configs.ModeSum && !h.summable() {
			return observation{}, 0, invalid(ReasonNonFinite, "series %s: a histogram summed with clear_mode=sum needs finite, non-negative counts and a finite sum", id())
		}
		return observation{hist: h}, 0, nil
	case dto.MetricType_SUMMARY:
		if m.Summary == nil {
			return observation{}, 0, invalid(ReasonTypeConflict, "series %s: metric of type summary has no summary value", id())
		}
		if c := m.Summary.GetSampleCount(); c > 1<<53 {
			// Not a count anyone observed: in a text push, expfmt's
			// conversion of a negative, NaN or infinite _count.
			return observation{}, 0, invalid(ReasonNonFinite, "series %s: summary count %d is not a valid count (more than 2^53)", id(), c)
		}
		sm := &summaryState{count: float64(m.Summary.GetSampleCount()), sum: m.Summary.GetSampleSum()}
		dropped := 0
		if mode.Kind == configs.ModeSum {
			dropped = len(m.Summary.GetQuantile())
			if math.IsNaN(sm.sum) || math.IsInf(sm.sum, 0) {
				return observation{}, 0, invalid(ReasonNonFinite, "series %s: a summary summed with clear_mode=sum needs a finite sum", id())
			}
		} else {
			for _, q := range m.Summary.GetQuantile() {
				sm.quantiles = append(sm.quantiles, &dto.Quantile{Quantile: ptr(q.GetQuantile()), Value: ptr(q.GetValue())})
			}
		}
		return observation{summ: sm}, dropped, nil
	default:
		return observation{}, 0, invalid(ReasonTypeConflict, "metric %q: unsupported metric type %s", name, typ)
	}
	if mode.Kind == configs.ModeSum || mode.Windowed() {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return observation{}, 0, invalid(ReasonNonFinite, "series %s: value %v cannot be aggregated with clear_mode=%s; it must be finite", id(), v, mode)
		}
	}
	if mode.Kind == configs.ModeSum && typ == dto.MetricType_COUNTER && v < 0 {
		return observation{}, 0, invalid(ReasonNegativeDelta, "series %s: negative counter delta %v; with clear_mode=sum each push is an increment and must be >= 0", id(), v)
	}
	return observation{value: v}, 0, nil
}

// histFromDTO converts a pushed histogram, checking that it is well formed.
func histFromDTO(d *dto.Histogram) (*histState, error) {
	// A float count, when there is one (a NaN or negative one too, for
	// summable to refuse rather than read as the integer count, 0).
	h := &histState{count: float64(d.GetSampleCount()), sum: d.GetSampleSum()}
	if c := d.GetSampleCountFloat(); c != 0 {
		h.count = c
	}
	if n := len(d.GetBucket()); n > 0 {
		// One array for both (the +Inf bucket, if given, leaves one
		// element of each unused).
		buf := make([]float64, 0, 2*n)
		h.bounds, h.cum = buf[:0:n], buf[n:n:2*n]
	}
	// The text format does not order a histogram's bucket lines, and
	// neither the Pushgateway nor a scrape minds their order: take them by
	// bound (a copy; the pushed histogram stays as it came).
	buckets := d.GetBucket()
	byBound := func(a, b *dto.Bucket) int { return cmp.Compare(a.GetUpperBound(), b.GetUpperBound()) }
	if !slices.IsSortedFunc(buckets, byBound) {
		buckets = slices.Clone(buckets)
		slices.SortStableFunc(buckets, byBound)
	}
	prevBound, prevCount := math.Inf(-1), 0.0
	for _, b := range buckets {
		ub := b.GetUpperBound()
		c := float64(b.GetCumulativeCount())
		if cf := b.GetCumulativeCountFloat(); cf != 0 {
			c = cf
		}
		if math.IsNaN(ub) || math.IsInf(ub, -1) {
			return nil, errorf("bucket bound le=%v is not a usable bound", ub)
		}
		if ub == prevBound {
			return nil, errorf("bucket le=%v is given twice", ub)
		}
		if c < prevCount {
			return nil, errorf("cumulative bucket counts must not decrease, got %v for le=%v after %v", c, ub, prevCount)
		}
		prevBound, prevCount = ub, c
		if math.IsInf(ub, 1) {
			continue // the +Inf bucket is the count
		}
		h.bounds = append(h.bounds, ub)
		h.cum = append(h.cum, c)
	}
	if len(h.cum) > 0 && h.cum[len(h.cum)-1] > h.count {
		return nil, errorf("bucket count %v exceeds the histogram count %v", h.cum[len(h.cum)-1], h.count)
	}
	if isNative(d) {
		n, err := nativeFromDTO(d, h.count, h.sum)
		if err != nil {
			return nil, err
		}
		h.native = n
	}
	return h, nil
}

// summable reports whether h can be added to a total: finite counts that
// are not negative (NaN would turn into 0 or poison the total, +Inf stay
// for good) and a finite sum (negative observations make a negative sum).
func (h *histState) summable() bool {
	ok := func(c float64) bool { return c >= 0 && !math.IsInf(c, 1) } // false for NaN
	if !ok(h.count) || math.IsNaN(h.sum) || math.IsInf(h.sum, 0) || !all(h.cum, ok) {
		return false
	}
	if n := h.native; n != nil {
		return ok(n.ZeroCount) && all(n.PositiveBuckets, ok) && all(n.NegativeBuckets, ok)
	}
	return true
}

func all(s []float64, f func(float64) bool) bool {
	for _, v := range s {
		if !f(v) {
			return false
		}
	}
	return true
}

func isNative(d *dto.Histogram) bool {
	return len(d.GetPositiveSpan()) > 0 || len(d.GetNegativeSpan()) > 0 || d.GetZeroThreshold() > 0 || d.GetZeroCount() > 0 || d.GetZeroCountFloat() > 0
}

func nativeFromDTO(d *dto.Histogram, count, sum float64) (*histogram.FloatHistogram, error) {
	schema := d.GetSchema()
	if schema == histogram.CustomBucketsSchema {
		return nil, errorf("native histograms with custom buckets (schema %d) cannot be aggregated (over remote_write, send them without clear_mode to relay them)", schema)
	}
	if schema < histogram.ExponentialSchemaMin || schema > histogram.ExponentialSchemaMax {
		return nil, errorf("native histogram schema %d is not between %d and %d", schema, histogram.ExponentialSchemaMin, histogram.ExponentialSchemaMax)
	}
	fh := &histogram.FloatHistogram{
		Schema:        schema,
		ZeroThreshold: d.GetZeroThreshold(),
		ZeroCount:     float64(d.GetZeroCount()),
		Count:         count,
		Sum:           sum,
	}
	if zc := d.GetZeroCountFloat(); zc > 0 {
		fh.ZeroCount = zc
	}
	var err error
	if fh.PositiveSpans, fh.PositiveBuckets, err = nativeBuckets(d.GetPositiveSpan(), d.GetPositiveDelta(), d.GetPositiveCount()); err != nil {
		return nil, err
	}
	if fh.NegativeSpans, fh.NegativeBuckets, err = nativeBuckets(d.GetNegativeSpan(), d.GetNegativeDelta(), d.GetNegativeCount()); err != nil {
		return nil, err
	}
	if err := fh.Validate(); err != nil {
		return nil, errorf("invalid native histogram: %w", err)
	}
	// A float histogram's count is not checked against its buckets
	// (rounding); an integer one's is, as Prometheus' remote_write
	// receiver (and Sluice's) checks it.
	if ih := intNative(d, fh); ih != nil {
		if err := ih.Validate(); err != nil {
			return nil, errorf("invalid native histogram: %w", err)
		}
	}
	return fh, nil
}

// NativeHistogram is the native part of a histogram the Store rendered
// (Gather), integer or float, as a float histogram, for display. One that
// does not convert (more buckets than a push may have, after merging
// pushes) shows its schema, count and sum without buckets.
func NativeHistogram(d *dto.Histogram) *histogram.FloatHistogram {
	count := renderedCount(d)
	fh, err := nativeFromDTO(d, count, d.GetSampleSum())
	if err != nil {
		return &histogram.FloatHistogram{Schema: d.GetSchema(), ZeroThreshold: d.GetZeroThreshold(), Count: count, Sum: d.GetSampleSum()}
	}
	return fh
}

// renderedCount is the count of a gathered histogram (the Store's, as
// histState.dto renders it, or a client library's): the float count if it
// has one, else the integer one.
func renderedCount(d *dto.Histogram) float64 {
	if d.SampleCountFloat != nil {
		return d.GetSampleCountFloat()
	}
	return float64(d.GetSampleCount())
}

// intNative is d as an integer histogram, given fh, d as a float one
// (nativeFromDTO); nil if d has float counts.
func intNative(d *dto.Histogram, fh *histogram.FloatHistogram) *histogram.Histogram {
	if d.GetSampleCountFloat() != 0 || d.GetZeroCountFloat() != 0 || len(d.GetPositiveCount()) > 0 || len(d.GetNegativeCount()) > 0 {
		return nil
	}
	return &histogram.Histogram{CounterResetHint: fh.CounterResetHint, Schema: fh.Schema, ZeroThreshold: fh.ZeroThreshold, ZeroCount: d.GetZeroCount(),
		Count: d.GetSampleCount(), Sum: fh.Sum, PositiveSpans: fh.PositiveSpans, NegativeSpans: fh.NegativeSpans,
		PositiveBuckets: d.GetPositiveDelta(), NegativeBuckets: d.GetNegativeDelta()}
}

// maxNativeBuckets bounds the buckets of one side of a native histogram;
// client_golang's default limit is 160, Prometheus' 160 too.
const maxNativeBuckets = 1 << 14

func nativeBuckets(spans []*dto.BucketSpan, deltas []int64, counts []float64) ([]histogram.Span, []float64, error) {
	out := make([]histogram.Span, 0, len(spans))
	total := 0
	for _, sp := range spans {
		out = append(out, histogram.Span{Offset: sp.GetOffset(), Length: sp.GetLength()})
		total += int(sp.GetLength())
		if total > maxNativeBuckets {
			return nil, nil, errorf("native histogram has more than %d buckets", maxNativeBuckets)
		}
	}
	if len(counts) > 0 {
		return out, slices.Clone(counts), nil
	}
	buckets := make([]float64, len(deltas))
	var cur int64
	for i, d := range deltas {
		cur += d
		buckets[i] = float64(cur)
	}
	return out, buckets, nil
}

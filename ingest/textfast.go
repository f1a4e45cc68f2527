package ingest

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxExactCount is the largest count a float64 holds exactly (2^53).
const maxExactCount = 1 << 53

// summaryCountErr rejects a summary's _count v that is not a count.
func summaryCountErr(summary string, v float64) error {
	if isCount(v) {
		return nil
	}
	return fmt.Errorf("summary %q: _count %v is not a count (a non-negative number up to 2^53)", summary, v)
}

// isCount reports whether v can be a summary's _count: a non-negative
// number up to 2^53 (NaN is not).
func isCount(v float64) bool { return v >= 0 && v <= maxExactCount }

// fastText parses the Prometheus text format 0.0.4 straight into metric
// families, with a handful of allocations per body instead of several per
// line: the body is copied into one string that names and label values
// point into, and metrics, label pairs and values come from slabs.
//
// It produces exactly what expfmt.TextParser produces, for the inputs it
// accepts. It gives up (ok == false) on anything outside the common shape
// — any input expfmt rejects, quoted UTF-8 names, names inside braces,
// escapes in odd places, a missing final newline — and the caller then
// parses with expfmt, which yields the same families or expfmt's own error
// message. FuzzTextFastMatchesExpfmt checks the equivalence.
//
// The families, their strings and their values share memory: whoever keeps
// a string beyond the push (a new series' metric name, say) must clone it.
// With a reused parser (parseBody) the strings point into a buffer that the
// next body overwrites, so a string kept uncloned would change under its
// holder; TestPushedStringsOutliveTheDecoder guards the store's side.
func fastText(body []byte) (fams []*dto.MetricFamily, ok bool) {
	var p textParser
	return p.parseBody(body)
}

// parseBody is fastText with p's memory: what it returns is valid until
// p's next parseBody or reset. A parser can be reused after reset.
func (p *textParser) parseBody(body []byte) (fams []*dto.MetricFamily, ok bool) {
	p.badCount = nil // not the previous body's
	p.parsed = false
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return nil, false
	}
	p.reset()
	// The body is copied into the parser's own buffer, reused from one
	// body to the next, rather than into a new string per body (half of
	// a push's allocation, and so of the collections that set the p99).
	p.buf = append(p.buf[:0], body...)
	p.s = unsafe.String(unsafe.SliceData(p.buf), len(p.buf))
	p.slab.init(strings.Count(p.s, "\n"), strings.Count(p.s, `"`)/2)
	if !p.parse() {
		return nil, false
	}
	out := p.out[:0]
	for _, f := range p.order {
		if len(f.Metric) > 0 {
			out = append(out, f)
		}
	}
	p.out = out
	for _, m := range p.hists {
		normalizeHistogram(m.Histogram)
	}
	if len(out) == 0 {
		return nil, true
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(*a.Name, *b.Name) })
	p.parsed = true
	return out, true
}

// textParser is the state of one fastText call, or of a series of them
// (parseBody).
type textParser struct {
	// s is buf as a string: what names and label values point into.
	s    string
	buf  []byte
	pos  int
	slab textSlab
	fams map[string]*dto.MetricFamily
	// order holds the families in fams; out is the result's backing array.
	order []*dto.MetricFamily
	out   []*dto.MetricFamily

	// index maps a family name to its place in out (parseProto).
	index map[string]int

	// grouped maps family+labels (without le or quantile) to the metric
	// that collects a histogram's or summary's lines.
	grouped map[string]*dto.Metric
	// groupKeys holds grouped's keys, which are strings over it: a key
	// per histogram or summary series was an allocation. Bytes once
	// written are not changed until reset has cleared grouped.
	groupKeys []byte
	hists     []*dto.Metric
	pairs     []*dto.LabelPair // label pairs of the current line
	sig       []byte
	lastFam   familyHit // familyOf's cache; cleared by comments and reset
	// badCount is set, with ok == false, when a summary's _count is not
	// a count: expfmt converts it to an integer without a check (a
	// negative or NaN count becomes 2^63 on amd64, 0 on arm64), so the
	// caller must reject the body rather than fall back to expfmt.
	badCount error

	// slots records where the value of each sample line went, in body
	// order, so that refill can take a body of the same shape by its
	// values alone. shapeless: a value went where refill cannot put it
	// again (a histogram's float count, which normalizeHistogram moves).
	// parsed: the last parseBody succeeded, so p.s and slots describe
	// the families in out.
	// proto: the last parse was parseProto's.
	slots     []valueSlot
	shapeless bool
	parsed    bool
	proto     bool
}

// reset forgets the last body, keeping the memory for the next: every
// object handed out is zeroed, so nothing refers to the old body and no
// field survives into a new family.
func (p *textParser) reset() {
	p.s, p.pos = "", 0
	p.badCount = nil
	p.slots = clearSlice(p.slots)
	p.shapeless, p.parsed, p.proto = false, false, false
	p.lastFam = familyHit{}
	clear(p.fams)
	clear(p.index)
	clear(p.grouped)
	p.order = clearSlice(p.order)
	p.out = clearSlice(p.out)
	p.hists = clearSlice(p.hists)
	p.pairs = clearSlice(p.pairs)
	p.sig = p.sig[:0]
	p.groupKeys = p.groupKeys[:0] // grouped, which refers to it, is cleared
	p.slab.reset()
}

// clearSlice zeroes s and returns it empty, with its capacity.
func clearSlice[T any](s []T) []T {
	clear(s)
	return s[:0]
}

// textSlab hands out the small objects of a parse from a few large
// allocations. Chunks are never reallocated, so pointers stay valid; a
// full chunk is replaced by a new one, and reset keeps the newest chunks
// for the next parse.
type textSlab struct {
	families []dto.MetricFamily
	metrics  []dto.Metric
	pairs    []dto.LabelPair
	strs     []string
	floats   []float64
	ints     []int64
	uints    []uint64
	ptrs     []*dto.LabelPair
	buckets  []dto.Bucket
	// Values by type; allocated on first use.
	counters []dto.Counter
	gauges   []dto.Gauge
	untypeds []dto.Untyped
	// Histograms and summaries keep their Bucket and Quantile arrays
	// (emptied) across resets, as families keep their Metric arrays.
	histograms []dto.Histogram
	summaries  []dto.Summary
	quantiles  []dto.Quantile
	types      []dto.MetricType
	timestamps []timestamppb.Timestamp // created timestamps (protobuf)
}

// init makes sure the chunks have room for a body's objects: a metric and
// a value per line, a label pair per pair of quotes, two strings per pair,
// up to maxReserve of each. Those counts are what a body could hold, not
// what it holds (blank lines, a long quoted string), so beyond that the
// slabs grow chunk by chunk as objects are made: memory follows the
// samples, not the bytes.
func (sl *textSlab) init(lines, pairs int) {
	lines, pairs = min(max(lines, 1), maxReserve), min(max(pairs, 1), maxReserve)
	sl.metrics = reserve(sl.metrics, lines)
	sl.pairs = reserve(sl.pairs, pairs)
	sl.ptrs = reserve(sl.ptrs, pairs)
	sl.strs = reserve(sl.strs, 2*pairs+8)
	sl.floats = reserve(sl.floats, lines+4)
}

// maxReserve bounds the objects of each kind init reserves for a body.
const maxReserve = 1024

// reserve returns s (empty) if it has room for n, else a new chunk.
func reserve[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:0]
	}
	return make([]T, 0, n)
}

// reset zeroes what the last parse used. A family keeps its Metric array
// (emptied), since the next body likely has families of the same sizes.
func (sl *textSlab) reset() {
	for i := range sl.families {
		ms := clearSlice(sl.families[i].Metric)
		sl.families[i] = dto.MetricFamily{Metric: ms}
	}
	sl.families = sl.families[:0]
	sl.metrics = clearSlice(sl.metrics)
	sl.pairs = clearSlice(sl.pairs)
	sl.strs = clearSlice(sl.strs)
	sl.floats = clearSlice(sl.floats)
	sl.ints = clearSlice(sl.ints)
	sl.uints = clearSlice(sl.uints)
	sl.ptrs = clearSlice(sl.ptrs)
	sl.buckets = clearSlice(sl.buckets)
	sl.counters = clearSlice(sl.counters)
	sl.gauges = clearSlice(sl.gauges)
	sl.untypeds = clearSlice(sl.untypeds)
	for i := range sl.histograms {
		bs := clearSlice(sl.histograms[i].Bucket)
		sl.histograms[i] = dto.Histogram{Bucket: bs}
	}
	sl.histograms = sl.histograms[:0]
	for i := range sl.summaries {
		qs := clearSlice(sl.summaries[i].Quantile)
		sl.summaries[i] = dto.Summary{Quantile: qs}
	}
	sl.summaries = sl.summaries[:0]
	sl.quantiles = clearSlice(sl.quantiles)
	sl.types = clearSlice(sl.types)
	sl.timestamps = clearSlice(sl.timestamps)
}

// typ returns a pointer to t, as a family's Type.
func (sl *textSlab) typ(t dto.MetricType) *dto.MetricType {
	sl.types = grow(sl.types)
	sl.types = append(sl.types, t)
	return &sl.types[len(sl.types)-1]
}

// labels copies pairs into the slab and returns them as a slice whose
// capacity ends at its length, so an append elsewhere copies it.
func (sl *textSlab) labels(pairs []*dto.LabelPair) []*dto.LabelPair {
	if cap(sl.ptrs)-len(sl.ptrs) < len(pairs) {
		sl.ptrs = make([]*dto.LabelPair, 0, max(cap(sl.ptrs), 4*len(pairs)))
	}
	start := len(sl.ptrs)
	sl.ptrs = append(sl.ptrs, pairs...)
	return sl.ptrs[start:len(sl.ptrs):len(sl.ptrs)]
}

// grow returns s with room for one more element, in a new chunk of at
// least the old capacity when s is full.
func grow[T any](s []T) []T {
	if len(s) < cap(s) {
		return s
	}
	return make([]T, 0, max(cap(s), 16))
}

func (sl *textSlab) metric() *dto.Metric {
	sl.metrics = grow(sl.metrics)
	sl.metrics = sl.metrics[:len(sl.metrics)+1]
	return &sl.metrics[len(sl.metrics)-1]
}

func (sl *textSlab) str(v string) *string {
	sl.strs = grow(sl.strs)
	sl.strs = append(sl.strs, v)
	return &sl.strs[len(sl.strs)-1]
}

func (sl *textSlab) float(v float64) *float64 {
	sl.floats = grow(sl.floats)
	sl.floats = append(sl.floats, v)
	return &sl.floats[len(sl.floats)-1]
}

func (sl *textSlab) int(v int64) *int64 {
	sl.ints = grow(sl.ints)
	sl.ints = append(sl.ints, v)
	return &sl.ints[len(sl.ints)-1]
}

func (sl *textSlab) uint(v uint64) *uint64 {
	sl.uints = grow(sl.uints)
	sl.uints = append(sl.uints, v)
	return &sl.uints[len(sl.uints)-1]
}

func (sl *textSlab) pair(name, value string) *dto.LabelPair {
	sl.pairs = grow(sl.pairs)
	sl.pairs = sl.pairs[:len(sl.pairs)+1]
	lp := &sl.pairs[len(sl.pairs)-1]
	lp.Name, lp.Value = sl.str(name), sl.str(value)
	return lp
}

// left bounds the samples still to come: the lines not yet made metrics.
func (sl *textSlab) left() int { return cap(sl.metrics) - len(sl.metrics) + 1 }

// next returns a pointer to a new zero element of *s. The first chunk
// holds up to hint elements.
func next[T any](s *[]T, hint int) *T {
	if *s == nil {
		*s = make([]T, 0, max(hint, 1))
	}
	*s = grow(*s)
	*s = (*s)[:len(*s)+1]
	return &(*s)[len(*s)-1]
}

func (p *textParser) parse() bool {
	if p.fams == nil {
		p.fams = make(map[string]*dto.MetricFamily, 8)
	}
	for p.pos < len(p.s) {
		p.skipBlank()
		switch c := p.s[p.pos]; {
		case c == '\n':
			p.pos++
		case c == '#':
			if !p.comment() {
				return false
			}
		case isNameStart(c):
			if !p.sample() {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func (p *textParser) skipBlank() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func isNameStart(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':'
}

func isLabelStart(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// name reads a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) at pos, or returns
// false if the name is followed by a quote (expfmt's quoted-name syntax).
func (p *textParser) name() (string, bool) {
	start := p.pos
	for p.pos < len(p.s) && (isNameStart(p.s[p.pos]) || isDigit(p.s[p.pos])) {
		p.pos++
	}
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		return "", false
	}
	return p.s[start:p.pos], true
}

// lineEnd returns the index of the next newline at or after pos.
func (p *textParser) lineEnd() int {
	return p.pos + strings.IndexByte(p.s[p.pos:], '\n')
}

// comment handles a line starting with '#': HELP and TYPE set family
// metadata, anything else is skipped.
func (p *textParser) comment() bool {
	p.lastFam = familyHit{}
	p.pos++ // '#'
	p.skipBlank()
	end := p.lineEnd()
	kwEnd := p.pos
	for kwEnd < end && p.s[kwEnd] != ' ' && p.s[kwEnd] != '\t' {
		kwEnd++
	}
	kw := p.s[p.pos:kwEnd]
	if (kw != "HELP" && kw != "TYPE") || kwEnd == end {
		p.pos = end + 1
		return true
	}
	p.pos = kwEnd
	p.skipBlank()
	if p.s[p.pos] == '\n' {
		p.pos++
		return true
	}
	if !isNameStart(p.s[p.pos]) {
		return false
	}
	name, ok := p.name()
	if !ok {
		return false
	}
	switch p.s[p.pos] {
	case '\n':
		p.pos++
		return true
	case ' ', '\t':
	default:
		return false
	}
	mf := p.family(name)
	p.skipBlank()
	if p.s[p.pos] == '\n' {
		p.pos++
		return true
	}
	rest := p.s[p.pos:end]
	p.pos = end + 1
	if kw == "HELP" {
		if mf.Help != nil {
			return false
		}
		help, ok := unescapeHelp(rest)
		if !ok {
			return false
		}
		mf.Help = p.slab.str(help)
		return true
	}
	if mf.Type != nil {
		return false
	}
	var t dto.MetricType
	switch rest {
	case "counter":
		t = dto.MetricType_COUNTER
	case "gauge":
		t = dto.MetricType_GAUGE
	case "histogram":
		t = dto.MetricType_HISTOGRAM
	case "summary":
		t = dto.MetricType_SUMMARY
	case "untyped":
		t = dto.MetricType_UNTYPED
	default:
		return false // other spellings: let expfmt decide
	}
	mf.Type = p.slab.typ(t)
	return true
}

// unescapeHelp undoes the escapes expfmt accepts in HELP text.
func unescapeHelp(s string) (string, bool) {
	if strings.IndexByte(s, '\\') < 0 {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(s) {
			return "", false
		}
		switch s[i] {
		case '\\', '"':
			b.WriteByte(s[i])
		case 'n':
			b.WriteByte('\n')
		default:
			return "", false
		}
	}
	return b.String(), true
}

// family returns the family a name belongs to, as expfmt decides it: the
// family of that exact name, else the summary or histogram whose _sum,
// _count (or _bucket) it is, else a new family. The flags say which part
// of a summary or histogram the name is.
func (p *textParser) familyOf(name string) (mf *dto.MetricFamily, isCount, isSum bool) {
	if l := &p.lastFam; l.mf != nil && l.name == name {
		return l.mf, l.isCount, l.isSum
	}
	mf, isCount, isSum = p.lookupFamily(name)
	p.lastFam = familyHit{name: name, mf: mf, isCount: isCount, isSum: isSum}
	return mf, isCount, isSum
}

// familyHit is familyOf's last answer. A name's family never changes
// while only sample lines are read (a family is only ever added under
// its own name, and familyOf asks for that name first), so the answer
// holds until a comment line, which can add families or set a type.
type familyHit struct {
	name           string
	mf             *dto.MetricFamily
	isCount, isSum bool
}

func (p *textParser) lookupFamily(name string) (mf *dto.MetricFamily, isCount, isSum bool) {
	if mf := p.fams[name]; mf != nil {
		return mf, false, false
	}
	count := len(name) > 6 && name[len(name)-6:] == "_count"
	sum := len(name) > 4 && name[len(name)-4:] == "_sum"
	base := name
	switch {
	case count:
		base = name[:len(name)-6]
	case sum:
		base = name[:len(name)-4]
	}
	if mf := p.fams[base]; mf != nil && mf.GetType() == dto.MetricType_SUMMARY {
		return mf, count, sum
	}
	if !count && !sum && len(name) > 7 && name[len(name)-7:] == "_bucket" {
		base = name[:len(name)-7]
	}
	if mf := p.fams[base]; mf != nil && isHistogram(mf.GetType()) {
		return mf, count, sum
	}
	mf = next(&p.slab.families, 8)
	mf.Name = p.slab.str(name)
	p.fams[name] = mf
	p.order = append(p.order, mf)
	return mf, false, false
}

func (p *textParser) family(name string) *dto.MetricFamily {
	mf, _, _ := p.familyOf(name)
	return mf
}

func isHistogram(t dto.MetricType) bool {
	return t == dto.MetricType_HISTOGRAM || t == dto.MetricType_GAUGE_HISTOGRAM
}

// sample parses one sample line.
func (p *textParser) sample() bool {
	name, ok := p.name()
	if !ok {
		return false
	}
	mf, isCount, isSum := p.familyOf(name)
	if mf.Type == nil {
		mf.Type = p.slab.typ(dto.MetricType_UNTYPED)
	}
	typ := mf.GetType()
	grouped := typ == dto.MetricType_SUMMARY || isHistogram(typ)
	p.skipBlank()
	p.pairs = p.pairs[:0]
	quantile, bucket := math.NaN(), math.NaN()
	if p.pos < len(p.s) && p.s[p.pos] == '{' {
		p.pos++
		for {
			p.skipBlank()
			if p.pos >= len(p.s) {
				return false
			}
			if p.s[p.pos] == '}' {
				p.pos++
				break
			}
			if !isLabelStart(p.s[p.pos]) {
				return false
			}
			start := p.pos
			for p.pos < len(p.s) && (isLabelStart(p.s[p.pos]) || isDigit(p.s[p.pos])) {
				p.pos++
			}
			ln := p.s[start:p.pos]
			p.skipBlank()
			if p.pos >= len(p.s) || p.s[p.pos] != '=' || ln == "__name__" {
				return false
			}
			p.pos++
			p.skipBlank()
			if p.pos >= len(p.s) || p.s[p.pos] != '"' {
				return false
			}
			p.pos++
			lv, ok := p.labelValue()
			if !ok {
				return false
			}
			switch {
			case typ == dto.MetricType_SUMMARY && ln == "quantile":
				if quantile, ok = parseTextFloat(lv); !ok {
					return false
				}
			case isHistogram(typ) && ln == "le":
				if bucket, ok = parseTextFloat(lv); !ok {
					return false
				}
			default:
				for _, lp := range p.pairs {
					if *lp.Name == ln {
						return false
					}
				}
				p.pairs = append(p.pairs, p.slab.pair(ln, lv))
			}
			p.skipBlank()
			if p.pos >= len(p.s) {
				return false
			}
			switch p.s[p.pos] {
			case ',':
				p.pos++
			case '}':
			default:
				return false
			}
		}
		p.skipBlank()
	}

	// The value, up to a blank or the end of the line.
	start := p.pos
	for p.pos < len(p.s) && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' && p.s[p.pos] != '\n' {
		p.pos++
	}
	v, ok := parseTextFloat(p.s[start:p.pos])
	if !ok {
		return false
	}
	slot := valueSlot{start: start, end: p.pos}
	var ts *int64
	if p.s[p.pos] != '\n' {
		p.skipBlank()
		start := p.pos
		for p.pos < len(p.s) && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' && p.s[p.pos] != '\n' {
			p.pos++
		}
		if p.s[p.pos] != '\n' {
			return false
		}
		t, err := strconv.ParseInt(p.s[start:p.pos], 10, 64)
		if err != nil {
			return false
		}
		ts = p.slab.int(t)
	}
	p.pos++ // '\n'

	var m *dto.Metric
	if grouped {
		m = p.groupMetric(mf)
	} else {
		m = p.slab.metric()
		m.Label = p.labelsOfLine()
		mf.Metric = append(mf.Metric, m)
	}
	if ts != nil {
		m.TimestampMs = ts
	}
	switch typ {
	case dto.MetricType_COUNTER:
		m.Counter = next(&p.slab.counters, p.slab.left())
		m.Counter.Value = p.slab.float(v)
		slot.f = m.Counter.Value
	case dto.MetricType_GAUGE:
		m.Gauge = next(&p.slab.gauges, p.slab.left())
		m.Gauge.Value = p.slab.float(v)
		slot.f = m.Gauge.Value
	case dto.MetricType_UNTYPED:
		m.Untyped = next(&p.slab.untypeds, p.slab.left())
		m.Untyped.Value = p.slab.float(v)
		slot.f = m.Untyped.Value
	case dto.MetricType_SUMMARY:
		if m.Summary == nil {
			m.Summary = next(&p.slab.summaries, 4)
		}
		switch {
		case isCount:
			if err := summaryCountErr(mf.GetName(), v); err != nil {
				p.badCount = err
				return false
			}
			c := uint64(v)
			m.Summary.SampleCount = &c
			slot.kind, slot.u = slotSummaryCount, &c
		case isSum:
			m.Summary.SampleSum = p.slab.float(v)
			slot.f = m.Summary.SampleSum
		case !math.IsNaN(quantile):
			q := &dto.Quantile{Quantile: p.slab.float(quantile), Value: p.slab.float(v)}
			m.Summary.Quantile = append(m.Summary.Quantile, q)
			slot.f = q.Value
		default:
			slot.kind = slotIgnored
		}
	default: // histogram, gauge histogram
		if m.Histogram == nil {
			m.Histogram = next(&p.slab.histograms, 4)
			p.hists = append(p.hists, m)
		}
		h := m.Histogram
		switch {
		case isCount:
			if u := uint64(v); v == float64(u) {
				h.SampleCount = p.slab.uint(u)
				slot.kind, slot.u = slotCount, h.SampleCount
			} else {
				if v < 0 {
					return false
				}
				h.SampleCountFloat = p.slab.float(v)
				p.shapeless = true
			}
		case isSum:
			h.SampleSum = p.slab.float(v)
			slot.f = h.SampleSum
		case !math.IsNaN(bucket):
			b := next(&p.slab.buckets, p.slab.left())
			b.UpperBound = p.slab.float(bucket)
			if u := uint64(v); v == float64(u) {
				b.CumulativeCount = p.slab.uint(u)
				slot.kind, slot.u = slotCount, b.CumulativeCount
			} else {
				if v < 0 {
					return false
				}
				b.CumulativeCountFloat = p.slab.float(v)
				p.shapeless = true
			}
			h.Bucket = append(h.Bucket, b)
		default:
			slot.kind = slotIgnored
		}
	}
	p.slots = append(p.slots, slot)
	return true
}

// labelsOfLine returns the current line's label pairs as a new slice, nil
// for none (as expfmt does).
func (p *textParser) labelsOfLine() []*dto.LabelPair {
	if len(p.pairs) == 0 {
		return nil
	}
	return p.slab.labels(p.pairs)
}

// groupMetric returns the metric that collects the lines of a summary or
// histogram with the current line's labels (le and quantile aside),
// creating it with those labels on the first line.
func (p *textParser) groupMetric(mf *dto.MetricFamily) *dto.Metric {
	// The signature is order-independent, as model.LabelsToSignature.
	sorted := p.pairs
	if !slices.IsSortedFunc(sorted, cmpPairName) {
		sorted = slices.Clone(sorted)
		slices.SortFunc(sorted, cmpPairName)
	}
	sig := append(p.sig[:0], *mf.Name...)
	for _, lp := range sorted {
		sig = append(sig, 0xff)
		sig = append(sig, *lp.Name...)
		sig = append(sig, 0xfe)
		sig = append(sig, *lp.Value...)
	}
	p.sig = sig
	if m := p.grouped[string(sig)]; m != nil {
		return m
	}
	if p.grouped == nil {
		p.grouped = make(map[string]*dto.Metric)
	}
	m := p.slab.metric()
	m.Label = p.labelsOfLine()
	start := len(p.groupKeys)
	p.groupKeys = append(p.groupKeys, sig...)
	p.grouped[unsafe.String(&p.groupKeys[start], len(sig))] = m
	mf.Metric = append(mf.Metric, m)
	return m
}

func cmpPairName(a, b *dto.LabelPair) int { return strings.Compare(*a.Name, *b.Name) }

// labelValue reads a label value after its opening quote, up to and
// including the closing quote.
func (p *textParser) labelValue() (string, bool) {
	start := p.pos
	for p.pos < len(p.s) {
		switch p.s[p.pos] {
		case '"':
			v := p.s[start:p.pos]
			p.pos++
			return v, utf8.ValidString(v)
		case '\n':
			return "", false
		case '\\':
			return p.escapedLabelValue(start)
		}
		p.pos++
	}
	return "", false
}

func (p *textParser) escapedLabelValue(start int) (string, bool) {
	b := []byte(p.s[start:p.pos])
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch c {
		case '"':
			p.pos++
			v := string(b)
			return v, utf8.ValidString(v)
		case '\n':
			return "", false
		case '\\':
			p.pos++
			if p.pos >= len(p.s) {
				return "", false
			}
			switch p.s[p.pos] {
			case '"', '\\':
				b = append(b, p.s[p.pos])
			case 'n':
				b = append(b, '\n')
			default:
				return "", false
			}
		default:
			b = append(b, c)
		}
		p.pos++
	}
	return "", false
}

// parseTextFloat parses a value as expfmt does: strconv.ParseFloat
// without hex floats or underscores.
func parseTextFloat(s string) (float64, bool) {
	if v, ok := parseDecimal(s); ok {
		return v, true
	}
	if strings.ContainsAny(s, "pP_") {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// parseDecimal parses the common case of a value, a sign and at most 15
// decimal digits with at most one point, and reports false for anything
// else. The digits as an integer are below 2^53, so exact as a float64,
// and so is 10^k for k <= 15: one division then rounds exactly as
// strconv.ParseFloat does (Clinger's fast path, which strconv also takes,
// after more checks).
func parseDecimal(s string) (float64, bool) {
	i := 0
	neg := false
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		i++
	}
	var mant uint64
	digits, frac, dot := 0, 0, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
		if digits > 15 {
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	v := float64(mant)
	if frac > 0 {
		v /= math.Pow10(frac)
	}
	if neg {
		v = -v
	}
	return v, true
}

// normalizeHistogram makes a histogram with any float count all float, as
// expfmt does.
func normalizeHistogram(h *dto.Histogram) {
	if h == nil {
		return
	}
	anyFloats := h.GetSampleCountFloat() != 0
	for _, b := range h.GetBucket() {
		if anyFloats {
			break
		}
		anyFloats = b.GetCumulativeCountFloat() != 0
	}
	if !anyFloats {
		return
	}
	if h.GetSampleCountFloat() == 0 {
		c := float64(h.GetSampleCount())
		h.SampleCountFloat, h.SampleCount = &c, nil
	}
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCountFloat() == 0 {
			c := float64(b.GetCumulativeCount())
			b.CumulativeCountFloat, b.CumulativeCount = &c, nil
		}
	}
}

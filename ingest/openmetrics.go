package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// omRole is what a sample contributes to its metric family.
type omRole int

const (
	roleValue   omRole = iota // counter _total, gauge, unknown, info _info, stateset, summary quantile
	roleCreated               // _created
	roleBucket                // _bucket
	roleCount                 // _count, _gcount
	roleSum                   // _sum, _gsum
)

// omFamily collects the lines of one OpenMetrics metric family.
type omFamily struct {
	name    string // family name as written in the metadata, or the sample name
	typ     model.MetricType
	hasType bool
	help    *string
	unit    *string
	groups  []*omGroup
	byKey   map[string]int
}

// omGroup collects the samples of one metric (one label set, ignoring le
// and quantile) of a family.
type omGroup struct {
	line   int // line of the first sample, for error messages
	labels []*dto.LabelPair
	ts     *int64

	value, created, count, sum             float64
	hasValue, hasCreated, hasCount, hasSum bool

	buckets   []omBucket
	quantiles []*dto.Quantile
}

type omBucket struct {
	le    float64
	count float64
}

// dtoName is the name the family gets in dto: counters carry _total and info
// metrics carry _info, as their samples do.
func (f *omFamily) dtoName() string {
	switch f.typ {
	case model.MetricTypeCounter:
		return withSuffix(f.name, "_total")
	case model.MetricTypeInfo:
		return withSuffix(f.name, "_info")
	}
	return f.name
}

func withSuffix(name, suffix string) string {
	if strings.HasSuffix(name, suffix) {
		return name
	}
	return name + suffix
}

// dtoType maps the OpenMetrics type to the dto type.
func (f *omFamily) dtoType() dto.MetricType {
	switch f.typ {
	case model.MetricTypeCounter:
		return dto.MetricType_COUNTER
	case model.MetricTypeGauge, model.MetricTypeInfo, model.MetricTypeStateset:
		return dto.MetricType_GAUGE
	case model.MetricTypeHistogram:
		return dto.MetricType_HISTOGRAM
	case model.MetricTypeGaugeHistogram:
		return dto.MetricType_GAUGE_HISTOGRAM
	case model.MetricTypeSummary:
		return dto.MetricType_SUMMARY
	}
	return dto.MetricType_UNTYPED
}

// sampleNames lists the sample names the family accepts, for error messages.
func (f *omFamily) sampleNames() []string {
	n := f.name
	switch f.typ {
	case model.MetricTypeCounter:
		return []string{f.dtoName(), strings.TrimSuffix(n, "_total") + "_created"}
	case model.MetricTypeInfo:
		return []string{f.dtoName()}
	case model.MetricTypeHistogram:
		return []string{n + "_bucket", n + "_count", n + "_sum", n + "_created"}
	case model.MetricTypeGaugeHistogram:
		return []string{n + "_bucket", n + "_gcount", n + "_gsum"}
	case model.MetricTypeSummary:
		return []string{n, n + "_count", n + "_sum", n + "_created"}
	}
	return []string{n}
}

// role tells what a sample named sample contributes to f, if it belongs to f.
func (f *omFamily) role(sample string) (omRole, bool) {
	base := f.name
	switch f.typ {
	case model.MetricTypeCounter:
		base = strings.TrimSuffix(base, "_total")
	case model.MetricTypeInfo:
		base = strings.TrimSuffix(base, "_info")
	}
	suffix, ok := strings.CutPrefix(sample, base)
	if !ok {
		return 0, false
	}
	switch f.typ {
	case model.MetricTypeCounter:
		switch suffix {
		case "_total":
			return roleValue, true
		case "_created":
			return roleCreated, true
		}
	case model.MetricTypeInfo:
		if suffix == "_info" {
			return roleValue, true
		}
	case model.MetricTypeHistogram:
		switch suffix {
		case "_bucket":
			return roleBucket, true
		case "_count":
			return roleCount, true
		case "_sum":
			return roleSum, true
		case "_created":
			return roleCreated, true
		}
	case model.MetricTypeGaugeHistogram:
		switch suffix {
		case "_bucket":
			return roleBucket, true
		case "_gcount":
			return roleCount, true
		case "_gsum":
			return roleSum, true
		}
	case model.MetricTypeSummary:
		switch suffix {
		case "":
			return roleValue, true
		case "_count":
			return roleCount, true
		case "_sum":
			return roleSum, true
		case "_created":
			return roleCreated, true
		}
	default:
		if suffix == "" {
			return roleValue, true
		}
	}
	return 0, false
}

// strippedLabel is the label that identifies a sample within a metric rather
// than the metric itself: le for histograms, quantile for summaries.
func (f *omFamily) strippedLabel() string {
	switch f.typ {
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
		return model.BucketLabel
	case model.MetricTypeSummary:
		return model.QuantileLabel
	}
	return ""
}

// omAssembler turns the entries of an OpenMetrics parser into dto families.
type omAssembler struct {
	families []*omFamily
	byName   map[string]*omFamily
	cur      *omFamily
	line     int
	lbls     labels.Labels
	key      []byte
}

// decodeOpenMetrics parses an OpenMetrics 1.0 text body into metric families
// in input order.
func decodeOpenMetrics(body []byte) ([]*dto.MetricFamily, error) {
	switch n := len(bytes.TrimRight(body, "\n")); {
	case !endsWithEOFLine(body):
		// client_golang's push encodes OpenMetrics without the closing
		// "# EOF" (it never closes its encoder), and the Pushgateway
		// accepts that: so does Sluice. The body as received is what
		// the WAL records; replay adds the line again.
		b := make([]byte, 0, n+len("\n# EOF\n"))
		b = append(b, body[:n]...)
		if n > 0 {
			b = append(b, '\n')
		}
		body = append(b, "# EOF\n"...)
	case n+1 < len(body):
		// Blank lines after "# EOF" are tolerated, as format sniffing does.
		body = body[:n+1]
	}
	p := textparse.NewOpenMetricsParser(body, labels.NewSymbolTable())
	a := &omAssembler{byName: map[string]*omFamily{}}
	for {
		a.line++
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, a.errorf("%w", err)
		}
		switch entry {
		case textparse.EntryType:
			name, typ := p.Type()
			f, err := a.metadataFamily(string(name))
			if err != nil {
				return nil, err
			}
			if f.hasType {
				return nil, a.errorf("second TYPE line for metric family %q", f.name)
			}
			f.typ, f.hasType = typ, true
		case textparse.EntryHelp:
			name, help := p.Help()
			f, err := a.metadataFamily(string(name))
			if err != nil {
				return nil, err
			}
			if f.help != nil {
				return nil, a.errorf("second HELP line for metric family %q", f.name)
			}
			f.help = proto.String(string(help))
		case textparse.EntryUnit:
			name, unit := p.Unit()
			f, err := a.metadataFamily(string(name))
			if err != nil {
				return nil, err
			}
			if f.unit != nil {
				return nil, a.errorf("second UNIT line for metric family %q", f.name)
			}
			f.unit = proto.String(string(unit))
		case textparse.EntrySeries:
			_, ts, v := p.Series()
			p.Labels(&a.lbls)
			if err := a.addSample(ts, v); err != nil {
				return nil, err
			}
		default:
			// Comments carry nothing; OpenMetrics 1.0 has no native histograms.
		}
	}
	return a.finish()
}

func (a *omAssembler) errorf(format string, args ...any) error {
	return fmt.Errorf("openmetrics parsing error in line %d: "+format, append([]any{a.line}, args...)...)
}

// metadataFamily returns the family a HELP, TYPE or UNIT line for name
// describes, starting a new one unless it continues the current family.
func (a *omAssembler) metadataFamily(name string) (*omFamily, error) {
	if a.cur != nil && a.cur.name == name {
		if len(a.cur.groups) > 0 {
			return nil, a.errorf("metadata for metric family %q after its samples", name)
		}
		return a.cur, nil
	}
	return a.newFamily(name)
}

func (a *omAssembler) newFamily(name string) (*omFamily, error) {
	if name == "" {
		return nil, a.errorf("empty metric name")
	}
	if !utf8.ValidString(name) {
		return nil, a.errorf("metric name %q is not valid UTF-8", name)
	}
	if _, ok := a.byName[name]; ok {
		return nil, a.errorf("metric family %q appears more than once; its lines must be contiguous", name)
	}
	f := &omFamily{name: name, typ: model.MetricTypeUnknown, byKey: map[string]int{}}
	a.families = append(a.families, f)
	a.byName[name] = f
	a.cur = f
	return f, nil
}

// addSample files the sample in a.lbls into its family and metric.
func (a *omAssembler) addSample(ts *int64, v float64) error {
	name := a.lbls.Get(model.MetricNameLabel)
	f := a.cur
	role, ok := omRole(0), false
	if f != nil {
		role, ok = f.role(name)
	}
	if !ok {
		if f != nil && f.name == name {
			return a.errorf("sample %q does not belong to %s metric family %q (expected one of %s)", name, f.typ, f.name, strings.Join(f.sampleNames(), ", "))
		}
		var err error
		if f, err = a.newFamily(name); err != nil {
			return err
		}
		role = roleValue
	}

	// Identify the metric by its labels minus __name__ and le/quantile.
	stripped := f.strippedLabel()
	var strippedValue string
	hasStripped := false
	a.key = a.key[:0]
	var badLabel error
	prev := ""
	nLabels := 0
	a.lbls.Range(func(l labels.Label) {
		switch {
		case badLabel != nil:
			return
		case l.Name == "":
			badLabel = errors.New("empty label name")
			return
		case !utf8.ValidString(l.Name):
			badLabel = fmt.Errorf("label name %q is not valid UTF-8", l.Name)
			return
		case l.Name == prev:
			badLabel = fmt.Errorf("duplicate label %q", l.Name)
			return
		}
		prev = l.Name
		switch l.Name {
		case model.MetricNameLabel:
			return
		case stripped:
			strippedValue, hasStripped = l.Value, true
			return
		}
		nLabels++
		a.key = binary.AppendUvarint(a.key, uint64(len(l.Name)))
		a.key = append(a.key, l.Name...)
		a.key = binary.AppendUvarint(a.key, uint64(len(l.Value)))
		a.key = append(a.key, l.Value...)
	})
	if badLabel != nil {
		return a.errorf("%w in series %s", badLabel, seriesString(a.lbls))
	}

	gi, ok := f.byKey[string(a.key)]
	if !ok {
		g := &omGroup{line: a.line, labels: make([]*dto.LabelPair, 0, nLabels)}
		a.lbls.Range(func(l labels.Label) {
			if l.Name == model.MetricNameLabel || l.Name == stripped {
				return
			}
			g.labels = append(g.labels, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
		})
		gi = len(f.groups)
		f.byKey[string(a.key)] = gi
		f.groups = append(f.groups, g)
	}
	g := f.groups[gi]
	if ts != nil && g.ts == nil {
		g.ts = proto.Int64(*ts)
	}

	switch {
	case role == roleValue && f.typ == model.MetricTypeSummary:
		if !hasStripped {
			return a.errorf("summary sample %s has no quantile label", seriesString(a.lbls))
		}
		q, err := strconv.ParseFloat(strippedValue, 64)
		if err != nil || math.IsNaN(q) {
			return a.errorf("invalid quantile %q in %s", strippedValue, seriesString(a.lbls))
		}
		for _, have := range g.quantiles {
			if have.GetQuantile() == q {
				return a.duplicate()
			}
		}
		g.quantiles = append(g.quantiles, &dto.Quantile{Quantile: proto.Float64(q), Value: proto.Float64(v)})
	case role == roleBucket:
		if !hasStripped {
			return a.errorf("histogram bucket %s has no le label", seriesString(a.lbls))
		}
		le, err := strconv.ParseFloat(strippedValue, 64)
		if err != nil || math.IsNaN(le) {
			return a.errorf("invalid le %q in %s", strippedValue, seriesString(a.lbls))
		}
		if err := checkCount(v); err != nil {
			return a.errorf("bucket %s: %w", seriesString(a.lbls), err)
		}
		for _, have := range g.buckets {
			if have.le == le {
				return a.duplicate()
			}
		}
		g.buckets = append(g.buckets, omBucket{le: le, count: v})
	case role == roleValue:
		if g.hasValue {
			return a.duplicate()
		}
		g.value, g.hasValue = v, true
	case role == roleCreated:
		if g.hasCreated {
			return a.duplicate()
		}
		g.created, g.hasCreated = v, true
	case role == roleCount:
		if g.hasCount {
			return a.duplicate()
		}
		if err := checkCount(v); err != nil {
			return a.errorf("%s: %w", seriesString(a.lbls), err)
		}
		g.count, g.hasCount = v, true
	case role == roleSum:
		if g.hasSum {
			return a.duplicate()
		}
		g.sum, g.hasSum = v, true
	}
	return nil
}

func (a *omAssembler) duplicate() error {
	return a.errorf("duplicate sample %s", seriesString(a.lbls))
}

// checkCount rejects observation counts that cannot be counts.
func checkCount(v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("count %v is not a finite non-negative number", v)
	}
	return nil
}

// finish turns the collected families into dto families, dropping families
// that had metadata but no samples.
func (a *omAssembler) finish() ([]*dto.MetricFamily, error) {
	out := make([]*dto.MetricFamily, 0, len(a.families))
	seen := make(map[string]struct{}, len(a.families))
	for _, f := range a.families {
		if len(f.groups) == 0 {
			continue
		}
		name := f.dtoName()
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("openmetrics parsing error in line %d: duplicate metric family %q", f.groups[0].line, name)
		}
		seen[name] = struct{}{}
		mf := &dto.MetricFamily{
			Name:   proto.String(name),
			Help:   f.help,
			Unit:   f.unit,
			Type:   f.dtoType().Enum(),
			Metric: make([]*dto.Metric, 0, len(f.groups)),
		}
		for _, g := range f.groups {
			m, err := f.metric(g)
			if err != nil {
				return nil, fmt.Errorf("openmetrics parsing error in line %d: %w", g.line, err)
			}
			mf.Metric = append(mf.Metric, m)
		}
		out = append(out, mf)
	}
	return out, nil
}

// metric builds the dto metric of one group.
func (f *omFamily) metric(g *omGroup) (*dto.Metric, error) {
	m := &dto.Metric{Label: g.labels, TimestampMs: g.ts}
	var created *timestamppb.Timestamp
	if g.hasCreated {
		var err error
		if created, err = createdTimestamp(g.created); err != nil {
			return nil, fmt.Errorf("series %s: %w", g.seriesString(f.dtoName()), err)
		}
	}
	switch f.typ {
	case model.MetricTypeCounter:
		if !g.hasValue {
			return nil, fmt.Errorf("counter series %s has no %s sample", g.seriesString(f.dtoName()), f.dtoName())
		}
		m.Counter = &dto.Counter{Value: proto.Float64(g.value), CreatedTimestamp: created}
	case model.MetricTypeGauge, model.MetricTypeInfo, model.MetricTypeStateset:
		m.Gauge = &dto.Gauge{Value: proto.Float64(g.value)}
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
		m.Histogram = g.histogram(created)
	case model.MetricTypeSummary:
		s := &dto.Summary{Quantile: g.quantiles, CreatedTimestamp: created}
		if g.hasCount {
			if g.count != math.Trunc(g.count) || g.count >= 1<<64 {
				return nil, fmt.Errorf("summary series %s: count %v is not an integer", g.seriesString(f.dtoName()), g.count)
			}
			s.SampleCount = proto.Uint64(uint64(g.count))
		}
		if g.hasSum {
			s.SampleSum = proto.Float64(g.sum)
		}
		m.Summary = s
	default:
		m.Untyped = &dto.Untyped{Value: proto.Float64(g.value)}
	}
	return m, nil
}

// histogram assembles a classic (gauge) histogram. The +Inf bucket is kept
// out of the bucket list; its count stands in for a missing _count. Counts
// are integers unless any of them is not, in which case all are floats.
func (g *omGroup) histogram(created *timestamppb.Timestamp) *dto.Histogram {
	slices.SortStableFunc(g.buckets, func(x, y omBucket) int {
		switch {
		case x.le < y.le:
			return -1
		case x.le > y.le:
			return 1
		}
		return 0
	})
	count, hasCount := g.count, g.hasCount
	floats := hasCount && !isUint64(count)
	buckets := g.buckets
	if n := len(buckets); n > 0 && math.IsInf(buckets[n-1].le, 1) {
		if !hasCount {
			count, hasCount = buckets[n-1].count, true
			floats = !isUint64(count)
		}
		buckets = buckets[:n-1]
	}
	for _, b := range buckets {
		floats = floats || !isUint64(b.count)
	}

	h := &dto.Histogram{CreatedTimestamp: created, Bucket: make([]*dto.Bucket, 0, len(buckets))}
	if g.hasSum {
		h.SampleSum = proto.Float64(g.sum)
	}
	if floats {
		h.SampleCountFloat = proto.Float64(count)
	} else {
		h.SampleCount = proto.Uint64(uint64(count))
	}
	for _, b := range buckets {
		db := &dto.Bucket{UpperBound: proto.Float64(b.le)}
		if floats {
			db.CumulativeCountFloat = proto.Float64(b.count)
		} else {
			db.CumulativeCount = proto.Uint64(uint64(b.count))
		}
		h.Bucket = append(h.Bucket, db)
	}
	return h
}

// isUint64 reports whether the (finite, non-negative) count v is an integer
// that fits a uint64.
func isUint64(v float64) bool {
	return v == math.Trunc(v) && v < 1<<64
}

// createdTimestamp converts an OpenMetrics _created value (seconds since the
// epoch) into a protobuf timestamp.
func createdTimestamp(sec float64) (*timestamppb.Timestamp, error) {
	const minSec, maxSec = -62135596800, 253402300799 // 0001-01-01 to 9999-12-31, as timestamppb allows
	if math.IsNaN(sec) || sec < minSec || sec >= maxSec+1 {
		return nil, fmt.Errorf("created timestamp %v is out of range", sec)
	}
	whole := math.Floor(sec)
	nanos := int32(min((sec-whole)*1e9, 999999999))
	return &timestamppb.Timestamp{Seconds: int64(whole), Nanos: nanos}, nil
}

// seriesString renders the group's labels under name for error messages.
func (g *omGroup) seriesString(name string) string {
	if len(g.labels) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, l := range g.labels {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.GetName())
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.GetValue()))
	}
	b.WriteByte('}')
	return b.String()
}

// seriesString renders labels as name{label="value",...} for error messages.
func seriesString(ls labels.Labels) string {
	name := ls.Get(model.MetricNameLabel)
	if ls.Len() <= 1 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	first := true
	ls.Range(func(l labels.Label) {
		if l.Name == model.MetricNameLabel {
			return
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(l.Name)
		b.WriteString("=")
		b.WriteString(strconv.Quote(l.Value))
	})
	b.WriteByte('}')
	return b.String()
}

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Content types of the two push body formats, as client_golang sends them.
const (
	contentTypeText     = "text/plain; version=0.0.4; charset=utf-8"
	contentTypeProtobuf = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

// histogramLines is what the one classic histogram of a push takes in text
// exposition: two finite buckets, +Inf, _sum and _count.
const histogramLines = 5

// pushSpec describes the pushes to generate.
type pushSpec struct {
	prefix string // metric name prefix
	job    string
	groups int
	// series is the number of sample lines (text exposition lines) per push.
	series   int
	variants int // distinct bodies per group (values differ between them)
	modes    []string
	// histogram adds one classic histogram (histogramLines lines) to each
	// push that has room for it and a few other series.
	histogram bool
	format    string // "text" or "protobuf"
	method    string
}

func (s pushSpec) validate() error {
	switch {
	case s.groups < 1:
		return fmt.Errorf("-groups must be at least 1, got %d", s.groups)
	case s.series < 1:
		return fmt.Errorf("-series must be at least 1, got %d", s.series)
	case s.variants < 1:
		return fmt.Errorf("-variants must be at least 1, got %d", s.variants)
	case len(s.modes) == 0:
		return fmt.Errorf("-modes must name at least one clear_mode")
	case s.format != "text" && s.format != "protobuf":
		return fmt.Errorf("-format must be text or protobuf, got %q", s.format)
	case s.method != "PUT" && s.method != "POST":
		return fmt.Errorf("-method must be PUT or POST, got %q", s.method)
	}
	return nil
}

// withHistogram reports whether a push carries the histogram: only when at
// least three other series remain, so small pushes stay plain.
func (s pushSpec) withHistogram() bool {
	return s.histogram && s.series >= histogramLines+3
}

// modeFamily names the metric family that carries series of mode and says
// whether it is a counter: summing modes push counters (each value a
// delta), every other mode pushes gauges.
func (s pushSpec) modeFamily(mode string) (string, bool) {
	if mode == "sum" || mode == "aggregate" {
		return s.prefix + "_" + mode + "_total", true
	}
	var b strings.Builder
	b.WriteString(s.prefix)
	b.WriteByte('_')
	for _, r := range mode {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String(), false
}

// families builds the metric families of one push of group g, variant v.
// The same (g, v) always gives the same families.
//
// Counters and the histogram carry a created timestamp, as client_golang's
// do (the text format has no place for it).
func (s pushSpec) families(g, v int) []*dto.MetricFamily {
	var out []*dto.MetricFamily
	created := &timestamppb.Timestamp{Seconds: 1_700_000_000 + int64(g)}
	lines := s.series
	if s.withHistogram() {
		lines -= histogramLines
		low := uint64(v % 2)
		out = append(out, &dto.MetricFamily{
			Name: proto.String(s.prefix + "_duration_seconds"),
			Help: proto.String("Load generator histogram."),
			Type: dto.MetricType_HISTOGRAM.Enum(),
			Metric: []*dto.Metric{{
				Label: []*dto.LabelPair{{Name: proto.String("series"), Value: proto.String("h")}},
				Histogram: &dto.Histogram{
					CreatedTimestamp: created,
					SampleCount:      proto.Uint64(2),
					SampleSum:        proto.Float64(0.05*float64(low) + 3),
					Bucket: []*dto.Bucket{
						{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(low)},
						{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1 + low)},
					},
				},
			}},
		})
	}
	byName := map[string]*dto.MetricFamily{}
	for k := range lines {
		mode := s.modes[k%len(s.modes)]
		name, counter := s.modeFamily(mode)
		mf, ok := byName[name]
		if !ok {
			mf = &dto.MetricFamily{Name: proto.String(name), Help: proto.String("Load generator series, clear_mode " + mode + ".")}
			if counter {
				mf.Type = dto.MetricType_COUNTER.Enum()
			} else {
				mf.Type = dto.MetricType_GAUGE.Enum()
			}
			byName[name] = mf
			out = append(out, mf)
		}
		m := &dto.Metric{Label: []*dto.LabelPair{
			{Name: proto.String("clear_mode"), Value: proto.String(mode)},
			{Name: proto.String("series"), Value: proto.String(strconv.Itoa(k))},
		}}
		if counter {
			m.Counter = &dto.Counter{Value: proto.Float64(float64(1 + v%3)), CreatedTimestamp: created}
		} else {
			m.Gauge = &dto.Gauge{Value: proto.Float64(float64((g*7+v*13+k)%1000) + 0.5)}
		}
		mf.Metric = append(mf.Metric, m)
	}
	return out
}

// encodeFamilies writes fams in the given push format.
func encodeFamilies(w io.Writer, fams []*dto.MetricFamily, format string) error {
	for _, mf := range fams {
		var err error
		if format == "protobuf" {
			_, err = protodelim.MarshalTo(w, mf)
		} else {
			_, err = expfmt.MetricFamilyToText(w, mf)
		}
		if err != nil {
			return fmt.Errorf("encode family %s: %w", mf.GetName(), err)
		}
	}
	return nil
}

// groupPath is the push path of group g.
func (s pushSpec) groupPath(g int) string {
	return "/metrics/job/" + url.PathEscape(s.job) + "/instance/" + strconv.Itoa(g)
}

// pool builds every request up front: groups x variants bodies. Request
// seq pushes group seq%groups with variant (seq/groups)%variants, so each
// round of pushes touches every group once.
func (s pushSpec) pool(base string) ([]*request, error) {
	base = strings.TrimSuffix(base, "/")
	ct := contentTypeText
	if s.format == "protobuf" {
		ct = contentTypeProtobuf
	}
	reqs := make([]*request, 0, s.groups*s.variants)
	var buf bytes.Buffer
	for v := range s.variants {
		for g := range s.groups {
			buf.Reset()
			if err := encodeFamilies(&buf, s.families(g, v), s.format); err != nil {
				return nil, err
			}
			reqs = append(reqs, &request{
				uri:         base + s.groupPath(g),
				method:      s.method,
				contentType: ct,
				body:        bytes.Clone(buf.Bytes()),
				samples:     s.series,
			})
		}
	}
	return reqs, nil
}

// pushPool is a source cycling through prebuilt pushes.
type pushPool []*request

func (p pushPool) request(seq uint64) *request { return p[seq%uint64(len(p))] }

func (s *pushSpec) register(fs *flag.FlagSet, groups, series, variants int, modes string) {
	fs.StringVar(&s.job, "job", "load", "job of every grouping key (/metrics/job/<job>/instance/<i>)")
	fs.IntVar(&s.groups, "groups", groups, "distinct grouping keys pushed to, in turn")
	fs.IntVar(&s.series, "series", series, "sample lines per push (a classic histogram takes 5 of them)")
	fs.IntVar(&s.variants, "variants", variants, "distinct bodies per group (gauge values and histogram counts differ)")
	fs.StringVar(&s.format, "format", "text", "body format: text (exposition 0.0.4) or protobuf (varint-delimited MetricFamily)")
	fs.StringVar(&s.method, "method", "PUT", "PUT (client_golang Push) or POST (Add)")
	fs.Func("modes", "comma-separated clear_mode values, spread over the series (default \""+modes+"\")", func(v string) error {
		s.modes = splitList(v)
		return nil
	})
	s.modes = splitList(modes)
}

func splitList(v string) []string {
	var out []string
	for _, m := range strings.Split(v, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// cmdPush is `loadtest push`.
func cmdPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:9091", "base URL of the Pushgateway-compatible server")
	spec := pushSpec{prefix: "loadtest_push"}
	spec.register(fs, 1000, 25, 4, "sum,replace,mean1m,p99_5m")
	fs.BoolVar(&spec.histogram, "histogram", true, "add one classic histogram to each push of 8 or more lines")
	var lf loadFlags
	lf.register(fs, 32)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	if err := lf.validate(); err != nil {
		return err
	}
	reqs, err := spec.pool(*base)
	if err != nil {
		return err
	}
	hc, err := newHostClient(*base, lf.concurrency, lf.timeout)
	if err != nil {
		return err
	}
	res := run(ctx, "push", *base, lf, hc, pushPool(reqs))
	return res.write(stdout, lf.json)
}

// cmdSeries is `loadtest series`: it pushes groups x series distinct live
// counter series (clear_mode=sum), each group once, to measure memory per
// live series and restart time.
func cmdSeries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("series", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:9091", "base URL of the Pushgateway-compatible server")
	spec := pushSpec{prefix: "loadtest_series"}
	spec.register(fs, 1000, 1000, 1, "sum")
	var lf loadFlags
	lf.register(fs, 4)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lf.requests, lf.duration = uint64(spec.groups), 0
	if err := spec.validate(); err != nil {
		return err
	}
	if err := lf.validate(); err != nil {
		return err
	}
	reqs, err := spec.pool(*base)
	if err != nil {
		return err
	}
	hc, err := newHostClient(*base, lf.concurrency, lf.timeout)
	if err != nil {
		return err
	}
	res := run(ctx, "series", *base, lf, hc, pushPool(reqs))
	return res.write(stdout, lf.json)
}

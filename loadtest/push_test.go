package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// linesOf counts the text exposition sample lines of fams.
func linesOf(fams map[string]*dto.MetricFamily) int {
	n := 0
	for _, mf := range fams {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				// Finite buckets, +Inf, _sum, _count.
				n += len(h.GetBucket()) + 3
				if len(h.GetBucket()) > 0 && h.GetBucket()[len(h.GetBucket())-1].GetUpperBound() > 1e300 {
					n-- // the parser keeps +Inf as a bucket
				}
				continue
			}
			n++
		}
	}
	return n
}

func decodeProtoBody(t *testing.T, body []byte) []*dto.MetricFamily {
	t.Helper()
	var out []*dto.MetricFamily
	r := bytes.NewReader(body)
	for {
		mf := &dto.MetricFamily{}
		err := protodelim.UnmarshalFrom(r, mf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode protobuf body: %v", err)
		}
		out = append(out, mf)
	}
}

func TestPushPool(t *testing.T) {
	for _, tc := range []struct {
		name          string
		spec          pushSpec
		wantHistogram bool
		wantPerMode   map[string]int // series (not histogram) per clear_mode
	}{
		{
			name:          "text, 25 lines over four modes with a histogram",
			spec:          pushSpec{series: 25, modes: []string{"sum", "replace", "mean1m", "p99_5m"}, histogram: true, format: "text"},
			wantHistogram: true,
			wantPerMode:   map[string]int{"sum": 5, "replace": 5, "mean1m": 5, "p99_5m": 5},
		},
		{
			name:          "protobuf, 25 lines over four modes with a histogram",
			spec:          pushSpec{series: 25, modes: []string{"sum", "replace", "mean1m", "p99_5m"}, histogram: true, format: "protobuf"},
			wantHistogram: true,
			wantPerMode:   map[string]int{"sum": 5, "replace": 5, "mean1m": 5, "p99_5m": 5},
		},
		{
			name:        "too few lines for a histogram",
			spec:        pushSpec{series: 7, modes: []string{"sum", "max5m"}, histogram: true, format: "text"},
			wantPerMode: map[string]int{"sum": 4, "max5m": 3},
		},
		{
			name:        "one mode, no histogram, 1000 series",
			spec:        pushSpec{series: 1000, modes: []string{"sum"}, format: "text"},
			wantPerMode: map[string]int{"sum": 1000},
		},
		{
			name:        "a mode with a dot becomes a valid metric name",
			spec:        pushSpec{series: 2, modes: []string{"p99.9_1h"}, format: "protobuf"},
			wantPerMode: map[string]int{"p99.9_1h": 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.prefix, spec.job, spec.groups, spec.variants, spec.method = "lt", "load", 3, 2, "PUT"
			if err := spec.validate(); err != nil {
				t.Fatal(err)
			}
			reqs, err := spec.pool("http://127.0.0.1:9091/")
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) != 6 {
				t.Fatalf("pool has %d requests, want groups x variants = 6", len(reqs))
			}
			pool := pushPool(reqs)
			for seq := range uint64(6) {
				rq := pool.request(seq)
				g := int(seq % 3)
				wantURI := "http://127.0.0.1:9091/metrics/job/load/instance/" + string(rune('0'+g))
				if rq.uri != wantURI || rq.method != "PUT" || rq.samples != spec.series {
					t.Errorf("request %d: %s %s with %d samples, want PUT %s with %d", seq, rq.method, rq.uri, rq.samples, wantURI, spec.series)
				}
				var fams map[string]*dto.MetricFamily
				if spec.format == "protobuf" {
					if rq.contentType != contentTypeProtobuf {
						t.Errorf("content type %q", rq.contentType)
					}
					got := decodeProtoBody(t, rq.body)
					want := spec.families(g, int(seq/3))
					if len(got) != len(want) {
						t.Fatalf("%d families decoded, %d built", len(got), len(want))
					}
					fams = map[string]*dto.MetricFamily{}
					for i := range got {
						if !proto.Equal(got[i], want[i]) {
							t.Errorf("family %d decodes to\n%v\nwant\n%v", i, got[i], want[i])
						}
						fams[got[i].GetName()] = got[i]
					}
				} else {
					if rq.contentType != contentTypeText {
						t.Errorf("content type %q", rq.contentType)
					}
					p := expfmt.NewTextParser(model.UTF8Validation)
					fams, err = p.TextToMetricFamilies(bytes.NewReader(rq.body))
					if err != nil {
						t.Fatalf("body does not parse: %v\n%s", err, rq.body)
					}
					if lines := strings.Count(strings.TrimSpace(string(rq.body)), "\n") + 1; lines-2*len(fams) != spec.series {
						t.Errorf("body has %d sample lines, want %d", lines-2*len(fams), spec.series)
					}
				}
				if n := linesOf(fams); n != spec.series {
					t.Errorf("decoded %d sample lines, want %d", n, spec.series)
				}
				perMode := map[string]int{}
				histograms := 0
				for name, mf := range fams {
					if !model.LegacyValidation.IsValidMetricName(name) {
						t.Errorf("metric name %q is not a legacy-valid name", name)
					}
					for _, m := range mf.GetMetric() {
						if m.GetHistogram() != nil {
							histograms++
							continue
						}
						mode := ""
						for _, l := range m.GetLabel() {
							if l.GetName() == "clear_mode" {
								mode = l.GetValue()
							}
						}
						perMode[mode]++
						if c := m.GetCounter(); c != nil && c.GetValue() <= 0 {
							t.Errorf("%s: counter delta %g is not positive", name, c.GetValue())
						}
					}
				}
				if (histograms == 1) != tc.wantHistogram || histograms > 1 {
					t.Errorf("%d histograms, want histogram=%v", histograms, tc.wantHistogram)
				}
				for mode, n := range tc.wantPerMode {
					if perMode[mode] != n {
						t.Errorf("mode %s has %d series, want %d (all: %v)", mode, perMode[mode], n, perMode)
					}
				}
			}
		})
	}
}

func TestPushSpecValidate(t *testing.T) {
	good := pushSpec{groups: 1, series: 1, variants: 1, modes: []string{"sum"}, format: "text", method: "PUT"}
	for _, tc := range []struct {
		name   string
		modify func(*pushSpec)
		want   string
	}{
		{"valid", func(*pushSpec) {}, ""},
		{"no groups", func(s *pushSpec) { s.groups = 0 }, "-groups"},
		{"no modes", func(s *pushSpec) { s.modes = nil }, "-modes"},
		{"unknown format", func(s *pushSpec) { s.format = "json" }, "-format"},
		{"GET is not a push", func(s *pushSpec) { s.method = "GET" }, "-method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.modify(&s)
			err := s.validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("validate() = %v, want error mentioning %q", err, tc.want)
			}
		})
	}
}

package ingest

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// expfmtText is what decodeText returned before the fast parser: expfmt's
// families sorted by name.
func expfmtText(body []byte) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var out []*dto.MetricFamily
	for _, mf := range byName {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// checkFastText fails if fastText accepts body but disagrees with expfmt,
// or if a parser that parsed other bodies before (as a pooled Decoder's
// does) gives a different result.
func checkFastText(t *testing.T, body []byte) (accepted bool) {
	t.Helper()
	var reused textParser
	for _, before := range [][]byte{benchText(), []byte(reusedBody), body} {
		reused.parseBody(before)
		reused.reset()
	}
	again, againOK := reused.parseBody(body)
	got, ok := fastText(body)
	if ok != againOK {
		t.Fatalf("a reused parser accepts the body: %v, a new one: %v\n%s", againOK, ok, body)
	}
	if !ok {
		return false
	}
	requireSameFamilies(t, again, got, "a reused parser (got) against a new one for\n%s", body)
	want, err := expfmtText(body)
	if err != nil {
		t.Fatalf("fast parser accepted a body expfmt rejects (%v):\n%s", err, body)
	}
	requireSameFamilies(t, got, want, "the fast parser (got) against expfmt for\n%s", body)
	return true
}

// requireSameFamilies fails unless got and want hold equal families in the
// same order; format and args say which results are compared.
func requireSameFamilies(t *testing.T, got, want []*dto.MetricFamily, format string, args ...any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d families against %d\ngot  %v\nwant %v", fmt.Sprintf(format, args...), len(got), len(want), got, want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: family %d differs\ngot  %v\nwant %v", fmt.Sprintf(format, args...), i, got[i], want[i])
		}
	}
}

func TestFastTextMatchesExpfmt(t *testing.T) {
	cases := []struct {
		name   string
		body   string
		accept bool // whether the fast parser should handle it itself
	}{
		{name: "bench body", body: string(benchText()), accept: true},
		{name: "more samples than a slab chunk", body: manyLines(3000), accept: true},
		{name: "untyped no labels", body: "a 1\nb 2 1700000000000\n", accept: true},
		{name: "blank and comment lines", body: "\n  \t\n# a comment\n#\n# HELP\n# HELP x\na 1\n", accept: true},
		{name: "help escapes", body: "# HELP a x\\\\y\\nz\\\"q\n# TYPE a gauge\na{b=\"c\\\"d\\\\e\\nf\"} -1.5e3\n", accept: true},
		{name: "spaces everywhere", body: "a { b = \"c\" , d=\"e\", } \t 1 \t 12\n", accept: true},
		{name: "special floats", body: "a{x=\"1\"} NaN\na{x=\"2\"} +Inf\na{x=\"3\"} -Inf\na{x=\"4\"} 0x1\n", accept: false},
		{name: "inf and nan", body: "a{x=\"1\"} NaN\na{x=\"2\"} +Inf\na{x=\"3\"} -inf\n", accept: true},
		{name: "summary", body: "# TYPE s summary\ns{q=\"a\",quantile=\"0.5\"} 1\ns{quantile=\"0.9\",q=\"a\"} 2\ns_sum{q=\"a\"} 3\ns_count{q=\"a\"} 4\ns 7\n", accept: true},
		{name: "histogram float counts", body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n", accept: true},
		{name: "histogram groups by labels", body: "# TYPE h histogram\nh_bucket{a=\"1\",le=\"1\"} 1\nh_bucket{a=\"2\",le=\"1\"} 1\nh_count{a=\"1\"} 1\nh{le=\"5\"} 1\n", accept: true},
		{name: "gauge histogram", body: "# TYPE h gaugehistogram\nh_bucket{le=\"1\"} 1\n", accept: false},
		{name: "type after samples", body: "a 1\n# TYPE a counter\n", accept: false},
		{name: "second help", body: "# HELP a x\n# HELP a y\na 1\n", accept: false},
		{name: "help only family", body: "# HELP a x\n# TYPE b counter\nc 1\n", accept: true},
		{name: "count of a counter is its own family", body: "# TYPE c counter\nc_count 1\nc 2\n", accept: true},
		{name: "no final newline", body: "a 1", accept: false},
		{name: "crlf", body: "a 1\r\n", accept: false},
		{name: "trailing blank after value", body: "a 1 \n", accept: false},
		{name: "duplicate label", body: "a{b=\"1\",b=\"2\"} 1\n", accept: false},
		{name: "name in braces", body: "{a} 1\n", accept: false},
		{name: "quoted name", body: "{\"a.b\"} 1\n", accept: false},
		{name: "uppercase type", body: "# TYPE a COUNTER\na 1\n", accept: false},
		{name: "negative histogram count", body: "# TYPE h histogram\nh_count -1.5\n", accept: false},
		{name: "le is a plain label of a gauge", body: "# TYPE g gauge\ng{le=\"x\"} 1\n", accept: true},
		{name: "type of a histogram part is the histogram's", body: "# TYPE h histogram\n# TYPE h_sum summary\nh_sum 1\n", accept: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkFastText(t, []byte(tc.body)); got != tc.accept {
				t.Errorf("fast parser accepted = %v, want %v", got, tc.accept)
			}
			// Whoever parses it, DecodeBody's answer is expfmt's.
			want, wantErr := expfmtText([]byte(tc.body))
			got, err := decodeText([]byte(tc.body), nil)
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("error %v, want %v", err, wantErr)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d families, want %d", len(got), len(want))
			}
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Fatalf("family %d: got %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
}

// FuzzTextFastMatchesExpfmt checks that whatever the fast text parser
// accepts, expfmt parses to the same families.
// reusedBody has every kind of object the parser recycles (summaries,
// float histogram counts, timestamps, escapes), so a reused parser meets
// leftovers of each.
const reusedBody = "# HELP s A summary.\n# TYPE s summary\ns{quantile=\"0.5\",a=\"x\"} 1 5\ns_sum{a=\"x\"} 3\ns_count{a=\"x\"} 2\n" +
	"# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2.5\nh_sum 7\nh_count 2.5\n" +
	"# TYPE c counter\nc{b=\"q\\\"\"} 4 1700000000000\nu 1\n# TYPE g gauge\ng 2\n"

func FuzzTextFastMatchesExpfmt(f *testing.F) {
	f.Add(benchText())
	f.Add([]byte("# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n"))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"1\",a=\"x\"} 1.5\nh_bucket{a=\"x\",le=\"+Inf\"} 2\nh_count{a=\"x\"} 2\n"))
	f.Add([]byte("# HELP a x\\ny\na{b=\"c\\\"\"} 1 2\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastText(t, body)
	})
}

// FuzzParseTextFloat checks parseTextFloat, fast path included, against
// strconv.ParseFloat with expfmt's restrictions, to the bit.
func FuzzParseTextFloat(f *testing.F) {
	for _, s := range []string{"1", "-0", "+7", "0.1", "437.5", ".5", "1.", ".", "", "-", "123456789012345",
		"1234567890123456", "0.000000000000001", "1e3", "+Inf", "NaN", "0x1p-2", "1_000", "1..2", "9007199254740993"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseTextFloat(s)
		want, err := strconv.ParseFloat(s, 64)
		wantOK := err == nil && !strings.ContainsAny(s, "pP_")
		if ok != wantOK {
			t.Fatalf("parseTextFloat(%q) ok=%v, want %v (strconv: %v)", s, ok, wantOK, err)
		}
		if ok && math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("parseTextFloat(%q) = %v (%#x), want %v (%#x)", s, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	})
}

// manyLines is a text body of n counter samples with two labels each, and
// a histogram: more objects of each kind than a slab chunk holds.
func manyLines(n int) string {
	var b strings.Builder
	b.WriteString("# HELP jobs_total Jobs.\n# TYPE jobs_total counter\n")
	for i := range n {
		fmt.Fprintf(&b, "jobs_total{queue=\"q%d\",shard=\"%d\"} %d\n", i, i%7, i)
	}
	b.WriteString("# TYPE lat histogram\n")
	for i := range n / 2 {
		fmt.Fprintf(&b, "lat_bucket{op=\"o%d\",le=\"1\"} 1\nlat_bucket{op=\"o%d\",le=\"+Inf\"} 2\nlat_sum{op=\"o%d\"} 3\nlat_count{op=\"o%d\"} 2\n", i, i, i, i)
	}
	return b.String()
}

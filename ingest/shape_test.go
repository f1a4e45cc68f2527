package ingest

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// shapeBody is a push of every kind of sample line refill fills.
const shapeBody = `# HELP jobs_total Jobs done.
# TYPE jobs_total counter
jobs_total{queue="a"} 3
jobs_total{queue="b"} 4 1700000000000
# TYPE temp gauge
temp{room="x"} -1.5
other 7
# TYPE lat histogram
lat_bucket{le="1"} 1
lat_bucket{le="+Inf"} 2
lat_sum 3.25
lat_count 2
lat 9
# TYPE rpc summary
rpc{quantile="0.5"} 0.1
rpc_sum 8
rpc_count 5
rpc 4
`

// withValues replaces the value of every sample line of shapeBody, in
// order, by vals.
func withValues(vals ...string) []byte {
	lines := strings.Split(shapeBody, "\n")
	k := 0
	for i, l := range lines {
		if l == "" || l[0] == '#' {
			continue
		}
		f := strings.Fields(l)
		f[1] = vals[k]
		k++
		lines[i] = strings.Join(f, " ")
	}
	return []byte(strings.Join(lines, "\n"))
}

func TestDecoderRefill(t *testing.T) {
	same := []string{"3", "4", "-1.5", "7", "1", "2", "3.25", "2", "9", "0.1", "8", "5", "4"}
	other := func(k int, v string) []byte {
		vals := append([]string(nil), same...)
		vals[k] = v
		return withValues(vals...)
	}
	cases := []struct {
		name     string
		next     []byte
		refilled bool
	}{
		{"the same body", []byte(shapeBody), true},
		{"new values on every line", withValues("30", "0", "1e3", "NaN", "5", "7", "-2", "7", "+Inf", "0.25", "1.5e2", "12", "x1"[1:]), true},
		{"special floats", withValues("+Inf", "-Inf", "NaN", "-0", "0", "0", "NaN", "0", "-Inf", "NaN", "+Inf", "0", "1"), true},
		{"a fractional histogram count", other(4, "1.5"), false},
		{"a fractional histogram _count", other(7, "2.5"), false},
		{"a negative summary _count", other(11, "-1"), false},
		{"a summary _count over 2^53", other(11, "1e17"), false},
		{"a value that is not a number", other(0, "three"), false},
		{"a hex float", other(0, "0x1p3"), false},
		{"a timestamp added", other(0, "3 1700000000000"), false},
		{"a blank before a value", other(0, " 3"), false},
		{"a label value changed", []byte(strings.Replace(shapeBody, `queue="a"`, `queue="c"`, 1)), false},
		{"a line more", append([]byte(shapeBody), "more 1\n"...), false},
		{"a line less", []byte(strings.Replace(shapeBody, "other 7\n", "", 1)), false},
		{"help text changed", []byte(strings.Replace(shapeBody, "Jobs done.", "Jobs.", 1)), false},
		{"no final newline", []byte(strings.TrimSuffix(shapeBody, "\n")), false},
		{"a timestamp changed", []byte(strings.Replace(shapeBody, "1700000000000", "1700000000001", 1)), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := shapedDecoder(t, contentTypeText, []byte(shapeBody))
			requireDecodedAlike(t, d, contentTypeText, tc.next, "the second body decoded after the first")
			if d.refilled != tc.refilled {
				t.Fatalf("refilled = %v, want %v", d.refilled, tc.refilled)
			}
			// And back: the first body again, after the second.
			requireDecodedAlike(t, d, contentTypeText, []byte(shapeBody), "the first body decoded after the second")
		})
	}
}

// protoShape is a protobuf push of every kind of value refill
// fills, with created timestamps as client_golang sends them; %v are the
// values, in body order.
const protoShape = `name: "jobs_total" type: COUNTER metric { label { name: "q" value: "a" } counter { value: %v created_timestamp { seconds: 1700000000 } } }` +
	`|name: "temp" type: GAUGE metric { gauge { value: %v } timestamp_ms: 1700000000000 }` +
	`|name: "seen" type: UNTYPED metric { untyped { value: %v } }` +
	`|name: "lat" type: HISTOGRAM metric { histogram { sample_count: %v sample_sum: %v bucket { cumulative_count: %v upper_bound: 1 } bucket { cumulative_count_float: %v upper_bound: 2 } } }` +
	`|name: "rpc" type: SUMMARY metric { summary { sample_count: %v sample_sum: %v quantile { quantile: 0.5 value: %v } } }`

// protoValues encodes protoShape with vals.
func protoValues(t testing.TB, vals ...any) []byte {
	var fams []*dto.MetricFamily
	for _, f := range strings.Split(fmt.Sprintf(protoShape, vals...), "|") {
		fams = append(fams, familyFromText(t, f))
	}
	return encodeDelimited(t, fams...)
}

func TestDecoderRefillProtobuf(t *testing.T) {
	first := protoValues(t, 11, 2, 3, 5, 1.5, 2, 2.5, 4, 8, 0.5)
	cases := []struct {
		name     string
		next     []byte
		refilled bool
	}{
		{"the same body", first, true},
		{"new values, counts of the same length", protoValues(t, 7, -2, "nan", 9, 0, 1, 100.25, 127, "inf", -1), true},
		{"a count of another length", protoValues(t, 11, 2, 3, 500, 1.5, 2, 2.5, 4, 8, 0.5), false},
		{"another bucket bound", []byte(strings.Replace(string(first), "\x00\x00\x00\x00\x00\x00\xf0?", "\x00\x00\x00\x00\x00\x00\x08@", 1)), false},
		{"a label value changed", bytes.Replace(first, []byte("\x01a"), []byte("\x01b"), 1), false},
		{"a byte more", append(append([]byte(nil), first...), 0), false},
		{"text", []byte("jobs_total 1\n"), false},
	}
	// A count sent in more bytes than it needs (0x85 0x00 is 5): a shorter
	// one in the same bytes would leave a byte the parse reads as a field.
	// A histogram per count, each sent as given: 0x85 0x00 is 5 in more
	// bytes than it needs. A count in other bytes than before must not
	// move what follows it, even where the bytes would still match.
	loose := func(counts ...[]byte) []byte {
		f := []byte{0x0a, 0x01, 'h', 0x18, 0x04}
		for _, c := range counts {
			h := append([]byte{0x08}, c...)                   // sample_count
			h = append(h, 0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f) // sample_sum 1
			m := append([]byte{0x3a, byte(len(h))}, h...)     // histogram
			f = append(append(f, 0x22, byte(len(m))), m...)   // metric
		}
		return append([]byte{byte(len(f))}, f...)
	}
	looseFirst := map[string][]byte{
		"a shorter count in the same bytes": loose([]byte{0x85, 0x00}),
		"two counts that trade lengths":     loose([]byte{0x85, 0x00}, []byte{0x05}),
	}
	// The second body of two counts that trade lengths keeps the first's
	// length prefixes, so every byte but the counts' matches.
	traded := looseFirst["two counts that trade lengths"]
	i := bytes.Index(traded, []byte{0x08, 0x85, 0x00}) + 1
	j := bytes.LastIndex(traded, []byte{0x08, 0x05}) + 1
	traded = slices.Concat(traded[:i], []byte{0x05}, traded[i+2:j], []byte{0x85, 0x00}, traded[j+1:])
	cases = append(cases, []struct {
		name     string
		next     []byte
		refilled bool
	}{
		{"a shorter count in the same bytes", loose([]byte{0x07, 0x08}), false},
		{"two counts that trade lengths", traded, false},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			first := first
			if b, ok := looseFirst[tc.name]; ok {
				first = b
			}
			d := shapedDecoder(t, protoContentType, first)
			ct := protoContentType
			if tc.name == "text" {
				ct = contentTypeText
			}
			requireDecodedAlike(t, d, ct, tc.next, "the second body decoded after the first")
			if d.refilled != tc.refilled {
				t.Fatalf("refilled = %v, want %v", d.refilled, tc.refilled)
			}
		})
	}
}

// FuzzRefillProtoMatchesParse is FuzzRefillMatchesParse for protobuf
// bodies.
func FuzzRefillProtoMatchesParse(f *testing.F) {
	f.Add(protoValues(f, 1, 2, 3, 5, 1.5, 2, 2.5, 4, 8, 0.5), protoValues(f, 7, -2, "nan", 9, 0, 1, 100.25, 127, "inf", -1))
	f.Add(protoValues(f, 1, 2, 3, 5, 1.5, 2, 2.5, 4, 8, 0.5), protoValues(f, 1, 2, 3, 500, 1.5, 2, 2.5, 4, 8, 0.5))
	f.Add(benchProto(f), benchProto(f))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var d Decoder
		for i, body := range [][]byte{a, b, a} {
			requireDecodedAlike(t, &d, protoContentType, body, fmt.Sprint("body ", i))
		}
	})
}

func TestDecoderShapedOnlyForFastParsers(t *testing.T) {
	cases := []struct {
		name, contentType string
		body              []byte
		shaped            bool
	}{
		{"text", contentTypeText, []byte("a 1\n"), true},
		{"protobuf", protoContentType, protoBody(t, counterFamily("c_total", 1)), true},
		{"protobuf proto.Unmarshal takes (an exemplar)", protoContentType, encodeDelimited(t, familyFromText(t,
			`name: "c" type: COUNTER metric { counter { value: 1 exemplar { value: 1 } } }`)), false},
		{"openmetrics", "application/openmetrics-text", []byte("# TYPE a gauge\na 1\n# EOF\n"), false},
		{"text expfmt parses (a name in braces)", contentTypeText, []byte("{\"a\"} 1\n"), false},
		{"a histogram with a float count", contentTypeText, []byte("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\nh_count 1.5\n"), false},
		{"comments only", contentTypeText, []byte("# HELP a b\n"), false},
		{"empty", contentTypeText, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			if _, _, err := d.DecodePush(contentTypeText, "", []byte(shapeBody), BodyLimits{}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.DecodePush(tc.contentType, "", tc.body, BodyLimits{}); err != nil {
				t.Fatal(err)
			}
			if d.shaped != tc.shaped || d.refilled {
				t.Fatalf("shaped %v, refilled %v; want %v, false", d.shaped, d.refilled, tc.shaped)
			}
		})
	}
}

// FuzzRefillMatchesParse decodes one body after another with one Decoder
// and checks each against a new decoder's result: a refill must give
// exactly what a parse gives.
func FuzzRefillMatchesParse(f *testing.F) {
	f.Add([]byte(shapeBody), withValues("30", "0", "1e3", "NaN", "5", "7", "-2", "7", "+Inf", "0.25", "1.5e2", "12", "1"))
	f.Add(benchText(), benchText())
	f.Add([]byte("a 1\nb{x=\"y\"} 2\n"), []byte("a 10\nb{x=\"y\"} 2.5\n"))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 2\nh_count 1\nh_count 3\n"),
		[]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 4\nh_bucket{le=\"1\"} 5\nh_count 6\nh_count 7\n"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var d Decoder
		for i, body := range [][]byte{a, b, a} {
			requireDecodedAlike(t, &d, contentTypeText, body, fmt.Sprint("body ", i))
		}
	})
}

// shapedDecoder returns a Decoder that decoded body, a template for the
// next.
func shapedDecoder(t *testing.T, contentType string, body []byte) *Decoder {
	t.Helper()
	d := new(Decoder)
	if _, _, err := d.DecodePush(contentType, "", body, BodyLimits{}); err != nil {
		t.Fatal(err)
	}
	if !d.shaped || d.refilled {
		t.Fatalf("after the first body: shaped %v, refilled %v; want true, false", d.shaped, d.refilled)
	}
	return d
}

// requireDecodedAlike decodes body with d and fails unless the families
// and error are a new decoder's; what names the body.
func requireDecodedAlike(t *testing.T, d *Decoder, contentType string, body []byte, what string) {
	t.Helper()
	got, _, gotErr := d.DecodePush(contentType, "", body, BodyLimits{})
	want, wantErr := DecodeBody(contentType, "", body, BodyLimits{})
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
		t.Fatalf("%s: error %v, a new decoder's %v", what, gotErr, wantErr)
	}
	requireSameFamilies(t, got, want, "%s (refilled %v, got) against a new decoder", what, d.refilled)
}

func TestValueSlotSet(t *testing.T) {
	var f float64
	var u uint64
	cases := []struct {
		name string
		slot valueSlot
		v    float64
		ok   bool
	}{
		{"float NaN", valueSlot{kind: slotFloat, f: &f}, math.NaN(), true},
		{"count whole", valueSlot{kind: slotCount, u: &u}, 7, true},
		{"count fraction", valueSlot{kind: slotCount, u: &u}, 7.5, false},
		{"count negative", valueSlot{kind: slotCount, u: &u}, -1, false},
		{"count NaN", valueSlot{kind: slotCount, u: &u}, math.NaN(), false},
		{"summary count", valueSlot{kind: slotSummaryCount, u: &u}, 9, true},
		{"summary count negative", valueSlot{kind: slotSummaryCount, u: &u}, -1, false},
		{"summary count NaN", valueSlot{kind: slotSummaryCount, u: &u}, math.NaN(), false},
		{"ignored", valueSlot{kind: slotIgnored}, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.slot.set(tc.v); got != tc.ok {
				t.Fatalf("set(%v) = %v, want %v", tc.v, got, tc.ok)
			}
		})
	}
}

func TestShapeCacheBounds(t *testing.T) {
	cases := []struct {
		name                 string
		maxEntries, maxBytes int
		costs                []int
		wantLen              int
	}{
		{"within both", 4, 1000, []int{10, 10, 10}, 3},
		{"over the entries", 2, 1000, []int{10, 10, 10, 10}, 2},
		{"over the bytes", 10, 25, []int{10, 10, 10, 10}, 2},
		{"one too large stays alone", 10, 5, []int{10, 10}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newShapeCache(tc.maxEntries, tc.maxBytes)
			released := 0
			for i, cost := range tc.costs {
				ps := &pushScratch{route: fmt.Sprint("PUT /metrics/job/", i), cost: cost}
				out, n := c.put(ps)
				for _, old := range out[:n] {
					if old == ps {
						t.Fatal("put evicted the scratch it was given")
					}
				}
				released += n
			}
			if got := c.len(); got != tc.wantLen {
				t.Fatalf("%d routes kept, want %d", got, tc.wantLen)
			}
			if released+c.len() != len(tc.costs) {
				t.Fatalf("%d released and %d kept of %d", released, c.len(), len(tc.costs))
			}
			// A route taken is gone until put back.
			ps := &pushScratch{route: "PUT /metrics/job/x", cost: 1}
			c.put(ps)
			if got := c.take([]byte(ps.route)); got != ps {
				t.Fatalf("take returned %p, want %p", got, ps)
			}
			if got := c.take([]byte(ps.route)); got != nil {
				t.Fatal("a route taken twice")
			}
		})
	}
}

// TestRepeatedPushesShowTheirValues pushes one route again and again,
// with new values, other shapes and other formats in between, from
// several clients at once, and checks what a scrape shows. (The sum
// series adds up every push's delta: in the default aggregate semantics a
// PUT merges.)
func TestRepeatedPushesShowTheirValues(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	body := func(g, sum int) []byte {
		return fmt.Appendf(nil, "# TYPE g gauge\ng{k=\"v\"} %d\n# TYPE s_total counter\ns_total{clear_mode=\"sum\"} %d\n", g, sum)
	}
	steps := []struct {
		name, contentType string
		body              []byte
		want              []string
	}{
		{"first", contentTypeText, body(1, 1), []string{`g{instance="",job="j",k="v"} 1`, `s_total{instance="",job="j"} 1`}},
		{"new values", contentTypeText, body(5, 2), []string{`g{instance="",job="j",k="v"} 5`, `s_total{instance="",job="j"} 3`}},
		{"another shape", contentTypeText, []byte("# TYPE g gauge\ng{k=\"v\"} 6\ng{k=\"w\"} 7\n"), []string{`g{instance="",job="j",k="w"} 7`}},
		{"another label value", contentTypeText, []byte("# TYPE g gauge\ng{k=\"u\"} 11\n# TYPE s_total counter\ns_total{clear_mode=\"sum\"} 0\n"),
			[]string{`g{instance="",job="j",k="u"} 11`, `g{instance="",job="j",k="v"} 6`}},
		{"the first shape again", contentTypeText, body(8, 4), []string{`g{instance="",job="j",k="v"} 8`, `s_total{instance="",job="j"} 7`}},
		{"protobuf", protoContentType, protoBody(t, counterFamily("s_total", 5)), []string{`s_total{instance="",job="j"} 12`}},
		{"protobuf again", protoContentType, protoBody(t, counterFamily("s_total", 3)), []string{`s_total{instance="",job="j"} 15`}},
		{"text again", contentTypeText, body(9, 1), []string{`g{instance="",job="j",k="v"} 9`, `s_total{instance="",job="j"} 16`}},
		{"again", contentTypeText, body(10, 1), []string{`g{instance="",job="j",k="v"} 10`, `s_total{instance="",job="j"} 17`}},
		{"and again", contentTypeText, body(11, 2), []string{`g{instance="",job="j",k="v"} 11`, `s_total{instance="",job="j"} 19`}},
	}
	for _, st := range steps {
		r := env.do(t, "PUT", "/metrics/job/j", st.body, "Content-Type", st.contentType)
		if r.code != 200 {
			t.Fatalf("%s: %d %s", st.name, r.code, r.body)
		}
		got := env.scrape(t) + "\n"
		for _, w := range st.want {
			if !strings.Contains(got, w+"\n") {
				t.Fatalf("%s: scrape lacks %s:\n%s", st.name, w, got)
			}
		}
	}
	// A route's decoder is kept from its second push on, and a push after
	// one of the same shape and format is refilled: "protobuf again",
	// "again" and "and again" ("new values" follows the route's first
	// push).
	if got := counterValue(t, env, "sluice_push_bodies_refilled_total"); got != 3 {
		t.Fatalf("sluice_push_bodies_refilled_total = %v, want 3", got)
	}
	// A bad value in a body of the known shape is refused as it would be
	// in any body, and changes nothing.
	r := env.do(t, "PUT", "/metrics/job/j", []byte("# TYPE g gauge\ng{k=\"v\"} 1\n# TYPE s_total counter\ns_total{clear_mode=\"sum\"} -1\n"), "Content-Type", contentTypeText)
	if r.code != 400 || !strings.Contains(r.body, "negative counter delta -1") {
		t.Fatalf("negative delta: %d %s", r.code, r.body)
	}
	if got := env.scrape(t) + "\n"; !strings.Contains(got, `s_total{instance="",job="j"} 19`+"\n") || !strings.Contains(got, `g{instance="",job="j",k="v"} 11`+"\n") {
		t.Fatalf("a refused push changed the series:\n%s", got)
	}

	// Many clients, a few routes: every increment counts once.
	const clients, pushes, routes = 8, 40, 3
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range pushes {
				path := fmt.Sprintf("/metrics/job/c/instance/%d", (c+i)%routes)
				r := env.do(t, "POST", path, fmt.Appendf(nil, "# TYPE n_total counter\nn_total{clear_mode=\"sum\"} %d\n", 1+i%3), "Content-Type", contentTypeText)
				if r.code != 200 {
					t.Errorf("%s: %d %s", path, r.code, r.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	want := 0
	for i := range pushes {
		want += clients * (1 + i%3)
	}
	got := 0
	for _, l := range strings.Split(env.scrape(t), "\n") {
		if strings.HasPrefix(l, "n_total{") {
			var v int
			if _, err := fmt.Sscanf(l[strings.IndexByte(l, '}')+2:], "%d", &v); err != nil {
				t.Fatal(err)
			}
			got += v
		}
	}
	if got != want {
		t.Fatalf("the counters sum to %d, want %d", got, want)
	}
	if got := counterValue(t, env, "sluice_push_bodies_refilled_total"); got < 100 {
		t.Fatalf("sluice_push_bodies_refilled_total = %v after %d pushes to %d routes, want most of them", got, clients*pushes, routes)
	}
}

// counterFamily is a counter family of one series (clear_mode sum) with value v.
func counterFamily(name string, v float64) *dto.MetricFamily {
	return &dto.MetricFamily{Name: ptr(name), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Counter: &dto.Counter{Value: &v}}}}
}

// counterValue reads one of Sluice's own counters from GET /metrics.
func counterValue(t *testing.T, env *testEnv, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(env.do(t, "GET", "/metrics", nil).body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			if _, err := fmt.Sscanf(v, "%g", &f); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("GET /metrics has no %s", name)
	return 0
}

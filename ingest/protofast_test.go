package ingest

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// checkFastProto fails if parseProto accepts body but disagrees with
// decodeProtoDelimited (proto.Unmarshal), or if a parser that decoded
// other bodies before (as a pooled Decoder's does) gives a different
// result than a new one.
func checkFastProto(t *testing.T, body []byte) (accepted bool) {
	t.Helper()
	var reused textParser
	for _, before := range [][]byte{benchProto(t), benchText(), body} {
		reused.parseProto(before)
		reused.reset()
		reused.parseBody(before)
		reused.reset()
	}
	again, againOK := reused.parseProto(body)
	var fresh textParser
	got, ok := fresh.parseProto(body)
	if ok != againOK {
		t.Fatalf("a reused parser accepts the body: %v, a new one: %v\n%x", againOK, ok, body)
	}
	if !ok {
		return false
	}
	requireSameFamilies(t, again, got, "a reused parser (got) against a new one for %x", body)
	want, err := decodeProtoDelimited(body, 64<<20)
	if err != nil {
		t.Fatalf("fast decoder accepted a body proto.Unmarshal rejects (%v):\n%x", err, body)
	}
	requireSameFamilies(t, got, want, "the fast decoder (got) against proto.Unmarshal for %x", body)
	return true
}

// protoCases are bodies for TestFastProtoMatchesUnmarshal and the fuzz
// seeds: client_golang's encoding of common families, which the fast
// decoder takes, and shapes it leaves to proto.Unmarshal.
func protoCases(t testing.TB) []struct {
	name   string
	body   []byte
	accept bool
} {
	fam := func(text string) []byte { return encodeDelimited(t, familyFromText(t, text)) }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// raw builds a delimited message from hand-written fields.
	raw := func(fields ...[]byte) []byte {
		msg := cat(fields...)
		return append(protowire.AppendVarint(nil, uint64(len(msg))), msg...)
	}
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	msg := func(num protowire.Number, fields ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), cat(fields...))
	}
	gauge1 := msg(2, protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0x3ff0000000000000))
	return []struct {
		name   string
		body   []byte
		accept bool
	}{
		{name: "bench body", body: benchProto(t), accept: true},
		{name: "more metrics than a slab chunk", body: manyProto(t, 3000), accept: true},
		{name: "counter gauge untyped", accept: true, body: cat(
			fam(`name: "jobs_total" help: "Jobs." type: COUNTER metric { label { name: "queue" value: "a" } counter { value: 3 } }`),
			fam(`name: "temp" type: GAUGE metric { label { name: "room" value: "k" } label { name: "floor" value: "1" } gauge { value: -2.5 } }`),
			fam(`name: "seen" type: UNTYPED metric { untyped { value: 0 } }`))},
		{name: "classic histogram", accept: true, body: fam(`name: "rpc_seconds" type: HISTOGRAM metric { label { name: "op" value: "get" }
			histogram { sample_count: 7 sample_sum: 1.25 bucket { cumulative_count: 3 upper_bound: 0.1 } bucket { cumulative_count: 7 upper_bound: 1 } } }`)},
		{name: "float histogram counts", accept: true, body: fam(`name: "w" type: HISTOGRAM metric {
			histogram { sample_count_float: 2.5 sample_sum: 1 bucket { cumulative_count_float: 2.5 upper_bound: 1 } } }`)},
		{name: "gauge histogram", accept: true, body: fam(`name: "gh" type: GAUGE_HISTOGRAM metric { histogram { sample_count: 1 sample_sum: 1 bucket { cumulative_count: 1 upper_bound: 2 } } }`)},
		{name: "summary", accept: true, body: fam(`name: "lat" help: "Latency." type: SUMMARY metric { label { name: "h" value: "/" }
			summary { sample_count: 9 sample_sum: 4.5 quantile { quantile: 0.5 value: 0.4 } quantile { quantile: 0.99 value: 1.2 } } }`)},
		{name: "timestamps and unit", accept: true, body: fam(`name: "bytes" unit: "bytes" type: GAUGE metric { gauge { value: 1 } timestamp_ms: 1700000000000 }
			metric { label { name: "a" value: "" } gauge { value: 2 } timestamp_ms: -5 }`)},
		{name: "a family twice: the last wins", accept: true, body: cat(
			fam(`name: "x" type: GAUGE metric { gauge { value: 1 } }`),
			fam(`name: "y" type: GAUGE metric { gauge { value: 2 } }`),
			fam(`name: "x" type: COUNTER metric { counter { value: 3 } }`))},
		{name: "empty values", accept: true, body: raw(str(1, "z"), varint(3, 1), msg(4, msg(2)))},
		{name: "no families", accept: true, body: nil},
		{name: "native histogram", body: fam(`name: "n" type: HISTOGRAM metric { histogram { sample_count: 1 sample_sum: 1 schema: 0 zero_threshold: 0.001 zero_count: 0
			positive_span { offset: 0 length: 1 } positive_delta: 1 } }`)},
		{name: "exemplar", body: fam(`name: "c" type: COUNTER metric { counter { value: 1 exemplar { label { name: "trace_id" value: "abc" } value: 1 } } }`)},
		{name: "created timestamps", accept: true, body: cat(
			fam(`name: "c" type: COUNTER metric { counter { value: 1 created_timestamp { seconds: 1700000000 nanos: 5 } } }`),
			fam(`name: "h" type: HISTOGRAM metric { histogram { sample_count: 1 sample_sum: 1 bucket { cumulative_count: 1 upper_bound: 2 } created_timestamp { seconds: 1 } } }`),
			fam(`name: "s" type: SUMMARY metric { summary { sample_count: 1 sample_sum: 1 created_timestamp { } } }`),
			fam(`name: "n" type: COUNTER metric { counter { value: 1 created_timestamp { seconds: -3 nanos: -7 } } }`))},
		{name: "client_golang's registry", accept: true, body: registryProto(t)},
		{name: "created timestamp with an unknown field", body: raw(str(1, "c"), varint(3, 0), msg(4, msg(3, msg(3, varint(1, 5), varint(9, 1)))))},
		{name: "created timestamp twice", body: raw(str(1, "c"), varint(3, 0), msg(4, msg(3, msg(3, varint(1, 5)), msg(3, varint(1, 6)))))},
		{name: "created timestamp seconds twice", body: raw(str(1, "c"), varint(3, 0), msg(4, msg(3, msg(3, varint(1, 5), varint(1, 6)))))},
		{name: "created timestamp on a gauge", body: raw(str(1, "g"), varint(3, 1), msg(4, msg(2, msg(3, varint(1, 5)))))},
		{name: "metric without a value", body: fam(`name: "g" type: GAUGE metric { label { name: "a" value: "b" } }`)},
		{name: "no name", body: fam(`type: GAUGE metric { gauge { value: 1 } }`)},
		{name: "no type", body: raw(str(1, "g"), msg(4, gauge1))},
		{name: "unknown type", body: raw(str(1, "g"), varint(3, 9), msg(4, gauge1))},
		{name: "name twice", body: raw(str(1, "g"), str(1, "h"), varint(3, 1), msg(4, gauge1))},
		{name: "gauge twice in a metric", body: raw(str(1, "g"), varint(3, 1), msg(4, gauge1, gauge1))},
		{name: "unknown field", body: raw(str(1, "g"), varint(3, 1), msg(4, gauge1), varint(99, 1))},
		{name: "name as a varint", body: raw(varint(1, 5), varint(3, 1), msg(4, gauge1))},
		{name: "truncated", body: fam(`name: "g" type: GAUGE metric { gauge { value: 1 } }`)[:9]},
		{name: "length past the end", body: append(protowire.AppendVarint(nil, 1000), 0x0a, 0x01, 'g')},
	}
}

func TestFastProtoMatchesUnmarshal(t *testing.T) {
	for _, tc := range protoCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkFastProto(t, tc.body); got != tc.accept {
				t.Fatalf("fast decoder accepted the body: %v, want %v", got, tc.accept)
			}
			// Through the Decoder, what the push handler uses, the result
			// is always what decodeProtoDelimited gives.
			var d Decoder
			got, gotErr := d.Decode(contentTypeProto, "", tc.body, BodyLimits{})
			want, wantErr := decodeProtoDelimited(tc.body, defaultMaxDecompressedBytes)
			if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Fatalf("Decoder error %v, decodeProtoDelimited %v", gotErr, wantErr)
			}
			requireSameFamilies(t, got, want, "the Decoder (got) against decodeProtoDelimited")
		})
	}
}

func FuzzProtoFastMatchesUnmarshal(f *testing.F) {
	for _, tc := range protoCases(f) {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastProto(t, body)
	})
}

// TestFastProtoAllocations: the pooled decoder decodes a body it has
// seen the like of without allocating (what a job's repeated push is).
func TestFastProtoAllocations(t *testing.T) {
	body := benchProto(t)
	var d Decoder
	lim := BodyLimits{MaxDecompressedBytes: 64 << 20}
	if _, err := d.Decode(contentTypeProto, "", body, lim); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	allocs := testing.AllocsPerRun(100, func() {
		fams, err := d.Decode(contentTypeProto, "", body, lim)
		if err != nil || len(fams) != 3 {
			t.Fatalf("got %d families, error %v", len(fams), err)
		}
		d.Reset()
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per body, want 0", allocs)
	}
}

// manyProto is a delimited body of n gauges with two labels each and n/2
// histograms: more objects of each kind than a slab chunk holds.
func manyProto(t testing.TB, n int) []byte {
	gauges := &dto.MetricFamily{Name: proto.String("depth"), Type: dto.MetricType_GAUGE.Enum()}
	for i := range n {
		gauges.Metric = append(gauges.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("queue"), Value: proto.String(fmt.Sprintf("q%d", i))}, {Name: proto.String("shard"), Value: proto.String(fmt.Sprint(i % 7))}},
			Gauge: &dto.Gauge{Value: proto.Float64(float64(i))},
		})
	}
	hists := &dto.MetricFamily{Name: proto.String("lat"), Type: dto.MetricType_HISTOGRAM.Enum()}
	for i := range n / 2 {
		hists.Metric = append(hists.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("op"), Value: proto.String(fmt.Sprintf("o%d", i))}},
			Histogram: &dto.Histogram{SampleCount: proto.Uint64(2), SampleSum: proto.Float64(3), Bucket: []*dto.Bucket{
				{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(1)}}},
		})
	}
	return encodeDelimited(t, gauges, hists)
}

// registryProto is what client_golang's push package sends for a counter,
// a histogram and a summary: with created timestamps.
func registryProto(t testing.TB) []byte {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobs_total", Help: "Jobs."}, []string{"queue"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "run_seconds", Help: "Run time.", Buckets: []float64{0.1, 1}})
	sm := prometheus.NewSummary(prometheus.SummaryOpts{Name: "step_seconds", Help: "Steps.", Objectives: map[float64]float64{0.5: 0.05}})
	reg.MustRegister(c, h, sm)
	c.WithLabelValues("a").Add(3)
	h.Observe(0.5)
	sm.Observe(0.2)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if fams[0].Metric[0].GetCounter().GetCreatedTimestamp() == nil {
		t.Fatal("client_golang sent no created timestamp")
	}
	return encodeDelimited(t, fams...)
}

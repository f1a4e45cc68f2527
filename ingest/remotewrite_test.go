package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// fakeRelay records what the store relays to the forward queues.
type fakeRelay struct {
	mu   sync.Mutex
	reqs []*prompb.WriteRequest
}

func (f *fakeRelay) Append(req *prompb.WriteRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
}

// series returns every relayed series, in order.
func (f *fakeRelay) series() []prompb.TimeSeries {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []prompb.TimeSeries
	for _, r := range f.reqs {
		out = append(out, r.Timeseries...)
	}
	return out
}

func (f *fakeRelay) metadata() []prompb.MetricMetadata {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []prompb.MetricMetadata
	for _, r := range f.reqs {
		out = append(out, r.Metadata...)
	}
	return out
}

const (
	ctV1 = "application/x-protobuf"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

func rw1Body(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func rw2Body(t testing.TB, req *writev2.Request) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// lbls builds sorted prompb labels from name, value pairs.
func lbls(kv ...string) []prompb.Label {
	var sb labels.ScratchBuilder
	for i := 0; i+1 < len(kv); i += 2 {
		sb.Add(kv[i], kv[i+1])
	}
	sb.Sort()
	return prompb.FromLabels(sb.Labels(), nil)
}

// rw2 builds RW2 requests with a symbol table.
type rw2 struct {
	st  writev2.SymbolsTable
	req writev2.Request
}

func newRW2() *rw2 { return &rw2{st: writev2.NewSymbolTable()} }

func (b *rw2) add(kv []string, typ writev2.Metadata_MetricType, help string, samples []writev2.Sample, hists []writev2.Histogram) *rw2 {
	var sb labels.ScratchBuilder
	for i := 0; i+1 < len(kv); i += 2 {
		sb.Add(kv[i], kv[i+1])
	}
	sb.Sort()
	b.req.Timeseries = append(b.req.Timeseries, writev2.TimeSeries{
		LabelsRefs: b.st.SymbolizeLabels(sb.Labels(), nil),
		Samples:    samples, Histograms: hists,
		Metadata: writev2.Metadata{Type: typ, HelpRef: b.st.Symbolize(help)},
	})
	return b
}

func (b *rw2) build() *writev2.Request {
	b.req.Symbols = b.st.Symbols()
	return &b.req
}

func testHistogram() *histogram.Histogram {
	return &histogram.Histogram{
		Schema: 0, Count: 5, Sum: 12.5, ZeroThreshold: 0.001, ZeroCount: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 2}, // counts 1, 3
	}
}

func (e *testEnv) rw(t *testing.T, ct string, body []byte, headers ...string) resp {
	t.Helper()
	h := append([]string{"Content-Type", ct, "Content-Encoding", "snappy", "X-Prometheus-Remote-Write-Version", "0.1.0"}, headers...)
	return e.do(t, "POST", "/api/v1/write", body, h...)
}

func TestRemoteWriteRelayV1(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	h := prompb.FromIntHistogram(1_700_000_001_000, testHistogram())
	stale := math.Float64frombits(value.StaleNaN)
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			// Unsorted: Remote-Write 1.0 senders may; Sluice sorts.
			{Labels: []prompb.Label{{Name: "job", Value: "node"}, {Name: "__name__", Value: "cpu_seconds_total"}, {Name: "instance", Value: "a:9100"}, {Name: "empty", Value: ""}},
				Samples:   []prompb.Sample{{Value: 1.5, Timestamp: 1_700_000_000_000}, {Value: 2.5, Timestamp: 1_700_000_015_000}, {Value: stale, Timestamp: 1_700_000_030_000}},
				Exemplars: []prompb.Exemplar{{Labels: lbls("trace_id", "abc"), Value: 1, Timestamp: 1_700_000_000_000}}},
			{Labels: lbls("__name__", "rpc_duration_seconds", "job", "api"), Histograms: []prompb.Histogram{h}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "cpu_seconds_total", Help: "CPU."}},
	}
	r := env.rw(t, ctV1, rw1Body(t, req))
	if r.code != 204 || r.body != "" || r.header.Get(headerSamplesWritten) != "" {
		t.Fatalf("RW1: %d %q %v", r.code, r.body, r.header)
	}
	got := env.relay.series()
	if len(got) != 2 {
		t.Fatalf("relayed %d series", len(got))
	}
	want0 := lbls("__name__", "cpu_seconds_total", "instance", "a:9100", "job", "node")
	if labels.Compare(toLabels(got[0].Labels), toLabels(want0)) != 0 || len(got[0].Samples) != 3 ||
		got[0].Samples[1].Value != 2.5 || got[0].Samples[1].Timestamp != 1_700_000_015_000 || !value.IsStaleNaN(got[0].Samples[2].Value) {
		t.Fatalf("float series: %+v", got[0])
	}
	if len(got[0].Exemplars) != 0 {
		t.Fatalf("exemplars are not relayed, got %+v", got[0].Exemplars)
	}
	if len(got[1].Histograms) != 1 || got[1].Histograms[0].Timestamp != 1_700_000_001_000 ||
		got[1].Histograms[0].ToIntHistogram().String() != testHistogram().String() {
		t.Fatalf("histogram series: %+v", got[1])
	}
	if md := env.relay.metadata(); len(md) != 1 || md[0].Help != "CPU." {
		t.Fatalf("metadata: %+v", md)
	}
	if got := env.scrape(t); strings.Contains(got, "cpu_seconds_total") {
		t.Fatalf("relayed series must not be aggregated:\n%s", got)
	}
	for _, want := range []string{
		`sluice_remote_write_requests_total{code="204",version="1.0"} 1`,
		`sluice_remote_write_samples_total{path="relay",version="1.0"} 3`,
		`sluice_remote_write_histograms_total{path="relay",version="1.0"} 1`,
		`sluice_remote_write_exemplars_dropped_total 1`,
	} {
		if body := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(body, want) {
			t.Errorf("self metrics lack %s", want)
		}
	}
}

func toLabels(ls []prompb.Label) labels.Labels {
	var sb labels.ScratchBuilder
	for _, l := range ls {
		sb.Add(l.Name, l.Value)
	}
	return sb.Labels()
}

// TestRemoteWriteMetadataOnItsOwn: Prometheus sends metadata in requests
// of their own; relayed series carry what came before.
func TestRemoteWriteMetadataOnItsOwn(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	meta := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "lat_seconds", Help: "Latency."},
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "other", Help: "Other."},
	}}
	if r := env.rw(t, ctV1, rw1Body(t, meta)); r.code != 204 {
		t.Fatalf("metadata: %d %s", r.code, r.body)
	}
	if len(env.relay.series()) != 0 {
		t.Fatal("a metadata-only request relayed series")
	}
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: lbls("__name__", "lat_seconds_bucket", "le", "0.1"), Samples: []prompb.Sample{{Value: 3, Timestamp: 1000}}},
		{Labels: lbls("__name__", "lat_seconds_count"), Samples: []prompb.Sample{{Value: 4, Timestamp: 1000}}},
	}}
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("samples: %d %s", r.code, r.body)
	}
	if md := env.relay.metadata(); len(md) != 1 || md[0].MetricFamilyName != "lat_seconds" || md[0].Type != prompb.MetricMetadata_HISTOGRAM {
		t.Fatalf("relayed metadata: %+v", md)
	}

	// A HELP longer than limits.max_metadata_length (1024) is not kept:
	// relayed series of the family go without it, and it is counted.
	long := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "wordy", Help: strings.Repeat("w", 1025)},
	}}
	if r := env.rw(t, ctV1, rw1Body(t, long)); r.code != 204 {
		t.Fatalf("long metadata: %d %s", r.code, r.body)
	}
	req = &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "wordy"), Samples: []prompb.Sample{{Value: 1, Timestamp: 2000}}}}}
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("samples: %d %s", r.code, r.body)
	}
	for _, md := range env.relay.metadata() {
		if md.MetricFamilyName == "wordy" {
			t.Fatalf("a HELP over the limit was kept and relayed (%d bytes)", len(md.Help))
		}
	}
	if m := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(m, "sluice_remote_write_metadata_skipped_total 1\n") {
		t.Errorf("want one skipped metadata entry counted:\n%s", m)
	}
}

func TestRemoteWriteRelayV2(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	fh := testHistogram().ToFloat(nil)
	req := newRW2().
		add([]string{"__name__", "temp_celsius", "job", "sensors", "room", "a"}, writev2.Metadata_METRIC_TYPE_GAUGE, "Temperature.",
			[]writev2.Sample{{Value: 21.5, Timestamp: 1000, StartTimestamp: 500}, {Value: 22, Timestamp: 2000}}, nil).
		add([]string{"__name__", "rpc_seconds", "job", "api"}, writev2.Metadata_METRIC_TYPE_HISTOGRAM, "RPCs.",
			nil, []writev2.Histogram{writev2.FromIntHistogram(0, 3000, testHistogram()), writev2.FromFloatHistogram(0, 4000, fh)}).
		add([]string{"__name__", "rpc_seconds_count", "job", "api"}, writev2.Metadata_METRIC_TYPE_HISTOGRAM, "RPCs.",
			[]writev2.Sample{{Value: 5, Timestamp: 3000}}, nil).
		build()
	req.Timeseries[0].Exemplars = []writev2.Exemplar{{Value: 1, Timestamp: 1000}}
	r := env.rw(t, ctV2, rw2Body(t, req))
	if r.code != 204 {
		t.Fatalf("RW2: %d %s", r.code, r.body)
	}
	if r.header.Get(headerSamplesWritten) != "3" || r.header.Get(headerHistogramsWritten) != "2" || r.header.Get(headerExemplarsWritten) != "0" {
		t.Fatalf("RW2 response headers: %v", r.header)
	}
	got := env.relay.series()
	if len(got) != 3 {
		t.Fatalf("relayed %d series", len(got))
	}
	if toLabels(got[0].Labels).String() != `{__name__="temp_celsius", job="sensors", room="a"}` || len(got[0].Samples) != 2 ||
		got[0].Samples[0].Value != 21.5 || got[0].Samples[0].Timestamp != 1000 || got[0].Samples[1].Timestamp != 2000 {
		t.Fatalf("float series: %+v", got[0])
	}
	hs := got[1].Histograms
	if len(hs) != 2 || hs[0].Timestamp != 3000 || hs[0].ToIntHistogram().String() != testHistogram().String() ||
		!hs[1].IsFloatHistogram() || hs[1].ToFloatHistogram().String() != fh.String() {
		t.Fatalf("histograms: %+v", hs)
	}
	md := env.relay.metadata()
	if len(md) != 2 || md[0].MetricFamilyName != "temp_celsius" || md[0].Type != prompb.MetricMetadata_GAUGE || md[0].Help != "Temperature." ||
		md[1].MetricFamilyName != "rpc_seconds" || md[1].Type != prompb.MetricMetadata_HISTOGRAM {
		t.Fatalf("metadata (one per family, histogram series under the family name): %+v", md)
	}
}

// counterV1 is `name{clear_mode=mode, job=job}` with one sample.
func counterV1(name, mode, job string, v float64, ts int64) prompb.TimeSeries {
	return prompb.TimeSeries{Labels: lbls("__name__", name, "clear_mode", mode, "job", job), Samples: []prompb.Sample{{Value: v, Timestamp: ts}}}
}

func TestRemoteWriteAggregates(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	for i := range 3 {
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{counterV1("req_total", "sum", "f", 1, int64(i))}}
		if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
			t.Fatalf("write %d: %d %s", i, r.code, r.body)
		}
	}
	// Several samples of one series in one request (RW1 senders send one
	// TimeSeries per sample), out of order: applied oldest first.
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		counterV1("last_value", "replace", "f", 30, 3000),
		counterV1("last_value", "replace", "f", 10, 1000),
		counterV1("last_value", "replace", "f", 20, 2000),
		counterV1("n_total", "sum", "g", 2, 1000),
		counterV1("n_total", "sum", "g", 5, 2000),
		{Labels: lbls("__name__", "relayed", "job", "f"), Samples: []prompb.Sample{{Value: 7, Timestamp: 1}}},
	}}
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("batch: %d %s", r.code, r.body)
	}
	// RW2: the metadata says gauge; clearmode (Gravel's spelling) works too.
	r2 := newRW2().add([]string{"__name__", "queue_depth", "clearmode", "max5m", "job", "q", "instance", "w1"}, writev2.Metadata_METRIC_TYPE_GAUGE, "",
		[]writev2.Sample{{Value: 4, Timestamp: 1}, {Value: 9, Timestamp: 2}, {Value: 6, Timestamp: 3}}, nil).build()
	if r := env.rw(t, ctV2, rw2Body(t, r2)); r.code != 204 || r.header.Get(headerSamplesWritten) != "3" {
		t.Fatalf("RW2: %d %s %v", r.code, r.body, r.header)
	}
	got := env.scrape(t)
	for _, want := range []string{
		`req_total{instance="",job="f"} 3`,
		`last_value{instance="",job="f"} 30`,
		`n_total{instance="",job="g"} 7`,
		`queue_depth{instance="w1",job="q"} 9`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "relayed") || len(env.relay.series()) != 1 {
		t.Fatalf("the series without clear_mode must be relayed only: %d relayed\n%s", len(env.relay.series()), got)
	}
	if body := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(body, `sluice_remote_write_samples_total{path="aggregate",version="1.0"} 8`) {
		t.Errorf("aggregate samples not counted:\n%s", grep(body, "sluice_remote_write"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRemoteWriteTypes(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	// Metadata sent on its own before (as Prometheus does).
	meta := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "cached_gauge"}}}
	if r := env.rw(t, ctV1, rw1Body(t, meta)); r.code != 204 {
		t.Fatal(r.body)
	}
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			counterV1("by_suffix_total", "sum", "t", 1, 1),
			counterV1("by_meta", "replace", "t", 2, 1),
			counterV1("untyped_thing", "sum", "t", 3, 1),
			counterV1("cached_gauge", "replace", "t", 4, 1),
			counterV1("hist_seconds_bucket", "sum", "t", 5, 1),
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "by_meta"}},
	}
	req.Timeseries[4].Labels = lbls("__name__", "hist_seconds_bucket", "clear_mode", "sum", "job", "t", "le", "0.5")
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	r2 := newRW2().add([]string{"__name__", "jobs_done", "clear_mode", "sum", "job", "t"}, writev2.Metadata_METRIC_TYPE_COUNTER, "Jobs.",
		[]writev2.Sample{{Value: 6, Timestamp: 1}}, nil).build()
	if r := env.rw(t, ctV2, rw2Body(t, r2)); r.code != 204 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	got := env.scrape(t)
	for _, want := range []string{
		"# TYPE by_suffix_total counter",
		"# TYPE by_meta gauge",
		"# TYPE untyped_thing untyped",
		"# TYPE cached_gauge gauge",
		"# TYPE hist_seconds_bucket counter",
		"# HELP jobs_done Jobs.\n# TYPE jobs_done counter",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %q:\n%s", want, got)
		}
	}

	// Native histograms with clear_mode are merged as native histograms.
	for range 2 {
		h := newRW2().add([]string{"__name__", "lat_seconds", "clear_mode", "sum", "job", "t"}, writev2.Metadata_METRIC_TYPE_HISTOGRAM, "",
			nil, []writev2.Histogram{writev2.FromIntHistogram(0, 1, testHistogram())}).build()
		if r := env.rw(t, ctV2, rw2Body(t, h)); r.code != 204 || r.header.Get(headerHistogramsWritten) != "1" {
			t.Fatalf("histogram: %d %s %v", r.code, r.body, r.header)
		}
	}
	var doc struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(env.do(t, "GET", "/api/v1/metrics", nil).body), &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range doc.Data {
		if raw, ok := g["lat_seconds"]; ok {
			found = true
			if !strings.Contains(string(raw), `"count":"10"`) || !strings.Contains(string(raw), `"sum":"25"`) || !strings.Contains(string(raw), `"type":"HISTOGRAM"`) {
				t.Fatalf("two native histograms of count 5, sum 12.5 summed: %s", raw)
			}
		}
	}
	if !found {
		t.Fatal("lat_seconds not aggregated")
	}
}

func TestRemoteWriteErrors(t *testing.T) {
	good := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: lbls("__name__", "ok", "job", "f"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		counterV1("agg_total", "sum", "f", 1, 1),
	}}
	withBad := func(bad prompb.TimeSeries) []byte {
		req := &prompb.WriteRequest{Timeseries: append(append([]prompb.TimeSeries(nil), good.Timeseries...), bad)}
		b, _ := req.Marshal()
		return snappy.Encode(nil, b)
	}
	goodRaw, _ := good.Marshal()
	// A snappy block whose header claims 100 MiB: rejected on DecodedLen.
	bomb := binary.AppendUvarint(nil, 100<<20)
	bomb = append(bomb, 0, 0, 0, 0)
	sym := func(mutate func(*writev2.Request)) []byte {
		r := newRW2().add([]string{"__name__", "ok", "job", "f"}, 0, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).build()
		mutate(r)
		b, _ := r.Marshal()
		return snappy.Encode(nil, b)
	}
	longValue := strings.Repeat("x", 3000)
	invalidHist := prompb.FromIntHistogram(1, testHistogram())
	invalidHist.PositiveDeltas = []int64{1} // two buckets in the span, one count

	cases := []struct {
		name     string
		ct, enc  string
		body     []byte
		wantCode int
		want     string
	}{
		{"content_type_text", "text/plain", "snappy", rw1Body(t, good), 415, `unsupported Content-Type "text/plain"`},
		{"content_type_missing", "", "snappy", rw1Body(t, good), 415, "no Content-Type"},
		{"unknown_proto", "application/x-protobuf;proto=io.prometheus.write.v3.Request", "snappy", rw1Body(t, good), 415, `unsupported protobuf message "io.prometheus.write.v3.Request"`},
		{"encoding_gzip", ctV1, "gzip", rw1Body(t, good), 415, `unsupported Content-Encoding "gzip"`},
		{"encoding_missing", ctV2, "", rw1Body(t, good), 415, "no Content-Encoding"},
		{"decoded_len_over_limit", ctV1, "snappy", bomb, 413, "limits.max_decompressed_body_bytes"},
		{"not_snappy", ctV1, "snappy", []byte("plain text, not snappy"), 400, "decompress snappy body"},
		{"empty_body", ctV1, "snappy", nil, 400, "decompress snappy body"},
		{"truncated_snappy", ctV1, "snappy", rw1Body(t, good)[:10], 400, "decompress snappy body"},
		{"truncated_protobuf_v1", ctV1, "snappy", snappy.Encode(nil, goodRaw[:len(goodRaw)-3]), 400, "decode Remote-Write 1.0 body"},
		{"garbage_protobuf_v2", ctV2, "snappy", snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff}), 400, "decode Remote-Write 2.0 body"},
		{"no_metric_name", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: lbls("job", "f"), Samples: []prompb.Sample{{Value: 1}}}), 400, `series {job="f"} has no metric name`},
		{"duplicate_label", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "a", Value: "1"}, {Name: "a", Value: "2"}}, Samples: []prompb.Sample{{Value: 1}}}), 400, `label "a" more than once`},
		{"invalid_label_name", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "a\xff", Value: "1"}}, Samples: []prompb.Sample{{Value: 1}}}), 400, "invalid label name"},
		{"invalid_label_value", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "a", Value: "\xff"}}, Samples: []prompb.Sample{{Value: 1}}}), 400, "not valid UTF-8"},
		{"label_value_too_long", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: lbls("__name__", "x", "a", longValue), Samples: []prompb.Sample{{Value: 1}}}), 413, "limits.max_label_value_length"},
		{"invalid_native_histogram", ctV1, "snappy", withBad(prompb.TimeSeries{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{invalidHist}}), 400, "invalid native histogram"},
		{"unknown_clear_mode", ctV1, "snappy", withBad(counterV1("c_total", "avg", "f", 1, 1)), 400, `unknown clear_mode "avg"`},
		{"negative_counter_delta", ctV1, "snappy", withBad(counterV1("c_total", "sum", "f", -1, 1)), 400, "negative counter delta"},
		{"symbol_ref_out_of_range", ctV2, "snappy", sym(func(r *writev2.Request) { r.Timeseries[0].LabelsRefs[1] = 99 }), 400, "outside the symbols table"},
		{"symbols_0_not_empty", ctV2, "snappy", sym(func(r *writev2.Request) { r.Symbols[0] = "x" }), 400, "symbols[0] must be the empty string"},
		{"odd_refs", ctV2, "snappy", sym(func(r *writev2.Request) { r.Timeseries[0].LabelsRefs = r.Timeseries[0].LabelsRefs[:3] }), 400, "odd number of labels_refs"},
		{"help_ref_out_of_range", ctV2, "snappy", sym(func(r *writev2.Request) { r.Timeseries[0].Metadata.HelpRef = 1000 }), 400, "help_ref 1000"},
		{"unsorted_v2", ctV2, "snappy", sym(func(r *writev2.Request) {
			refs := r.Timeseries[0].LabelsRefs
			refs[0], refs[1], refs[2], refs[3] = refs[2], refs[3], refs[0], refs[1]
		}), 400, "labels not sorted"},
		{"samples_and_histograms_v2", ctV2, "snappy", sym(func(r *writev2.Request) {
			r.Timeseries[0].Histograms = []writev2.Histogram{writev2.FromIntHistogram(0, 1, testHistogram())}
		}), 400, "both samples and histograms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, false, false, func(c *configs.Config) { c.Limits.MaxDecompressedBodyBytes = 32 << 20 })
			r := env.do(t, "POST", "/api/v1/write", tc.body, "Content-Type", tc.ct, "Content-Encoding", tc.enc)
			if r.code != tc.wantCode || !strings.Contains(r.body, tc.want) {
				t.Fatalf("%d %q, want %d containing %q", r.code, r.body, tc.wantCode, tc.want)
			}
			isV2 := strings.Contains(tc.ct, "v2.Request")
			if isV2 && (r.header.Get(headerSamplesWritten) != "0" || r.header.Get(headerHistogramsWritten) != "0" || r.header.Get(headerExemplarsWritten) != "0") {
				t.Fatalf("RW2 error without the written headers: %v", r.header)
			}
			if !isV2 && r.header.Get(headerSamplesWritten) != "" {
				t.Fatalf("RW1 answer with RW2 headers: %v", r.header)
			}
			// A rejected request applies nothing: neither the good series
			// relayed nor the clear_mode series aggregated before it.
			if n := len(env.relay.series()); n != 0 {
				t.Fatalf("a rejected request relayed %d series", n)
			}
			if got := env.scrape(t); strings.Contains(got, "agg_total") {
				t.Fatalf("a rejected request aggregated:\n%s", got)
			}
		})
	}
	t.Run("wrong_method", func(t *testing.T) {
		env := newTestEnv(t, false, false, nil)
		if r := env.do(t, "GET", "/api/v1/write", nil); r.code != 405 {
			t.Fatalf("GET: %d", r.code)
		}
	})
}

// TestRemoteWritePartialWrite: a clear_mode series the stored state
// rejects (a mode conflict: the pushed gauge is kept with replace) after
// the relay and an earlier push went through: 400 naming the problem, and
// RW2 headers with what was written.
func TestRemoteWritePartialWrite(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	if r := env.do(t, "POST", "/metrics/job/f", []byte("# TYPE b_total gauge\nb_total 1\n")); r.code != 200 {
		t.Fatal(r.body)
	}
	req := newRW2().
		add([]string{"__name__", "relayed", "job", "x"}, 0, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "a_total", "clear_mode", "sum", "job", "a"}, 0, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "b_total", "clear_mode", "sum", "job", "f"}, 0, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		build()
	r := env.rw(t, ctV2, rw2Body(t, req))
	if r.code != 400 || !strings.Contains(r.body, "partly written (2 samples") || !strings.Contains(r.body, "clear_mode=replace, this push says sum") ||
		r.header.Get(headerSamplesWritten) != "2" {
		t.Fatalf("%d %q %v", r.code, r.body, r.header)
	}
}

func TestRemoteWriteUnavailable(t *testing.T) {
	cfg := configs.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		journal aggregate.Journal
		ready   bool
		want    string
	}{
		{"replaying", failingJournal{}, false, "replaying its write-ahead log"},
		{"wal_failed", failingJournal{}, true, "no space left on device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			relay := &fakeRelay{}
			store := aggregate.New(aggregate.Settings{Aggregation: cfg.Aggregation, Limits: cfg.Limits, SeriesTTL: time.Hour},
				time.Now, tc.journal, relay, reg, slog.New(slog.DiscardHandler))
			if tc.ready {
				store.SetReady()
			}
			env := &testEnv{relay: relay}
			env.app = NewApp(Options{
				Logger: slog.New(slog.DiscardHandler), Registerer: reg, Gatherer: reg, Aggregator: store,
				Limits: func() configs.LimitsConfig { return cfg.Limits },
				Ready:  func() string { return "" }, Reload: func() error { return nil }, Quit: func() {},
			}, int(cfg.Limits.MaxBodyBytes))
			req := newRW2().add([]string{"__name__", "x", "job", "f"}, 0, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).build()
			r := env.rw(t, ctV2, rw2Body(t, req))
			if r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, tc.want) || r.header.Get(headerSamplesWritten) != "0" {
				t.Fatalf("%d %q %v; want 503 with Retry-After naming %q", r.code, r.body, r.header, tc.want)
			}
			if len(relay.series()) != 0 {
				t.Fatal("relayed although not durable")
			}
		})
	}
}

// TestRemoteWriteRelabel: ingest.relabel_configs drop series, drop
// labels and add clear_mode, in both protocol versions.
func TestRemoteWriteRelabel(t *testing.T) {
	type series struct {
		labels  []string
		samples []float64 // at timestamps 1, 2, ...
	}
	in := []series{
		{[]string{"__name__", "go_goroutines", "job", "x"}, []float64{10, 11}},
		{[]string{"__name__", "inv_total", "job", "lambda-a", "pod", "p1"}, []float64{1}},
		{[]string{"__name__", "inv_total", "job", "lambda-a", "pod", "p2"}, []float64{1}},
		{[]string{"__name__", "kept", "job", "x", "pod", "p1"}, []float64{3}},
	}
	v1 := &prompb.WriteRequest{}
	v2 := newRW2()
	for _, s := range in {
		var s1 []prompb.Sample
		var s2 []writev2.Sample
		for i, v := range s.samples {
			s1 = append(s1, prompb.Sample{Value: v, Timestamp: int64(i + 1)})
			s2 = append(s2, writev2.Sample{Value: v, Timestamp: int64(i + 1)})
		}
		v1.Timeseries = append(v1.Timeseries, prompb.TimeSeries{Labels: lbls(s.labels...), Samples: s1})
		v2.add(s.labels, 0, "", s2, nil)
	}
	for _, tc := range []struct {
		name, ct string
		body     []byte
	}{
		{"v1", ctV1, rw1Body(t, v1)},
		{"v2", ctV2, rw2Body(t, v2.build())},
	} {
		t.Run(tc.name, func(t *testing.T) { checkRelabel(t, tc.ct, tc.body, tc.ct == ctV2) })
	}
}

// checkRelabel sends body, TestRemoteWriteRelabel's series, and checks
// what was relayed and aggregated; written: the response reports the
// samples written (Remote-Write 2.0).
func checkRelabel(t *testing.T, ct string, body []byte, written bool) {
	env := newTestEnv(t, false, false, nil)
	drop := &relabel.Config{SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp("go_.*"), Action: relabel.Drop}
	addMode := &relabel.Config{SourceLabels: model.LabelNames{"job", "__name__"}, Separator: ";", Regex: relabel.MustNewRegexp("lambda-.*;.*_total"),
		TargetLabel: "clear_mode", Replacement: "sum", Action: relabel.Replace}
	dropLabel := relabel.DefaultRelabelConfig
	dropLabel.Regex, dropLabel.Action = relabel.MustNewRegexp("pod"), relabel.LabelDrop
	env.cfg.Ingest.RelabelConfigs = []*relabel.Config{drop, addMode, &dropLabel}
	if err := env.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := env.rw(t, ct, body)
	// The dropped samples count as written: Sluice took them and dropped
	// them on purpose (a sender must not retry them).
	if r.code != 204 || (written && r.header.Get(headerSamplesWritten) != "5") {
		t.Fatalf("%d %s %v", r.code, r.body, r.header)
	}
	got := env.relay.series()
	if len(got) != 1 || toLabels(got[0].Labels).String() != `{__name__="kept", job="x"}` {
		t.Fatalf("relayed after relabelling: %+v", got)
	}
	// pod dropped, so the two series are one; clear_mode=sum added by relabelling.
	if s := env.scrape(t); !strings.Contains(s, `inv_total{instance="",job="lambda-a"} 2`) {
		t.Fatalf("relabelled clear_mode series not aggregated:\n%s", s)
	}
	if body := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(body, "sluice_ingest_relabel_dropped_series_total 1") {
		t.Fatalf("dropped series not counted:\n%s", grep(body, "relabel"))
	}
}

// TestRemoteWriteBodyLimit: fiber's own 413 for a body over
// limits.max_body_bytes carries the RW2 headers too.
func TestRemoteWriteBodyLimit(t *testing.T) {
	env := newTestEnv(t, false, false, func(c *configs.Config) { c.Limits.MaxBodyBytes = 1024 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = env.app.Listener(ln) }()
	defer func() { _ = env.app.Shutdown() }()
	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/api/v1/write", bytes.NewReader(make([]byte, 2048)))
	req.Header.Set("Content-Type", ctV2)
	req.Header.Set("Content-Encoding", "snappy")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 413 || !strings.Contains(string(b), "limits.max_body_bytes") || r.Header.Get(headerSamplesWritten) != "0" {
		t.Fatalf("%d %q %v", r.StatusCode, b, r.Header)
	}
	if r := env.do(t, "OPTIONS", "/api/v1/write", nil); r.code != 200 || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("OPTIONS: %d %v", r.code, r.header)
	}
}

// Staleness markers for clear_mode series (a Prometheus sender writes one
// when a target goes away) are ignored and count as written; they must
// not fail the request, whose relayed series would go with it.
func TestRemoteWriteStaleMarkersOnAggregatedSeries(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	env := newTestEnv(t, false, false, nil)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		counterV1("calls_total", "sum", "f", 3, 1000),
		counterV1("calls_total", "sum", "f", stale, 2000),
		counterV1("temp", "replace", "f", 21, 1000),
		counterV1("temp", "replace", "f", stale, 2000),
		counterV1("gone_total", "sum", "f", stale, 2000), // only a marker: no series
		{Labels: lbls("__name__", "relayed", "job", "f"), Samples: []prompb.Sample{{Value: 7, Timestamp: 1}, {Value: stale, Timestamp: 2}}},
	}}
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("RW1 with markers: %d %s", r.code, r.body)
	}
	r2 := newRW2().add([]string{"__name__", "depth", "clear_mode", "max5m", "job", "q"}, writev2.Metadata_METRIC_TYPE_GAUGE, "",
		[]writev2.Sample{{Value: 4, Timestamp: 1}, {Value: stale, Timestamp: 2}}, nil).build()
	if r := env.rw(t, ctV2, rw2Body(t, r2)); r.code != 204 || r.header.Get(headerSamplesWritten) != "2" {
		t.Fatalf("RW2 with a marker: %d %s %v", r.code, r.body, r.header)
	}
	got := env.scrape(t)
	for _, want := range []string{
		`calls_total{instance="",job="f"} 3`,
		`temp{instance="",job="f"} 21`,
		`depth{instance="",job="q"} 4`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "gone_total") || strings.Contains(got, "NaN") {
		t.Errorf("a marker became a value or a series:\n%s", got)
	}
	rel := env.relay.series()
	if len(rel) != 1 || len(rel[0].Samples) != 2 || !value.IsStaleNaN(rel[0].Samples[1].Value) {
		t.Fatalf("the relayed series and its marker must be relayed as sent: %+v", rel)
	}
	if body := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(body, "sluice_remote_write_stale_markers_ignored_total 4") {
		t.Errorf("markers not counted:\n%s", grep(body, "stale"))
	}
}

// TestRemoteWriteAggregatedUnit: the unit of an aggregated series'
// metadata (1.0: the request's metadata; 2.0: inline) reaches the pushed
// family, which the Store forwards with its windows.
func TestRemoteWriteAggregatedUnit(t *testing.T) {
	v1 := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{counterV1("temp_celsius", "replace", "f", 21, 1000)},
		Metadata:   []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temp_celsius", Help: "Temperature.", Unit: "celsius"}},
	}
	b2 := newRW2()
	b2.add([]string{"__name__", "temp_celsius", "clear_mode", "replace", "job", "f"}, writev2.Metadata_METRIC_TYPE_GAUGE, "Temperature.",
		[]writev2.Sample{{Value: 21, Timestamp: 1000}}, nil)
	r2 := b2.build()
	r2.Timeseries[0].Metadata.UnitRef = b2.st.Symbolize("celsius")
	r2.Symbols = b2.st.Symbols()
	for _, tc := range []struct {
		name string
		v    rwVersion
		body []byte
	}{
		{"1.0", rwV1, rw1Body(t, v1)},
		{"2.0", rwV2, rw2Body(t, r2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pool bufPool
			dec, err := decodeRemoteWrite(&pool, tc.v, tc.body, configs.Default().Limits, nil, newMetadataCache())
			if err != nil {
				t.Fatalf("decode: %+v", err)
			}
			defer dec.release()
			if len(dec.write.Pushes) != 1 || len(dec.write.Pushes[0].Families) != 1 {
				t.Fatalf("pushes: %+v", dec.write.Pushes)
			}
			f := dec.write.Pushes[0].Families[0]
			if f.GetUnit() != "celsius" || f.GetHelp() != "Temperature." || f.GetType() != dto.MetricType_GAUGE {
				t.Errorf("family %s: unit %q help %q type %v", f.GetName(), f.GetUnit(), f.GetHelp(), f.GetType())
			}
		})
	}
}

// TestRemoteWriteClassicSummedLikePushes: the float series of a classic
// summary or histogram summed with clear_mode=sum add up as a push of
// them would: quantiles are dropped and counted (not summed), and a sum
// of observations may go down (negative observations).
func TestRemoteWriteClassicSummedLikePushes(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	series := func(name string, v float64, kv ...string) prompb.TimeSeries {
		return prompb.TimeSeries{Labels: lbls(append([]string{"__name__", name, "clear_mode", "sum", "job", "j"}, kv...)...),
			Samples: []prompb.Sample{{Value: v, Timestamp: 1}}}
	}
	for range 2 {
		req := &prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{
				series("rq", 3, "quantile", "0.5"),
				series("rq_sum", 4),
				series("rq_count", 2),
				series("temp_delta_bucket", 1, "le", "0"),
				series("temp_delta_bucket", 2, "le", "+Inf"),
				series("temp_delta_sum", -3),
				series("temp_delta_count", 2),
			},
			Metadata: []prompb.MetricMetadata{
				{Type: prompb.MetricMetadata_SUMMARY, MetricFamilyName: "rq"},
				{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "temp_delta"},
			},
		}
		if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
			t.Fatalf("%d %s", r.code, r.body)
		}
	}
	got := env.scrape(t)
	for _, want := range []string{
		`rq_sum{instance="",job="j"} 8`,
		`rq_count{instance="",job="j"} 4`,
		`temp_delta_sum{instance="",job="j"} -6`,
		`temp_delta_count{instance="",job="j"} 4`,
		`temp_delta_bucket{instance="",job="j",le="+Inf"} 4`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "rq{") {
		t.Errorf("summary quantiles summed:\n%s", got)
	}
	if m := env.do(t, "GET", "/metrics", nil).body; !strings.Contains(m, "sluice_summary_quantiles_dropped_total 2\n") {
		t.Errorf("want 2 dropped quantiles counted:\n%s", m)
	}

	// Before the sender's metadata (Prometheus sends it a minute after it
	// starts, or after Sluice restarts): known by its quantile label.
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("early", 3, "quantile", "0.5"), series("early_count", 1)}}
	if r := env.rw(t, ctV1, rw1Body(t, req)); r.code != 204 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if got := env.scrape(t); strings.Contains(got, "early{") || !strings.Contains(got, `early_count{instance="",job="j"} 1`) {
		t.Errorf("a quantile series without metadata was summed:\n%s", got)
	}
}

// TestRemoteWriteTypesAreHints: a remote-written series' type is a guess
// where the sender's metadata is missing (Prometheus sends it a minute
// after it starts, and not again at once after Sluice restarts), so a
// series of a metric that exists takes the metric's type instead of
// failing every request with a type conflict, which a sender drops.
func TestRemoteWriteTypesAreHints(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	send := func(ct string, body []byte, wantCode int) {
		t.Helper()
		if r := env.rw(t, ct, body); r.code != wantCode {
			t.Fatalf("want %d, got %d %s", wantCode, r.code, r.body)
		}
	}
	// Before the metadata: untyped by its name.
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{counterV1("temp", "replace", "t", 1, 1)}}
	send(ctV1, rw1Body(t, req), 204)
	send(ctV1, rw1Body(t, &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temp"}}}), 204)
	req.Timeseries[0].Samples[0].Value = 2
	send(ctV1, rw1Body(t, req), 204)

	// Typed by metadata first, then sent without (as after a restart).
	typed := func(typ writev2.Metadata_MetricType, v float64) []byte {
		return rw2Body(t, newRW2().add([]string{"__name__", "depth", "clear_mode", "sum", "job", "t"}, typ, "", []writev2.Sample{{Value: v, Timestamp: 1}}, nil).build())
	}
	send(ctV2, typed(writev2.Metadata_METRIC_TYPE_COUNTER, 5), 204)
	send(ctV2, typed(writev2.Metadata_METRIC_TYPE_UNSPECIFIED, 3), 204)
	// Taking the counter's type, a negative delta is still refused.
	send(ctV2, typed(writev2.Metadata_METRIC_TYPE_GAUGE, -1), 400)

	got := env.scrape(t)
	for _, want := range []string{
		"# TYPE temp untyped\ntemp{instance=\"\",job=\"t\"} 2",
		"# TYPE depth counter\ndepth{instance=\"\",job=\"t\"} 8\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("scrape lacks %q:\n%s", want, got)
		}
	}

	// Pushes are not remote_write: their types are the sender's word.
	if r := env.do(t, "POST", "/metrics/job/t", []byte("# TYPE depth gauge\ndepth{clear_mode=\"sum\"} 1\n")); r.code != 400 {
		t.Errorf("a push of another type: %d %s, want 400", r.code, r.body)
	}
}

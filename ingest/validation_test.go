package ingest

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// TestInvalidInputIs400 covers SPEC 8's bad input for pushes and for
// remote_write: each case is a 400 whose message gives the reason, and
// changes nothing.
func TestInvalidInputIs400(t *testing.T) {
	proto := func(text string) []byte { return encodeDelimited(t, familyFromText(t, text)) }
	rw := func(v float64, ls ...string) []byte {
		return rw1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls(ls...), Samples: []prompb.Sample{{Value: v, Timestamp: 1}}}}})
	}
	const protoType = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
	rwHeaders := []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "snappy"}
	cases := []struct {
		name     string
		path     string
		body     []byte
		headers  []string
		wantCode int
		wantMsg  string
	}{
		{name: "push: label value not UTF-8 (text)", body: []byte("a{b=\"\xff\"} 1\n"), wantCode: 400, wantMsg: `invalid label value "\xff"`},
		{name: "push: label value not UTF-8 (protobuf)", body: proto(`name: "a" type: GAUGE metric { label { name: "b" value: "\377" } gauge { value: 1 } }`), headers: []string{"Content-Type", protoType}, wantCode: 400, wantMsg: "UTF-8"},
		{name: "push: metric name invalid (text)", body: []byte("1a 1\n"), wantCode: 400, wantMsg: "text format parsing error"},
		{name: "push: metric name invalid (protobuf)", body: proto(`name: "a-b" type: GAUGE metric { gauge { value: 1 } }`), headers: []string{"Content-Type", protoType}, wantCode: 400, wantMsg: `"a-b"`},
		{name: "push: label name invalid (protobuf)", body: proto(`name: "a" type: GAUGE metric { label { name: "b-c" value: "1" } gauge { value: 1 } }`), headers: []string{"Content-Type", protoType}, wantCode: 400, wantMsg: `"b-c"`},
		{name: "push: NaN in sum mode", body: []byte("# TYPE a counter\na NaN\n"), wantCode: 400, wantMsg: "NaN"},
		{name: "push: +Inf in a windowed mode", body: []byte("a{clear_mode=\"mean1m\"} +Inf\n"), wantCode: 400, wantMsg: "Inf"},
		{name: "push: duplicate series", body: proto(`name: "a" type: GAUGE metric { label { name: "b" value: "1" } gauge { value: 1 } } metric { label { name: "b" value: "1" } gauge { value: 2 } }`), headers: []string{"Content-Type", protoType}, wantCode: 400, wantMsg: "more than once"},
		{name: "push: reserved label name", body: []byte("a{__b=\"1\"} 1\n"), wantCode: 400, wantMsg: "__b"},
		{name: "push: reserved metric name", body: []byte("sluice_pushes 1\n"), wantCode: 400, wantMsg: "reserved for Sluice's own metrics"},
		{name: "push: reserved label in the path", path: "/metrics/job/f/__a/b", body: []byte("a 1\n"), wantCode: 400, wantMsg: "__a"},
		{name: "remote_write: label value not UTF-8", path: "/api/v1/write", body: rw(1, "__name__", "up", "job", "\xff"), headers: rwHeaders, wantCode: 400, wantMsg: "not valid UTF-8"},
		{name: "remote_write: empty label name", path: "/api/v1/write", body: rw(1, "", "x", "__name__", "up"), headers: rwHeaders, wantCode: 400, wantMsg: "label name"},
		{name: "remote_write: no metric name", path: "/api/v1/write", body: rw(1, "job", "x"), headers: rwHeaders, wantCode: 400, wantMsg: "no metric name"},
		{name: "remote_write: duplicate label", path: "/api/v1/write", body: rw(1, "__name__", "up", "job", "a", "job", "b"), headers: rwHeaders, wantCode: 400, wantMsg: "more than once"},
		{name: "remote_write: NaN in sum mode", path: "/api/v1/write", body: rw(math.NaN(), "__name__", "a_total", "clear_mode", "sum"), headers: rwHeaders, wantCode: 400, wantMsg: "NaN"},
		{name: "remote_write: reserved metric name aggregated", path: "/api/v1/write", body: rw(1, "__name__", "sluice_x", "clear_mode", "sum"), headers: rwHeaders, wantCode: 400, wantMsg: "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newHardenedEnv(t, nil, nil)
			path := tc.path
			if path == "" {
				path = "/metrics/job/f"
			}
			r := env.serveOne(t, "POST", path, tc.body, tc.headers...)
			if r.code != tc.wantCode || !strings.Contains(r.body, tc.wantMsg) {
				t.Fatalf("%d %q, want %d containing %q", r.code, r.body, tc.wantCode, tc.wantMsg)
			}
			if got := env.scrape(t); got != "" {
				t.Fatalf("a rejected request changed the state:\n%s", got)
			}
		})
	}
}

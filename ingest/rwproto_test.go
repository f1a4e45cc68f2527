package ingest

import (
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// TestParseV1ReusedLabels decodes requests one after another with one
// rwRequest, as the pool does. appendLabel fills reused label slots field
// by field, so each request's labels must come out exactly as built (the
// generated type's other fields zero), whatever the request before held,
// on the fast path (labels as the generated code writes them) and on the
// general one (a label with an unknown field, which is skipped).
func TestParseV1ReusedLabels(t *testing.T) {
	plain := func(kv ...string) []byte {
		b, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls(kv...),
			Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// A label with an unknown field 3 (a varint) after its name and value:
	// not fastLabel's form, and the field is skipped, not kept.
	unknown := func(name, value string) []byte {
		l := append([]byte{0x0a, byte(len(name))}, name...)
		l = append(append(l, 0x12, byte(len(value))), value...)
		l = append(l, 0x18, 0x01)
		ts := append([]byte{0x0a, byte(len(l))}, l...)
		ts = append(ts, 0x12, 0x09, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f) // sample: value 1, timestamp 0
		return append([]byte{0x0a, byte(len(ts))}, ts...)
	}
	cases := []struct {
		name string
		body []byte
		want []prompb.Label
	}{
		{name: "three labels", body: plain("__name__", "up", "instance", "a:9100", "job", "node"),
			want: lbls("__name__", "up", "instance", "a:9100", "job", "node")},
		{name: "fewer labels in reused slots", body: plain("__name__", "x", "a", "b"), want: lbls("__name__", "x", "a", "b")},
		{name: "label with an unknown field", body: unknown("__name__", "slow"), want: lbls("__name__", "slow")},
		{name: "more labels than before", body: plain("__name__", "y", "a", "1", "b", "2", "c", "3", "d", "4"),
			want: lbls("__name__", "y", "a", "1", "b", "2", "c", "3", "d", "4")},
	}
	var r rwRequest
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.reset()
			if err := r.parseV1(tc.body); err != nil {
				t.Fatalf("parseV1: %v", err)
			}
			if len(r.v1.Timeseries) != 1 {
				t.Fatalf("%d series, want 1", len(r.v1.Timeseries))
			}
			if got := r.v1.Timeseries[0].Labels; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("labels %#v, want %#v", got, tc.want)
			}
		})
	}
}

package main

import (
	"testing"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// FuzzCountRemoteWrite checks that the sink's hand-rolled protobuf walk
// never panics and, whenever the generated prompb code also accepts a body,
// counts what that code decodes.
func FuzzCountRemoteWrite(f *testing.F) {
	f.Add(v1Body(f, []string{"lt_a", "b"}, 2, 1, 1), false)
	f.Add(v2Body(f, []string{"lt_a", "b"}, 2, 1, 1), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, body []byte, v2 bool) {
		if v2 {
			got, _, err := countV2(body, []byte("lt_"), nil)
			var req writev2.Request
			if err != nil || req.Unmarshal(body) != nil {
				return
			}
			want := counts{series: uint64(len(req.Timeseries))}
			for _, ts := range req.Timeseries {
				want.samples += uint64(len(ts.Samples))
				want.histograms += uint64(len(ts.Histograms))
				want.exemplars += uint64(len(ts.Exemplars))
			}
			got.matched = 0 // name matching is covered by TestCount
			if got != want {
				t.Fatalf("counted %+v, prompb decodes %+v", got, want)
			}
			return
		}
		got, err := countV1(body, []byte("lt_"))
		var req prompb.WriteRequest
		if err != nil || req.Unmarshal(body) != nil {
			return
		}
		want := counts{series: uint64(len(req.Timeseries))}
		for _, ts := range req.Timeseries {
			want.samples += uint64(len(ts.Samples))
			want.histograms += uint64(len(ts.Histograms))
			want.exemplars += uint64(len(ts.Exemplars))
		}
		got.matched = 0
		if got != want {
			t.Fatalf("counted %+v, prompb decodes %+v", got, want)
		}
	})
}

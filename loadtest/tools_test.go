package main

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestHistogramBuckets(t *testing.T) {
	const twoSeries = `# HELP d Latency.
# TYPE d histogram
d_bucket{method="PUT",le="0.001"} 3
d_bucket{method="PUT",le="0.01"} 5
d_bucket{method="PUT",le="+Inf"} 6
d_sum{method="PUT"} 0.5
d_count{method="PUT"} 6
d_bucket{method="POST",le="0.001"} 1
d_bucket{method="POST",le="0.01"} 1
d_bucket{method="POST",le="+Inf"} 2
d_sum{method="POST"} 3
d_count{method="POST"} 2
# TYPE g gauge
g 1
`
	tests := []struct {
		name    string
		body    string
		metric  string
		want    []bucket
		wantErr string
	}{
		{
			name:   "summed over series by bound",
			body:   twoSeries,
			metric: "d",
			want:   []bucket{{0.001, 4}, {0.01, 6}, {math.Inf(1), 8}},
		},
		{
			name:   "no +Inf line: the count is the +Inf bucket",
			body:   "# TYPE d histogram\nd_bucket{le=\"1\"} 2\nd_sum 1\nd_count 3\n",
			metric: "d",
			want:   []bucket{{1, 2}, {math.Inf(1), 3}},
		},
		{name: "missing", body: twoSeries, metric: "nope", wantErr: `no histogram "nope"`},
		{name: "not a histogram", body: twoSeries, metric: "g", wantErr: `no histogram "g"`},
		{name: "broken exposition", body: "d_bucket{le=\"1\" 2\n", metric: "d", wantErr: "parse exposition"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := histogramBuckets(strings.NewReader(tc.body), tc.metric)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("buckets = %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzHistogramBuckets checks that any exposition gives buckets by
// increasing bound or an error, never a panic.
func FuzzHistogramBuckets(f *testing.F) {
	f.Add("# TYPE d histogram\nd_bucket{le=\"0.1\"} 1\nd_bucket{le=\"+Inf\"} 2\nd_sum 1\nd_count 2\n")
	f.Add("# TYPE d histogram\nd_bucket{a=\"x\",le=\"1\"} 2\nd_count{a=\"x\"} 3\nd_bucket{a=\"y\",le=\"NaN\"} 1\n")
	f.Add("d 1\n")
	f.Fuzz(func(t *testing.T, body string) {
		bs, err := histogramBuckets(strings.NewReader(body), "d")
		if err != nil {
			return
		}
		if !slices.IsSortedFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) }) {
			t.Fatalf("buckets not by increasing bound: %v", bs)
		}
	})
}

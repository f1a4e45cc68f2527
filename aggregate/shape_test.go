package aggregate

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-metrics/sluice/configs"
)

// shapedBody has a series of every type and of several modes.
const shapedBody = `# TYPE jobs_total counter
jobs_total{clear_mode="sum",q="a"} 1
jobs_total{clear_mode="replace",q="b"} 1
# TYPE temp gauge
temp{clear_mode="mean1m"} 1
temp{clear_mode="max1m",room="x"} 1
temp{room="y"} 1
# TYPE lat histogram
lat_bucket{clear_mode="sum",le="1"} 1
lat_bucket{clear_mode="sum",le="+Inf"} 2
lat_sum{clear_mode="sum"} 1
lat_count{clear_mode="sum"} 2
# TYPE rpc summary
rpc{quantile="0.5"} 1
rpc_sum 1
rpc_count 1
`

// setValues gives every value of fams, in place, one derived from v:
// what ingest's decoder does to the families of a repeated push.
func setValues(fams []*dto.MetricFamily, v float64) {
	for _, f := range fams {
		for _, m := range f.Metric {
			switch {
			case m.Counter != nil:
				m.Counter.Value = &v
			case m.Gauge != nil:
				g := v * 2
				m.Gauge.Value = &g
			case m.Histogram != nil:
				n := uint64(v) + 1
				m.Histogram.SampleCount, m.Histogram.SampleSum = &n, &v
				for i, b := range m.Histogram.Bucket {
					c := min(uint64(i)+uint64(v)/2, n)
					b.CumulativeCount = &c
				}
			case m.Summary != nil:
				n := uint64(v)
				m.Summary.SampleCount, m.Summary.SampleSum = &n, &v
				for _, q := range m.Summary.Quantile {
					q.Value = &v
				}
			}
		}
	}
}

// TestShapeMatchesFullPreparation applies the same pushes to two stores,
// one with a Shape, as ingest passes for repeated text pushes, and one
// without, and checks that they answer and show the same after each.
func TestShapeMatchesFullPreparation(t *testing.T) {
	type shapedStep struct {
		value    float64
		group    string // default job=f
		method   Method
		mode     string
		settings func(*Settings) // a reload before the push
		wantErr  string
		shortcut bool // the push takes the shortcut
	}
	cases := []struct {
		name  string
		sem   Semantics
		steps []shapedStep
	}{
		{"new values", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, shortcut: true}, {value: 7, shortcut: true}, {value: 0, shortcut: true}}},
		{"a value a mode refuses", SemanticsAggregate, []shapedStep{{value: 1}, {value: -1, wantErr: "negative counter delta -1"}, {value: 3, shortcut: true}}},
		{"a non-finite value", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, shortcut: true}, {value: math.NaN(), wantErr: "must be finite"}}},
		{"a reload", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, settings: func(s *Settings) {
			s.Aggregation.DefaultModes.Gauge = configs.Mode{Kind: configs.ModeSum}
		}}, {value: 3, shortcut: true}}},
		{"a reload of the limits", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, settings: func(s *Settings) {
			s.Limits.MaxSeriesPerRequest = 5
		}, wantErr: "max_series_per_request"}}},
		{"a reload of the label limits", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, settings: func(s *Settings) {
			s.Limits.MaxLabelValueLength = 1
		}, wantErr: "max_label_value_length"}}},
		{"another group", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, group: "job=g"}, {value: 3, group: "job=g", shortcut: true}, {value: 4}}},
		{"a mode in the path", SemanticsAggregate, []shapedStep{{value: 1}, {value: 2, group: "job=m", mode: "replace"}, {value: 3, group: "job=m", mode: "replace", shortcut: true},
			{value: 4, group: "job=m", wantErr: "a series keeps its mode"}}},
		{"pushgateway methods", SemanticsPushgateway, []shapedStep{{value: 1, method: MethodPut}, {value: 2, method: MethodPut, shortcut: true}, {value: 3}, {value: 4, shortcut: true}, {value: 5, method: MethodPut}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := testSettings()
			set.Semantics = tc.sem
			shaped, clkA := newTestStore(t, set)
			full, clkB := newTestStore(t, set)
			fams, err := textBody(BodyText, []byte(shapedBody))
			if err != nil {
				t.Fatal(err)
			}
			var sh Shape
			for i, st := range tc.steps {
				clkA.advance(10e9)
				clkB.advance(10e9)
				if st.settings != nil {
					st.settings(&set)
					shaped.SetSettings(set)
					full.SetSettings(set)
				}
				setValues(fams, st.value)
				grp := st.group
				if grp == "" {
					grp = "job=f"
				}
				method := st.method
				if method == 0 {
					method = MethodPost
				}
				p := Push{Group: groupLabels(grp), Method: method, Families: fams, Mode: st.mode, Shape: &sh}
				pr := shaped.prepareShaped(&p, &sh, shaped.settings.Load())
				if got := pr != nil; got != st.shortcut {
					t.Fatalf("step %d: shortcut taken %v, want %v", i, got, st.shortcut)
				}
				if pr != nil {
					shaped.releasePrepared(pr)
				}
				errA := shaped.Apply(context.Background(), &p)
				p.Shape = nil
				errB := full.Apply(context.Background(), &p)
				if fmt.Sprint(errA) != fmt.Sprint(errB) {
					t.Fatalf("step %d: with a shape %v, without %v", i, errA, errB)
				}
				if st.wantErr == "" && errA != nil || st.wantErr != "" && (errA == nil || !strings.Contains(errA.Error(), st.wantErr)) {
					t.Fatalf("step %d: error %v, want %q", i, errA, st.wantErr)
				}
				if a, b := expose(t, shaped), expose(t, full); a != b {
					t.Fatalf("step %d: with a shape\n%s\nwithout\n%s", i, a, b)
				}
			}
		})
	}
}

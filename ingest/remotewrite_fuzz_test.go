package ingest

import (
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// fuzzRelabel adds clear_mode to series named agg_* and drops drop_*, so
// that fuzzing reaches every path.
func fuzzRelabel() []*relabel.Config {
	addMode := relabel.DefaultRelabelConfig
	addMode.SourceLabels = model.LabelNames{"__name__"}
	addMode.Regex = relabel.MustNewRegexp("agg_.*")
	addMode.TargetLabel, addMode.Replacement = "clear_mode", "sum"
	drop := relabel.DefaultRelabelConfig
	drop.SourceLabels = model.LabelNames{"__name__"}
	drop.Regex = relabel.MustNewRegexp("drop_.*")
	drop.Action = relabel.Drop
	cfgs := []*relabel.Config{&addMode, &drop}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			panic(err)
		}
	}
	return cfgs
}

func fuzzLimits() configs.LimitsConfig {
	l := configs.Default().Limits
	l.MaxDecompressedBodyBytes = 1 << 20
	return l
}

// fuzzRemoteWrite decodes raw (snappy-compressed first if compress) as a
// request of version v and checks what a successful decode promises.
func fuzzRemoteWrite(t *testing.T, v rwVersion, raw []byte, compress, relabelOn bool) {
	body := raw
	if compress {
		body = snappy.Encode(nil, raw)
	}
	var rcs []*relabel.Config
	if relabelOn {
		rcs = fuzzRelabel()
	}
	var pool bufPool
	dec, err := decodeRemoteWrite(&pool, v, body, fuzzLimits(), rcs, newMetadataCache())
	if err != nil {
		if err.msg == "" || err.reason == "" || err.code < 400 || err.code > 415 {
			t.Fatalf("bad error: %+v", err)
		}
		return
	}
	if dec == nil {
		t.Fatal("nil result without an error")
	}
	if len(dec.write.Pushes) != len(dec.pushFloats) || len(dec.write.Pushes) != len(dec.pushHists) {
		t.Fatalf("%d pushes, %d/%d counts", len(dec.write.Pushes), len(dec.pushFloats), len(dec.pushHists))
	}
	floats, hists := 0, 0
	if r := dec.write.Relay; r != nil {
		for _, ts := range r.Timeseries {
			if len(ts.Samples)+len(ts.Histograms) == 0 {
				t.Fatalf("relayed series without samples: %+v", ts)
			}
			hasName := false
			for i, l := range ts.Labels {
				if i > 0 && l.Name <= ts.Labels[i-1].Name {
					t.Fatalf("relayed labels not strictly sorted: %+v", ts.Labels)
				}
				if l.Name == aggregate.ModeLabel || l.Name == aggregate.ModeLabelAlias {
					t.Fatalf("relayed series carries %s: %+v", l.Name, ts.Labels)
				}
				if l.Value == "" {
					t.Fatalf("relayed series with an empty label: %+v", ts.Labels)
				}
				hasName = hasName || (l.Name == model.MetricNameLabel && l.Value != "")
			}
			if !hasName {
				t.Fatalf("relayed series without a name: %+v", ts.Labels)
			}
			floats += len(ts.Samples)
			hists += len(ts.Histograms)
		}
		// What is relayed goes into the write-ahead log as a protobuf.
		if _, err := r.Marshal(); err != nil {
			t.Fatalf("relay does not marshal: %v", err)
		}
	}
	if floats != dec.relayFloats || hists != dec.relayHists {
		t.Fatalf("relay counts %d/%d, series hold %d/%d", dec.relayFloats, dec.relayHists, floats, hists)
	}
	for i, p := range dec.write.Pushes {
		p.Group.Range(func(l labels.Label) {
			if l.Name != "job" && l.Name != "instance" {
				t.Fatalf("push %d has grouping label %q", i, l.Name)
			}
		})
		n := 0
		for _, f := range p.Families {
			n += len(f.GetMetric())
		}
		if n != dec.pushFloats[i]+dec.pushHists[i] || n == 0 {
			t.Fatalf("push %d: %d series, counted %d+%d", i, n, dec.pushFloats[i], dec.pushHists[i])
		}
	}
}

// FuzzDecodeRemoteWriteV1 feeds arbitrary prometheus.WriteRequest bodies
// (mostly snappy-compressed, so that the protobuf decoder is reached) to
// the remote_write decoder. Seeds: testdata/fuzz/FuzzDecodeRemoteWriteV1.
func FuzzDecodeRemoteWriteV1(f *testing.F) {
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: lbls("__name__", "up", "job", "a"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
			{Labels: lbls("__name__", "agg_total", "job", "a"), Samples: []prompb.Sample{{Value: 2, Timestamp: 2}, {Value: 3, Timestamp: 1}}},
			{Labels: lbls("__name__", "h", "clear_mode", "sum"), Histograms: []prompb.Histogram{prompb.FromIntHistogram(1, testHistogram())}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "agg_total"}},
	}
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, true, true)
	f.Add(b, true, false)
	f.Add(snappy.Encode(nil, b), false, false)
	f.Fuzz(func(t *testing.T, raw []byte, compress, relabelOn bool) {
		fuzzRemoteWrite(t, rwV1, raw, compress, relabelOn)
	})
}

// FuzzDecodeRemoteWriteV2 is FuzzDecodeRemoteWriteV1 for
// io.prometheus.write.v2.Request. Seeds: testdata/fuzz/FuzzDecodeRemoteWriteV2.
func FuzzDecodeRemoteWriteV2(f *testing.F) {
	req := newRW2().
		add([]string{"__name__", "up", "job", "a"}, writev2.Metadata_METRIC_TYPE_GAUGE, "Up.", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "agg_total", "job", "a"}, writev2.Metadata_METRIC_TYPE_COUNTER, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "h", "clear_mode", "sum"}, writev2.Metadata_METRIC_TYPE_HISTOGRAM, "", nil,
			[]writev2.Histogram{writev2.FromIntHistogram(0, 1, testHistogram())}).
		build()
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, true, true)
	f.Add(b, true, false)
	f.Add(snappy.Encode(nil, b), false, false)
	f.Fuzz(func(t *testing.T, raw []byte, compress, relabelOn bool) {
		fuzzRemoteWrite(t, rwV2, raw, compress, relabelOn)
	})
}

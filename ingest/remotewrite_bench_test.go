package ingest

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// benchSeries is how many series a benchmark request carries: Prometheus'
// max_samples_per_send, one sample each (as Prometheus sends them).
const benchSeries = 2000

func benchLabels(i int) []string {
	return []string{
		"__name__", fmt.Sprintf("node_metric_%d_total", i%50),
		"cpu", fmt.Sprint(i % 8),
		"instance", fmt.Sprintf("10.0.%d.%d:9100", i/250, i%250),
		"job", "node",
		"mode", []string{"idle", "user", "system", "iowait"}[i%4],
		"region", "eu-west-1",
	}
}

func benchRW1(b *testing.B) []byte {
	req := &prompb.WriteRequest{}
	for i := range benchSeries {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:  lbls(benchLabels(i)...),
			Samples: []prompb.Sample{{Value: float64(i) * 1.5, Timestamp: 1_700_000_000_000 + int64(i)}},
		})
	}
	return rw1Body(b, req)
}

func benchRW2(b *testing.B) []byte {
	w := newRW2()
	for i := range benchSeries {
		w.add(benchLabels(i), writev2.Metadata_METRIC_TYPE_COUNTER, "Node metric.",
			[]writev2.Sample{{Value: float64(i) * 1.5, Timestamp: 1_700_000_000_000 + int64(i)}}, nil)
	}
	return rw2Body(b, w.build())
}

// BenchmarkRemoteWriteDecode measures the relay path of a remote_write
// request up to the Store: snappy (pooled buffer), the generated protobuf
// decoding, validation and the split; "+wal_record" adds the relay
// record's encoding for the write-ahead log. Compare with SPEC 10's
// figures: generated prompb decoding tops out near 4.6 M samples/s per core.
func BenchmarkRemoteWriteDecode(b *testing.B) {
	lim := configs.Default().Limits
	for _, bc := range []struct {
		name string
		v    rwVersion
		body func(*testing.B) []byte
		wal  bool
	}{
		{"v1", rwV1, benchRW1, false},
		{"v1+wal_record", rwV1, benchRW1, true},
		{"v2", rwV2, benchRW2, false},
		{"v2+wal_record", rwV2, benchRW2, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := bc.body(b)
			var pool bufPool
			// Metadata a Prometheus sent before, in a request of its own.
			meta := newMetadataCache()
			for i := range 50 {
				meta.update([]prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: fmt.Sprintf("node_metric_%d_total", i), Help: "Node metric."}})
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				dec, err := decodeRemoteWrite(&pool, bc.v, body, lim, nil, meta)
				if err != nil {
					b.Fatal(err)
				}
				if dec.relayFloats != benchSeries {
					b.Fatalf("relayed %d samples", dec.relayFloats)
				}
				if bc.wal {
					if _, err := aggregate.EncodeOp(&aggregate.Op{Type: aggregate.RecordRelay, Time: time.Unix(0, 0), Relay: dec.write.Relay}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(benchSeries)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

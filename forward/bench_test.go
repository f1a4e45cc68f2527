package forward

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
)

// benchBatch is a 2,000-sample batch shaped like a Sluice window: 200
// families of 10 series with 6 labels each, every family with metadata.
func benchBatch() []sample {
	batch := make([]sample, 0, 2000)
	for f := range 200 {
		md := &prompb.MetricMetadata{
			Type:             prompb.MetricMetadata_COUNTER,
			MetricFamilyName: "app_requests_" + strconv.Itoa(f),
			Help:             "Requests handled by the application, by route and status.",
		}
		for s := range 10 {
			batch = append(batch, sample{
				lset: labels.FromStrings(
					"__name__", md.MetricFamilyName+"_total",
					"clear_mode", "sum",
					"instance", "fn-"+strconv.Itoa(s),
					"job", "checkout",
					"route", "/api/v1/orders",
					"status", strconv.Itoa(200+s),
				),
				meta: md,
				t:    1_700_000_000_000,
				v:    float64(f*10 + s),
			})
		}
	}
	return batch
}

func BenchmarkEncode(b *testing.B) {
	batch := benchBatch()
	for _, bc := range []struct {
		name, msg string
	}{
		{"rw1", configs.ProtoMsgV1},
		{"rw2", configs.ProtoMsgV2},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEncoder(bc.msg)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				body, err := e.encode(batch)
				if err != nil {
					b.Fatal(err)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size)/float64(len(batch)), "B/sample")
		})
	}
}

// BenchmarkAppend measures what Append costs the caller for one target:
// label conversion, external labels, relabelling and the copy into shards.
func BenchmarkAppend(b *testing.B) {
	cfg := configs.NewRemoteWriteConfig("http://127.0.0.1:1/w")
	cfg.QueueConfig.Capacity = 1 << 20
	tg, err := newTarget(cfg, map[string]string{"cluster": "eu-1"}, "ua", discardLogger(), newMetrics(nil), time.Now)
	if err != nil {
		b.Fatal(err)
	}
	defer tg.client.close()
	req := &prompb.WriteRequest{}
	for _, s := range benchBatch() {
		ts := prompb.TimeSeries{Samples: []prompb.Sample{{Timestamp: s.t, Value: s.v}}}
		s.lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		req.Timeseries = append(req.Timeseries, ts)
	}
	var drained []sample
	b.ReportAllocs()
	for b.Loop() {
		tg.append(convert(req), false)
		for _, s := range tg.shards {
			drained = s.buf.pop(drained[:0], s.buf.len())
		}
	}
}

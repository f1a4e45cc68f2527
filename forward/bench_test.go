package forward

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

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

// benchRequest is benchBatch as the WriteRequest a window arrives in.
func benchRequest() *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	seen := map[string]bool{}
	for _, s := range benchBatch() {
		ts := prompb.TimeSeries{Samples: []prompb.Sample{{Timestamp: s.t, Value: s.v}}}
		s.lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		req.Timeseries = append(req.Timeseries, ts)
		if !seen[s.meta.MetricFamilyName] {
			seen[s.meta.MetricFamilyName] = true
			req.Metadata = append(req.Metadata, *s.meta)
		}
	}
	return req
}

// BenchmarkAppend measures what Append costs the caller for one target:
// label conversion, external labels, relabelling, encoding the frame and
// writing it to the backlog.
func BenchmarkAppend(b *testing.B) {
	cfg := configs.NewRemoteWriteConfig("http://127.0.0.1:1/w")
	tg := newTestTarget(b, cfg, map[string]string{"cluster": "eu-1"})
	req := benchRequest()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tg.append(convert(req), false)
		if i++; i%64 == 0 {
			b.StopTimer()
			readBacklog(b, tg.q) // keep the disk use bounded
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(tg.q.appended)/float64(i)/2000, "disk-B/sample")
}

// BenchmarkAppendSend measures a 2,000-sample window's whole way through
// the disk backlog: Append (encode, write), the dispatcher (read, decode,
// route), the shards (encode, send) and the cursor, against a receiver on
// 127.0.0.1 that discards the body.
func BenchmarkAppendSend(b *testing.B) {
	for _, bc := range []struct {
		name   string
		shards int
	}{
		{"1 shard", 1},
		{"4 shards", 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			got := make(chan struct{}, 16)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusNoContent)
				got <- struct{}{}
			}))
			defer srv.Close()
			m := NewManager(discardLogger(), nil, "ua", b.TempDir())
			defer func() { _ = m.Stop(context.Background()) }()
			cfg := configs.NewRemoteWriteConfig(srv.URL)
			cfg.QueueConfig.MaxShards = bc.shards
			if err := m.ApplyConfig([]configs.RemoteWriteConfig{cfg}, map[string]string{"cluster": "eu-1"}); err != nil {
				b.Fatal(err)
			}
			req := benchRequest()
			// One request per shard that gets samples of the window.
			hit := map[uint64]bool{}
			for _, s := range benchBatch() {
				ls := labels.NewBuilder(s.lset).Set("cluster", "eu-1").Labels()
				hit[ls.Hash()%uint64(bc.shards)] = true
			}
			b.ReportAllocs()
			for b.Loop() {
				m.Append(req)
				for range hit {
					<-got
				}
			}
		})
	}
}

package ingest

import (
	"fmt"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// benchText is a 25-line text format body: 3 families, 16 series.
func benchText() []byte {
	var b strings.Builder
	b.WriteString("# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n")
	for i := range 10 {
		fmt.Fprintf(&b, "http_requests_total{code=\"200\",handler=\"/api/v%d\",method=\"get\"} %d\n", i, 1000+i)
	}
	b.WriteString("# TYPE queue_depth gauge\n")
	for i := range 5 {
		fmt.Fprintf(&b, "queue_depth{queue=\"q%d\"} %d.5\n", i, i)
	}
	b.WriteString("# TYPE rpc_seconds histogram\n")
	for _, le := range []string{"0.01", "0.1", "1", "+Inf"} {
		fmt.Fprintf(&b, "rpc_seconds_bucket{le=%q} 7\n", le)
	}
	b.WriteString("rpc_seconds_sum 1.25\nrpc_seconds_count 7\n")
	return []byte(b.String())
}

// benchOpenMetrics is the OpenMetrics counterpart of benchText.
func benchOpenMetrics() []byte {
	text := strings.Replace(string(benchText()), "# TYPE http_requests_total counter", "# TYPE http_requests counter", 1)
	text = strings.Replace(text, "# HELP http_requests_total", "# HELP http_requests", 1)
	return []byte(text + "# EOF\n")
}

// benchProto is a delimited protobuf body with 25 series in 3 families.
func benchProto(b testing.TB) []byte {
	counter := &dto.MetricFamily{Name: proto.String("http_requests_total"), Help: proto.String("Requests served."), Type: dto.MetricType_COUNTER.Enum()}
	for i := range 15 {
		counter.Metric = append(counter.Metric, &dto.Metric{
			Label: []*dto.LabelPair{
				{Name: proto.String("code"), Value: proto.String("200")},
				{Name: proto.String("handler"), Value: proto.String(fmt.Sprintf("/api/v%d", i))},
				{Name: proto.String("method"), Value: proto.String("get")},
			},
			Counter: &dto.Counter{Value: proto.Float64(float64(1000 + i))},
		})
	}
	gauge := &dto.MetricFamily{Name: proto.String("queue_depth"), Type: dto.MetricType_GAUGE.Enum()}
	for i := range 9 {
		gauge.Metric = append(gauge.Metric, &dto.Metric{
			Label: []*dto.LabelPair{{Name: proto.String("queue"), Value: proto.String(fmt.Sprintf("q%d", i))}},
			Gauge: &dto.Gauge{Value: proto.Float64(float64(i) + 0.5)},
		})
	}
	hist := &dto.MetricFamily{Name: proto.String("rpc_seconds"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{
		Histogram: &dto.Histogram{SampleCount: proto.Uint64(7), SampleSum: proto.Float64(1.25), Bucket: []*dto.Bucket{
			{UpperBound: proto.Float64(0.01), CumulativeCount: proto.Uint64(7)},
			{UpperBound: proto.Float64(0.1), CumulativeCount: proto.Uint64(7)},
			{UpperBound: proto.Float64(1), CumulativeCount: proto.Uint64(7)},
		}},
	}}}
	return encodeDelimited(b, counter, gauge, hist)
}

func BenchmarkDecodeBody(b *testing.B) {
	text := benchText()
	protoBody := benchProto(b)
	cases := []struct {
		name, contentType, encoding string
		body                        []byte
	}{
		{"text", contentTypeText, "", text},
		{"protobuf", contentTypeProto, "", protoBody},
		{"openmetrics", contentTypeOpenMetrics, "", benchOpenMetrics()},
		{"text_gzip", contentTypeText, "gzip", gzipped(b, text)},
		{"protobuf_snappy", contentTypeProto, "snappy", snappyFramed(b, protoBody)},
	}
	lim := BodyLimits{MaxDecompressedBytes: 64 << 20}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			if fams, err := DecodeBody(tc.contentType, tc.encoding, tc.body, lim); err != nil || len(fams) != 3 {
				b.Fatalf("got %d families, error %v; want 3 families", len(fams), err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				if _, err := DecodeBody(tc.contentType, tc.encoding, tc.body, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What the push handler does: a pooled Decoder, reset after each push.
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"text_decoder", contentTypeText, text},
		{"protobuf_decoder", contentTypeProto, protoBody},
		// What client_golang's push sends: created timestamps included.
		{"protobuf_client_golang_decoder", contentTypeProto, registryProto(b)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var d Decoder
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				if _, err := d.Decode(tc.contentType, "", tc.body, lim); err != nil {
					b.Fatal(err)
				}
				d.Reset()
			}
		})
	}
	// A route's kept decoder taking the next push of the same shape by
	// its values (refill): two bodies that differ in every value, in turn.
	b.Run("text_refill", func(b *testing.B) {
		other := []byte(strings.NewReplacer(" 10", " 20", ".5\n", ".25\n", "} 7\n", "} 9\n", "_sum 1.25", "_sum 2.5", "_count 7", "_count 9").Replace(string(text)))
		bodies := [2][]byte{text, other}
		var d Decoder
		if _, _, err := d.DecodePush(contentTypeText, "", text, lim); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(text)))
		i := 0
		for b.Loop() {
			i++
			if _, _, err := d.DecodePush(contentTypeText, "", bodies[i%2], lim); err != nil || !d.refilled {
				b.Fatalf("refilled %v, error %v", d.refilled, err)
			}
		}
	})
}

package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-metrics/sluice/aggregate"
)

const (
	contentTypeText        = "text/plain; version=0.0.4; charset=utf-8"
	contentTypeOpenMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	contentTypeProto       = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)

// familyFromText parses a metric family written in protobuf text format.
func familyFromText(t testing.TB, text string) *dto.MetricFamily {
	t.Helper()
	out := &dto.MetricFamily{}
	if err := prototext.Unmarshal([]byte(text), out); err != nil {
		t.Fatalf("bad expected family %q: %v", text, err)
	}
	return out
}

func familiesFromText(t testing.TB, texts ...string) []*dto.MetricFamily {
	t.Helper()
	out := make([]*dto.MetricFamily, 0, len(texts))
	for _, text := range texts {
		out = append(out, familyFromText(t, text))
	}
	return out
}

func assertFamilies(t *testing.T, got, want []*dto.MetricFamily) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d families, want %d:\n%s", len(got), len(want), formatFamilies(got))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("family %d:\ngot:  %s\nwant: %s", i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
	}
}

func formatFamilies(fams []*dto.MetricFamily) string {
	var b strings.Builder
	for _, f := range fams {
		b.WriteString(prototext.Format(f))
		b.WriteString("\n")
	}
	return b.String()
}

// assertMalformed checks err is a 400-class error: set, neither sentinel,
// and mentioning every wanted fragment.
func assertMalformed(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	if errors.Is(err, ErrBodyTooLarge) || errors.Is(err, ErrUnsupportedEncoding) {
		t.Fatalf("error %q wraps a sentinel, want a malformed-input error", err)
	}
	msg := err.Error()
	if msg != strings.ToLower(msg[:1])+msg[1:] {
		t.Errorf("error %q does not start lower-case", msg)
	}
	for _, f := range fragments {
		if !strings.Contains(msg, f) {
			t.Errorf("error %q does not mention %q", msg, f)
		}
	}
}

type decodeCase struct {
	name        string
	contentType string
	body        string
	want        []string // expected families in prototext, in order
	wantErr     []string // if set, DecodeBody must fail mentioning these
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBody(tc.contentType, "", []byte(tc.body), BodyLimits{MaxDecompressedBytes: 1 << 20})
			if tc.wantErr != nil {
				assertMalformed(t, err, tc.wantErr...)
				if got != nil {
					t.Errorf("got families along with the error: %s", formatFamilies(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertFamilies(t, got, familiesFromText(t, tc.want...))
		})
	}
}

func TestDecodeBodyText(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name:        "counter",
			contentType: contentTypeText,
			body:        "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{queue=\"a\"} 3\njobs_total{queue=\"b\"} 4\n",
			want: []string{`name: "jobs_total" help: "Jobs done." type: COUNTER
				metric { label { name: "queue" value: "a" } counter { value: 3 } }
				metric { label { name: "queue" value: "b" } counter { value: 4 } }`},
		},
		{
			name:        "gauge",
			contentType: contentTypeText,
			body:        "# TYPE temp gauge\ntemp{room=\"x\"} -1.5\n",
			want:        []string{`name: "temp" type: GAUGE metric { label { name: "room" value: "x" } gauge { value: -1.5 } }`},
		},
		{
			name:        "untyped without type line",
			contentType: "",
			body:        "up 1\n",
			want:        []string{`name: "up" type: UNTYPED metric { untyped { value: 1 } }`},
		},
		{
			name:        "histogram",
			contentType: contentTypeText,
			body: "# TYPE lat histogram\n" +
				"lat_bucket{le=\"0.5\"} 1\nlat_bucket{le=\"+Inf\"} 3\nlat_sum 4.5\nlat_count 3\n",
			want: []string{`name: "lat" type: HISTOGRAM metric { histogram {
				sample_count: 3 sample_sum: 4.5
				bucket { cumulative_count: 1 upper_bound: 0.5 }
				bucket { cumulative_count: 3 upper_bound: inf } } }`},
		},
		{
			name:        "summary",
			contentType: contentTypeText,
			body:        "# TYPE rt summary\nrt{quantile=\"0.5\"} 2\nrt{quantile=\"0.9\"} 7\nrt_sum 10\nrt_count 4\n",
			want: []string{`name: "rt" type: SUMMARY metric { summary {
				sample_count: 4 sample_sum: 10
				quantile { quantile: 0.5 value: 2 }
				quantile { quantile: 0.9 value: 7 } } }`},
		},
		{
			name:        "timestamps preserved",
			contentType: contentTypeText,
			body:        "# TYPE temp gauge\ntemp 21 1700000000123\n",
			want:        []string{`name: "temp" type: GAUGE metric { gauge { value: 21 } timestamp_ms: 1700000000123 }`},
		},
		{
			name:        "families sorted by name",
			contentType: contentTypeText,
			body:        "zeta 1\nalpha 2\nmid 3\n",
			want: []string{
				`name: "alpha" type: UNTYPED metric { untyped { value: 2 } }`,
				`name: "mid" type: UNTYPED metric { untyped { value: 3 } }`,
				`name: "zeta" type: UNTYPED metric { untyped { value: 1 } }`,
			},
		},
		{
			name:        "eof comment not on the last line stays text",
			contentType: contentTypeText,
			body:        "# EOF\n# TYPE c counter\nc 1\n",
			want:        []string{`name: "c" type: COUNTER metric { counter { value: 1 } }`},
		},
		{
			name:        "empty body",
			contentType: contentTypeText,
			body:        "",
		},
		{
			name:        "only comments",
			contentType: contentTypeText,
			body:        "# just a comment\n# TYPE lonely gauge\n",
		},
		{
			name:        "carriage return line ending",
			contentType: contentTypeText,
			body:        "up 1\r\ndown 0\r\n",
			wantErr:     []string{"line 1", `"1\r"`},
		},
		{
			name:        "bad value",
			contentType: contentTypeText,
			body:        "a 1\nb 2\nc x\n",
			wantErr:     []string{"text format parsing error in line 3: expected float as value, got \"x\""},
		},
		{
			name:        "invalid metric name",
			contentType: contentTypeText,
			body:        "1abc 1\n",
			wantErr:     []string{"line 1"},
		},
	})
}

func TestDecodeBodyOpenMetrics(t *testing.T) {
	const counterOM = "# TYPE e counter\ne_total 1\n# EOF\n"
	const counterWant = `name: "e_total" type: COUNTER metric { counter { value: 1 } }`
	runDecodeCases(t, []decodeCase{
		{name: "counter with openmetrics content type", contentType: contentTypeOpenMetrics, body: counterOM, want: []string{counterWant}},
		{name: "counter sniffed from eof in text/plain", contentType: contentTypeText, body: counterOM, want: []string{counterWant}},
		{name: "counter sniffed without content type", contentType: "", body: counterOM, want: []string{counterWant}},
		{name: "counter sniffed despite unparsable content type", contentType: "garbage;;", body: counterOM, want: []string{counterWant}},
		{name: "blank lines after eof", contentType: contentTypeOpenMetrics, body: counterOM + "\n\n", want: []string{counterWant}},
		// Guessed from "# EOF" but not OpenMetrics: the text format takes
		// it (the line is a comment there), as the Pushgateway does.
		{name: "text with eof and declared text", contentType: contentTypeText, body: "# TYPE eofc counter\neofc 1\n# EOF\n",
			want: []string{`name: "eofc" type: COUNTER metric { counter { value: 1 } }`}},
		{name: "untyped with eof and no content type", contentType: "", body: "# TYPE eofu untyped\neofu 1\n# EOF\n",
			want: []string{`name: "eofu" type: UNTYPED metric { untyped { value: 1 } }`}},
		{name: "openmetrics type still refused when declared", contentType: contentTypeOpenMetrics, body: "# TYPE eofu untyped\neofu 1\n# EOF\n",
			wantErr: []string{"untyped"}},
		{
			name:        "counter with help unit created and labels",
			contentType: contentTypeOpenMetrics,
			body: "# HELP io_bytes Bytes moved.\n# TYPE io_bytes counter\n# UNIT io_bytes bytes\n" +
				"io_bytes_total{dir=\"in\"} 10\nio_bytes_created{dir=\"in\"} 1700000000.5\nio_bytes_total{dir=\"out\"} 20\n# EOF\n",
			want: []string{`name: "io_bytes_total" help: "Bytes moved." unit: "bytes" type: COUNTER
				metric { label { name: "dir" value: "in" } counter { value: 10 created_timestamp { seconds: 1700000000 nanos: 500000000 } } }
				metric { label { name: "dir" value: "out" } counter { value: 20 } }`},
		},
		{
			name:        "gauge and unknown",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE temp gauge\ntemp 3\n# TYPE misc unknown\nmisc 4\n# EOF\n",
			want: []string{
				`name: "temp" type: GAUGE metric { gauge { value: 3 } }`,
				`name: "misc" type: UNTYPED metric { untyped { value: 4 } }`,
			},
		},
		{
			name:        "samples without type keep input order and timestamps",
			contentType: contentTypeOpenMetrics,
			body:        "zeta{x=\"1\"} 1 1700000000.5\nalpha 2\n# EOF\n",
			want: []string{
				`name: "zeta" type: UNTYPED metric { label { name: "x" value: "1" } untyped { value: 1 } timestamp_ms: 1700000000500 }`,
				`name: "alpha" type: UNTYPED metric { untyped { value: 2 } }`,
			},
		},
		{
			name:        "histogram with two label sets",
			contentType: contentTypeOpenMetrics,
			body: "# TYPE rpc_seconds histogram\n# UNIT rpc_seconds seconds\n# HELP rpc_seconds RPC latency.\n" +
				"rpc_seconds_bucket{path=\"/a\",le=\"0.1\"} 1\nrpc_seconds_bucket{path=\"/a\",le=\"1\"} 3\nrpc_seconds_bucket{path=\"/a\",le=\"+Inf\"} 4\n" +
				"rpc_seconds_count{path=\"/a\"} 4\nrpc_seconds_sum{path=\"/a\"} 2.5\nrpc_seconds_created{path=\"/a\"} 1700000000\n" +
				"rpc_seconds_bucket{path=\"/b\",le=\"0.1\"} 0\nrpc_seconds_bucket{path=\"/b\",le=\"1\"} 1\nrpc_seconds_bucket{path=\"/b\",le=\"+Inf\"} 2\n" +
				"rpc_seconds_sum{path=\"/b\"} 1.5\n# EOF\n",
			want: []string{`name: "rpc_seconds" help: "RPC latency." unit: "seconds" type: HISTOGRAM
				metric { label { name: "path" value: "/a" } histogram {
					sample_count: 4 sample_sum: 2.5
					bucket { cumulative_count: 1 upper_bound: 0.1 }
					bucket { cumulative_count: 3 upper_bound: 1 }
					created_timestamp { seconds: 1700000000 } } }
				metric { label { name: "path" value: "/b" } histogram {
					sample_count: 2 sample_sum: 1.5
					bucket { cumulative_count: 0 upper_bound: 0.1 }
					bucket { cumulative_count: 1 upper_bound: 1 } } }`},
		},
		{
			name:        "histogram with float counts",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE w histogram\nw_bucket{le=\"1\"} 0.5\nw_bucket{le=\"+Inf\"} 2\nw_count 2\nw_sum 1\n# EOF\n",
			want: []string{`name: "w" type: HISTOGRAM metric { histogram {
				sample_count_float: 2 sample_sum: 1
				bucket { cumulative_count_float: 0.5 upper_bound: 1 } } }`},
		},
		{
			name:        "gaugehistogram",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE queue gaugehistogram\nqueue_bucket{le=\"1\"} 2\nqueue_bucket{le=\"+Inf\"} 3\nqueue_gcount 3\nqueue_gsum 2.5\n# EOF\n",
			want: []string{`name: "queue" type: GAUGE_HISTOGRAM metric { histogram {
				sample_count: 3 sample_sum: 2.5
				bucket { cumulative_count: 2 upper_bound: 1 } } }`},
		},
		{
			name:        "summary with two label sets",
			contentType: contentTypeOpenMetrics,
			body: "# TYPE rpc_latency summary\n" +
				"rpc_latency{svc=\"x\",quantile=\"0.5\"} 0.2\nrpc_latency{svc=\"x\",quantile=\"0.99\"} 0.9\n" +
				"rpc_latency_count{svc=\"x\"} 10\nrpc_latency_sum{svc=\"x\"} 3\n" +
				"rpc_latency{svc=\"y\",quantile=\"0.5\"} 0.1\nrpc_latency_count{svc=\"y\"} 5\nrpc_latency_sum{svc=\"y\"} 0.5\n" +
				"rpc_latency_created{svc=\"y\"} 1700000000\n# EOF\n",
			want: []string{`name: "rpc_latency" type: SUMMARY
				metric { label { name: "svc" value: "x" } summary {
					sample_count: 10 sample_sum: 3
					quantile { quantile: 0.5 value: 0.2 }
					quantile { quantile: 0.99 value: 0.9 } } }
				metric { label { name: "svc" value: "y" } summary {
					sample_count: 5 sample_sum: 0.5
					quantile { quantile: 0.5 value: 0.1 }
					created_timestamp { seconds: 1700000000 } } }`},
		},
		{
			name:        "info",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE build info\n# HELP build Build data.\nbuild_info{version=\"1.2.3\"} 1\n# EOF\n",
			want: []string{`name: "build_info" help: "Build data." type: GAUGE
				metric { label { name: "version" value: "1.2.3" } gauge { value: 1 } }`},
		},
		{
			name:        "stateset",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE mode stateset\nmode{mode=\"a\"} 1\nmode{mode=\"b\"} 0\n# EOF\n",
			want: []string{`name: "mode" type: GAUGE
				metric { label { name: "mode" value: "a" } gauge { value: 1 } }
				metric { label { name: "mode" value: "b" } gauge { value: 0 } }`},
		},
		{
			name:        "exemplar ignored",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_total 1 # {trace_id=\"abc\"} 1 1700000000\n# EOF\n",
			want:        []string{counterWant},
		},
		{
			name:        "metadata without samples dropped",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE ghost gauge\n# HELP ghost Nothing here.\n# TYPE e counter\ne_total 1\n# EOF\n",
			want:        []string{counterWant},
		},
		{name: "empty body", contentType: contentTypeOpenMetrics, body: ""},
		{name: "only eof", contentType: contentTypeOpenMetrics, body: "# EOF\n"},
		{
			name:        "bad value",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_total x\n# EOF\n",
			wantErr:     []string{"openmetrics parsing error in line 2", `"x"`},
		},
		{
			// As client_golang's push sends OpenMetrics: no # EOF.
			name:        "missing eof",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_total 1\n",
			want:        []string{counterWant},
		},
		{
			name:        "missing eof and final newline",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_total 1",
			want:        []string{counterWant},
		},
		{
			name:        "data after eof",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\n# EOF\ne_total 1\n",
			wantErr:     []string{"openmetrics parsing error"},
		},
		{
			name:        "counter sample without total suffix",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne 1\n# EOF\n",
			wantErr:     []string{"line 2", `sample "e" does not belong to counter metric family "e"`},
		},
		{
			name:        "interleaved families",
			contentType: contentTypeOpenMetrics,
			body:        "a 1\nb 1\na{x=\"y\"} 2\n# EOF\n",
			wantErr:     []string{"line 3", `metric family "a" appears more than once`},
		},
		{
			name:        "duplicate sample",
			contentType: contentTypeOpenMetrics,
			body:        "a{x=\"1\"} 1\na{x=\"1\"} 2\n# EOF\n",
			wantErr:     []string{"line 2", `duplicate sample a{x="1"}`},
		},
		{
			name:        "two families with the same dto name",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_total 1\n# TYPE f gauge\nf 1\ne_total 2\n# EOF\n",
			wantErr:     []string{`duplicate metric family "e_total"`},
		},
		{
			name:        "metadata after samples",
			contentType: contentTypeOpenMetrics,
			body:        "a 1\n# HELP a late\n# EOF\n",
			wantErr:     []string{"line 2", `metadata for metric family "a" after its samples`},
		},
		{
			name:        "bucket without le",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE h histogram\nh_bucket 1\n# EOF\n",
			wantErr:     []string{"line 2", "no le label"},
		},
		{
			name:        "negative bucket count",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE h histogram\nh_bucket{le=\"1\"} -1\n# EOF\n",
			wantErr:     []string{"line 2", "count -1"},
		},
		{
			name:        "created without total",
			contentType: contentTypeOpenMetrics,
			body:        "# TYPE e counter\ne_created 1700000000\n# EOF\n",
			wantErr:     []string{"line 2", "has no e_total sample"},
		},
		{
			name:        "quoted utf-8 names",
			contentType: contentTypeOpenMetrics,
			body:        "{\"my.metric\",\"a.b\"=\"c\"} 1\n# EOF\n",
			want:        []string{`name: "my.metric" type: UNTYPED metric { label { name: "a.b" value: "c" } untyped { value: 1 } }`},
		},
		{
			name:        "empty label name",
			contentType: contentTypeOpenMetrics,
			body:        "a{\"\"=\"x\"} 1\n# EOF\n",
			wantErr:     []string{"line 1", "empty label name"},
		},
		{
			name:        "duplicate label",
			contentType: contentTypeOpenMetrics,
			body:        "a{x=\"1\",x=\"2\"} 1\n# EOF\n",
			wantErr:     []string{`duplicate label "x"`},
		},
	})
}

func encodeDelimited(t testing.TB, fams ...*dto.MetricFamily) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := protodelim.MarshalTo(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestDecodeBodyProtobuf(t *testing.T) {
	counter := familyFromText(t, `name: "jobs_total" help: "Jobs." type: COUNTER
		metric { label { name: "q" value: "a" } counter { value: 3 created_timestamp { seconds: 1700000000 } } timestamp_ms: 1700000000123 }`)
	hist := familyFromText(t, `name: "lat" type: HISTOGRAM metric { histogram {
		sample_count: 3 sample_sum: 1.5
		bucket { cumulative_count: 1 upper_bound: 0.5 }
		bucket { cumulative_count: 3 upper_bound: 1 } } }`)
	summary := familyFromText(t, `name: "rt" type: SUMMARY metric { summary { sample_count: 2 sample_sum: 3 quantile { quantile: 0.5 value: 1 } } }`)
	gaugeV1 := familyFromText(t, `name: "temp" type: GAUGE metric { gauge { value: 1 } }`)
	gaugeV2 := familyFromText(t, `name: "temp" type: GAUGE metric { gauge { value: 2 } } metric { label { name: "x" value: "y" } gauge { value: 5 } }`)

	full := encodeDelimited(t, counter, hist, summary)
	huge := append([]byte{0xff, 0xff, 0xff, 0x7f}, full...) // claims a ~256 MiB message

	cases := []struct {
		name        string
		contentType string
		body        []byte
		want        []*dto.MetricFamily
		wantErr     []string
		wantEOF     bool // the error must wrap io.ErrUnexpectedEOF
	}{
		{name: "round trip", contentType: contentTypeProto, body: full, want: []*dto.MetricFamily{counter, hist, summary}},
		{
			name:        "params in the other order",
			contentType: "application/vnd.google.protobuf; encoding=delimited; proto=io.prometheus.client.MetricFamily",
			body:        full,
			want:        []*dto.MetricFamily{counter, hist, summary},
		},
		{
			name:        "duplicate family last wins in first position",
			contentType: contentTypeProto,
			body:        encodeDelimited(t, gaugeV1, counter, gaugeV2),
			want:        []*dto.MetricFamily{gaugeV2, counter},
		},
		{name: "empty body", contentType: contentTypeProto, body: nil},
		{
			name:        "truncated stream",
			contentType: contentTypeProto,
			body:        full[:len(full)-3],
			wantErr:     []string{"decode protobuf metric family 3", "unexpected EOF"},
			wantEOF:     true,
		},
		{
			name:        "length prefix larger than the body",
			contentType: contentTypeProto,
			body:        huge,
			wantErr:     []string{"decode protobuf metric family 1", "only"},
			wantEOF:     true,
		},
		{
			name:        "garbage",
			contentType: contentTypeProto,
			body:        []byte{0x03, 0xff, 0xff, 0xff},
			wantErr:     []string{"decode protobuf metric family 1"},
		},
		{
			name:        "family without name",
			contentType: contentTypeProto,
			body:        encodeDelimited(t, familyFromText(t, `type: GAUGE metric { gauge { value: 1 } }`)),
			wantErr:     []string{"metric family has no name"},
		},
		{
			name:        "family without type is a counter",
			contentType: contentTypeProto,
			body:        encodeDelimited(t, familyFromText(t, `name: "x" metric { counter { value: 1 } }`)),
			want:        []*dto.MetricFamily{familyFromText(t, `name: "x" type: COUNTER metric { counter { value: 1 } }`)},
		},
		{
			name:        "family without type and a gauge value",
			contentType: contentTypeProto,
			body:        encodeDelimited(t, familyFromText(t, `name: "x" metric { gauge { value: 1 } }`)),
			wantErr:     []string{`"x"`},
		},
		{
			name:        "metric value not matching the type",
			contentType: contentTypeProto,
			body:        encodeDelimited(t, familyFromText(t, `name: "x" type: COUNTER metric { gauge { value: 1 } }`)),
			wantErr:     []string{`COUNTER metric family "x" has no counter value`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBody(tc.contentType, "", tc.body, BodyLimits{MaxDecompressedBytes: 1 << 20})
			if tc.wantErr != nil {
				assertMalformed(t, err, tc.wantErr...)
				if tc.wantEOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("error %q does not wrap io.ErrUnexpectedEOF", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			assertFamilies(t, got, tc.want)
		})
	}
}

func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func snappyFramed(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	sw := snappy.NewBufferedWriter(&buf)
	if _, err := sw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeBodyContentEncoding(t *testing.T) {
	text := []byte("# TYPE temp gauge\ntemp 21\n")
	want := familiesFromText(t, `name: "temp" type: GAUGE metric { gauge { value: 21 } }`)
	proto := encodeDelimited(t, want...)
	gz := gzipped(t, text)

	cases := []struct {
		name        string
		contentType string
		encoding    string
		body        []byte
		limit       int64
		want        []*dto.MetricFamily
		wantIs      error    // sentinel the error must wrap
		wantErr     []string // fragments of a malformed-input error, or of the sentinel error
	}{
		{name: "identity", encoding: "identity", body: text, want: want},
		{name: "gzip text", encoding: "gzip", body: gz, want: want},
		{name: "gzip case and spaces", encoding: "  GZip ", body: gz, want: want},
		{name: "gzip protobuf", contentType: contentTypeProto, encoding: "gzip", body: gzipped(t, proto), want: want},
		{name: "gzip openmetrics", contentType: contentTypeOpenMetrics, encoding: "gzip", body: gzipped(t, []byte("# TYPE temp gauge\ntemp 21\n# EOF\n")), want: want},
		{name: "snappy stream", encoding: "snappy", body: snappyFramed(t, text), want: want},
		{name: "snappy stream protobuf", contentType: contentTypeProto, encoding: "snappy", body: snappyFramed(t, proto), want: want},
		{name: "gzip empty body", encoding: "gzip", body: nil},
		{name: "gzip of nothing", encoding: "gzip", body: gzipped(t, nil)},
		{name: "decompressed exactly at the limit", encoding: "gzip", body: gz, limit: int64(len(text)), want: want},
		{name: "bad gzip", encoding: "gzip", body: []byte("definitely not gzip"), wantErr: []string{"decompress gzip body", "invalid header"}},
		{name: "truncated gzip", encoding: "gzip", body: gz[:len(gz)-5], wantErr: []string{"decompress gzip body: unexpected EOF"}},
		{name: "snappy block format is not the stream format", encoding: "snappy", body: snappy.Encode(nil, text), wantErr: []string{"decompress snappy body"}},
		{name: "brotli unsupported", encoding: "br", body: text, wantIs: ErrUnsupportedEncoding, wantErr: []string{`"br"`}},
		{name: "deflate unsupported", encoding: "deflate", body: text, wantIs: ErrUnsupportedEncoding, wantErr: []string{`"deflate"`}},
		{name: "unsupported even when empty", encoding: "br", body: nil, wantIs: ErrUnsupportedEncoding},
		{name: "identity over the limit", body: text, limit: int64(len(text)) - 1, wantIs: ErrBodyTooLarge, wantErr: []string{"exceeds 25 bytes"}},
		{name: "gzip over the limit", encoding: "gzip", body: gz, limit: int64(len(text)) - 1, wantIs: ErrBodyTooLarge, wantErr: []string{"decompressed body exceeds 25 bytes"}},
		{name: "snappy over the limit", encoding: "snappy", body: snappyFramed(t, text), limit: 10, wantIs: ErrBodyTooLarge, wantErr: []string{"exceeds 10 bytes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = 1 << 20
			}
			got, err := DecodeBody(tc.contentType, tc.encoding, tc.body, BodyLimits{MaxDecompressedBytes: limit})
			switch {
			case tc.wantIs != nil:
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("got error %v, want one wrapping %v", err, tc.wantIs)
				}
				for _, f := range tc.wantErr {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("error %q does not mention %q", err, f)
					}
				}
			case tc.wantErr != nil:
				assertMalformed(t, err, tc.wantErr...)
			default:
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				assertFamilies(t, got, tc.want)
			}
		})
	}
}

func TestDecodeBodyDefaultLimit(t *testing.T) {
	// A zero BodyLimits still bounds decompression, at 64 MiB. The bomb here
	// is 65 concatenated gzip members of 1 MiB of zeros each, which gzip
	// readers inflate as one stream.
	member := gzipBomb(t, 1<<20)
	bomb := bytes.Repeat(member, 65)
	_, err := DecodeBody("", "gzip", bomb, BodyLimits{})
	if !errors.Is(err, ErrBodyTooLarge) || !strings.Contains(err.Error(), "decompressed body exceeds 67108864 bytes") {
		t.Fatalf("got %v, want ErrBodyTooLarge naming 67108864 bytes", err)
	}
}

// gzipBomb compresses n zero bytes by streaming them through gzip.Writer,
// never holding the uncompressed data. BestSpeed keeps this quick under the
// race detector while still compressing zeros about 800 to 1.
func gzipBomb(t testing.TB, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for n > 0 {
		chunk := min(n, len(zeros))
		if _, err := zw.Write(zeros[:chunk]); err != nil {
			t.Fatal(err)
		}
		n -= chunk
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeBodyGzipBomb(t *testing.T) {
	bomb := gzipBomb(t, 200<<20)
	const limit = 1 << 20

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	fams, err := DecodeBody(contentTypeText, "gzip", bomb, BodyLimits{MaxDecompressedBytes: limit})
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	if !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("got %d families and error %v, want ErrBodyTooLarge", len(fams), err)
	}
	if !strings.Contains(err.Error(), "decompressed body exceeds 1048576 bytes") {
		t.Errorf("error %q does not name the limit", err)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 32<<20 {
		t.Errorf("decoding a %d-byte bomb allocated %d bytes, want < 32 MiB", len(bomb), allocated)
	} else {
		t.Logf("bomb of %d compressed bytes rejected after allocating %d bytes in %v", len(bomb), allocated, elapsed)
	}
	// Inflating all 200 MiB takes far longer than stopping after 1 MiB; be
	// generous for slow (race-enabled) runs.
	if elapsed > 5*time.Second {
		t.Errorf("rejecting the bomb took %v", elapsed)
	}
}

func TestDecodeBodyDoesNotRetainInput(t *testing.T) {
	// Families must stay valid after the caller reuses its body buffer.
	for _, tc := range []struct {
		name, contentType string
		body              []byte
	}{
		{"text", contentTypeText, []byte("# HELP g Some help.\n# TYPE g gauge\ng{a=\"b\"} 1\n")},
		{"openmetrics", contentTypeOpenMetrics, []byte("# HELP g Some help.\n# TYPE g gauge\ng{a=\"b\"} 1\n# EOF\n")},
		{"protobuf", contentTypeProto, encodeDelimited(t, familyFromText(t, `name: "g" help: "Some help." type: GAUGE metric { label { name: "a" value: "b" } gauge { value: 1 } }`))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := familiesFromText(t, `name: "g" help: "Some help." type: GAUGE metric { label { name: "a" value: "b" } gauge { value: 1 } }`)
			got, err := DecodeBody(tc.contentType, "", tc.body, BodyLimits{MaxDecompressedBytes: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.body {
				tc.body[i] = 'X'
			}
			assertFamilies(t, got, want)
		})
	}
}

// TestDecodeMemoryFollowsContent: what the pooled decoder allocates for a
// body follows the samples in it, not its size. Bodies of blank lines or
// of quotes used to reserve a metric per line and a label pair per pair
// of quotes up front: over 100 bytes per byte, gigabytes for a body at
// limits.max_decompressed_body_bytes.
func TestDecodeMemoryFollowsContent(t *testing.T) {
	const size = 1 << 20
	withNewline := func(b []byte) []byte { b[len(b)-1] = '\n'; return b }
	cases := []struct {
		name, contentType string
		body              []byte
	}{
		{name: "blank lines", contentType: contentTypeText, body: bytes.Repeat([]byte("\n"), size)},
		{name: "quotes", contentType: contentTypeText, body: withNewline(bytes.Repeat([]byte(`""`), size/2))},
		{name: "comment of quotes", contentType: contentTypeText, body: withNewline(append([]byte("# "), bytes.Repeat([]byte(`"`), size)...))},
		{name: "protobuf family of one long help", contentType: contentTypeProto,
			body: encodeDelimited(t, &dto.MetricFamily{Name: proto.String("g"), Help: proto.String(strings.Repeat("h", size)), Type: dto.MetricType_GAUGE.Enum(),
				Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: proto.Float64(1)}}}})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _ = d.Decode(tc.contentType, "", tc.body, BodyLimits{})
			runtime.ReadMemStats(&after)
			// The parser's copy of the body, a few small chunks, and room
			// for what the test itself and the runtime allocate meanwhile.
			if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(3*len(tc.body)+(2<<20)); got > limit {
				t.Fatalf("decoding a %d-byte body allocated %d bytes, more than %d", len(tc.body), got, limit)
			}
		})
	}
}

// TestDecodeRecorded: the body DecodePush reports as the families' source,
// which the write-ahead log records, decodes again to the same families.
func TestDecodeRecorded(t *testing.T) {
	text := []byte("# TYPE b counter\nb{x=\"1\"} 2\n# TYPE a gauge\na 1\n")
	for _, tc := range []struct {
		name, contentType, contentEncoding string
		body                               []byte
		format                             aggregate.BodyFormat
	}{
		{name: "text", contentType: contentTypeText, body: text, format: aggregate.BodyText},
		{name: "gzip text is recorded decompressed", contentType: contentTypeText, contentEncoding: "gzip", body: gzipped(t, text), format: aggregate.BodyText},
		{name: "openmetrics", contentType: contentTypeOpenMetrics, body: []byte("# TYPE e counter\ne_total 1\n# EOF\n"), format: aggregate.BodyOpenMetrics},
		{name: "protobuf", contentType: contentTypeProto, body: encodeDelimited(t,
			familyFromText(t, `name: "g" type: GAUGE metric { gauge { value: 1 } }`),
			familyFromText(t, `name: "c" type: COUNTER metric { counter { value: 2 } }`)), format: aggregate.BodyProtoDelimited},
		{name: "protobuf with a repeated family", contentType: contentTypeProto, body: encodeDelimited(t,
			familyFromText(t, `name: "g" type: GAUGE metric { gauge { value: 1 } }`),
			familyFromText(t, `name: "c" type: COUNTER metric { counter { value: 2 } }`),
			familyFromText(t, `name: "g" type: GAUGE metric { gauge { value: 3 } }`)), format: aggregate.BodyProtoDelimited},
		{name: "text the fast parser leaves to expfmt", contentType: contentTypeText, body: []byte("{\"a\",b=\"c\"} 1\n"), format: aggregate.BodyText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var live, replay Decoder
			fams, src, err := live.DecodePush(tc.contentType, tc.contentEncoding, tc.body, BodyLimits{})
			if err != nil {
				t.Fatal(err)
			}
			if src.Format != tc.format {
				t.Errorf("format %d, want %d", src.Format, tc.format)
			}
			if tc.contentEncoding == "" && !bytes.Equal(src.Body, tc.body) {
				t.Errorf("recorded body %q, want the body as sent", src.Body)
			}
			again, err := replay.DecodeRecorded(src.Format, src.Body)
			if err != nil {
				t.Fatal(err)
			}
			if len(again) != len(fams) || len(fams) == 0 {
				t.Fatalf("decoded again to %d families, the push had %d", len(again), len(fams))
			}
			for i := range fams {
				if !proto.Equal(again[i], fams[i]) {
					t.Errorf("family %d: got %v, want %v", i, again[i], fams[i])
				}
			}
		})
	}
	var d Decoder
	if _, err := d.DecodeRecorded(0, []byte("a 1\n")); err == nil || !strings.Contains(err.Error(), "unknown recorded body format") {
		t.Errorf("format 0: error %v, want unknown recorded body format", err)
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/valyala/fasthttp"
)

// v1Body builds a prometheus.WriteRequest with one series per entry of
// names, each with samples float samples, hist histograms and ex exemplars.
func v1Body(t testing.TB, names []string, samples, hist, ex int) []byte {
	t.Helper()
	var req prompb.WriteRequest
	for i, n := range names {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: n}, {Name: "i", Value: strings.Repeat("x", i)}}}
		for j := range samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Value: float64(j), Timestamp: int64(j)})
		}
		for range hist {
			ts.Histograms = append(ts.Histograms, prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 1}, Schema: 0})
		}
		for range ex {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Value: 1})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Metadata = []prompb.MetricMetadata{{MetricFamilyName: "m", Type: prompb.MetricMetadata_GAUGE}}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v2Body(t testing.TB, names []string, samples, hist, ex int) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	var req writev2.Request
	for _, n := range names {
		ts := writev2.TimeSeries{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize(n), st.Symbolize("job"), st.Symbolize("j")}}
		for j := range samples {
			ts.Samples = append(ts.Samples, writev2.Sample{Value: float64(j), Timestamp: int64(j)})
		}
		for range hist {
			ts.Histograms = append(ts.Histograms, writev2.Histogram{Count: &writev2.Histogram_CountInt{CountInt: 1}})
		}
		for range ex {
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{Value: 1})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCount(t *testing.T) {
	names := []string{"lt_a", "other", "lt_b"}
	for _, tc := range []struct {
		name    string
		v2      bool
		body    []byte
		prefix  string
		want    counts
		wantErr bool
	}{
		{name: "1.0 empty request", body: nil, want: counts{}},
		{name: "1.0 samples, no prefix matches all", body: v1Body(t, names, 2, 0, 0),
			want: counts{series: 3, samples: 6, matched: 6}},
		{name: "1.0 prefix matches two of three series", body: v1Body(t, names, 2, 1, 1), prefix: "lt_",
			want: counts{series: 3, samples: 6, histograms: 3, exemplars: 3, matched: 6}},
		{name: "1.0 prefix matching nothing", body: v1Body(t, names, 1, 0, 0), prefix: "nope",
			want: counts{series: 3, samples: 3}},
		{name: "1.0 truncated body", body: v1Body(t, names, 2, 0, 0)[:20], wantErr: true},
		{name: "1.0 garbage", body: []byte{0xff, 0xff, 0xff}, wantErr: true},
		{name: "2.0 samples, no prefix", v2: true, body: v2Body(t, names, 3, 0, 0),
			want: counts{series: 3, samples: 9, matched: 9}},
		{name: "2.0 prefix with histograms and exemplars", v2: true, body: v2Body(t, names, 0, 2, 1), prefix: "lt_",
			want: counts{series: 3, histograms: 6, exemplars: 3, matched: 4}},
		{name: "2.0 truncated body", v2: true, body: v2Body(t, names, 1, 0, 0)[:30], wantErr: true},
		{name: "2.0 symbol reference out of range", v2: true, prefix: "lt_", wantErr: true, body: func() []byte {
			req := writev2.Request{Symbols: []string{"", "__name__"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 9}}}}
			b, _ := req.Marshal()
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				got counts
				err error
			)
			if tc.v2 {
				got, _, err = countV2(tc.body, []byte(tc.prefix), nil)
			} else {
				got, err = countV1(tc.body, []byte(tc.prefix))
			}
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, counted %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("counted %+v, want %+v", got, tc.want)
			}
		})
	}
}

// startSink serves a sink on a free loopback port until the test ends.
func startSink(t *testing.T, prefix string) (*sink, string) {
	t.Helper()
	s := newSink(prefix, 0, 1<<20, io.Discard)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.handle}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return s, "http://" + ln.Addr().String()
}

func TestSinkCountsWhatTheGeneratorSent(t *testing.T) {
	for _, protocol := range []string{"1.0", "2.0"} {
		t.Run("protocol "+protocol, func(t *testing.T) {
			s, base := startSink(t, "loadtest_rw_")
			spec := rwSpec{prefix: "loadtest_rw", seriesPerRequest: 50, samplesPerSeries: 2, totalSeries: 120, protocol: protocol, sampleSpacing: time.Second}
			pool, err := newRWPool(spec, base+"/api/v1/write", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			hc, err := newHostClient(base, 4, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			res := run(context.Background(), "rw", base, loadFlags{concurrency: 4, requests: 30}, hc, pool)
			if res.OK != 30 || res.Errors != 0 || res.Mismatched != 0 {
				t.Fatalf("result %+v", res)
			}
			c := s.snapshot()
			// 30 requests cycle over bodies of 50, 50 and 20 series.
			wantSamples := uint64(10 * (50 + 50 + 20) * 2)
			if c.Requests != 30 || c.Samples != wantSamples || c.Matched != wantSamples || res.Samples != wantSamples {
				t.Errorf("sink counted %v, generator %d accepted samples; want %d", c, res.Samples, wantSamples)
			}
			if c.Series != wantSamples/2 {
				t.Errorf("sink counted %d series, want %d", c.Series, wantSamples/2)
			}
		})
	}
}

func TestSinkHTTP(t *testing.T) {
	s, base := startSink(t, "")
	body := snappy.Encode(nil, v2Body(t, []string{"a", "b"}, 2, 1, 0))
	for _, tc := range []struct {
		name        string
		contentType string
		encoding    string
		body        []byte
		wantCode    int
		wantHeaders map[string]string
	}{
		{"2.0 answers 204 with written headers", contentTypeRW2, "snappy", body, 204,
			map[string]string{"X-Prometheus-Remote-Write-Samples-Written": "4", "X-Prometheus-Remote-Write-Histograms-Written": "2", "X-Prometheus-Remote-Write-Exemplars-Written": "0"}},
		{"1.0 answers 204", contentTypeRW1, "snappy", snappy.Encode(nil, v1Body(t, []string{"a"}, 1, 0, 0)), 204, nil},
		{"no snappy is 415", contentTypeRW1, "", body, 415, nil},
		{"bad snappy is 400", contentTypeRW1, "snappy", []byte("not snappy"), 400, nil},
		{"malformed protobuf is 400", contentTypeRW1, "snappy", snappy.Encode(nil, []byte{0xff, 0xff}), 400, nil},
		{"decoded size over the limit is 413", contentTypeRW1, "snappy", snappy.Encode(nil, make([]byte, 2<<20)), 413, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", base+"/api/v1/write", strings.NewReader(string(tc.body)))
			req.Header.Set("Content-Type", tc.contentType)
			if tc.encoding != "" {
				req.Header.Set("Content-Encoding", tc.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			for k, v := range tc.wantHeaders {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}

	get := func() sinkCount {
		resp, err := http.Get(base + "/count")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c sinkCount
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := get()
	if c.Requests != 2 || c.Samples != 5 || c.Histograms != 2 || c.Matched != 7 || c.Errors != 4 {
		t.Errorf("GET /count = %v, want 2 requests, 5 samples, 2 histograms, 7 matched, 4 errors", c)
	}
	resp, err := http.Post(base+"/reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := get(); c.Requests != 0 || c.Samples != 0 || c.Errors != 0 {
		t.Errorf("after POST /reset: %v", c)
	}
	if s.snapshot().Complete {
		t.Error("complete without an expectation")
	}
}

func TestSinkExpectation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		requests int
		wantErr  bool
	}{
		{"fewer samples than expected fails", 1, true},
		{"exactly the expected samples passes", 2, false},
		{"more than expected (re-sent) passes", 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePortForTest(t)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				errc <- cmdSink(ctx, []string{"-listen", "127.0.0.1:" + port, "-expect-samples", "4", "-print-interval", "0"}, io.Discard, io.Discard)
			}()
			body := snappy.Encode(nil, v1Body(t, []string{"a", "b"}, 1, 0, 0))
			for i := 0; i < tc.requests; i++ {
				postWhenUp(t, "http://127.0.0.1:"+port+"/api/v1/write", body)
			}
			cancel()
			err := <-errc
			if (err != nil) != tc.wantErr {
				t.Errorf("sink exit error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func freePortForTest(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// postWhenUp posts a 1.0 body, retrying while the listener is not up yet.
func postWhenUp(t *testing.T, url string, body []byte) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", contentTypeRW1)
		req.Header.Set("Content-Encoding", "snappy")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 204 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			return
		}
		var op *net.OpError
		if !errors.As(err, &op) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

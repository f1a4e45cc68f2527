package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func oneToHundred() []time.Duration { return oneTo(100) }

func oneToThousand() []time.Duration { return oneTo(1000) }

func oneTo(n int) []time.Duration {
	v := make([]int, n)
	for i := range v {
		v[i] = i + 1
	}
	return ms(v...)
}

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty is zero", nil, 99, 0},
		{"single value is every percentile", ms(7), 50, 7 * time.Millisecond},
		{"p50 of 1..100 is 50", oneToHundred(), 50, 50 * time.Millisecond},
		{"p90 of 1..100 is 90", oneToHundred(), 90, 90 * time.Millisecond},
		{"p99 of 1..100 is 99", oneToHundred(), 99, 99 * time.Millisecond},
		{"p100 is the maximum", oneToHundred(), 100, 100 * time.Millisecond},
		{"p0 is the minimum", oneToHundred(), 0, 1 * time.Millisecond},
		{"nearest rank rounds up: p99 of two values is the larger", ms(10, 30), 99, 30 * time.Millisecond},
		{"p50 of two values is the smaller", ms(10, 30), 50, 10 * time.Millisecond},
		{"p99 of 1000 values is the 990th", oneToThousand(), 99, 990 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	a := newWorkerStats(4, false)
	a.latencies = ms(3, 1)
	a.statuses[200] = 2
	a.samples, a.attempted = 50, 50
	b := newWorkerStats(4, false)
	b.latencies = ms(2, 9)
	b.statuses[200] = 1
	b.statuses[503] = 1
	b.statuses[0] = 0
	b.firstErr[503] = "overloaded"
	b.samples, b.attempted = 25, 50
	r := summarize([]*workerStats{a, b}, 2*time.Second)
	if r.Requests != 4 || r.OK != 3 || r.Errors != 1 {
		t.Errorf("requests/ok/errors = %d/%d/%d, want 4/3/1", r.Requests, r.OK, r.Errors)
	}
	if r.Samples != 75 || r.Attempted != 100 {
		t.Errorf("samples = %d of %d, want 75 of 100", r.Samples, r.Attempted)
	}
	if r.ReqPerSec != 1.5 || r.SamplesPS != 37.5 {
		t.Errorf("rates = %g req/s %g samples/s, want 1.5 and 37.5", r.ReqPerSec, r.SamplesPS)
	}
	if r.P50 != 2 || r.P99 != 9 || r.Max != 9 {
		t.Errorf("p50/p99/max = %g/%g/%g ms, want 2/9/9", r.P50, r.P99, r.Max)
	}
	if r.Statuses["200"] != 3 || r.Statuses["503"] != 1 || r.FirstErrors["503"] != "overloaded" {
		t.Errorf("statuses %v, first errors %v", r.Statuses, r.FirstErrors)
	}

	var text, js bytes.Buffer
	if err := r.write(&text, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "p99 9.000 ms") || !strings.Contains(text.String(), "503:1") {
		t.Errorf("text report lacks p99 or statuses:\n%s", text.String())
	}
	if err := r.write(&js, true); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not decode: %v", err)
	}
	if back.P99 != 9 || back.Statuses["503"] != 1 {
		t.Errorf("JSON round trip lost fields: %+v", back)
	}
}

// TestLatencyFromSchedule: at a fixed rate, a request that falls due while
// every client waits for a stalled answer waits for one, and its latency
// from the schedule counts that wait while its latency from the send does
// not (coordinated omission). With a client free, one slow answer delays
// no other request.
func TestLatencyFromSchedule(t *testing.T) {
	for _, tc := range []struct {
		name              string
		concurrency       int
		rate              float64
		requests          uint64
		wantLateAtLeast   uint64
		wantLateAtMost    uint64
		wantSchedP99Above float64 // ms
		wantSchedP99Below float64 // ms; 0: no bound
	}{
		// Requests 6 to about 35 fall due during the 300 ms stall.
		{name: "one client, stalled", concurrency: 1, rate: 100, requests: 40, wantLateAtLeast: 20, wantLateAtMost: 40, wantSchedP99Above: 250},
		// Another client takes each request while one waits.
		{name: "clients free, one stalled", concurrency: 8, rate: 400, requests: 200, wantLateAtMost: 5, wantSchedP99Below: 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if n.Add(1) == 5 {
					time.Sleep(300 * time.Millisecond)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			pool, err := pushSpec{prefix: "t", groups: 1, series: 1, variants: 1, modes: []string{"sum"}, format: "text", job: "j", method: "POST"}.pool(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			hc, err := newHostClient(srv.URL, tc.concurrency, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			res := run(context.Background(), "push", srv.URL, loadFlags{concurrency: tc.concurrency, rate: tc.rate, requests: tc.requests}, hc, pushPool(pool))
			if res.OK != tc.requests {
				t.Fatalf("result %+v", res)
			}
			if res.Late < tc.wantLateAtLeast || res.Late > tc.wantLateAtMost || res.SchedP99 < tc.wantSchedP99Above ||
				(tc.wantSchedP99Below > 0 && res.SchedP99 > tc.wantSchedP99Below) {
				t.Errorf("%d waited for a client, from the schedule p99 %.1f ms; want %d to %d, and a p99 over %v ms (under %v)",
					res.Late, res.SchedP99, tc.wantLateAtLeast, tc.wantLateAtMost, tc.wantSchedP99Above, tc.wantSchedP99Below)
			}
			if res.Max < 250 || res.SchedMax < res.Max {
				t.Errorf("max %.1f ms from the send, %.1f ms from the schedule: the stalled answer is missing", res.Max, res.SchedMax)
			}
			if res.P90 > 100 {
				t.Errorf("p90 from the send %.1f ms: the waits counted there too", res.P90)
			}
			var text bytes.Buffer
			if err := res.write(&text, false); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), "from the schedule") {
				t.Errorf("text report lacks the latency from the schedule:\n%s", text.String())
			}
		})
	}
}

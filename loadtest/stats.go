package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must be in ascending order: the smallest value such that at
// least p% of the values are less than or equal to it. p <= 0 gives the
// minimum; an empty slice gives 0.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// millis is d in (fractional) milliseconds, as results report latencies.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// workerStats is what one worker records; only that worker touches it while
// the run lasts, so recording needs no lock.
type workerStats struct {
	latencies []time.Duration
	// fromSchedule are the latencies from when each request was handed
	// out (see run); with a rate only (without, they are latencies).
	fromSchedule []time.Duration
	late         uint64 // requests that waited for a free worker
	// statuses counts answers by HTTP status; 0 stands for "no answer"
	// (a connection or timeout error).
	statuses map[int]uint64
	// firstErr keeps the first error text seen per status, for the report.
	firstErr map[int]string
	// samples counts the samples of requests answered with a 2xx.
	samples uint64
	// attempted counts the samples of every request sent.
	attempted uint64
	// mismatched counts 2xx answers whose Remote-Write 2.0 "written"
	// header disagreed with what was sent.
	mismatched uint64
}

// newWorkerStats makes a worker's record, with room for capHint latencies
// (and as many from the schedule if scheduled: with a rate).
func newWorkerStats(capHint int, scheduled bool) *workerStats {
	ws := &workerStats{
		latencies: make([]time.Duration, 0, capHint),
		statuses:  map[int]uint64{},
		firstErr:  map[int]string{},
	}
	if scheduled {
		ws.fromSchedule = make([]time.Duration, 0, capHint)
	}
	return ws
}

// Result is the summary a generator prints, as text or JSON.
type Result struct {
	Command     string  `json:"command"`
	Target      string  `json:"target"`
	Concurrency int     `json:"concurrency"`
	TargetRate  float64 `json:"target_rate"`
	Elapsed     float64 `json:"elapsed_seconds"`
	Requests    uint64  `json:"requests"`
	OK          uint64  `json:"ok"`
	Errors      uint64  `json:"errors"`
	Samples     uint64  `json:"samples"`
	Attempted   uint64  `json:"samples_attempted"`
	Mismatched  uint64  `json:"written_header_mismatches"`
	ReqPerSec   float64 `json:"requests_per_second"`
	SamplesPS   float64 `json:"samples_per_second"`
	P50         float64 `json:"latency_p50_ms"`
	P90         float64 `json:"latency_p90_ms"`
	P99         float64 `json:"latency_p99_ms"`
	Max         float64 `json:"latency_max_ms"`
	// With a fixed rate: requests that waited for a free worker, and the
	// latencies counted from when each was handed out (see run).
	Late        uint64            `json:"late_requests"`
	SchedP99    float64           `json:"latency_from_schedule_p99_ms"`
	SchedMax    float64           `json:"latency_from_schedule_max_ms"`
	Statuses    map[string]uint64 `json:"statuses"`
	FirstErrors map[string]string `json:"first_errors,omitempty"`
}

// summarize merges the workers' records into a Result. It sorts the
// latencies in place.
func summarize(workers []*workerStats, elapsed time.Duration) Result {
	var sched []time.Duration // with a rate
	n := 0
	for _, w := range workers {
		n += len(w.latencies)
	}
	all := make([]time.Duration, 0, n)
	r := Result{Statuses: map[string]uint64{}, FirstErrors: map[string]string{}}
	for _, w := range workers {
		all = append(all, w.latencies...)
		sched = append(sched, w.fromSchedule...)
		r.Late += w.late
		r.Samples += w.samples
		r.Attempted += w.attempted
		r.Mismatched += w.mismatched
		for code, c := range w.statuses {
			key := statusKey(code)
			r.Statuses[key] += c
			r.Requests += c
			if code >= 200 && code < 300 {
				r.OK += c
			} else {
				r.Errors += c
			}
		}
		for code, msg := range w.firstErr {
			if _, ok := r.FirstErrors[statusKey(code)]; !ok {
				r.FirstErrors[statusKey(code)] = msg
			}
		}
	}
	slices.Sort(all)
	r.P50 = millis(percentile(all, 50))
	r.P90 = millis(percentile(all, 90))
	r.P99 = millis(percentile(all, 99))
	if len(all) > 0 {
		r.Max = millis(all[len(all)-1])
	}
	r.SchedP99, r.SchedMax = r.P99, r.Max // no rate: handed out at the send
	if len(sched) > 0 {
		slices.Sort(sched)
		r.SchedP99, r.SchedMax = millis(percentile(sched, 99)), millis(sched[len(sched)-1])
	}
	r.Elapsed = elapsed.Seconds()
	if r.Elapsed > 0 {
		r.ReqPerSec = float64(r.OK) / r.Elapsed
		r.SamplesPS = float64(r.Samples) / r.Elapsed
	}
	return r
}

func statusKey(code int) string {
	if code == 0 {
		return "error"
	}
	return strconv.Itoa(code)
}

// write prints r as JSON (one object) or as a short human-readable report.
func (r Result) write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		return enc.Encode(r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s -> %s: %d workers", r.Command, r.Target, r.Concurrency)
	if r.TargetRate > 0 {
		fmt.Fprintf(&b, ", target %.0f req/s", r.TargetRate)
	}
	fmt.Fprintf(&b, ", %.1f s\n", r.Elapsed)
	fmt.Fprintf(&b, "  requests   %d (%d ok, %d failed)  %.0f ok req/s\n", r.Requests, r.OK, r.Errors, r.ReqPerSec)
	fmt.Fprintf(&b, "  samples    %d accepted of %d sent  %.0f samples/s\n", r.Samples, r.Attempted, r.SamplesPS)
	fmt.Fprintf(&b, "  latency    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms\n", r.P50, r.P90, r.P99, r.Max)
	if r.TargetRate > 0 {
		fmt.Fprintf(&b, "  from the schedule  p99 %.3f ms  max %.3f ms  (%d requests waited for a free client)\n", r.SchedP99, r.SchedMax, r.Late)
	}
	keys := make([]string, 0, len(r.Statuses))
	for k := range r.Statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("  statuses  ")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s:%d", k, r.Statuses[k])
	}
	b.WriteString("\n")
	if r.Mismatched > 0 {
		fmt.Fprintf(&b, "  %d answers said fewer samples were written than sent\n", r.Mismatched)
	}
	for _, k := range keys {
		if msg, ok := r.FirstErrors[k]; ok {
			fmt.Fprintf(&b, "  first %s: %s\n", k, msg)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

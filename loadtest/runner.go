package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// request is one prepared request. Everything is built before the run, so
// sending one costs no encoding; a request is shared by every worker and must
// not be modified once handed out.
type request struct {
	uri         string
	method      string
	contentType string
	encoding    string // Content-Encoding, "" for none
	version     string // X-Prometheus-Remote-Write-Version, "" for none
	body        []byte
	// samples is how many samples the request carries (exposition lines for
	// pushes, samples plus histograms for remote_write).
	samples int
}

// source hands out the request to send as the seq-th of a run. It is called
// from every worker at once.
type source interface {
	request(seq uint64) *request
}

// loadFlags are the flags every generator shares.
type loadFlags struct {
	concurrency int
	rate        float64
	duration    time.Duration
	requests    uint64
	timeout     time.Duration
	json        bool
}

func (f *loadFlags) register(fs *flag.FlagSet, concurrency int) {
	fs.IntVar(&f.concurrency, "concurrency", concurrency, "concurrent clients, each with its own connection")
	fs.Float64Var(&f.rate, "rate", 0, "requests per second over all clients; 0 sends as fast as the target answers")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to send; 0 with -requests sends exactly that many")
	fs.Uint64Var(&f.requests, "requests", 0, "stop after this many requests (0: no limit, -duration ends the run)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.BoolVar(&f.json, "json", false, "print the result as one JSON object")
}

func (f *loadFlags) validate() error {
	if f.concurrency < 1 {
		return fmt.Errorf("-concurrency must be at least 1, got %d", f.concurrency)
	}
	if f.rate < 0 {
		return fmt.Errorf("-rate must not be negative, got %g", f.rate)
	}
	if f.duration <= 0 && f.requests == 0 {
		return errors.New("give -duration or -requests")
	}
	return nil
}

// newHostClient returns a fasthttp client for the host of rawURL with one
// connection per worker: fasthttp allocates nothing per request, which keeps
// the generator's share of the CPU small.
func newHostClient(rawURL string, conns int, timeout time.Duration) (*fasthttp.HostClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse url %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: scheme must be http or https", rawURL)
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(host, port)
	}
	return &fasthttp.HostClient{
		Addr:                          host,
		IsTLS:                         u.Scheme == "https",
		MaxConns:                      conns,
		ReadTimeout:                   timeout,
		WriteTimeout:                  timeout,
		MaxIdemponentCallAttempts:     1, // a failed request is a result, not something to hide
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
	}, nil
}

// run sends requests from src with f.concurrency workers until the duration
// or request count is reached or ctx is done, and summarizes the answers.
//
// Without a rate each worker sends its next request as soon as it has the
// answer to the last (a closed loop). With f.rate > 0 request i is due at
// start + i/rate, and a dispatcher hands it, when it falls due, to
// whichever worker is free, as independent clients would send it (an open
// loop, up to f.concurrency requests in flight). When none is free, the
// request waits for one: a slow target shows as a lower achieved rate and
// higher latencies rather than as a silently lower load. Latencies are
// from the send; each request also has a latency from when the dispatcher
// handed it out, which counts that wait (Result.SchedP99): without it a
// stall of the target shows only in the requests in flight ("coordinated
// omission"). It is taken from the hand-out, not the due time, so that the
// dispatcher's own timer slack is not the target's.
func run(ctx context.Context, name, target string, f loadFlags, hc *fasthttp.HostClient, src source) Result {
	var (
		next     atomic.Uint64
		wg       sync.WaitGroup
		start    = time.Now()
		deadline time.Time
		jobs     chan job // with a rate
	)
	if f.duration > 0 {
		deadline = start.Add(f.duration)
	}
	if f.rate > 0 {
		jobs = make(chan job)
		go dispatch(ctx, jobs, start, time.Duration(float64(time.Second)/f.rate), deadline, f.requests)
	}
	capHint := 1 << 14
	switch {
	case f.requests > 0:
		capHint = int(f.requests/uint64(f.concurrency)) + 1
	case f.rate > 0:
		capHint = int(f.rate*f.duration.Seconds())/f.concurrency + 1
	}
	workers := make([]*workerStats, f.concurrency)
	for i := range workers {
		workers[i] = newWorkerStats(capHint, jobs != nil)
	}
	for _, ws := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			if jobs != nil {
				for j := range jobs {
					send(hc, req, resp, src.request(j.seq), ws, j)
				}
				return
			}
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				if f.requests > 0 && seq >= f.requests {
					return
				}
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				send(hc, req, resp, src.request(seq), ws, job{seq: seq})
			}
		}()
	}
	wg.Wait()
	r := summarize(workers, time.Since(start))
	r.Command, r.Target, r.Concurrency, r.TargetRate = name, target, f.concurrency, f.rate
	return r
}

// job is a request the dispatcher hands out.
type job struct {
	seq uint64
	// at is when the dispatcher handed it out, or began to wait for a
	// free worker; zero without a rate.
	at time.Time
	// late: no worker was free at that moment.
	late bool
}

// dispatch hands request seq to a free worker at start + seq*interval,
// until deadline (if not zero), requests (if not 0) or ctx; then it closes
// jobs.
func dispatch(ctx context.Context, jobs chan<- job, start time.Time, interval time.Duration, deadline time.Time, requests uint64) {
	defer close(jobs)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := uint64(0); ctx.Err() == nil; seq++ {
		if requests > 0 && seq >= requests {
			return
		}
		due := start.Add(time.Duration(seq) * interval)
		if !deadline.IsZero() && !due.Before(deadline) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		j := job{seq: seq, at: time.Now()}
		select {
		case jobs <- j:
			continue
		default:
		}
		j.late = true
		select {
		case jobs <- j:
		case <-ctx.Done():
			return
		}
	}
}

// send does one request, j's, and records its outcome in ws.
func send(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, rq *request, ws *workerStats, j job) {
	req.Reset()
	req.SetRequestURI(rq.uri)
	req.Header.SetMethod(rq.method)
	req.Header.SetContentType(rq.contentType)
	if rq.encoding != "" {
		req.Header.Set("Content-Encoding", rq.encoding)
	}
	if rq.version != "" {
		req.Header.Set("X-Prometheus-Remote-Write-Version", rq.version)
	}
	req.SetBodyRaw(rq.body)
	resp.Reset()
	t0 := time.Now()
	err := hc.Do(req, resp)
	end := time.Now()
	ws.latencies = append(ws.latencies, end.Sub(t0))
	if !j.at.IsZero() {
		ws.fromSchedule = append(ws.fromSchedule, end.Sub(j.at))
	}
	if j.late {
		ws.late++
	}
	ws.attempted += uint64(rq.samples)
	code := 0
	if err == nil {
		code = resp.StatusCode()
	}
	ws.statuses[code]++
	switch {
	case err != nil:
		if _, ok := ws.firstErr[0]; !ok {
			ws.firstErr[0] = err.Error()
		}
	case code >= 200 && code < 300:
		ws.samples += uint64(rq.samples)
		if rq.version == rw2Version {
			if h := resp.Header.Peek("X-Prometheus-Remote-Write-Samples-Written"); h != nil {
				n, _ := strconv.Atoi(string(h))
				hist, _ := strconv.Atoi(string(resp.Header.Peek("X-Prometheus-Remote-Write-Histograms-Written")))
				if n+hist != rq.samples {
					ws.mismatched++
				}
			}
		}
	default:
		if _, ok := ws.firstErr[code]; !ok {
			ws.firstErr[code] = strings.TrimSpace(firstLine(resp.Body(), 200))
		}
	}
}

// firstLine returns the first line of b, at most n bytes of it.
func firstLine(b []byte, n int) string {
	if i := strings.IndexByte(string(b), '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

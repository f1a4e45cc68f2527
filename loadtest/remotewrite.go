package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// Remote-Write protocol versions, as sent in X-Prometheus-Remote-Write-Version.
const (
	rw1Version     = "0.1.0"
	rw2Version     = "2.0.0"
	contentTypeRW1 = "application/x-protobuf"
	contentTypeRW2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

// rwSpec describes the remote_write requests to generate.
type rwSpec struct {
	prefix           string // metric name prefix
	seriesPerRequest int
	samplesPerSeries int
	totalSeries      int
	protocol         string // "1.0" or "2.0"
	// sampleSpacing separates the samples of one series in one request.
	sampleSpacing time.Duration
}

func (s rwSpec) validate() error {
	switch {
	case s.seriesPerRequest < 1:
		return fmt.Errorf("-series must be at least 1, got %d", s.seriesPerRequest)
	case s.samplesPerSeries < 1:
		return fmt.Errorf("-samples must be at least 1, got %d", s.samplesPerSeries)
	case s.totalSeries < s.seriesPerRequest:
		return fmt.Errorf("-total-series (%d) must be at least -series (%d)", s.totalSeries, s.seriesPerRequest)
	case s.protocol != "1.0" && s.protocol != "2.0":
		return fmt.Errorf("-protocol must be 1.0 or 2.0, got %q", s.protocol)
	}
	return nil
}

// bodies is how many requests it takes to send every series once.
func (s rwSpec) bodies() int {
	return (s.totalSeries + s.seriesPerRequest - 1) / s.seriesPerRequest
}

// seriesLabels returns the labels of series k, sorted by name as
// Remote-Write requires: a hundred metric names, a hundred series per
// instance, and a label that makes every series distinct.
func (s rwSpec) seriesLabels(k int) []prompb.Label {
	return []prompb.Label{
		{Name: "__name__", Value: s.prefix + "_" + strconv.Itoa(k%100)},
		{Name: "instance", Value: "host-" + strconv.Itoa(k/100) + ":9100"},
		{Name: "job", Value: "loadtest"},
		{Name: "series", Value: strconv.Itoa(k)},
	}
}

// rwPool is a source of remote_write requests. Body b carries series
// [b*seriesPerRequest, ...) of totalSeries, so a full round of requests
// touches every series once and the receiver sees totalSeries distinct
// series. Bodies are encoded up front and re-encoded with fresh timestamps
// by refresh, never per request, so the generator's CPU goes to sending.
type rwPool struct {
	spec rwSpec
	uri  string
	v1   []prompb.WriteRequest // per body; only refresh touches them
	v2   []writev2.Request
	reqs []atomic.Pointer[request]
}

func newRWPool(spec rwSpec, uri string, now time.Time) (*rwPool, error) {
	p := &rwPool{spec: spec, uri: uri, reqs: make([]atomic.Pointer[request], spec.bodies())}
	for b := range spec.bodies() {
		first := b * spec.seriesPerRequest
		last := min(first+spec.seriesPerRequest, spec.totalSeries)
		if spec.protocol == "2.0" {
			st := writev2.NewSymbolTable()
			req := writev2.Request{}
			for k := first; k < last; k++ {
				ts := writev2.TimeSeries{
					Samples:  make([]writev2.Sample, spec.samplesPerSeries),
					Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE},
				}
				for _, l := range spec.seriesLabels(k) {
					ts.LabelsRefs = append(ts.LabelsRefs, st.Symbolize(l.Name), st.Symbolize(l.Value))
				}
				req.Timeseries = append(req.Timeseries, ts)
			}
			req.Symbols = st.Symbols()
			p.v2 = append(p.v2, req)
		} else {
			req := prompb.WriteRequest{}
			for k := first; k < last; k++ {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  spec.seriesLabels(k),
					Samples: make([]prompb.Sample, spec.samplesPerSeries),
				})
			}
			p.v1 = append(p.v1, req)
		}
	}
	if err := p.refresh(now); err != nil {
		return nil, err
	}
	return p, nil
}

// refresh re-encodes every body with samples ending at now. Requests
// already handed out keep their old bodies.
func (p *rwPool) refresh(now time.Time) error {
	end := now.UnixMilli()
	step := p.spec.sampleSpacing.Milliseconds()
	n := p.spec.samplesPerSeries
	stamp := func(j, k int) (int64, float64) {
		ts := end - int64(n-1-j)*step
		return ts, float64(k%1000) + float64(ts%60000)/1000
	}
	for b := range p.reqs {
		var (
			data    []byte
			err     error
			samples int
		)
		if p.spec.protocol == "2.0" {
			req := &p.v2[b]
			for i := range req.Timeseries {
				k := b*p.spec.seriesPerRequest + i
				for j := range req.Timeseries[i].Samples {
					s := &req.Timeseries[i].Samples[j]
					s.Timestamp, s.Value = stamp(j, k)
				}
				samples += len(req.Timeseries[i].Samples)
			}
			data, err = req.Marshal()
		} else {
			req := &p.v1[b]
			for i := range req.Timeseries {
				k := b*p.spec.seriesPerRequest + i
				for j := range req.Timeseries[i].Samples {
					s := &req.Timeseries[i].Samples[j]
					s.Timestamp, s.Value = stamp(j, k)
				}
				samples += len(req.Timeseries[i].Samples)
			}
			data, err = req.Marshal()
		}
		if err != nil {
			return fmt.Errorf("encode body %d: %w", b, err)
		}
		r := &request{
			uri:         p.uri,
			method:      "POST",
			contentType: contentTypeRW1,
			encoding:    "snappy",
			version:     rw1Version,
			body:        snappy.Encode(nil, data),
			samples:     samples,
		}
		if p.spec.protocol == "2.0" {
			r.contentType, r.version = contentTypeRW2, rw2Version
		}
		p.reqs[b].Store(r)
	}
	return nil
}

func (p *rwPool) request(seq uint64) *request {
	return p.reqs[seq%uint64(len(p.reqs))].Load()
}

// refreshLoop re-encodes the bodies every interval until ctx is done.
func (p *rwPool) refreshLoop(ctx context.Context, every time.Duration, stderr io.Writer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := p.refresh(now); err != nil {
				fmt.Fprintln(stderr, "refresh:", err)
				return
			}
		}
	}
}

// cmdRemoteWrite is `loadtest remote-write`.
func cmdRemoteWrite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("remote-write", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "http://127.0.0.1:9091/api/v1/write", "remote_write URL")
	spec := rwSpec{prefix: "loadtest_rw"}
	fs.IntVar(&spec.seriesPerRequest, "series", 500, "series per request")
	fs.IntVar(&spec.samplesPerSeries, "samples", 1, "samples per series in each request")
	fs.IntVar(&spec.totalSeries, "total-series", 100_000, "distinct series, rotated over the requests")
	fs.StringVar(&spec.protocol, "protocol", "1.0", "Remote-Write protocol: 1.0 (prometheus.WriteRequest) or 2.0 (io.prometheus.write.v2.Request)")
	fs.DurationVar(&spec.sampleSpacing, "sample-spacing", time.Second, "time between the samples of one series in one request")
	refresh := fs.Duration("refresh", 5*time.Second, "re-encode every body with the current time this often (0: never; costs one encoding of -total-series)")
	var lf loadFlags
	lf.register(fs, 8)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := spec.validate(); err != nil {
		return err
	}
	if err := lf.validate(); err != nil {
		return err
	}
	pool, err := newRWPool(spec, *target, time.Now())
	if err != nil {
		return err
	}
	hc, err := newHostClient(*target, lf.concurrency, lf.timeout)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *refresh > 0 {
		go pool.refreshLoop(rctx, *refresh, stderr)
	}
	res := run(ctx, "remote-write "+spec.protocol, *target, lf, hc, pool)
	cancel()
	return res.write(stdout, lf.json)
}

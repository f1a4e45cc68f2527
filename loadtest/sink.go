package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/valyala/fasthttp"
)

// counts is what one remote_write request carried.
type counts struct {
	series     uint64
	samples    uint64
	histograms uint64
	exemplars  uint64
	// matched is samples plus histograms of the series whose metric name
	// starts with the sink's prefix (all series when the prefix is empty).
	matched uint64
}

func (c *counts) add(o counts) {
	c.series += o.series
	c.samples += o.samples
	c.histograms += o.histograms
	c.exemplars += o.exemplars
	c.matched += o.matched
}

// errProto is returned for a body that is not valid protobuf.
var errProto = errors.New("malformed protobuf")

// Protobuf wire types.
const (
	wireVarint = 0
	wire64     = 1
	wireBytes  = 2
	wire32     = 5
)

// uvarint decodes a varint from b, returning it and its length (0 when b
// holds no complete varint of at most 10 bytes).
func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}

// nextField reads one field from b: its number, wire type, the payload of a
// length-delimited field, the value of a varint field, and the rest of b.
func nextField(b []byte) (num int, wire int, payload []byte, v uint64, rest []byte, err error) {
	tag, n := uvarint(b)
	if n == 0 || tag>>3 == 0 {
		return 0, 0, nil, 0, nil, errProto
	}
	b = b[n:]
	num, wire = int(tag>>3), int(tag&7)
	switch wire {
	case wireVarint:
		v, n = uvarint(b)
		if n == 0 {
			return 0, 0, nil, 0, nil, errProto
		}
		return num, wire, nil, v, b[n:], nil
	case wire64:
		if len(b) < 8 {
			return 0, 0, nil, 0, nil, errProto
		}
		return num, wire, nil, 0, b[8:], nil
	case wire32:
		if len(b) < 4 {
			return 0, 0, nil, 0, nil, errProto
		}
		return num, wire, nil, 0, b[4:], nil
	case wireBytes:
		l, n := uvarint(b)
		if n == 0 || l > uint64(len(b)-n) {
			return 0, 0, nil, 0, nil, errProto
		}
		b = b[n:]
		return num, wire, b[:l], 0, b[l:], nil
	}
	return 0, 0, nil, 0, nil, errProto
}

// countV1 counts a Remote-Write 1.0 prometheus.WriteRequest without
// decoding it into structs: WriteRequest.timeseries is field 1; in a
// TimeSeries labels are 1, samples 2, exemplars 3, histograms 4; a Label's
// name is 1 and value 2.
func countV1(b []byte, prefix []byte) (counts, error) {
	var c counts
	for len(b) > 0 {
		num, wire, payload, _, rest, err := nextField(b)
		if err != nil {
			return c, err
		}
		b = rest
		if num != 1 || wire != wireBytes {
			continue
		}
		var one counts
		one.series = 1
		matched := len(prefix) == 0
		for ts := payload; len(ts) > 0; {
			num, wire, payload, _, rest, err := nextField(ts)
			if err != nil {
				return c, err
			}
			ts = rest
			if wire != wireBytes {
				continue
			}
			switch num {
			case 1:
				if !matched {
					name, value, err := labelV1(payload)
					if err != nil {
						return c, err
					}
					matched = string(name) == "__name__" && bytes.HasPrefix(value, prefix)
				}
			case 2:
				one.samples++
			case 3:
				one.exemplars++
			case 4:
				one.histograms++
			}
		}
		if matched {
			one.matched = one.samples + one.histograms
		}
		c.add(one)
	}
	return c, nil
}

// labelV1 returns the name and value of an encoded prompb.Label; they
// point into b.
func labelV1(b []byte) (name, value []byte, err error) {
	for len(b) > 0 {
		num, wire, payload, _, rest, err := nextField(b)
		if err != nil {
			return nil, nil, err
		}
		b = rest
		if wire == wireBytes && num == 1 {
			name = payload
		} else if wire == wireBytes && num == 2 {
			value = payload
		}
	}
	return name, value, nil
}

// countV2 counts a Remote-Write 2.0 io.prometheus.write.v2.Request:
// symbols are field 4 and timeseries 5; in a TimeSeries labels_refs are 1
// (packed or not), samples 2, histograms 3, exemplars 4. The symbols are
// only collected when a prefix must be matched.
func countV2(b []byte, prefix []byte, symbols [][]byte) (counts, [][]byte, error) {
	var c counts
	symbols = symbols[:0]
	if len(prefix) > 0 {
		for rest := b; len(rest) > 0; {
			num, wire, payload, _, r, err := nextField(rest)
			if err != nil {
				return c, symbols, err
			}
			rest = r
			if num == 4 && wire == wireBytes {
				symbols = append(symbols, payload)
			}
		}
	}
	var refs []uint64
	for len(b) > 0 {
		num, wire, payload, _, rest, err := nextField(b)
		if err != nil {
			return c, symbols, err
		}
		b = rest
		if num != 5 || wire != wireBytes {
			continue
		}
		var one counts
		one.series = 1
		refs = refs[:0]
		for ts := payload; len(ts) > 0; {
			num, wire, payload, v, rest, err := nextField(ts)
			if err != nil {
				return c, symbols, err
			}
			ts = rest
			switch {
			case num == 1 && wire == wireVarint:
				refs = append(refs, v)
			case num == 1 && wire == wireBytes:
				for p := payload; len(p) > 0; {
					v, n := uvarint(p)
					if n == 0 {
						return c, symbols, errProto
					}
					refs = append(refs, v)
					p = p[n:]
				}
			case num == 2 && wire == wireBytes:
				one.samples++
			case num == 3 && wire == wireBytes:
				one.histograms++
			case num == 4 && wire == wireBytes:
				one.exemplars++
			}
		}
		matched := len(prefix) == 0
		for i := 0; !matched && i+1 < len(refs); i += 2 {
			if refs[i] >= uint64(len(symbols)) || refs[i+1] >= uint64(len(symbols)) {
				return c, symbols, fmt.Errorf("%w: symbol reference out of range", errProto)
			}
			if string(symbols[refs[i]]) == "__name__" {
				matched = bytes.HasPrefix(symbols[refs[i+1]], prefix)
				break
			}
		}
		if matched {
			one.matched = one.samples + one.histograms
		}
		c.add(one)
	}
	return c, symbols, nil
}

// sink is a counting remote_write receiver. Its counters are updated
// atomically by concurrent requests.
type sink struct {
	prefix   []byte
	expected uint64
	maxBody  int
	out      io.Writer // where the "expected total reached" line goes

	requests, series, samples, histograms, exemplars, matched atomic.Uint64
	bytes, decoded                                            atomic.Uint64
	errors                                                    atomic.Uint64
	lastWrite                                                 atomic.Int64 // unix nanoseconds
	started                                                   time.Time
	reached                                                   atomic.Bool

	// bufs holds decompression buffers and symbol slices between requests.
	bufs sync.Pool
}

type sinkBuf struct {
	data    []byte
	symbols [][]byte
}

func newSink(prefix string, expected uint64, maxBody int, out io.Writer) *sink {
	s := &sink{prefix: []byte(prefix), expected: expected, maxBody: maxBody, out: out, started: time.Now()}
	s.bufs.New = func() any { return &sinkBuf{} }
	return s
}

// sinkCount is the JSON answer of GET /count.
type sinkCount struct {
	Requests       uint64  `json:"requests"`
	Series         uint64  `json:"series"`
	Samples        uint64  `json:"samples"`
	Histograms     uint64  `json:"histograms"`
	Exemplars      uint64  `json:"exemplars"`
	Matched        uint64  `json:"matched_samples"`
	Bytes          uint64  `json:"bytes"`
	DecodedBytes   uint64  `json:"decoded_bytes"`
	Errors         uint64  `json:"errors"`
	Expected       uint64  `json:"expected_samples"`
	Complete       bool    `json:"complete"`
	LastWriteUnix  float64 `json:"last_write_unix"`
	SecondsSinceUp float64 `json:"uptime_seconds"`
}

func (s *sink) snapshot() sinkCount {
	c := sinkCount{
		Requests:       s.requests.Load(),
		Series:         s.series.Load(),
		Samples:        s.samples.Load(),
		Histograms:     s.histograms.Load(),
		Exemplars:      s.exemplars.Load(),
		Matched:        s.matched.Load(),
		Bytes:          s.bytes.Load(),
		DecodedBytes:   s.decoded.Load(),
		Errors:         s.errors.Load(),
		Expected:       s.expected,
		SecondsSinceUp: time.Since(s.started).Seconds(),
	}
	c.Complete = s.expected > 0 && c.Matched >= s.expected
	if lw := s.lastWrite.Load(); lw > 0 {
		c.LastWriteUnix = float64(lw) / 1e9
	}
	return c
}

func (s *sink) reset() {
	for _, a := range []*atomic.Uint64{&s.requests, &s.series, &s.samples, &s.histograms, &s.exemplars, &s.matched, &s.bytes, &s.decoded, &s.errors} {
		a.Store(0)
	}
	s.lastWrite.Store(0)
	s.reached.Store(false)
}

// write handles one remote_write request and answers it as a receiver
// following the specification would: 204, with the 2.0 "written" headers.
func (s *sink) write(ctx *fasthttp.RequestCtx) (int, string) {
	v2 := bytes.Contains(ctx.Request.Header.ContentType(), []byte("io.prometheus.write.v2.Request"))
	if !bytes.EqualFold(ctx.Request.Header.Peek("Content-Encoding"), []byte("snappy")) {
		return fasthttp.StatusUnsupportedMediaType, "only snappy Content-Encoding is supported"
	}
	body := ctx.PostBody()
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return fasthttp.StatusBadRequest, "snappy: " + err.Error()
	}
	if n > s.maxBody {
		return fasthttp.StatusRequestEntityTooLarge, "decoded body over " + strconv.Itoa(s.maxBody) + " bytes"
	}
	buf := s.bufs.Get().(*sinkBuf)
	defer s.bufs.Put(buf)
	if cap(buf.data) < n {
		buf.data = make([]byte, n)
	}
	data, err := snappy.Decode(buf.data[:cap(buf.data)], body)
	if err != nil {
		return fasthttp.StatusBadRequest, "snappy: " + err.Error()
	}
	var c counts
	if v2 {
		c, buf.symbols, err = countV2(data, s.prefix, buf.symbols)
		clear(buf.symbols) // drop references into data
	} else {
		c, err = countV1(data, s.prefix)
	}
	if err != nil {
		return fasthttp.StatusBadRequest, err.Error()
	}
	s.requests.Add(1)
	s.series.Add(c.series)
	s.samples.Add(c.samples)
	s.histograms.Add(c.histograms)
	s.exemplars.Add(c.exemplars)
	s.bytes.Add(uint64(len(body)))
	s.decoded.Add(uint64(len(data)))
	m := s.matched.Add(c.matched)
	s.lastWrite.Store(time.Now().UnixNano())
	if s.expected > 0 && m >= s.expected && s.reached.CompareAndSwap(false, true) {
		fmt.Fprintf(s.out, "sink: expected %d samples reached after %.1f s\n", s.expected, time.Since(s.started).Seconds())
	}
	if v2 {
		ctx.Response.Header.Set("X-Prometheus-Remote-Write-Samples-Written", strconv.FormatUint(c.samples, 10))
		ctx.Response.Header.Set("X-Prometheus-Remote-Write-Histograms-Written", strconv.FormatUint(c.histograms, 10))
		ctx.Response.Header.Set("X-Prometheus-Remote-Write-Exemplars-Written", strconv.FormatUint(c.exemplars, 10))
	}
	return fasthttp.StatusNoContent, ""
}

func (s *sink) handle(ctx *fasthttp.RequestCtx) {
	switch path := string(ctx.Path()); {
	case path == "/api/v1/write" && ctx.IsPost():
		code, msg := s.write(ctx)
		if code >= 300 {
			s.errors.Add(1)
			ctx.Error(msg, code)
			return
		}
		ctx.SetStatusCode(code)
	case path == "/count" && ctx.IsGet():
		ctx.SetContentType("application/json")
		_ = json.NewEncoder(ctx).Encode(s.snapshot())
	case path == "/reset" && ctx.IsPost():
		s.reset()
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	case path == "/-/ready" || path == "/-/healthy":
		ctx.SetBodyString("OK")
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

func (c sinkCount) String() string {
	return fmt.Sprintf("requests=%d series=%d samples=%d histograms=%d matched=%d errors=%d bytes=%d",
		c.Requests, c.Series, c.Samples, c.Histograms, c.Matched, c.Errors, c.Bytes)
}

// cmdSink is `loadtest sink`. It runs until ctx is done (SIGINT, SIGTERM),
// then prints the final counts; with -expect-samples it fails when fewer
// matching samples arrived.
func cmdSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9201", "address to listen on")
	prefix := fs.String("prefix", "", "count matched_samples only for metric names starting with this")
	expected := fs.Uint64("expect-samples", 0, "matched samples expected; on exit, fewer is an error")
	every := fs.Duration("print-interval", 10*time.Second, "print counts this often when they changed (0: only at exit)")
	maxBody := fs.Int("max-decoded-bytes", 64<<20, "largest decompressed request accepted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := newSink(*prefix, *expected, *maxBody, stdout)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &fasthttp.Server{
		Handler:               s.handle,
		MaxRequestBodySize:    *maxBody,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "sink: listening on %s\n", ln.Addr())
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	var last sinkCount
	for done := false; !done; {
		select {
		case <-tick:
			if c := s.snapshot(); c.Requests != last.Requests {
				fmt.Fprintln(stdout, "sink:", c)
				last = c
			}
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			done = true
		}
	}
	_ = srv.Shutdown()
	final := s.snapshot()
	fmt.Fprintln(stdout, "sink: final", final)
	if final.Expected > 0 && final.Matched < final.Expected {
		return fmt.Errorf("received %d matched samples, expected %d", final.Matched, final.Expected)
	}
	if final.Expected > 0 && final.Matched > final.Expected {
		fmt.Fprintf(stdout, "sink: %d samples more than expected (re-sent)\n", final.Matched-final.Expected)
	}
	return nil
}

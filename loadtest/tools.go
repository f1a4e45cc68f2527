package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The small helpers below keep compare.sh free of curl, jq and python.

// cmdFreePort is `loadtest freeport`: it prints -n free TCP ports of
// 127.0.0.1, one per line. They are free when printed; another process may
// take one before it is used, which is as good as a script can do.
func cmdFreePort(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("freeport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 1, "how many ports")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range *n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find free port: %w", err)
		}
		lns = append(lns, ln)
		fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// cmdWait is `loadtest wait`: it polls a URL until it answers 200 and
// prints how long that took in seconds, measured from -since (a Unix time
// in seconds with a fraction) when given, else from its own start.
func cmdWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL to poll")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	every := fs.Duration("every", 20*time.Millisecond, "poll interval")
	since := fs.Float64("since", 0, "measure from this Unix time (seconds) instead of from now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	if *since > 0 {
		start = time.Unix(0, int64(*since*1e9))
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		resp, err := client.Get(*url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Fprintf(stdout, "%.3f\n", time.Since(start).Seconds())
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not 200 after %s", *url, *timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*every):
		}
	}
}

// cmdFetch is `loadtest fetch`: GET a URL and print its body, or with
// -sum, stream a text exposition and print the sum of the samples of each
// named metric ("name value", 0 when absent) without keeping the body, or
// with -buckets, print the cumulative buckets of a classic histogram
// summed over its series ("le count" per line, by increasing le).
func cmdFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL to get")
	var names []string
	fs.Func("sum", "metric name whose samples to sum (repeatable)", func(v string) error {
		names = append(names, v)
		return nil
	})
	buckets := fs.String("buckets", "", "classic histogram whose buckets to print, summed over its series")
	method := fs.String("method", "GET", "HTTP method")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *buckets != "" && len(names) > 0 {
		return errors.New("give -sum or -buckets, not both")
	}
	req, err := http.NewRequestWithContext(ctx, *method, *url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", *url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch %s: %s: %s", *url, resp.Status, strings.TrimSpace(string(b)))
	}
	if *buckets != "" {
		bs, err := histogramBuckets(resp.Body, *buckets)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", *url, err)
		}
		for _, b := range bs {
			fmt.Fprintf(stdout, "%s %s\n", strconv.FormatFloat(b.le, 'g', -1, 64), strconv.FormatFloat(b.count, 'f', -1, 64))
		}
		return nil
	}
	if len(names) == 0 {
		_, err := io.Copy(stdout, resp.Body)
		return err
	}
	sums := sumMetrics(resp.Body, names)
	for _, n := range names {
		fmt.Fprintf(stdout, "%s %s\n", n, strconv.FormatFloat(sums[n], 'f', -1, 64))
	}
	return nil
}

// bucket is one cumulative bucket of a classic histogram.
type bucket struct {
	le    float64
	count float64
}

// histogramBuckets parses the text exposition r and returns the buckets of
// the classic histogram name, each summed over the histogram's series, by
// increasing upper bound. A missing histogram is an error, so that a
// renamed metric does not read as an empty one.
func histogramBuckets(r io.Reader, name string) ([]bucket, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	f := fams[name]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		return nil, fmt.Errorf("no histogram %q in the exposition", name)
	}
	sums := map[float64]float64{}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		inf := false
		for _, b := range h.GetBucket() {
			sums[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
		}
		if !inf { // the text parser keeps the +Inf bucket; protobuf omits it
			sums[math.Inf(1)] += float64(h.GetSampleCount())
		}
	}
	out := make([]bucket, 0, len(sums))
	for le, c := range sums {
		out = append(out, bucket{le, c})
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return out, nil
}

// sumMetrics adds up, per name, the values of the exposition lines of r
// whose metric name is one of names.
func sumMetrics(r io.Reader, names []string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || !want[line[:end]] {
			continue
		}
		// The value follows the labels (whose values may hold spaces).
		rest := line[end:]
		if rest[0] == '{' {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sums[line[:end]] += v
		}
	}
	return sums
}

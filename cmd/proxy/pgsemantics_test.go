package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestPushgatewaySemanticsMatchPushgateway runs the same pushes, from
// client_golang's push package and as raw bodies, against the Debian
// Pushgateway and the real binary with --push.semantics=pushgateway, and
// checks after every step that both answer with the same status and that
// GET /metrics shows the same pushed families: types, HELP texts, series
// and values (push_time_seconds only by its series, as its value is a
// time).
func TestPushgatewaySemanticsMatchPushgateway(t *testing.T) {
	pgBin := needBinary(t, "prometheus-pushgateway")
	pgAddr := freePort(t)
	// Debian's default --persistence.file would load what earlier runs left.
	startProcess(t, "http://"+pgAddr+"/-/ready", pgBin, "--web.listen-address="+pgAddr, "--persistence.file=", "--log.level=error")
	pg := "http://" + pgAddr
	sl := startSluice(t, buildBinary(t), "--push.semantics=pushgateway")
	defer sl.stop(t)

	counter := func(name, help string, v float64) prometheus.Collector {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		c.Add(v)
		return c
	}
	gauge := func(name, help string, v float64) prometheus.Collector {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		g.Set(v)
		return g
	}
	histogram := func(name string, buckets []float64, obs ...float64) prometheus.Collector {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: "Durations.", Buckets: buckets})
		for _, o := range obs {
			h.Observe(o)
		}
		return h
	}
	// A step is done to one base URL and answers a status code.
	type step struct {
		name string
		do   func(base string) int
	}
	pusher := func(job string, grouping []string, put bool, cs ...prometheus.Collector) func(string) int {
		return func(base string) int {
			p := push.New(base, job)
			for i := 0; i+1 < len(grouping); i += 2 {
				p = p.Grouping(grouping[i], grouping[i+1])
			}
			for _, c := range cs {
				p = p.Collector(c)
			}
			err := p.Add()
			if put {
				err = p.Push()
			}
			return pushStatus(err)
		}
	}
	raw := func(method, path, body string) func(string) int {
		return func(base string) int {
			req, err := http.NewRequest(method, base+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
			return r.StatusCode
		}
	}
	steps := []step{
		{"PUT a counter and a gauge", pusher("batch", nil, true, counter("jobs_total", "Jobs done.", 3), gauge("last_success", "When.", 100))},
		{"POST replaces only the pushed family", pusher("batch", nil, false, gauge("last_success", "When.", 200))},
		{"PUT replaces the whole group", pusher("batch", nil, true, gauge("temperature", "Degrees.", 21))},
		{"PUT gives a metric only its group has another type and HELP", pusher("batch", nil, true, counter("temperature", "Degrees, summed.", 5))},
		{"POST changes HELP", raw("POST", "/metrics/job/batch", "# HELP temperature Now in kelvin.\n# TYPE temperature counter\ntemperature 7\n")},
		// The same HELP: where groups disagree, the Pushgateway shows one
		// of theirs, Sluice the one the family was created with (README).
		{"another group, same metric and type", pusher("other", []string{"instance", "i1"}, true, counter("temperature", "Now in kelvin.", 1))},
		{"another type while another group has it", pusher("batch", nil, true, gauge("temperature", "Degrees.", 3))},
		{"POST of another type while another group has it", raw("POST", "/metrics/job/other/instance/i1", "# TYPE temperature gauge\ntemperature 2\n")},
		{"DELETE one group", raw("DELETE", "/metrics/job/batch", "")},
		{"then the other may change the type", raw("PUT", "/metrics/job/other/instance/i1", "# TYPE temperature gauge\ntemperature 2\n")},
		{"a histogram", pusher("hist", nil, true, histogram("dur_seconds", []float64{0.1, 1}, 0.05, 0.5, 2))},
		{"POST with another bucket layout replaces it", pusher("hist", nil, false, histogram("dur_seconds", []float64{0.5}, 0.2))},
		{"a metric named like the histogram's _count", raw("POST", "/metrics/job/hist", "# TYPE dur_seconds_count gauge\ndur_seconds_count 5\n")},
		{"a series with an instance label in the body", raw("PUT", "/metrics/job/dup", "shared{instance=\"i1\",x=\"1\"} 1\n")},
		// Rejected pushes go to groups that exist: a rejected push to a
		// new group creates it on the Pushgateway, not on Sluice (README).
		{"a second group", raw("PUT", "/metrics/job/dup/instance/i1", "other 1\n")},
		{"the same series from the second group", raw("POST", "/metrics/job/dup/instance/i1", "shared{x=\"1\"} 2\n")},
		{"a duplicate series in one push", raw("PUT", "/metrics/job/dup", "d 1\nd 2\n")},
		{"a PUT with an empty body", raw("PUT", "/metrics/job/dup", "")},
		{"an untyped go_goroutines", raw("POST", "/metrics/job/dup", "go_goroutines 5\n")},
		{"a gauge go_goroutines", raw("POST", "/metrics/job/dup", "# TYPE go_goroutines gauge\ngo_goroutines{x=\"1\"} 5\n")},
	}
	for i, st := range steps {
		want, got := st.do(pg), st.do(sl.url)
		if got != want {
			t.Errorf("step %d (%s): Sluice answered %d, the Pushgateway %d", i, st.name, got, want)
		}
		if w, g := pushedFamilies(t, pg), pushedFamilies(t, sl.url); w != g {
			t.Fatalf("step %d (%s): GET /metrics differs\nSluice:\n%s\nPushgateway:\n%s", i, st.name, g, w)
		}
	}
}

// pushStatus is the status code in an error of client_golang's push
// package, or 200 for none.
func pushStatus(err error) int {
	if err == nil {
		return 200
	}
	var code int
	if _, scanErr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "status code ")+len("status code "):], "%d", &code); scanErr != nil {
		return -1
	}
	return code
}

// pushedFamilies renders what GET /metrics shows of pushed metrics: every
// family but the server's own (go_, process_, pushgateway_, sluice_,
// promhttp_), sorted, with push_time_seconds and
// push_failure_time_seconds reduced to their series.
func pushedFamilies(t *testing.T, base string) string {
	t.Helper()
	r, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range fams {
		own := false
		for _, p := range []string{"go_", "process_", "pushgateway_", "sluice_", "promhttp_"} {
			own = own || strings.HasPrefix(name, p)
		}
		if !own {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		f := fams[name]
		if name == "push_time_seconds" || name == "push_failure_time_seconds" {
			for _, m := range f.Metric {
				m.Gauge = &dto.Gauge{Value: new(float64)}
			}
			f.Help = nil
		}
		var lines []string
		for _, m := range f.Metric {
			var mb strings.Builder
			_, _ = expfmt.MetricFamilyToText(&mb, &dto.MetricFamily{Name: f.Name, Type: f.Type, Metric: []*dto.Metric{m}})
			for _, l := range strings.Split(strings.TrimSpace(mb.String()), "\n") {
				if !strings.HasPrefix(l, "#") {
					lines = append(lines, l)
				}
			}
		}
		slices.Sort(lines)
		fmt.Fprintf(&b, "%s %s %q\n  %s\n", name, f.GetType(), f.GetHelp(), strings.Join(lines, "\n  "))
	}
	return b.String()
}

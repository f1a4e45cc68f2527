package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

type testEnv struct {
	app     *fiber.App
	quit    int
	reloads int
	ready   string
	relay   *fakeRelay // what the store relayed
	reg     *prometheus.Registry
	cfg     *configs.Config
}

func newTestEnv(t *testing.T, admin, lifecycle bool, mutate func(*configs.Config)) *testEnv {
	t.Helper()
	return newTestEnvOpts(t, admin, lifecycle, mutate, nil)
}

// newTestEnvOpts is newTestEnv with adjust changing the Options before the
// app is built.
func newTestEnvOpts(t *testing.T, admin, lifecycle bool, mutate func(*configs.Config), adjust func(*Options)) *testEnv {
	t.Helper()
	cfg := configs.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	env := &testEnv{relay: &fakeRelay{}, reg: reg, cfg: &cfg}
	store := aggregate.New(aggregate.Settings{Aggregation: cfg.Aggregation, Limits: cfg.Limits, SeriesTTL: time.Hour},
		time.Now, nil, env.relay, reg, slog.New(slog.DiscardHandler))
	opts := Options{
		Logger:          slog.New(slog.DiscardHandler),
		Registerer:      reg,
		Gatherer:        reg,
		Aggregator:      store,
		Limits:          func() configs.LimitsConfig { return cfg.Limits },
		Ingest:          func() configs.IngestConfig { return env.cfg.Ingest },
		EnableAdminAPI:  admin,
		EnableLifecycle: lifecycle,
		Ready:           func() string { return env.ready },
		Reload:          func() error { env.reloads++; return nil },
		Quit:            func() { env.quit++ },
		Status:          Status{Flags: map[string]string{"web.listen-address": ":9091"}, StartTime: time.Unix(0, 0)},
	}
	if adjust != nil {
		adjust(&opts)
	}
	env.app = NewApp(opts, int(cfg.Limits.MaxBodyBytes))
	return env
}

type resp struct {
	code   int
	body   string
	header http.Header
}

func (e *testEnv) do(t *testing.T, method, path string, body []byte, headers ...string) resp {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r, err := e.app.Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, body: string(b), header: r.Header}
}

// scrape returns GET /metrics without Sluice's own and Go runtime metrics.
func (e *testEnv) scrape(t *testing.T) string {
	t.Helper()
	r := e.do(t, "GET", "/metrics", nil)
	if r.code != 200 {
		t.Fatalf("GET /metrics: %d %s", r.code, r.body)
	}
	var out []string
	for _, l := range strings.Split(r.body, "\n") {
		if strings.Contains(l, "sluice_") || strings.Contains(l, "push_time_seconds") || strings.Contains(l, "push_failure_time_seconds") || l == "" {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

func snappyStream(s string) []byte {
	var b bytes.Buffer
	w := snappy.NewBufferedWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.Bytes()
}

func protoBody(t *testing.T, fams ...*dto.MetricFamily) []byte {
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

const protoCT = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"

func TestPushEndpoints(t *testing.T) {
	counter := func(v float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr("req_total"), Type: dto.MetricType_COUNTER.Enum(),
			Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("fn"), Value: ptr("a")}}, Counter: &dto.Counter{Value: &v}}}}
	}
	cases := []struct {
		name     string
		method   string
		path     string
		body     []byte
		headers  []string
		wantCode int
		wantBody string // substring of the response body
		wantSeen string // substring of the scrape afterwards
	}{
		{name: "post_text", method: "POST", path: "/metrics/job/f", body: []byte("# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n"),
			wantCode: 200, wantSeen: `req_total{fn="a",instance="",job="f"} 1`},
		{name: "put_text", method: "PUT", path: "/metrics/job/f/env/prod", body: []byte("temp 3\n"),
			wantCode: 200, wantSeen: `temp{env="prod",instance="",job="f"} 3`},
		{name: "protobuf", method: "PUT", path: "/metrics/job/f", body: protoBody(t, counter(2)), headers: []string{"Content-Type", protoCT},
			wantCode: 200, wantSeen: `req_total{fn="a",instance="",job="f"} 2`},
		{name: "protobuf_params_other_order", method: "POST", path: "/metrics/job/f", body: protoBody(t, counter(2)),
			headers:  []string{"Content-Type", "application/vnd.google.protobuf; encoding=delimited; proto=io.prometheus.client.MetricFamily"},
			wantCode: 200, wantSeen: `req_total{fn="a",instance="",job="f"} 2`},
		{name: "openmetrics_counter_keeps_type", method: "POST", path: "/metrics/job/f",
			body: []byte("# TYPE e counter\ne_total 1\n# EOF\n"), headers: []string{"Content-Type", "application/openmetrics-text; version=1.0.0"},
			wantCode: 200, wantSeen: "# TYPE e_total counter\ne_total{instance=\"\",job=\"f\"} 1"},
		{name: "gzip", method: "POST", path: "/metrics/job/f", body: gz(t, "g 4\n"), headers: []string{"Content-Encoding", "gzip"},
			wantCode: 200, wantSeen: `g{instance="",job="f"} 4`},
		{name: "snappy", method: "POST", path: "/metrics/job/f", body: snappyStream("g 5\n"), headers: []string{"Content-Encoding", "SNAPPY"},
			wantCode: 200, wantSeen: `g{instance="",job="f"} 5`},
		{name: "gravel_no_job", method: "POST", path: "/metrics/env/dev", body: []byte("g 6\n"),
			wantCode: 200, wantSeen: `g{env="dev",instance=""} 6`},
		{name: "gravel_bare", method: "POST", path: "/metrics", body: []byte("g 7\n"),
			wantCode: 200, wantSeen: `g{instance=""} 7`},
		{name: "base64_job", method: "POST", path: "/metrics/job@base64/L3Zhci90bXA/e@base64/=", body: []byte("g 8\n"),
			wantCode: 200, wantSeen: `g{instance="",job="/var/tmp"} 8`}, // an empty label is no label
		{name: "help_not_utf8", method: "PUT", path: "/metrics/job/f", body: []byte("# HELP hu bad \xff help\nhu 1\n"),
			wantCode: 400, wantBody: "not valid UTF-8"},
		{name: "help_not_utf8_protobuf", method: "PUT", path: "/metrics/job/f", body: encodeDelimited(t, &dto.MetricFamily{Name: ptr("hu"), Help: ptr("bad \xff help"), Type: dto.MetricType_UNTYPED.Enum(),
			Metric: []*dto.Metric{{Untyped: &dto.Untyped{Value: ptr(1.0)}}}}), headers: []string{"Content-Type", contentTypeProto},
			wantCode: 400, wantBody: "not valid UTF-8"},
		{name: "bad_gzip", method: "POST", path: "/metrics/job/f", body: []byte("g 1\n"), headers: []string{"Content-Encoding", "gzip"},
			wantCode: 400, wantBody: "gzip"},
		{name: "unknown_encoding", method: "POST", path: "/metrics/job/f", body: []byte("g 1\n"), headers: []string{"Content-Encoding", "br"},
			wantCode: 415, wantBody: "br"},
		{name: "text_parse_error", method: "POST", path: "/metrics/job/f", body: []byte("g 1\r\n"),
			wantCode: 400, wantBody: "text format parsing error in line 1"},
		{name: "odd_path", method: "POST", path: "/metrics/job/f/a", body: []byte("g 1\n"),
			wantCode: 400, wantBody: `odd number of components in label string "/a"`},
		{name: "empty_job", method: "PUT", path: "/metrics/job/", body: []byte("g 1\n"),
			wantCode: 400, wantBody: "job name is required"},
		{name: "bad_label", method: "PUT", path: "/metrics/job/f/a-b/c", body: []byte("g 1\n"),
			wantCode: 400, wantBody: `improper label name "a-b"`},
		{name: "unknown_mode", method: "PUT", path: "/metrics/job/f", body: []byte("g{clear_mode=\"avg\"} 1\n"),
			wantCode: 400, wantBody: `unknown clear_mode "avg"`},
		{name: "get_push_path", method: "GET", path: "/metrics/job/x", wantCode: 405},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, false, false, nil)
			r := env.do(t, tc.method, tc.path, tc.body, tc.headers...)
			if r.code != tc.wantCode || !strings.Contains(r.body, tc.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, r.code, r.body, tc.wantCode, tc.wantBody)
			}
			got := env.scrape(t)
			if tc.wantSeen != "" && !strings.Contains(got, tc.wantSeen) {
				t.Fatalf("scrape does not contain %q:\n%s", tc.wantSeen, got)
			}
			if tc.wantCode >= 400 && got != "" && !strings.HasPrefix(got, "# HELP go_") {
				for _, l := range strings.Split(got, "\n") {
					if !strings.HasPrefix(l, "go_") && !strings.HasPrefix(l, "# ") && !strings.HasPrefix(l, "process_") {
						t.Fatalf("a rejected push left state behind: %q", l)
					}
				}
			}
		})
	}
}

func TestDeleteAnswers202AndRemovesGroup(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	env.do(t, "POST", "/metrics/job/a", []byte("x 1\n"))
	env.do(t, "POST", "/metrics/job/b", []byte("x 2\n"))
	if r := env.do(t, "DELETE", "/metrics/job/a", nil); r.code != 202 {
		t.Fatalf("DELETE = %d, want 202", r.code)
	}
	if r := env.do(t, "DELETE", "/metrics/job/never", nil); r.code != 202 {
		t.Fatalf("DELETE of an unknown group = %d, want 202", r.code)
	}
	got := env.scrape(t)
	if strings.Contains(got, `job="a"`) || !strings.Contains(got, `x{instance="",job="b"} 2`) {
		t.Fatalf("after DELETE job=a:\n%s", got)
	}
}

func TestPushTimeSeries(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	env.do(t, "PUT", "/metrics/job/f", nil)
	r := env.do(t, "GET", "/metrics", nil)
	if !strings.Contains(r.body, `push_failure_time_seconds{instance="",job="f"} 0`) || !strings.Contains(r.body, `push_time_seconds{instance="",job="f"} 1.`) {
		t.Fatalf("an empty PUT must leave the group with its two timestamps:\n%s", r.body)
	}
}

func TestScrapeContentNegotiation(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	env.do(t, "POST", "/metrics/job/f", []byte("# TYPE req_total counter\nreq_total 1\n"))
	cases := []struct{ name, accept, wantCT string }{
		{"text", "", "text/plain; version=0.0.4"},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "application/vnd.google.protobuf"},
		{"openmetrics", "application/openmetrics-text;version=1.0.0", "application/openmetrics-text; version=1.0.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := env.do(t, "GET", "/metrics", nil, "Accept", tc.accept)
			if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), tc.wantCT) {
				t.Fatalf("Accept %q: %d, Content-Type %q; want %q", tc.accept, r.code, r.header.Get("Content-Type"), tc.wantCT)
			}
			if tc.name == "openmetrics" && (!strings.Contains(r.body, "req_total{instance=\"\",job=\"f\"} 1") || !strings.HasSuffix(r.body, "# EOF\n")) {
				t.Fatalf("OpenMetrics body:\n%s", r.body)
			}
		})
	}
}

func TestLimitsOverHTTP(t *testing.T) {
	env := newTestEnv(t, false, false, func(c *configs.Config) {
		c.Limits.MaxBodyBytes = 1024
		c.Limits.MaxDecompressedBodyBytes = 4096
		c.Limits.MaxSeriesPerGroup = 1
		c.Limits.MaxSeries = 1
	})
	// max_body_bytes is enforced by fasthttp before the handler; app.Test
	// cannot show it, the integration test against the binary does.
	bomb := gz(t, strings.Repeat("# comment comment comment\n", 1000))
	if r := env.do(t, "POST", "/metrics/job/f", bomb, "Content-Encoding", "gzip"); r.code != 413 || !strings.Contains(r.body, "limits.max_decompressed_body_bytes") {
		t.Fatalf("decompressed body over limit: %d %q", r.code, r.body)
	}
	env.do(t, "POST", "/metrics/job/f", []byte("a 1\n"))
	if r := env.do(t, "POST", "/metrics/job/f", []byte("b 1\n")); r.code != 429 || !strings.Contains(r.body, "limits.max_series_per_group") {
		t.Fatalf("series limit: %d %q", r.code, r.body)
	}
	if r := env.do(t, "POST", "/metrics/job/f", []byte("a 1\n")); r.code != 200 {
		t.Fatalf("existing series at the limit: %d %q", r.code, r.body)
	}
}

func TestAPIAndLifecycle(t *testing.T) {
	off := newTestEnv(t, false, false, nil)
	on := newTestEnv(t, true, true, nil)
	on.do(t, "POST", "/metrics/job/f/i/x", []byte("# TYPE req_total counter\n# HELP req_total Requests.\nreq_total 1\n"))
	cases := []struct {
		name     string
		env      *testEnv
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{"healthy", off, "GET", "/-/healthy", 200, "OK"},
		{"ready", off, "GET", "/-/ready", 200, "OK"},
		{"quit_disabled", off, "POST", "/-/quit", 403, "Lifecycle API is not enabled."},
		{"quit_get", on, "GET", "/-/quit", 405, "Only POST or PUT requests allowed."},
		{"quit_enabled", on, "PUT", "/-/quit", 200, "Requesting termination... Goodbye!"},
		{"reload", off, "POST", "/-/reload", 200, "OK"},
		{"wipe_disabled", off, "PUT", "/api/v1/admin/wipe", 404, ""},
		{"status", off, "GET", "/api/v1/status", 200, `"web.listen-address":":9091"`},
		{"options_cors", off, "OPTIONS", "/api/v1/metrics", 200, ""},
		{"post_push_path_without_job_value", off, "POST", "/metrics/job", 400, "job name is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.env.do(t, tc.method, tc.path, nil)
			if r.code != tc.wantCode || !strings.Contains(r.body, tc.wantBody) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, r.code, r.body, tc.wantCode, tc.wantBody)
			}
			if tc.name == "options_cors" && r.header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("CORS headers missing: %v", r.header)
			}
		})
	}
	if on.quit != 1 || off.reloads != 1 {
		t.Fatalf("quit called %d times, reload %d times; want 1 and 1", on.quit, off.reloads)
	}

	r := on.do(t, "GET", "/api/v1/metrics", nil)
	var doc struct {
		Status string           `json:"status"`
		Data   []map[string]any `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || doc.Status != "success" || len(doc.Data) != 1 {
		t.Fatalf("/api/v1/metrics: %v %s", err, r.body)
	}
	g := doc.Data[0]
	if lbl := g["labels"].(map[string]any); lbl["job"] != "f" || lbl["i"] != "x" || g["last_push_successful"] != true {
		t.Fatalf("group: %v", g)
	}
	fam := g["req_total"].(map[string]any)
	m := fam["metrics"].([]any)[0].(map[string]any)
	if fam["type"] != "COUNTER" || fam["help"] != "Requests." || m["value"] != "1" {
		t.Fatalf("family: %v", fam)
	}
	if _, ok := g["push_time_seconds"]; !ok {
		t.Fatalf("push_time_seconds missing: %v", g)
	}

	on.ready = "replaying WAL"
	if r := on.do(t, "GET", "/-/ready", nil); r.code != 503 || r.body != "replaying WAL" {
		t.Fatalf("not ready: %d %q", r.code, r.body)
	}
	if r := on.do(t, "PUT", "/api/v1/admin/wipe", nil); r.code != 202 {
		t.Fatalf("wipe: %d", r.code)
	}
	if got := on.scrape(t); strings.Contains(got, "req_total") {
		t.Fatalf("after wipe:\n%s", got)
	}
}

// failingJournal fails every operation, as a full disk would.
type failingJournal struct{}

func (failingJournal) Enqueue(uint8, []byte) func(context.Context) error {
	return func(context.Context) error { return errors.New("write segment 3: no space left on device") }
}
func (failingJournal) Barrier(context.Context) error { return errors.New("no space left on device") }

func TestWALFailureAnswers503(t *testing.T) {
	cfg := configs.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	store := aggregate.New(aggregate.Settings{Aggregation: cfg.Aggregation, Limits: cfg.Limits, SeriesTTL: time.Hour},
		time.Now, failingJournal{}, nil, reg, slog.New(slog.DiscardHandler))
	store.SetReady()
	env := &testEnv{}
	env.app = NewApp(Options{
		Logger: slog.New(slog.DiscardHandler), Registerer: reg, Gatherer: reg, Aggregator: store,
		Limits: func() configs.LimitsConfig { return cfg.Limits },
		Ready: func() string {
			if err := store.Healthy(); err != nil {
				return err.Error()
			}
			return ""
		},
		Healthy: func() string {
			if err := store.Healthy(); err != nil {
				return "write-ahead log failed; restart Sluice: " + err.Error()
			}
			return ""
		},
		Reload: func() error { return nil }, Quit: func() {},
	}, int(cfg.Limits.MaxBodyBytes))
	if r := env.do(t, "GET", "/-/healthy", nil); r.code != 200 {
		t.Fatalf("healthy before the failure: %d %s", r.code, r.body)
	}
	for i, wantBody := range []string{"no space left on device", "accepts nothing until it is restarted"} {
		r := env.do(t, "POST", "/metrics/job/f", []byte("x 1\n"))
		if r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, wantBody) {
			t.Fatalf("push %d: %d %q (Retry-After %q); want 503 naming %q", i, r.code, r.body, r.header.Get("Retry-After"), wantBody)
		}
	}
	if r := env.do(t, "GET", "/-/ready", nil); r.code != 503 {
		t.Fatalf("ready after a WAL failure: %d", r.code)
	}
	// Nothing but a restart helps: the liveness probe must say so.
	if r := env.do(t, "GET", "/-/healthy", nil); r.code != 503 || !strings.Contains(r.body, "restart Sluice") {
		t.Fatalf("healthy after a WAL failure: %d %q, want 503", r.code, r.body)
	}
	if r := env.do(t, "HEAD", "/-/healthy", nil); r.code != 503 {
		t.Fatalf("HEAD healthy after a WAL failure: %d, want 503", r.code)
	}
}

// clear_mode in the grouping key applies to every series of the push and
// is not part of the group; an empty clear_mode is no clear_mode.
func TestModeInGroupingKey(t *testing.T) {
	type push struct {
		path, body string
		code       int
	}
	cases := []struct {
		name   string
		pushes []push
		want   []string // in the scrape
		absent []string
	}{
		{
			name: "replace for the whole push",
			pushes: []push{
				{"/metrics/job/a/clear_mode/replace", "x_total 1\ny 5\n", 200},
				{"/metrics/job/a/clear_mode/replace", "x_total 4\ny 2\n", 200},
			},
			want:   []string{`x_total{instance="",job="a"} 4`, `y{instance="",job="a"} 2`},
			absent: []string{`clear_mode=`},
		},
		{
			name: "overrides the series' own",
			pushes: []push{
				{"/metrics/job/b/clearmode/max1m", "m{clear_mode=\"sum\"} 3\n", 200},
				{"/metrics/job/b/clearmode/max1m", "m{clear_mode=\"sum\"} 2\n", 200},
			},
			want:   []string{`m{instance="",job="b"} 3`},
			absent: []string{`clearmode=`, `clear_mode=`},
		},
		{
			name: "same group as without it",
			pushes: []push{
				{"/metrics/job/c", "n 1\n", 200},
				{"/metrics/job/c/clear_mode/sum", "n 2\n", 200},
			},
			want: []string{`n{instance="",job="c"} 3`},
		},
		{
			name: "empty clear_mode is none",
			pushes: []push{
				{"/metrics/job/d", "e{clear_mode=\"\"} 1\n", 200},
				{"/metrics/job/d/clear_mode@base64/=", "e 1\n", 200},
			},
			want: []string{`e{instance="",job="d"} 2`},
		},
		{
			name:   "unknown mode in the path",
			pushes: []push{{"/metrics/job/f/clear_mode/sometimes", "u 1\n", 400}},
			absent: []string{`u{`},
		},
		{
			name:   "both spellings in the path",
			pushes: []push{{"/metrics/job/g/clear_mode/sum/clearmode/replace", "v 1\n", 400}},
			absent: []string{`v{`},
		},
		{
			name:   "unknown mode in the path of an empty push",
			pushes: []push{{"/metrics/job/g2/clear_mode/sometimes", "", 400}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, false, false, nil)
			for i, p := range tc.pushes {
				if r := env.do(t, "POST", p.path, []byte(p.body)); r.code != p.code {
					t.Fatalf("push %d to %s: %d %s, want %d", i, p.path, r.code, r.body, p.code)
				}
			}
			got := env.scrape(t)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("scrape lacks %s:\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(got, a) {
					t.Errorf("scrape has %s:\n%s", a, got)
				}
			}
		})
	}
	// DELETE with the mode in the path deletes the group without it.
	env := newTestEnv(t, false, false, nil)
	env.do(t, "POST", "/metrics/job/h", []byte("w 1\n"))
	if r := env.do(t, "DELETE", "/metrics/job/h/clear_mode/sum", nil); r.code != 202 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	if got := env.scrape(t); strings.Contains(got, `w{`) {
		t.Errorf("group not deleted:\n%s", got)
	}
	// A DELETE with a mode no push could use is refused, as the push.
	env.do(t, "POST", "/metrics/job/h", []byte("w 1\n"))
	if r := env.do(t, "DELETE", "/metrics/job/h/clear_mode/bogus", nil); r.code != 400 || !strings.Contains(r.body, `unknown clear_mode "bogus"`) {
		t.Fatalf("delete with a bad mode: %d %s, want 400", r.code, r.body)
	}
	if got := env.scrape(t); !strings.Contains(got, `w{`) {
		t.Errorf("a refused DELETE deleted the group:\n%s", got)
	}
}

// A summary's _count must be a count: expfmt would turn a negative, NaN or
// infinite one into 2^63 (amd64) and the running total with it.
func TestSummaryCountMustBeACount(t *testing.T) {
	cases := []struct {
		name, count string
		code        int
	}{
		{"negative", "-1", 400},
		{"NaN", "NaN", 400},
		{"infinite", "+Inf", 400},
		{"beyond 2^53", "1e30", 400},
		{"zero", "0", 200},
		{"a count", "3", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, false, false, nil)
			body := "# TYPE s summary\ns_sum 1\ns_count " + tc.count + "\n"
			r := env.do(t, "POST", "/metrics/job/x", []byte(body))
			if r.code != tc.code {
				t.Fatalf("push with _count %s: %d %s, want %d", tc.count, r.code, r.body, tc.code)
			}
			got := env.scrape(t)
			if tc.code != 200 {
				if !strings.Contains(r.body, "count") || strings.Contains(got, "s_count") {
					t.Errorf("answer %q should name the count, and nothing be stored:\n%s", r.body, got)
				}
				return
			}
			if want := `s_count{instance="",job="x"} ` + tc.count; !strings.Contains(got, want) {
				t.Errorf("scrape lacks %s:\n%s", want, got)
			}
		})
	}
	// The general parser's path (bodies the fast parser leaves to
	// expfmt), on every architecture (expfmt turns -1 into 0 on arm64).
	for _, body := range []string{
		// a quoted name in braces, first, which the fast parser leaves
		// to expfmt
		"{\"t\"} 1\n# TYPE s summary\ns_sum 1\ns_count -1\n",
		// the same, and a brace inside a quoted label value
		"{\"t\"} 1\n# TYPE s summary\ns_sum{a=\"}\"} 1\ns_count{a=\"}\"} NaN\n",
	} {
		env := newTestEnv(t, false, false, nil)
		if r := env.do(t, "POST", "/metrics/job/x", []byte(body)); r.code != 400 || !strings.Contains(r.body, "is not a count") {
			t.Errorf("general path, %q: %d %s, want 400 naming the count", body, r.code, r.body)
		}
	}
	// A gauge named like a summary's _count, before the summary, is not
	// its count (both bodies go to expfmt: the capitalised type): the
	// push is refused for the names clashing, not for the count.
	env := newTestEnv(t, false, false, nil)
	body := "# TYPE foo_count Gauge\nfoo_count{x=\"1\"} -1\n# TYPE foo summary\nfoo{quantile=\"0.5\"} 1\nfoo_sum 1\nfoo_count 1\n"
	if r := env.do(t, "POST", "/metrics/job/y", []byte(body)); r.code != 400 || !strings.Contains(r.body, "would collide") {
		t.Errorf("a gauge foo_count beside summary foo: %d %s, want 400 for the clashing names", r.code, r.body)
	}
	// A previous body's bad count does not stick to the parser.
	var tp textParser
	if _, err := decodeText([]byte("# TYPE s summary\ns_count -1\n"), &tp); err == nil {
		t.Fatal("bad count accepted")
	}
	if fams, err := decodeText(nil, &tp); err != nil || len(fams) != 0 {
		t.Errorf("an empty body (a PUT that empties a group) after a bad one: %v %v", fams, err)
	}
}

// TestAPIMetricsNativeHistogram: /api/v1/metrics lists a native
// histogram's buckets as the Pushgateway (and Prometheus' HTTP API) do.
func TestAPIMetricsNativeHistogram(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rpc_seconds", Help: "RPCs.", NativeHistogramBucketFactor: 2})
	for _, v := range []float64{0, 0.75, 3, 3} {
		h.Observe(v)
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	fam := &dto.MetricFamily{Name: ptr("rpc_seconds"), Help: ptr("RPCs."), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{&m}}
	if r := env.do(t, "POST", "/metrics/job/n", encodeDelimited(t, fam), "Content-Type", contentTypeProto); r.code != 200 {
		t.Fatalf("push: %d %s", r.code, r.body)
	}
	r := env.do(t, "GET", "/api/v1/metrics", nil)
	var doc struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil || len(doc.Data) != 1 {
		t.Fatalf("/api/v1/metrics: %v %s", err, r.body)
	}
	var got struct {
		Metrics []struct {
			Count   string  `json:"count"`
			Sum     string  `json:"sum"`
			Buckets [][]any `json:"buckets"`
		} `json:"metrics"`
	}
	if err := json.Unmarshal(doc.Data[0]["rpc_seconds"], &got); err != nil || len(got.Metrics) != 1 {
		t.Fatalf("rpc_seconds: %v %s", err, doc.Data[0]["rpc_seconds"])
	}
	// Schema 0: 0 in the zero bucket (client_golang's threshold is
	// 2^-128), 0.75 in (0.5,1], 3 twice in (2,4].
	want := `[[3,"-2.938735877055719e-39","2.938735877055719e-39","1"],[0,"0.5","1","1"],[0,"2","4","2"]]`
	b, _ := json.Marshal(got.Metrics[0].Buckets)
	if got.Metrics[0].Count != "4" || got.Metrics[0].Sum != "6.75" || string(b) != want {
		t.Fatalf("native histogram: count %s sum %s buckets %s; want 4, 6.75, %s", got.Metrics[0].Count, got.Metrics[0].Sum, b, want)
	}
}

// TestOpenMetricsScrapeShowsClassicHistograms: a Prometheus asks for
// OpenMetrics; a pushed classic histogram is in that exposition, buckets
// and all (its counts were floats, which the OpenMetrics encoder refuses,
// so the family came out empty).
func TestOpenMetricsScrapeShowsClassicHistograms(t *testing.T) {
	env := newTestEnv(t, false, false, nil)
	env.do(t, "POST", "/metrics/job/x", []byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"))
	r := env.do(t, "GET", "/metrics", nil, "Accept", "application/openmetrics-text;version=1.0.0")
	for _, want := range []string{`h_bucket{instance="",job="x",le="1.0"} 1`, `h_bucket{instance="",job="x",le="+Inf"} 2`, `h_count{instance="",job="x"} 2`} {
		if !strings.Contains(r.body, want) {
			t.Fatalf("OpenMetrics scrape lacks %q:\n%s", want, r.body)
		}
	}

	// Fractional counts (left out alone: the groups after it stay), a
	// native-only histogram (its +Inf bucket, _sum and _count) and one
	// with native and classic buckets (its classic ones).
	frac := &dto.MetricFamily{Name: ptr("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{Histogram: &dto.Histogram{
		SampleCountFloat: ptr(1.5), SampleSum: ptr(1.0), Bucket: []*dto.Bucket{{UpperBound: ptr(1.0), CumulativeCountFloat: ptr(0.5)}}}}}}
	env.do(t, "POST", "/metrics/job/y", encodeDelimited(t, frac), "Content-Type", contentTypeProto)
	env.do(t, "POST", "/metrics/job/z", []byte("# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n"))
	for name, buckets := range map[string][]float64{"nat": nil, "dual": {1, 10}} {
		hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: "h.", NativeHistogramBucketFactor: 1.1, Buckets: buckets})
		if buckets == nil {
			hist = prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: "h.", NativeHistogramBucketFactor: 1.1})
		}
		hist.Observe(2)
		hist.Observe(3)
		var m dto.Metric
		if err := hist.Write(&m); err != nil {
			t.Fatal(err)
		}
		f := &dto.MetricFamily{Name: ptr(name), Help: ptr("h."), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{&m}}
		if r := env.do(t, "POST", "/metrics/job/n", encodeDelimited(t, f), "Content-Type", contentTypeProto); r.code != 200 {
			t.Fatalf("push %s: %d %s", name, r.code, r.body)
		}
	}
	r = env.do(t, "GET", "/metrics", nil, "Accept", "application/openmetrics-text;version=1.0.0")
	for _, want := range []string{
		`h_count{instance="",job="x"} 2`, `h_count{instance="",job="z"} 3`,
		`nat_bucket{instance="",job="n",le="+Inf"} 2`, `nat_count{instance="",job="n"} 2`,
		`dual_bucket{instance="",job="n",le="10.0"} 2`, `dual_count{instance="",job="n"} 2`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("OpenMetrics scrape lacks %q:\n%s", want, r.body)
		}
	}
	if strings.Contains(r.body, `h_count{instance="",job="y"}`) || strings.Contains(r.body, `h_sum{instance="",job="y"}`) {
		t.Errorf("fractional counts in an OpenMetrics scrape:\n%s", r.body)
	}
	// The text format still shows the fractional one.
	if r := env.do(t, "GET", "/metrics", nil); !strings.Contains(r.body, `h_count{instance="",job="y"} 1.5`) {
		t.Errorf("text scrape lacks the fractional histogram:\n%s", r.body)
	}
}

package ingest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

const (
	testToken    = "0123456789abcdef-test-token"
	testPassword = "hunter2-pushes"
)

// hardenedEnv is a testEnv whose web config (credentials) and limits can
// be swapped as a reload would.
type hardenedEnv struct {
	*testEnv
	web    atomic.Pointer[configs.WebConfig]
	limits atomic.Pointer[configs.LimitsConfig]
	agg    Aggregator
	addr   string // set once listen served the app on a port
}

// newHardenedEnv builds the app with a real store (wrapped by wrap, if
// given) and the config mutate makes.
func newHardenedEnv(t *testing.T, mutate func(*configs.Config), wrap func(Aggregator) Aggregator) *hardenedEnv {
	t.Helper()
	cfg := configs.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	env := &hardenedEnv{testEnv: &testEnv{relay: &fakeRelay{}, reg: reg, cfg: &cfg}}
	env.web.Store(&cfg.Web)
	env.limits.Store(&cfg.Limits)
	var agg Aggregator = aggregate.New(aggregate.Settings{Aggregation: cfg.Aggregation, Limits: cfg.Limits, SeriesTTL: time.Hour},
		time.Now, nil, env.relay, reg, slog.New(slog.DiscardHandler))
	if wrap != nil {
		agg = wrap(agg)
	}
	env.agg = agg
	env.app = NewApp(Options{
		Logger:          slog.New(slog.DiscardHandler),
		Registerer:      reg,
		Gatherer:        reg,
		Aggregator:      agg,
		Limits:          func() configs.LimitsConfig { return *env.limits.Load() },
		Ingest:          func() configs.IngestConfig { return cfg.Ingest },
		Web:             env.web.Load,
		EnableAdminAPI:  true,
		EnableLifecycle: true,
		Ready:           func() string { return "" },
		Reload:          func() error { return nil },
		Quit:            func() {},
	}, int(cfg.Limits.MaxBodyBytes))
	return env
}

// withAuth configures one basic auth user (cheap bcrypt cost for tests)
// and one bearer token.
// listen serves the app on a loopback port until the test ends: unlike
// app.Test, it shows what fasthttp answers before a handler runs.
func (e *hardenedEnv) listen(t *testing.T) string {
	t.Helper()
	if e.addr != "" {
		return e.addr
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.app.Listener(ln) }()
	t.Cleanup(func() {
		_ = e.app.ShutdownWithTimeout(5 * time.Second)
		<-done
	})
	e.addr = ln.Addr().String()
	return e.addr
}

type netResp struct {
	resp
	closed bool // the server closes the connection
}

// serveOne sends one request over a real connection.
func (e *hardenedEnv) serveOne(t *testing.T, method, path string, body []byte, headers ...string) netResp {
	t.Helper()
	addr := e.listen(t)
	req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	r, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return netResp{resp: resp{code: r.StatusCode, body: string(b), header: r.Header}, closed: r.Close}
}

func withAuth(t *testing.T, metrics, admin bool) func(*configs.Config) {
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *configs.Config) {
		c.Web.BasicAuthUsers = map[string]string{"lambda": string(hash)}
		c.Web.BearerTokens = []configs.BearerToken{{Token: testToken}}
		c.Web.ProtectMetrics, c.Web.ProtectAdmin = metrics, admin
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestClassify(t *testing.T) {
	cases := []struct {
		method, path string
		want         endpointClass
	}{
		{"PUT", "/metrics/job/f", classPush},
		{"POST", "/metrics", classPush},
		{"DELETE", "/metrics/job/f/a/b", classPush},
		{"GET", "/metrics/job/f", classPush}, // 405, but behind credentials
		{"POST", "/api/v1/write", classRemoteWrite},
		{"GET", "/api/v1/write", classRemoteWrite},
		{"GET", "/metrics", classRead},
		{"HEAD", "/metrics", classRead},
		{"GET", "/", classRead},
		{"GET", "/api/v1/status", classRead},
		{"GET", "/api/v1/metrics", classRead},
		{"PUT", "/api/v1/admin/wipe", classAdmin},
		{"POST", "/-/reload", classAdmin},
		{"POST", "/-/quit", classAdmin},
		{"GET", "/-/healthy", classOpen},
		{"GET", "/-/ready", classOpen},
		{"OPTIONS", "/api/v1/metrics", classOpen},
		{"POST", "/Metrics/job/f", classRead}, // 404: routes are case sensitive
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			if got := classify(tc.method, tc.path); got != tc.want {
				t.Fatalf("classify = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestAuthOverHTTP(t *testing.T) {
	rw := rw1Body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "up", "job", "x"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}}})
	type call struct {
		method, path, auth string
		body               []byte
		headers            []string
	}
	push := func(auth string) call { return call{"POST", "/metrics/job/f", auth, []byte("a 1\n"), nil} }
	write := func(auth string) call {
		return call{"POST", "/api/v1/write", auth, rw, []string{"Content-Type", "application/x-protobuf", "Content-Encoding", "snappy"}}
	}
	cases := []struct {
		name           string
		metrics, admin bool
		call           call
		want           int
		wantBody       string
	}{
		{name: "push without credentials", call: push(""), want: 401, wantBody: "unauthorized: no credentials"},
		{name: "push with a wrong password", call: push(basic("lambda", "hunter3")), want: 401, wantBody: "unauthorized: invalid credentials"},
		{name: "push as an unknown user", call: push(basic("lambada", testPassword)), want: 401, wantBody: "invalid credentials"},
		{name: "push with a wrong token", call: push("Bearer 0123456789abcdef-test-tokeN"), want: 401, wantBody: "invalid credentials"},
		{name: "push with an unknown scheme", call: push("Digest abc"), want: 401, wantBody: "invalid credentials"},
		{name: "push with basic auth", call: push(basic("lambda", testPassword)), want: 200},
		{name: "push with a token", call: push("Bearer " + testToken), want: 200},
		{name: "push with a lower-case scheme", call: push("bearer " + testToken), want: 200},
		{name: "delete without credentials", call: call{"DELETE", "/metrics/job/f", "", nil, nil}, want: 401},
		{name: "remote_write without credentials", call: write(""), want: 401, wantBody: "no credentials"},
		{name: "remote_write with a token", call: write("Bearer " + testToken), want: 204},
		{name: "scrape open by default", call: call{"GET", "/metrics", "", nil, nil}, want: 200},
		{name: "status open by default", call: call{"GET", "/api/v1/status", "", nil, nil}, want: 200},
		{name: "reload open by default", call: call{"POST", "/-/reload", "", nil, nil}, want: 200},
		{name: "scrape protected", metrics: true, call: call{"GET", "/metrics", "", nil, nil}, want: 401},
		{name: "JSON API protected", metrics: true, call: call{"GET", "/api/v1/metrics", "", nil, nil}, want: 401},
		{name: "scrape with credentials", metrics: true, call: call{"GET", "/metrics", basic("lambda", testPassword), nil, nil}, want: 200},
		{name: "reload protected", admin: true, call: call{"POST", "/-/reload", "", nil, nil}, want: 401},
		{name: "wipe protected", admin: true, call: call{"PUT", "/api/v1/admin/wipe", "", nil, nil}, want: 401},
		{name: "reload with credentials", admin: true, call: call{"POST", "/-/reload", "Bearer " + testToken, nil, nil}, want: 200},
		{name: "health always open", metrics: true, admin: true, call: call{"GET", "/-/healthy", "", nil, nil}, want: 200},
		{name: "ready always open", metrics: true, admin: true, call: call{"GET", "/-/ready", "", nil, nil}, want: 200},
		{name: "CORS preflight open", metrics: true, admin: true, call: call{"OPTIONS", "/api/v1/metrics", "", nil, nil}, want: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newHardenedEnv(t, withAuth(t, tc.metrics, tc.admin), nil)
			h := tc.call.headers
			if tc.call.auth != "" {
				h = append(h, "Authorization", tc.call.auth)
			}
			r := env.serveOne(t, tc.call.method, tc.call.path, tc.call.body, h...)
			if r.code != tc.want || !strings.Contains(r.body, tc.wantBody) {
				t.Fatalf("%s %s: %d %q, want %d %q", tc.call.method, tc.call.path, r.code, r.body, tc.want, tc.wantBody)
			}
			if r.code == 401 {
				if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="sluice", Bearer realm="sluice"` {
					t.Fatalf("WWW-Authenticate = %q", got)
				}
				if !r.closed {
					t.Fatal("a 401 must close the connection")
				}
			}
		})
	}
}

func TestNoCredentialsConfiguredMeansOpen(t *testing.T) {
	env := newHardenedEnv(t, nil, nil)
	if r := env.do(t, "POST", "/metrics/job/f", []byte("a 1\n"), "Authorization", "Bearer whatever"); r.code != 200 {
		t.Fatalf("push without auth configured: %d %q", r.code, r.body)
	}
}

func TestAuthFollowsReload(t *testing.T) {
	env := newHardenedEnv(t, withAuth(t, false, false), nil)
	if r := env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n"), "Authorization", "Bearer "+testToken); r.code != 200 {
		t.Fatalf("before reload: %d %q", r.code, r.body)
	}
	next := *env.web.Load()
	next.BearerTokens = nil
	env.web.Store(&next)
	if r := env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n"), "Authorization", "Bearer "+testToken); r.code != 401 {
		t.Fatalf("a token removed by a reload must be refused: %d %q", r.code, r.body)
	}
	if r := env.serveOne(t, "POST", "/metrics/job/f", []byte("a 1\n"), "Authorization", basic("lambda", testPassword)); r.code != 200 {
		t.Fatalf("basic auth kept by the reload: %d %q", r.code, r.body)
	}
}

// TestAuthRefusesBodyUnread sends only the headers of a 64 MiB push: the
// 401 must come without Sluice waiting for (or reading) the body.
func TestAuthRefusesBodyUnread(t *testing.T) {
	env := newHardenedEnv(t, withAuth(t, false, false), nil)
	addr := env.listen(t)
	for _, auth := range []string{"", "Authorization: " + basic("lambda", "wrong") + "\r\n"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST /metrics/job/f HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\na 1\n", auth, 64<<20)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer before the body was sent: %v", err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != 401 || !resp.Close {
			t.Fatalf("auth %q: status %d, close %v; want 401 and the connection closed", auth, resp.StatusCode, resp.Close)
		}
	}
	// A chunked body: refused after its first chunk's size line, and still
	// a 401 (fasthttp empties the request when the body fails to read),
	// with WWW-Authenticate; over remote_write 2.0 with the Written headers.
	for _, c := range []struct{ path, ct string }{
		{"/metrics/job/f", "text/plain"},
		{"/api/v1/write", "application/x-protobuf;proto=io.prometheus.write.v2.Request"},
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Encoding: snappy\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n", c.path, c.ct)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("chunked %s: no answer: %v", c.path, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("chunked %s without credentials: %d %v; want 401 with WWW-Authenticate", c.path, resp.StatusCode, resp.Header)
		}
		if c.path == "/api/v1/write" && resp.Header.Get(headerSamplesWritten) != "0" {
			t.Fatalf("chunked remote_write 2.0: no %s header: %v", headerSamplesWritten, resp.Header)
		}
	}
	// A body over limits.max_body_bytes with valid credentials is still 413.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST /metrics/job/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", testToken, 64<<20)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("authorised oversized body: %d, want 413", resp.StatusCode)
	}
}

func TestAuthCache(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	a := newAuthenticator(&configs.WebConfig{BasicAuthUsers: map[string]string{"lambda": string(hash)}})
	for i := 0; i < 3; i++ {
		if a.check(basic("lambda", testPassword)) != authOK {
			t.Fatal("valid credentials refused")
		}
		if a.check(basic("nobody", testPassword)) != authInvalid {
			t.Fatal("unknown user accepted")
		}
	}
	if len(a.cache) != 2 {
		t.Fatalf("cache has %d entries, want 2 (one success, one failure)", len(a.cache))
	}
	a.cacheSize = 8
	for i := 0; i < 3*a.cacheSize; i++ {
		a.check(basic("lambda", fmt.Sprint(i))) // wrong passwords, each compared once
	}
	if len(a.cache) != a.cacheSize {
		t.Fatalf("cache has %d entries, want its bound %d", len(a.cache), a.cacheSize)
	}
}

// BenchmarkAuthBasicCached is what a push with valid basic auth costs
// once its credentials are cached (a bcrypt at cost 10 is ~50 ms).
func BenchmarkAuthBasicCached(b *testing.B) {
	hash, _ := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.DefaultCost)
	a := newAuthenticator(&configs.WebConfig{BasicAuthUsers: map[string]string{"lambda": string(hash)}})
	h := basic("lambda", testPassword)
	a.check(h) // the one bcrypt
	b.ReportAllocs()
	for b.Loop() {
		if a.check(h) != authOK {
			b.Fatal("refused")
		}
	}
}

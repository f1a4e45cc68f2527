package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/prometheus/common/expfmt"
)

// TestPushgatewayCompatDetails checks, against the real binary and with
// client_golang as the sender, what a Pushgateway user would notice: the
// answer bodies, OpenMetrics pushes, pushes of the Go and process
// collectors that Sluice exposes itself, and limits on path labels.
func TestPushgatewayCompatDetails(t *testing.T) {
	bin := buildBinary(t)
	p := startSluice(t, bin)
	defer p.stop(t)

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}

	t.Run("answers have empty bodies", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			code         int
		}{
			{"PUT", "/metrics/job/empty", 200},
			{"POST", "/metrics/job/empty", 200},
			{"DELETE", "/metrics/job/empty", 202},
		} {
			if code, body := do(c.method, c.path, "e 1\n"); code != c.code || body != "" {
				t.Errorf("%s %s: %d %q, want %d and no body", c.method, c.path, code, body, c.code)
			}
		}
	})

	t.Run("OpenMetrics push from client_golang", func(t *testing.T) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "om_jobs_total", Help: "Jobs."})
		c.Add(3)
		if err := push.New(p.url, "om").Format(expfmt.NewFormat(expfmt.TypeOpenMetrics)).Collector(c).Push(); err != nil {
			t.Fatalf("push in OpenMetrics: %v", err)
		}
		if _, body := p.get(t, "/metrics"); !strings.Contains(body, `om_jobs_total{instance="",job="om"} 3`) {
			t.Errorf("GET /metrics lacks the OpenMetrics push:\n%s", grepLines(body, "om_jobs"))
		}
	})

	t.Run("a job pushing its default registry", func(t *testing.T) {
		// A HELP text other than Sluice's own (another client_golang
		// version) must not hide the family from scrapes. First, so that
		// the family is created with it.
		if code, body := do("POST", "/metrics/job/old", "# HELP go_threads Threads, as an older client says.\n# TYPE go_threads gauge\ngo_threads 7\n"); code != 200 {
			t.Fatalf("push with another HELP: %d %s", code, body)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if err := push.New(p.url, "batch").Gatherer(reg).Push(); err != nil {
			t.Fatalf("push of Go and process collectors: %v", err)
		}
		_, body := p.get(t, "/metrics")
		for _, want := range []string{`go_goroutines{instance="",job="batch"}`, "\ngo_goroutines ", `go_threads{instance="",job="old"} 7`, "\ngo_threads "} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /metrics lacks %q:\n%s", strings.TrimSpace(want), grepLines(body, "go_"))
			}
		}
		// Another type for one of Sluice's own families is refused.
		code, msg := do("POST", "/metrics/job/b7", "go_goroutines 1\n")
		if code != 400 || !strings.Contains(msg, "one of Sluice's own metrics") {
			t.Errorf("untyped go_goroutines: %d %q, want 400 naming the clash", code, msg)
		}
	})

	t.Run("405 says what is allowed, unknown API paths are 404", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			code         int
			allow        string
		}{
			{"GET", "/metrics/job/x", 405, "DELETE, POST, PUT"},
			{"GET", "/api/v1/write", 405, "OPTIONS, POST"},
			{"POST", "/api/v1/status", 405, "GET, HEAD, OPTIONS"},
			{"GET", "/api/v1/nonexist", 404, ""},
			{"OPTIONS", "/api/v1/nonexist", 200, ""},                // CORS preflight
			{"OPTIONS", "/metrics/job/x", 405, "DELETE, POST, PUT"}, // no CORS on pushes (README)
			{"HEAD", "/api/v1/status", 200, ""},
			{"PATCH", "/metrics", 405, "DELETE, GET, HEAD, POST, PUT"}, // the scrape is a GET
			{"GET", "/-/quit", 405, "POST, PUT"},
		} {
			req, _ := http.NewRequest(c.method, p.url+c.path, nil)
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != c.code || r.Header.Get("Allow") != c.allow {
				t.Errorf("%s %s: %d Allow %q, want %d Allow %q", c.method, c.path, r.StatusCode, r.Header.Get("Allow"), c.code, c.allow)
			}
		}
	})

	t.Run("requests the server refuses are counted", func(t *testing.T) {
		raw := func(req string) string {
			t.Helper()
			conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(conn, 4096))
			return string(b)
		}
		big := fmt.Sprintf("Content-Length: %d\r\n\r\n", 17<<20)
		if r := raw("POST /metrics/job/big HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" + big); !strings.HasPrefix(r, "HTTP/1.1 413") {
			t.Fatalf("oversized push: %q", r)
		}
		if r := raw("POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n" + big); !strings.HasPrefix(r, "HTTP/1.1 413") {
			t.Fatalf("oversized remote write: %q", r)
		}
		if r := raw("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("h", 1<<20) + "\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 431") {
			t.Fatalf("oversized headers: %q", r[:min(len(r), 200)])
		}
		// A Content-Length that overflows: 400, without the request's
		// headers (and credentials) quoted back.
		if r := raw("POST /metrics/job/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN_S3cr3t\r\nContent-Length: 999999999999999999999999\r\n\r\n"); !strings.HasPrefix(r, "HTTP/1.1 400") || strings.Contains(r, "TOKEN_S3cr3t") {
			t.Fatalf("overflowing Content-Length: %q", r)
		}
		_, body := p.get(t, "/metrics")
		for _, want := range []string{
			`sluice_push_requests_total{code="413",method="POST"} 1`,
			`sluice_rejected_pushes_total{reason="body_too_large"} 1`,
			`sluice_remote_write_requests_total{code="413",version="1.0"} 1`,
			`sluice_remote_write_rejected_total{reason="body_too_large"} 1`,
			`sluice_limit_exceeded_total{limit="max_body_bytes"} 2`,
			`sluice_limit_exceeded_total{limit="max_header_bytes"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /metrics lacks %s:\n%s", want, grepLines(body, "413")+"\n"+grepLines(body, "too_large")+"\n"+grepLines(body, "limit_exceeded"))
			}
		}
	})

	t.Run("path labels obey the label limits", func(t *testing.T) {
		long := strings.Repeat("a", 2100)
		code, msg := do("POST", "/metrics/job/g2/l/"+long, "lv 1\n")
		if code != 413 || !strings.Contains(msg, "max_label_value_length") {
			t.Errorf("2100-byte path label value: %d %q, want 413 naming the limit", code, msg)
		}
		if _, body := p.get(t, "/metrics"); strings.Contains(body, "lv{") {
			t.Error("the refused push was stored")
		}
		// The metric name is the value of __name__: the same limit.
		code, msg = do("POST", "/metrics/job/g3", "m"+strings.Repeat("x", 3000)+" 1\n")
		if code != 413 || !strings.Contains(msg, "max_label_value_length") {
			t.Errorf("3001-byte metric name: %d %q, want 413 naming the limit", code, msg[:min(len(msg), 200)])
		}
	})
}

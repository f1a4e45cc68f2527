package ingest

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// newUIEnv is an app whose Options.Targets is targets (nil: not wired).
func newUIEnv(t *testing.T, targets func() []TargetInfo) *testEnv {
	t.Helper()
	return newTestEnvOpts(t, false, false, nil, func(o *Options) {
		o.Status = Status{BuildInformation: map[string]string{"version": "9.9.9"}, StartTime: time.Unix(1_700_000_000, 0)}
		o.Targets = targets
	})
}

func (e *testEnv) mustPush(t *testing.T, method, path, body string) {
	t.Helper()
	if r := e.do(t, method, path, []byte(body), "Content-Type", "text/plain"); r.code != 200 {
		t.Fatalf("%s %s: %d %s", method, path, r.code, r.body)
	}
}

const hostile = `<script>alert(1)</script>`

func TestHomePage(t *testing.T) {
	sent := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	env := newUIEnv(t, func() []TargetInfo {
		return []TargetInfo{
			{Name: "vm", URL: "http://vm:8428/api/v1/write", ProtobufMessage: "prometheus.WriteRequest", Shards: 2,
				QueuedSamples: 12, BacklogBytes: 1536, LastSend: sent},
			{Name: "mimir" + hostile, URL: "https://mimir/api/v1/push", ProtobufMessage: "io.prometheus.write.v2.Request", Shards: 1,
				BacklogBytes: 3 << 20, LastSend: sent, LastError: "server returned HTTP status 500: " + hostile, LastErrorTime: sent.Add(time.Second)},
		}
	})
	// The hostile value as a grouping label (it holds a '/', so @base64)
	// and as a series label; "a/b" is another value that needs @base64.
	hostilePath := "/metrics/job/web/fn@base64/" + base64.RawURLEncoding.EncodeToString([]byte(hostile))
	env.mustPush(t, "POST", hostilePath,
		"# HELP req_total Requests "+hostile+"\n# TYPE req_total counter\nreq_total{clear_mode=\"sum\",path=\""+hostile+"\"} 3\n")
	env.mustPush(t, "POST", hostilePath, "# TYPE req_total counter\nreq_total{clear_mode=\"sum\",path=\""+hostile+"\"} 4\n")
	env.mustPush(t, "PUT", "/metrics/job/batch/path@base64/"+base64.RawURLEncoding.EncodeToString([]byte("a/b")),
		"# TYPE queue_depth gauge\nqueue_depth{clear_mode=\"replace\"} 7\n"+
			"# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 1\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 0.3\nlat_count 2\n")

	r := env.do(t, "GET", "/", nil)
	if r.code != 200 {
		t.Fatalf("GET /: %d %s", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/html; charset=utf-8", ct)
	}
	if strings.Contains(r.body, "<script>alert") {
		t.Fatalf("a hostile value reached the page unescaped:\n%s", r.body)
	}
	for _, want := range []string{
		// the hostile group, escaped, with its series, value and mode
		`fn=&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;`,
		`req_total{fn=&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;, instance=&#34;&#34;, job=&#34;web&#34;, path=&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;}`,
		`<td class="num value">7</td>`,
		`<td class="mode">sum</td>`,
		`Requests &lt;script&gt;alert(1)&lt;/script&gt;`,
		// the other group: gauge with its mode, histogram buckets, the delete path
		`<td class="num value">7</td>`,
		`<td class="mode">replace</td>`,
		`<tr><th>le 0.1</th><td>1</td></tr>`,
		`<tr><th>count</th><td>2</td></tr>`,
		`data-path="metrics/job/batch/path@base64/YS9i"`,
		`data-path="` + strings.TrimPrefix(hostilePath, "/") + `"`,
		// push times
		`title="push_failure_time_seconds 0">never</span>`,
		`Groups (<span id="group-count">2</span>)`,
		// targets
		`<td class="num" title="1536 bytes">1.5 KiB</td>`,
		`<td class="num" title="3145728 bytes">3.0 MiB</td>`,
		`<span class="state ok">ok</span>`,
		`<span class="state failing">failing</span>`,
		`mimir&lt;script&gt;alert(1)&lt;/script&gt;`,
		`server returned HTTP status 500: &lt;script&gt;`,
		`2026-05-01 10:00:00 UTC`,
		`version 9.9.9`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("GET / lacks %s", want)
		}
	}
	if strings.Count(r.body, `<td class="num value">7</td>`) != 2 {
		t.Errorf("want req_total 3+4=7 and queue_depth 7 on the page:\n%s", r.body)
	}

	// The inline script and style run only because the CSP allows their
	// hashes: a change to either that breaks the hash stops the buttons.
	csp := r.header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(r.body)
		if m == nil {
			t.Fatalf("no inline <%s>", tag)
		}
		h := sha256.Sum256([]byte(m[1]))
		if want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"; !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q does not default to none", csp)
	}
	// Nothing from elsewhere: no src at all, only relative links (they
	// keep working behind a path prefix).
	if strings.Contains(r.body, " src=") {
		t.Errorf("the page must load no other resource")
	}
	for _, m := range regexp.MustCompile(`href="([^"]*)"`).FindAllStringSubmatch(r.body, -1) {
		if strings.Contains(m[1], ":") || strings.HasPrefix(m[1], "/") {
			t.Errorf("link %q is not relative", m[1])
		}
	}
}

func TestHomePageTargetsSection(t *testing.T) {
	cases := []struct {
		name    string
		targets func() []TargetInfo
		want    string
	}{
		{"not wired", nil, "Target state is not available"},
		{"no targets", func() []TargetInfo { return nil }, "No remote_write target is configured"},
		{"never sent", func() []TargetInfo { return []TargetInfo{{Name: "vm", URL: "http://vm/api/v1/write"}} },
			`<span class="state waiting">waiting</span>`},
		{"recovered", func() []TargetInfo {
			return []TargetInfo{{Name: "vm", LastError: "timeout", LastErrorTime: time.Unix(10, 0), LastSend: time.Unix(20, 0)}}
		}, `<span class="state ok">ok</span>`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := newUIEnv(t, c.targets)
			r := env.do(t, "GET", "/", nil)
			if r.code != 200 || !strings.Contains(r.body, c.want) {
				t.Fatalf("GET /: %d, want %q in:\n%s", r.code, c.want, r.body)
			}
			if !strings.Contains(r.body, "No group yet") {
				t.Errorf("an empty store must say there is no group")
			}
		})
	}
}

func TestDeletePath(t *testing.T) {
	cases := []struct {
		name string
		ls   labels.Labels
		want string // "" to check only the round trip
	}{
		{"job only", labels.FromStrings("job", "a"), "metrics/job/a"},
		{"job first", labels.FromStrings("a", "1", "job", "j", "z", "2"), "metrics/job/j/a/1/z/2"},
		{"slash", labels.FromStrings("job", "j", "path", "a/b"), "metrics/job/j/path@base64/YS9i"},
		{"slash in job", labels.FromStrings("job", "x/y"), "metrics/job@base64/eC95"},
		{"dot segments", labels.FromStrings("job", "..", "d", "."), "metrics/job@base64/Li4/d@base64/Lg"},
		{"percent and query", labels.FromStrings("job", "j", "q", "50%?x#y"), "metrics/job/j/q/50%25%3Fx%23y"},
		{"hostile", labels.FromStrings("job", hostile), ""},
		{"unicode and spaces", labels.FromStrings("job", "j", "u", "grüße a+b"), ""},
		{"gravel without job", labels.FromStrings("env", "prod", "zone", "a/b"), "metrics/env/prod/zone@base64/YS9i"},
		{"no labels", labels.EmptyLabels(), "metrics/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := deletePath(c.ls)
			if c.want != "" && p != c.want {
				t.Errorf("deletePath = %q, want %q", p, c.want)
			}
			got, err := ParseGroupingKey(strings.TrimPrefix(p, "metrics"))
			if err != nil {
				t.Fatalf("ParseGroupingKey(%q): %v", p, err)
			}
			if !labels.Equal(got, c.ls) {
				t.Errorf("%q parses to %s, want %s", p, got, c.ls)
			}
		})
	}
}

// TestDeletePathDeletesGroup sends the page's DELETE to the app itself.
func TestDeletePathDeletesGroup(t *testing.T) {
	env := newUIEnv(t, nil)
	env.mustPush(t, "PUT", "/metrics/job/j/path@base64/"+base64.RawURLEncoding.EncodeToString([]byte("a/b"))+"/e@base64/=", "x 1\n")
	env.mustPush(t, "PUT", "/metrics/job/j", "y 1\n")
	env.mustPush(t, "PUT", "/metrics", "z 1\n") // the group without labels
	// (e="" is no label: the group is {job="j", path="a/b"}.)
	for _, ls := range []labels.Labels{labels.FromStrings("job", "j", "path", "a/b"), labels.EmptyLabels()} {
		p := deletePath(ls)
		if r := env.do(t, "DELETE", "/"+p, nil); r.code != 202 {
			t.Fatalf("DELETE /%s: %d %s", p, r.code, r.body)
		}
	}
	body := env.do(t, "GET", "/", nil).body
	if strings.Contains(body, "a/b") || strings.Contains(body, `data-path="metrics/"`) || !strings.Contains(body, `data-path="metrics/job/j"`) {
		t.Fatalf("after the DELETEs only {job=j} must be left:\n%s", body)
	}
}

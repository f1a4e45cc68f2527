package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
)

const chromiumPath = "/usr/bin/chromium"

// requireChromium skips the test when Debian's Chromium is missing,
// unless CI is set.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("browser test: %s missing (apt-get install chromium)", chromiumPath)
	}
}

// newBrowser starts Debian's headless Chromium with the flags this machine
// needs (no sandbox as root, no background network traffic), in a fresh
// profile. When the test ends the browser is killed and waited for.
//
// Start it after Sluice: cleanups run in reverse, so the browser is gone
// before Sluice is stopped. Chromium keeps speculative connections open
// that never send a request, and fasthttp counts such a connection as
// active, so Sluice's graceful shutdown would wait for it (up to its
// shutdown timeout).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc() // kills the browser and waits for it
	})
	return ctx
}

func TestWebUIDeleteGroupInBrowser(t *testing.T) {
	requireChromium(t)
	bin := buildBinary(t)
	p := startSluice(t, bin, "--forward.drain-timeout=1s", "--remote-write.url=http://127.0.0.1:1/api/v1/write?api_key=hunter2")
	ctx := newBrowser(t) // after startSluice: see newBrowser

	jobs := prometheus.NewCounter(prometheus.CounterOpts{Name: "ui_jobs_total", Help: "Jobs.", ConstLabels: prometheus.Labels{"clear_mode": "sum"}})
	jobs.Add(3)
	for range 2 {
		if err := push.New(p.url, "uitest").Grouping("path", "a/b").Collector(jobs).Add(); err != nil {
			t.Fatalf("push {job=uitest,path=a/b}: %v", err)
		}
	}
	keep := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ui_depth", Help: "Depth.", ConstLabels: prometheus.Labels{"clear_mode": "replace"}})
	keep.Set(5)
	if err := push.New(p.url, "uitest").Grouping("path", "keep").Collector(keep).Push(); err != nil {
		t.Fatalf("push {job=uitest,path=keep}: %v", err)
	}

	// The group with "a/b" must be deleted on the @base64 path, as the Go
	// client would, or the DELETE would name another group.
	button := chromedp.CSS(`button[data-path="metrics/job/uitest/path@base64/YS9i"]`)
	if err := chromedp.Do(ctx, chromedp.Navigate(p.url+"/"), chromedp.WaitVisible(button)); err != nil {
		t.Fatalf("load /: %v", err)
	}
	groupText := browserRun(t, ctx, chromedp.Evaluate[string](`document.querySelector('`+string(button)+`').closest('.group').innerText`))
	for _, want := range []string{`job="uitest"`, `path="a/b"`, `ui_jobs_total{instance="", job="uitest", path="a/b"}`, "\t6\t", "sum", "last push failure never"} {
		if !strings.Contains(groupText, want) {
			t.Errorf("group on the page lacks %q:\n%s", want, groupText)
		}
	}
	targetsText := browserRun(t, ctx, chromedp.Text(chromedp.CSS("#targets")))
	if !strings.Contains(targetsText, "127.0.0.1:1/api/v1/write") || strings.Contains(targetsText, "hunter2") {
		t.Errorf("targets section must show the target's URL without its api_key:\n%s", targetsText)
	}
	// The style sheet applies only if its CSP hash matches.
	if c := browserRun(t, ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector('`+string(button)+`')).backgroundColor`)); c != "rgb(204, 51, 51)" {
		t.Errorf("delete button colour %q: the inline style sheet did not apply (CSP hash?)", c)
	}

	// Accept the confirmation (it blocks the click, so from another
	// goroutine), then the group leaves the page at once and is still gone
	// after a reload, while the other group stays.
	dialogs := make(chan string, 4)
	events := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			dialogs <- string(ev.Type) + ": " + ev.Message
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				return
			}
		}
	}()
	clickCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(clickCtx, chromedp.Click(button), chromedp.WaitNotPresent(button)); err != nil {
		t.Fatalf("delete the group (the button's script must run and the DELETE answer 202): %v", err)
	}
	if d := <-dialogs; !strings.HasPrefix(d, `confirm: Delete every series of group {job="uitest", path="a/b"}`) {
		t.Errorf("want a confirmation naming the group, got %q", d)
	}
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`button[data-path="metrics/job/uitest/path/keep"]`))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if n := len(dialogs); n != 0 {
		t.Errorf("%d more dialogs, e.g. an alert that the delete failed: %q", n, <-dialogs)
	}
	keepText := browserRun(t, ctx, chromedp.Text(chromedp.CSS("#groups")))
	if strings.Contains(keepText, "a/b") || !strings.Contains(keepText, `ui_depth{instance="", job="uitest", path="keep"}`) {
		t.Errorf("after the delete and a reload, only the keep group must be on the page:\n%s", keepText)
	}
	if _, body := p.get(t, "/metrics"); strings.Contains(body, `path="a/b"`) || !strings.Contains(body, `ui_depth{instance="",job="uitest",path="keep"} 5`) {
		t.Errorf("GET /metrics after the delete: want no a/b series and ui_depth kept:\n%s", body)
	}
}

func browserRun[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

package ingest

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A connection that never sends a byte (a browser's spare connection)
// must not hold a graceful shutdown for the read timeout, while one
// whose request is under way is left to finish.
func TestShutdownClosesSilentConnections(t *testing.T) {
	env := newTestEnv(t, false, false, nil) // the default read timeout: 30 s
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := TrackConns(raw)
	served := make(chan error, 1)
	go func() { served <- env.app.Listener(conns) }()

	// One push on a keep-alive connection, to show the server works and
	// that a connection which sent a request is not counted as silent.
	resp, err := http.Post("http://"+raw.Addr().String()+"/metrics/job/j", "text/plain", strings.NewReader("x 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d", resp.StatusCode)
	}

	silent, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	deadline := time.Now().Add(10 * time.Second)
	for conns.Open() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := conns.Open(); n < 2 {
		t.Fatalf("%d connections tracked, want 2", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go conns.CloseSilentUntil(ctx, 50*time.Millisecond)
	// Far below the 30 s read timeout the silent connection would
	// otherwise hold the shutdown for.
	if err := env.app.ShutdownWithTimeout(15 * time.Second); err != nil {
		t.Fatalf("shutdown: %v (a silent connection held it)", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent connection is still open")
	}
}

package ingest

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ConnTracker wraps a listener and remembers the connections it accepted,
// so that a shutdown can close those that never sent a byte.
//
// fasthttp (v1.51, what fiber v2 uses) counts a new connection as active
// from the moment it is accepted, not from its first byte, and a graceful
// shutdown waits for active connections. A browser opens spare
// connections it may never use, so one open tab would hold a SIGTERM for
// the whole read timeout. Such connections carry no request, so closing
// them loses nothing. Wrap the plain TCP listener (below TLS: a TLS client
// has sent bytes once its handshake started, and is left to fasthttp).
type ConnTracker struct {
	net.Listener

	mu    sync.Mutex // guards conns
	conns map[*trackedConn]struct{}
}

// TrackConns wraps ln.
func TrackConns(ln net.Listener) *ConnTracker {
	return &ConnTracker{Listener: ln, conns: make(map[*trackedConn]struct{})}
}

// Accept accepts and remembers a connection.
func (t *ConnTracker) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, tracker: t}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

// CloseSilent closes every open connection that has not sent a byte yet
// and returns how many it closed.
func (t *ConnTracker) CloseSilent() int {
	t.mu.Lock()
	var silent []*trackedConn
	for c := range t.conns {
		if !c.read.Load() {
			silent = append(silent, c)
		}
	}
	t.mu.Unlock()
	for _, c := range silent {
		_ = c.Close()
	}
	return len(silent)
}

// CloseSilentUntil calls CloseSilent every interval until ctx is done: run
// it while a graceful shutdown waits, since a connection accepted just
// before the listener closed may still arrive.
func (t *ConnTracker) CloseSilentUntil(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		t.CloseSilent()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Open returns the number of connections open now.
func (t *ConnTracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

type trackedConn struct {
	net.Conn
	tracker *ConnTracker
	read    atomic.Bool // set once a byte arrived
	once    sync.Once
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.read.Load() {
		c.read.Store(true)
	}
	return n, err
}

// Lingering close, as net/http does: a connection closed while the
// client is still sending (an answer given before the whole request was
// read: 431 for oversized headers, 401 decided on the headers, 413) would
// otherwise be reset by the kernel, and a reset can reach the client
// before it has read the answer. Close sends a FIN, then reads and drops
// up to lingerBytes for up to lingerTimeout before it closes.
const (
	lingerBytes   = 256 << 10
	lingerTimeout = 500 * time.Millisecond
)

func (c *trackedConn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		c.tracker.mu.Lock()
		delete(c.tracker.conns, c)
		c.tracker.mu.Unlock()
	})
	tcp, ok := c.Conn.(*net.TCPConn)
	if !first || !ok {
		return c.Conn.Close()
	}
	if err := tcp.CloseWrite(); err != nil {
		return tcp.Close()
	}
	go func() {
		_ = tcp.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, tcp, lingerBytes)
		_ = tcp.Close()
	}()
	return nil
}

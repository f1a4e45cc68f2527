package ingest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestAuthRefusalDoesNotOutliveItsRequest: a request refused for its
// credentials whose client goes away before its first chunk leaves nothing
// behind: a later authorised request with a body over the limit on the
// same (reused) header gets its 413, not that 401.
func TestAuthRefusalDoesNotOutliveItsRequest(t *testing.T) {
	env := newHardenedEnv(t, withAuth(t, false, false), nil)
	addr := env.listen(t)
	got413, got401 := 0, 0
	for i := 0; i < 20; i++ {
		// A refused chunked request whose client goes away before the first chunk.
		c1, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c1, "POST /metrics/job/f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
		c1.(*net.TCPConn).CloseWrite()
		_ = c1.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 1024)
		n, _ := c1.Read(buf)
		c1.Close()
		_ = n
		time.Sleep(20 * time.Millisecond)
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c2, "POST /metrics/job/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", testToken, 64<<20)
		resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c2.Close()
		if resp.StatusCode == 401 {
			got401++
		} else if resp.StatusCode == 413 {
			got413++
		}
	}
	if got401 > 0 || got413 == 0 {
		t.Fatalf("authorised oversized body: 401 %d times, 413 %d times; want only 413", got401, got413)
	}
}

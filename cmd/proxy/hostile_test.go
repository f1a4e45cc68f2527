package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"golang.org/x/crypto/bcrypt"
)

const (
	hostileToken    = "hostile-test-token-0123456789abcdef"
	hostilePassword = "correct horse battery staple"
	// hostileReadTimeout is web.http_server_config.read_timeout in the
	// hostile tests, short so that slow clients are cut off quickly.
	hostileReadTimeout = 2 * time.Second
	// maxHWM bounds Sluice's peak resident memory through every attack.
	maxHWM = 200 << 20
)

// raiseNoFile lifts the soft open-files limit to the hard one, for this
// test process and the Sluice it starts (which inherits it).
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Skipf("open files limit %d is below the %d this test needs", lim.Cur, need)
	}
}

// memoryKiB reads a field (VmHWM: peak resident memory, VmRSS: now) of a
// process from /proc, in KiB.
func memoryKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// hostileSluice is a Sluice with credentials, low series limits and a
// short read timeout, plus what every case checks afterwards.
type hostileSluice struct {
	*sluiceProc
	client *http.Client
}

func (h *hostileSluice) request(t *testing.T, method, path string, body io.Reader, headers ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+hostileToken)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	r, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, r.Header, string(b)
}

func (h *hostileSluice) push(t *testing.T, path, body string) {
	t.Helper()
	if code, _, msg := h.request(t, "POST", path, strings.NewReader(body)); code != 200 {
		t.Fatalf("push to %s: %d %s", path, code, msg)
	}
}

// checkIntact asserts Sluice is healthy, still holds the data pushed
// before the attacks, and its peak memory stayed bounded.
func (h *hostileSluice) checkIntact(t *testing.T, step string) {
	t.Helper()
	if code, _, _ := h.request(t, "GET", "/-/healthy", nil); code != 200 {
		t.Fatalf("after %s: /-/healthy %d", step, code)
	}
	_, _, body := h.request(t, "GET", "/metrics", nil)
	if !strings.Contains(body, `baseline_total{instance="",job="hostile"} 5`) {
		t.Fatalf("after %s: the acknowledged baseline_total 5 is gone:\n%s", step, grepLines(body, "baseline"))
	}
	hwm := memoryKiB(t, h.cmd.Process.Pid, "VmHWM")
	t.Logf("after %s: VmHWM %.1f MiB, VmRSS %.1f MiB", step, float64(hwm)/1024, float64(memoryKiB(t, h.cmd.Process.Pid, "VmRSS"))/1024)
	if hwm<<10 > maxHWM {
		t.Fatalf("after %s: peak memory %d KiB exceeds %d MiB", step, hwm, maxHWM>>20)
	}
}

// TestHostileClients attacks one Sluice binary on loopback in turn and
// checks after each attack that it is healthy, the data acknowledged at
// the start is intact, and its memory stayed bounded.
func TestHostileClients(t *testing.T) {
	bin := buildBinary(t)
	raiseNoFile(t, 3500)
	hash, err := bcrypt.GenerateFromPassword([]byte(hostilePassword), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf(`
limits:
  max_series: 40
  max_series_per_group: 40
web:
  basic_auth_users: {pusher: %q}
  bearer_tokens: [{token: %q}]
  http_server_config:
    read_timeout: %s
`, hash, hostileToken, hostileReadTimeout))
	h := &hostileSluice{sluiceProc: startSluice(t, bin, "--config.file="+cfg), client: &http.Client{Timeout: 30 * time.Second}}
	addr := strings.TrimPrefix(h.url, "http://")
	h.push(t, "/metrics/job/hostile", "# TYPE baseline_total counter\nbaseline_total 2\n")
	h.push(t, "/metrics/job/hostile", "# TYPE baseline_total counter\nbaseline_total 3\n")
	h.checkIntact(t, "the baseline pushes")

	t.Run("slowloris", func(t *testing.T) {
		const n = 200
		conns := make([]net.Conn, 0, n)
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
			fmt.Fprintf(c, "POST /metrics/job/slow HTTP/1.1\r\nHost: sluice\r\nX-Slow: ")
		}
		// Each connection sends one more header byte every 200 ms.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					for _, c := range conns {
						_, _ = c.Write([]byte("a"))
					}
				}
			}
		}()
		start := time.Now()
		h.push(t, "/metrics/job/hostile", "ok_while_slowloris 1\n")
		t.Logf("a push took %v with %d slowloris connections open", time.Since(start), n)
		// Every slow connection is answered (408) and closed once the
		// read timeout has passed. A connection still writing when Sluice
		// closes it may see a reset instead of the 408.
		closed, answered := 0, 0
		deadline := time.Now().Add(hostileReadTimeout + 5*time.Second)
		for _, c := range conns {
			_ = c.SetReadDeadline(deadline)
			b, err := io.ReadAll(c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue // still open
			}
			closed++
			if len(b) > 0 {
				answered++
				if !bytes.Contains(b, []byte(" 408 ")) || !bytes.Contains(b, []byte("web.http_server_config.read_timeout")) {
					t.Errorf("slow connection answered %q, want 408 naming the read timeout", b)
				}
			}
		}
		t.Logf("%d slowloris connections answered 408 before being closed, %d reset", answered, closed-answered)
		close(stop)
		wg.Wait()
		if closed != n {
			t.Fatalf("%d of %d slowloris connections closed by Sluice within read_timeout + 5s", closed, n)
		}
		t.Logf("all %d slowloris connections closed within %v", n, time.Since(start))
		h.checkIntact(t, "slowloris")
	})

	t.Run("thousands of idle connections", func(t *testing.T) {
		const n = 3000
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			conns = append(conns, c)
		}
		start := time.Now()
		h.push(t, "/metrics/job/hostile", "ok_while_idle 1\n")
		t.Logf("a push took %v with %d idle connections open", time.Since(start), n)
		h.checkIntact(t, fmt.Sprintf("%d idle connections", n))
		// They are closed after the read timeout (nothing was sent).
		deadline := time.Now().Add(hostileReadTimeout + 10*time.Second)
		for i, c := range conns {
			_ = c.SetReadDeadline(deadline)
			if _, err := io.ReadAll(c); err != nil {
				t.Fatalf("idle connection %d not closed by Sluice: %v", i, err)
			}
		}
	})

	t.Run("oversized headers", func(t *testing.T) {
		code, _, msg := h.request(t, "POST", "/metrics/job/hostile", strings.NewReader("a 1\n"), "X-Big", strings.Repeat("x", 64<<10))
		if code != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(msg, "web.http_server_config.max_header_bytes") {
			t.Fatalf("64 KiB header: %d %q, want 431 naming web.http_server_config.max_header_bytes", code, msg)
		}
		h.checkIntact(t, "oversized headers")
	})

	t.Run("1 GiB gzip bomb", func(t *testing.T) {
		// 1 GiB of zeros through a gzip writer is about 1 MiB. It is
		// compressed before it is sent: compressing takes longer than the
		// 2 s read timeout on a busy machine (Sluice then rightly answers
		// 408). It is sent chunked, without a Content-Length.
		var bomb bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
		zeros := make([]byte, 1<<20)
		for i := 0; i < 1024; i++ {
			_, _ = zw.Write(zeros)
		}
		_ = zw.Close()
		sent := bomb.Len()
		code, _, msg := h.request(t, "POST", "/metrics/job/hostile", io.MultiReader(&bomb), "Content-Encoding", "gzip")
		if code != 413 || !strings.Contains(msg, "limits.max_decompressed_body_bytes") {
			t.Fatalf("gzip bomb: %d %q, want 413 naming limits.max_decompressed_body_bytes", code, msg)
		}
		t.Logf("1 GiB of zeros, %d bytes gzipped, chunked: %d %s", sent, code, strings.TrimSpace(msg))
		h.checkIntact(t, "the gzip bomb")
	})

	t.Run("snappy bombs", func(t *testing.T) {
		// Pushes: snappy stream format, 256 MiB of zeros in ~12 MiB.
		var framed bytes.Buffer
		sw := snappy.NewBufferedWriter(&framed)
		zeros := make([]byte, 1<<20)
		for i := 0; i < 256; i++ {
			_, _ = sw.Write(zeros)
		}
		_ = sw.Close()
		code, _, msg := h.request(t, "POST", "/metrics/job/hostile", bytes.NewReader(framed.Bytes()), "Content-Encoding", "snappy")
		if code != 413 || !strings.Contains(msg, "limits.max_decompressed_body_bytes") {
			t.Fatalf("snappy stream bomb (%d bytes): %d %q", framed.Len(), code, msg)
		}
		h.checkIntact(t, fmt.Sprintf("a push of 256 MiB of zeros in %d bytes of framed snappy", framed.Len()))
		// remote_write: snappy block format, a real 100 MiB block and a
		// header that claims 1 GiB; both refused before decompressing.
		block := snappy.Encode(nil, make([]byte, 100<<20))
		claim := append(binary.AppendUvarint(nil, 1<<30), make([]byte, 64)...)
		for name, body := range map[string][]byte{"100 MiB block": block, "1 GiB claimed": claim} {
			code, _, msg := h.request(t, "POST", "/api/v1/write", bytes.NewReader(body),
				"Content-Type", "application/x-protobuf", "Content-Encoding", "snappy")
			if code != 413 || !strings.Contains(msg, "limits.max_decompressed_body_bytes") {
				t.Fatalf("remote_write snappy bomb (%s, %d bytes): %d %q", name, len(body), code, msg)
			}
		}
		h.checkIntact(t, "the snappy bombs")
	})

	t.Run("label cardinality flood", func(t *testing.T) {
		var rejected string
		i := 0
		for ; i < 100; i++ {
			code, _, msg := h.request(t, "POST", fmt.Sprintf("/metrics/job/flood/i/%d", i), strings.NewReader(fmt.Sprintf("flood{id=\"%d\"} 1\n", i)))
			if code == 429 {
				rejected = msg
				break
			}
			if code != 200 {
				t.Fatalf("flood push %d: %d %q", i, code, msg)
			}
		}
		if !strings.Contains(rejected, "limits.max_series") {
			t.Fatalf("the flood was not stopped by limits.max_series (pushed %d): %q", i, rejected)
		}
		t.Logf("flood stopped after %d new series: 429 %s", i, strings.TrimSpace(rejected))
		// Existing series keep working at the limit.
		h.push(t, "/metrics/job/hostile", "# TYPE baseline_total counter\nbaseline_total 0\n")
		h.push(t, "/metrics/job/flood/i/0", "flood{id=\"0\"} 1\n")
		_, _, body := h.request(t, "GET", "/metrics", nil)
		for _, want := range []string{`sluice_limit{limit="max_series"} 40`, `sluice_limit_exceeded_total{limit="max_series"} 1`} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /metrics lacks %s", want)
			}
		}
		h.checkIntact(t, "the cardinality flood")
	})

	t.Run("credentials", func(t *testing.T) {
		basicAuth := func(user, pass string) string {
			req, _ := http.NewRequest("GET", "/", nil)
			req.SetBasicAuth(user, pass)
			return req.Header.Get("Authorization")
		}
		cases := []struct {
			name, auth string
			want       int
		}{
			{name: "no credentials", auth: "", want: 401},
			{name: "wrong password", auth: basicAuth("pusher", "wrong"), want: 401},
			{name: "unknown user", auth: basicAuth("root", hostilePassword), want: 401},
			{name: "wrong token", auth: "Bearer " + strings.ToUpper(hostileToken), want: 401},
			{name: "basic auth", auth: basicAuth("pusher", hostilePassword), want: 200},
			{name: "bearer token", auth: "Bearer " + hostileToken, want: 200},
		}
		for _, tc := range cases {
			// An existing series: the flood before filled limits.max_series.
			code, hdr, msg := h.request(t, "POST", "/metrics/job/hostile", strings.NewReader("# TYPE baseline_total counter\nbaseline_total 0\n"), "Authorization", tc.auth)
			if code != tc.want {
				t.Errorf("%s: %d %q, want %d", tc.name, code, msg, tc.want)
			}
			if code == 401 && (!strings.Contains(hdr.Get("WWW-Authenticate"), `Basic realm="sluice"`) || !strings.Contains(msg, "unauthorized")) {
				t.Errorf("%s: 401 without the challenge or reason: %v %q", tc.name, hdr, msg)
			}
		}
		// A 512 MiB push without credentials is refused on its headers.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /metrics/job/hostile HTTP/1.1\r\nHost: sluice\r\nContent-Length: %d\r\n\r\n", 512<<20)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("headers of an unauthenticated 512 MiB push: %v %v, want 401 before the body", resp, err)
		}
		h.checkIntact(t, "wrong and missing credentials")
	})
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir, and returns a client certificate of another CA.
type testPKI struct {
	caFile, certFile, keyFile string
	caPool                    *x509.CertPool
	client, stranger          tls.Certificate
}

func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sluice"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	ca, caKey, caPEM := newCA("sluice test CA")
	other, otherKey, _ := newCA("another CA")
	p := &testPKI{caFile: filepath.Join(dir, "ca.crt"), certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	sc, sk := issue(ca, caKey, x509.ExtKeyUsageServerAuth)
	for path, b := range map[string][]byte{p.caFile: caPEM, p.certFile: sc, p.keyFile: sk} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	cc, ck := issue(ca, caKey, x509.ExtKeyUsageClientAuth)
	if p.client, err = tls.X509KeyPair(cc, ck); err != nil {
		t.Fatal(err)
	}
	oc, ok := issue(other, otherKey, x509.ExtKeyUsageClientAuth)
	if p.stranger, err = tls.X509KeyPair(oc, ok); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileTLSClients runs Sluice with mTLS: a client certificate from
// another CA, or none, fails the handshake; the right one pushes.
func TestHostileTLSClients(t *testing.T) {
	bin := buildBinary(t)
	pki := newTestPKI(t, t.TempDir())
	cfg := writeConfig(t, fmt.Sprintf(`
web:
  tls_server_config:
    cert_file: %s
    key_file: %s
    client_ca_file: %s
    client_auth_type: RequireAndVerifyClientCert
`, pki.certFile, pki.keyFile, pki.caFile))
	addr := freePort(t)
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--wal.dir="+t.TempDir(), "--config.file="+cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sluiceProc{url: "https://" + addr, cmd: cmd, stderr: &stderr, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })

	// clientFor presents cert whatever CAs the server asks for (Go's
	// default would send none that the server's CA did not sign).
	clientFor := func(certs ...tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: pki.caPool}
		if len(certs) > 0 {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	good := clientFor(pki.client)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := good.Get(p.url + "/-/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluice with TLS not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	push := func(c *http.Client, body string) (int, error) {
		r, err := c.Post(p.url+"/metrics/job/tls", "text/plain", strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		r.Body.Close()
		return r.StatusCode, nil
	}
	if code, err := push(good, "# TYPE baseline_total counter\nbaseline_total 5\n"); err != nil || code != 200 {
		t.Fatalf("push with the right client certificate: %d %v", code, err)
	}
	for name, c := range map[string]*http.Client{"certificate of another CA": clientFor(pki.stranger), "no certificate": clientFor()} {
		if code, err := push(c, "evil 1\n"); err == nil {
			t.Fatalf("%s: push answered %d, want a failed handshake", name, code)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if r, err := plain.Get("http://" + addr + "/-/healthy"); err == nil {
		r.Body.Close()
		if r.StatusCode == 200 {
			t.Fatal("plain HTTP served on a TLS listener")
		}
	}
	r, err := good.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(b), `baseline_total{instance="",job="tls"} 5`) || strings.Contains(string(b), "evil") {
		t.Fatalf("after the refused handshakes the data is not intact:\n%s", grepLines(string(b), "baseline"))
	}
	t.Logf("VmHWM %.1f MiB", float64(memoryKiB(t, cmd.Process.Pid, "VmHWM"))/1024)
}

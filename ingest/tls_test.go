package ingest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-metrics/sluice/configs"
)

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for 127.0.0.1 with the serial.
func (ca *testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sluice-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// serveTLS accepts connections on a TLS listener and completes their
// handshakes until the test ends.
func serveTLS(t *testing.T, cfg func() configs.TLSServerConfig) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := TLSListener(raw, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc, ok := c.(*tls.Conn); ok && tc.Handshake() == nil {
					_, _ = c.Write([]byte("ok"))
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return raw.Addr().String()
}

// dial handshakes and reads the server's "ok": with TLS 1.3, a refused
// client certificate only shows on the first read.
func dial(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

func TestTLSListenerPicksUpRotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "ca")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Minute)
	c1, k1 := ca.issue(t, 101, false)
	writeFile(t, certFile, c1, t0)
	writeFile(t, keyFile, k1, t0)
	var spec atomic.Pointer[configs.TLSServerConfig]
	spec.Store(&configs.TLSServerConfig{CertFile: certFile, KeyFile: keyFile})
	addr := serveTLS(t, func() configs.TLSServerConfig { return *spec.Load() })

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := &tls.Config{RootCAs: pool}
	serial := func() int64 {
		t.Helper()
		cert, err := dial(addr, client)
		if err != nil {
			t.Fatal(err)
		}
		return cert.SerialNumber.Int64()
	}
	if got := serial(); got != 101 {
		t.Fatalf("serial %d, want 101", got)
	}
	c2, k2 := ca.issue(t, 102, false)
	writeFile(t, certFile, c2, t0.Add(time.Second))
	writeFile(t, keyFile, k2, t0.Add(time.Second))
	if got := serial(); got != 102 {
		t.Fatalf("after rotation serial %d, want 102", got)
	}
	// A rotation half done (new cert, old key) keeps the last good pair.
	c3, _ := ca.issue(t, 103, false)
	writeFile(t, certFile, c3, t0.Add(2*time.Second))
	if got := serial(); got != 102 {
		t.Fatalf("with a mismatched key serial %d, want the last good 102", got)
	}
	// A reload may turn TLS off in the file: it stays on until a restart.
	spec.Store(&configs.TLSServerConfig{})
	if got := serial(); got != 102 {
		t.Fatalf("after a reload without TLS serial %d, want 102", got)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "clients"), newTestCA(t, "someone else")
	sc, sk := ca.issue(t, 1, false)
	paths := map[string][]byte{"tls.crt": sc, "tls.key": sk, "ca.crt": ca.pem}
	for name, b := range paths {
		writeFile(t, filepath.Join(dir, name), b, time.Now())
	}
	spec := configs.TLSServerConfig{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"), MinVersion: tls.VersionTLS12}
	addr := serveTLS(t, func() configs.TLSServerConfig { return spec })
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	// present sends the certificate whatever CAs the server asks for.
	present := func(ca *testCA) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, k := ca.issue(t, 7, true)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &p, nil }
	}
	cases := []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{name: "certificate from the client CA", client: &tls.Config{RootCAs: pool, GetClientCertificate: present(ca)}, ok: true},
		{name: "certificate from another CA", client: &tls.Config{RootCAs: pool, GetClientCertificate: present(other)}},
		{name: "no certificate", client: &tls.Config{RootCAs: pool}},
		{name: "TLS 1.1", client: &tls.Config{RootCAs: pool, GetClientCertificate: present(ca), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dial(addr, tc.client)
			t.Logf("handshake: %v", err)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error %v, want success %v", err, tc.ok)
			}
		})
	}
}

func TestTLSListenerRefusesBrokenFilesAtStart(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, err = TLSListener(raw, func() configs.TLSServerConfig {
		return configs.TLSServerConfig{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}
	}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("want an error for missing certificate files")
	}
}

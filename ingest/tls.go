package ingest

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluice-metrics/sluice/configs"
)

// TLSListener serves TLS on ln with the tls_server_config that cfg
// returns. The certificate, key and client CA files are checked on every
// handshake (one stat each) and loaded again when their modification time
// or size changed, or when cfg returns other settings (a reload), so a
// rotated certificate needs no restart. Files that do not load (a rotation
// half done) are logged once and the last good ones stay in use.
//
// Whether the listener serves TLS at all is decided at start-up: if cfg
// later returns a config without cert_file, the last good TLS settings
// stay in force until a restart.
func TLSListener(ln net.Listener, cfg func() configs.TLSServerConfig, logger *slog.Logger) (net.Listener, error) {
	r := &tlsReloader{cfg: cfg, logger: logger}
	if _, err := r.config(); err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.config() },
	}), nil
}

// fileStamp identifies one version of a file.
type fileStamp struct {
	mtime time.Time
	size  int64
}

type tlsStamp struct {
	spec               configs.TLSServerConfig
	cert, key, caFiles fileStamp
}

// tlsReloader builds the tls.Config of each handshake.
type tlsReloader struct {
	cfg    func() configs.TLSServerConfig
	logger *slog.Logger

	// mu guards the fields below.
	mu sync.Mutex
	// cur was built from the files and settings of curStamp.
	cur      *tls.Config
	curStamp tlsStamp
	// failed is the last stamp that did not load, not retried until a
	// file or the settings change again.
	failed tlsStamp
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{size: -1}
	}
	return fileStamp{mtime: fi.ModTime(), size: fi.Size()}
}

func (r *tlsReloader) config() (*tls.Config, error) {
	spec := r.cfg()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !spec.Enabled() && r.cur != nil {
		spec = r.curStamp.spec // turning TLS off needs a restart
	}
	st := tlsStamp{spec: spec, cert: stampOf(spec.CertFile), key: stampOf(spec.KeyFile), caFiles: stampOf(spec.ClientCAFile)}
	if r.cur != nil && (st == r.curStamp || st == r.failed) {
		return r.cur, nil
	}
	c, err := buildTLSConfig(spec)
	if err != nil {
		if r.cur == nil {
			return nil, err
		}
		r.failed = st
		r.logger.Error("TLS files changed but do not load; the previous certificate stays in use", "err", err)
		return r.cur, nil
	}
	if r.cur != nil {
		r.logger.Info("loaded new TLS certificate", "cert_file", spec.CertFile)
	}
	r.cur, r.curStamp = c, st
	return c, nil
}

func buildTLSConfig(spec configs.TLSServerConfig) (*tls.Config, error) {
	if !spec.Enabled() {
		return nil, fmt.Errorf("tls_server_config: no cert_file")
	}
	cert, err := tls.LoadX509KeyPair(spec.CertFile, spec.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_server_config: load cert_file/key_file: %w", err)
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   spec.ClientAuth(),
		MinVersion:   uint16(spec.MinVersion),
		MaxVersion:   uint16(spec.MaxVersion),
		// fasthttp speaks HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if spec.ClientCAFile != "" {
		pool, err := configs.LoadCertPool(spec.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_server_config: %w", err)
		}
		c.ClientCAs = pool
	}
	return c, nil
}

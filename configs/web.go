package configs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"
)

// WebConfig secures the listener: who may push and read (basic_auth_users,
// bearer_tokens), TLS (tls_server_config) and the HTTP server's timeouts
// and connection limits (http_server_config). Where it overlaps, it has
// the shape of the Prometheus exporter-toolkit web config, so its
// basic_auth_users and tls_server_config can be pasted.
//
// Credentials and the scope switches are reloadable; the TLS files are
// re-read when they change; turning TLS on or off and http_server_config
// need a restart.
type WebConfig struct {
	TLSServerConfig  TLSServerConfig  `yaml:"tls_server_config,omitempty"`
	HTTPServerConfig HTTPServerConfig `yaml:"http_server_config"`
	// BasicAuthUsers maps a user name to the bcrypt hash of its password
	// (htpasswd -nBC 10 "" | tr -d ':\n').
	BasicAuthUsers map[string]string `yaml:"basic_auth_users,omitempty"`
	// BearerTokens are accepted as "Authorization: Bearer <token>".
	BearerTokens []BearerToken `yaml:"bearer_tokens,omitempty"`
	// ProtectMetrics makes GET /metrics, the web UI and the read-only
	// /api/v1/* endpoints require credentials too. Ingest endpoints always
	// do once any credential is configured.
	ProtectMetrics bool `yaml:"protect_metrics,omitempty"`
	// ProtectAdmin makes /api/v1/admin/*, /-/reload and /-/quit require
	// credentials.
	ProtectAdmin bool `yaml:"protect_admin,omitempty"`
}

// BearerToken is one accepted token, given exactly one way.
type BearerToken struct {
	// Token is the token itself; use ${VAR} to keep it out of the file.
	Token string `yaml:"token,omitempty"`
	// TokenFile is a file holding the token (surrounding whitespace is
	// trimmed), read at start-up and on every reload.
	TokenFile string `yaml:"token_file,omitempty"`
	// TokenEnv names an environment variable holding the token.
	TokenEnv string `yaml:"token_env,omitempty"`

	// value is the resolved token, set by validate.
	value string
}

// Value returns the resolved token. It is set once the config is validated.
func (b BearerToken) Value() string { return b.value }

// AuthEnabled reports whether any credential is configured, and so whether
// the ingest endpoints require one.
func (w WebConfig) AuthEnabled() bool {
	return len(w.BasicAuthUsers) > 0 || len(w.BearerTokens) > 0
}

// TLSServerConfig is exporter-toolkit's tls_server_config (the subset
// Sluice supports). TLS is on when cert_file is set.
type TLSServerConfig struct {
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
	// ClientCAFile holds the CAs that sign client certificates (mTLS).
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
	// ClientAuthType is one of Go's tls.ClientAuthType names:
	// NoClientCert, RequestClientCert, RequireAnyClientCert,
	// VerifyClientCertIfGiven, RequireAndVerifyClientCert. Empty means
	// RequireAndVerifyClientCert when client_ca_file is set, else
	// NoClientCert.
	ClientAuthType string `yaml:"client_auth_type,omitempty"`
	// MinVersion and MaxVersion are TLS10, TLS11, TLS12 or TLS13.
	MinVersion TLSVersion `yaml:"min_version,omitempty"`
	MaxVersion TLSVersion `yaml:"max_version,omitempty"`
}

// Enabled reports whether the listener serves TLS.
func (t TLSServerConfig) Enabled() bool { return t.CertFile != "" }

// ClientAuth returns the client certificate policy.
func (t TLSServerConfig) ClientAuth() tls.ClientAuthType {
	if t.ClientAuthType == "" {
		if t.ClientCAFile != "" {
			return tls.RequireAndVerifyClientCert
		}
		return tls.NoClientCert
	}
	return clientAuthTypes[t.ClientAuthType]
}

var clientAuthTypes = map[string]tls.ClientAuthType{
	"NoClientCert":               tls.NoClientCert,
	"RequestClientCert":          tls.RequestClientCert,
	"RequireAnyClientCert":       tls.RequireAnyClientCert,
	"VerifyClientCertIfGiven":    tls.VerifyClientCertIfGiven,
	"RequireAndVerifyClientCert": tls.RequireAndVerifyClientCert,
}

// TLSVersion is a TLS protocol version spelled as in exporter-toolkit.
type TLSVersion uint16

var tlsVersions = map[string]TLSVersion{
	"TLS13": tls.VersionTLS13,
	"TLS12": tls.VersionTLS12,
	"TLS11": tls.VersionTLS11,
	"TLS10": tls.VersionTLS10,
}

// UnmarshalYAML parses TLS10 ... TLS13.
func (v *TLSVersion) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	if tv, ok := tlsVersions[s]; ok {
		*v = tv
		return nil
	}
	return fmt.Errorf("unknown TLS version %q: use TLS10, TLS11, TLS12 or TLS13", s)
}

// MarshalYAML prints the version's name.
func (v TLSVersion) MarshalYAML() (any, error) {
	for name, tv := range tlsVersions {
		if tv == v {
			return name, nil
		}
	}
	return fmt.Sprintf("%d", uint16(v)), nil
}

// HTTPServerConfig bounds what one client can hold of the HTTP server.
// It applies at start-up only.
type HTTPServerConfig struct {
	// ReadTimeout bounds reading one whole request, headers and body
	// (a slowloris client is cut off after it).
	ReadTimeout model.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one response.
	WriteTimeout model.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection idle for this long.
	IdleTimeout model.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps the request line plus headers (431 above it).
	// It is the size of each connection's read buffer.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConnections caps open connections; more are answered 503 and
	// closed at once.
	MaxConnections int `yaml:"max_connections"`
}

// defaultWeb is the web section's default; every number says why.
func defaultWeb() WebConfig {
	return WebConfig{
		HTTPServerConfig: HTTPServerConfig{
			// 16 MiB (limits.max_body_bytes) at 4.5 Mbit/s; a push of a
			// few KiB from a function takes milliseconds.
			ReadTimeout: model.Duration(30 * time.Second),
			// Writing the scrape view of 1M series (~100 MB) to a slow
			// reader; every other answer is a few bytes.
			WriteTimeout: model.Duration(60 * time.Second),
			// Longer than Go's http.Transport idle timeout (90 s), so
			// client_golang pushers close idle connections before Sluice
			// does and never reuse one being closed.
			IdleTimeout: model.Duration(2 * time.Minute),
			// nginx's large_client_header_buffers: 8 KiB fits a JWT
			// bearer token and every header a metrics client sends.
			MaxHeaderBytes: 8 << 10,
			// Each connection holds about 20 KiB (buffers and goroutine),
			// so 10k connections bound that to about 200 MiB.
			MaxConnections: 10_000,
		},
	}
}

func (w *WebConfig) validate() error {
	users := make([]string, 0, len(w.BasicAuthUsers))
	for u := range w.BasicAuthUsers {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		if u == "" {
			return errors.New("basic_auth_users: empty user name")
		}
		if _, err := bcrypt.Cost([]byte(w.BasicAuthUsers[u])); err != nil {
			// Never print the hash: it may be a plain password pasted by mistake.
			return fmt.Errorf("basic_auth_users: user %q: password must be a bcrypt hash (htpasswd -nBC 10 \"\" | tr -d ':\\n'): %w", u, err)
		}
	}
	for i := range w.BearerTokens {
		if err := w.BearerTokens[i].resolve(); err != nil {
			return fmt.Errorf("bearer_tokens[%d]: %w", i, err)
		}
	}
	if err := w.TLSServerConfig.validate(); err != nil {
		return fmt.Errorf("tls_server_config: %w", err)
	}
	h := w.HTTPServerConfig
	if h.ReadTimeout <= 0 || h.WriteTimeout <= 0 || h.IdleTimeout <= 0 {
		return errors.New("http_server_config: read_timeout, write_timeout and idle_timeout must be positive")
	}
	if h.MaxHeaderBytes < 1024 {
		return fmt.Errorf("http_server_config: max_header_bytes must be at least 1024, got %d", h.MaxHeaderBytes)
	}
	if h.MaxConnections <= 0 {
		return fmt.Errorf("http_server_config: max_connections must be positive, got %d", h.MaxConnections)
	}
	return nil
}

func (b *BearerToken) resolve() error {
	n := 0
	for _, s := range []string{b.Token, b.TokenFile, b.TokenEnv} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("set exactly one of token, token_file and token_env")
	}
	switch {
	case b.TokenFile != "":
		raw, err := readSmallFile(b.TokenFile)
		if err != nil {
			return fmt.Errorf("read token_file: %w", err)
		}
		b.value = string(bytes.TrimSpace(raw))
		if b.value == "" {
			return fmt.Errorf("token_file %s is empty", b.TokenFile)
		}
	case b.TokenEnv != "":
		b.value = os.Getenv(b.TokenEnv)
		if b.value == "" {
			return fmt.Errorf("token_env: environment variable %s is unset or empty", b.TokenEnv)
		}
	default:
		b.value = b.Token
	}
	if len(b.value) < 16 {
		// A short token is guessable; 16 bytes is the floor for a secret.
		return errors.New("token shorter than 16 bytes; use a random secret (openssl rand -hex 32)")
	}
	return nil
}

func (t *TLSServerConfig) validate() error {
	if t.CertFile == "" && t.KeyFile == "" {
		if t.ClientCAFile != "" || t.ClientAuthType != "" || t.MinVersion != 0 || t.MaxVersion != 0 {
			return errors.New("cert_file and key_file are required when any other TLS setting is given")
		}
		return nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return errors.New("cert_file and key_file must be given together")
	}
	if t.ClientAuthType != "" {
		if _, ok := clientAuthTypes[t.ClientAuthType]; !ok {
			return fmt.Errorf("unknown client_auth_type %q: use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert", t.ClientAuthType)
		}
	}
	switch t.ClientAuth() {
	case tls.VerifyClientCertIfGiven, tls.RequireAndVerifyClientCert:
		if t.ClientCAFile == "" {
			return fmt.Errorf("client_auth_type %s needs client_ca_file", t.ClientAuthType)
		}
	case tls.NoClientCert:
		if t.ClientCAFile != "" {
			return errors.New("client_ca_file is set but client_auth_type is NoClientCert")
		}
	}
	if t.MinVersion == 0 {
		// exporter-toolkit's default: TLS 1.0 and 1.1 are deprecated (RFC 8996).
		t.MinVersion = tls.VersionTLS12
	}
	if t.MaxVersion != 0 && t.MaxVersion < t.MinVersion {
		return errors.New("max_version is lower than min_version")
	}
	// The files are checked here so that a reload naming a missing or
	// broken file is refused and the old config stays in force.
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		return fmt.Errorf("load cert_file/key_file: %w", err)
	}
	if t.ClientCAFile != "" {
		if _, err := LoadCertPool(t.ClientCAFile); err != nil {
			return err
		}
	}
	return nil
}

// LoadCertPool reads the PEM certificates in path into a pool.
func LoadCertPool(path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("client_ca_file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// readSmallFile reads at most 64 KiB of path: a token is short, and a
// path such as /dev/zero must not hang a reload.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

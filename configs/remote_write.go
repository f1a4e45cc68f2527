package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"
)

// Remote-write protobuf messages (protobuf_message).
const (
	// ProtoMsgV1 is Remote-Write 1.0 (prometheus.WriteRequest), the default.
	ProtoMsgV1 = "prometheus.WriteRequest"
	// ProtoMsgV2 is Remote-Write 2.0 (io.prometheus.write.v2.Request).
	ProtoMsgV2 = "io.prometheus.write.v2.Request"
)

// GlobalConfig holds settings that apply to every target.
type GlobalConfig struct {
	// ExternalLabels are added to every forwarded series that does not
	// already carry the label (as in Prometheus).
	ExternalLabels map[string]string `yaml:"external_labels,omitempty"`
}

// SelfMetricsConfig controls forwarding of Sluice's own metrics.
type SelfMetricsConfig struct {
	// Forward sends sluice_* (and Go/process) metrics to every target
	// each interval with job="sluice". Nobody scrapes a Sluice on Cloud Run.
	Forward bool `yaml:"forward"`
	// Instance is the instance label of those metrics; empty means the
	// host name.
	Instance string `yaml:"instance,omitempty"`
}

// RemoteWriteConfig is one forward target: Prometheus' remote_write block,
// so users paste what they have.
type RemoteWriteConfig struct {
	URL                 string            `yaml:"url"`
	Name                string            `yaml:"name,omitempty"`
	RemoteTimeout       model.Duration    `yaml:"remote_timeout,omitempty"`
	Headers             map[string]string `yaml:"headers,omitempty"`
	WriteRelabelConfigs []*relabel.Config `yaml:"write_relabel_configs,omitempty"`
	ProtobufMessage     string            `yaml:"protobuf_message,omitempty"`
	QueueConfig         QueueConfig       `yaml:"queue_config,omitempty"`
	// HTTPClientConfig carries basic_auth (password_file too),
	// authorization (credentials_file too), oauth2, tls_config, proxy_url.
	HTTPClientConfig commoncfg.HTTPClientConfig `yaml:",inline"`

	// Prometheus settings Sluice accepts and does not use, so that a
	// pasted block loads (IgnoredSettings names them for a warning).
	SendExemplars        *bool `yaml:"send_exemplars,omitempty"`
	SendNativeHistograms *bool `yaml:"send_native_histograms,omitempty"`
	MetadataConfig       any   `yaml:"metadata_config,omitempty"`
	RoundRobinDNS        *bool `yaml:"round_robin_dns,omitempty"`
	// Prometheus authentication Sluice does not implement: refused.
	SigV4     any `yaml:"sigv4,omitempty"`
	AzureAD   any `yaml:"azuread,omitempty"`
	GoogleIAM any `yaml:"google_iam,omitempty"`
}

// WithoutIgnored is c with the Prometheus settings Sluice ignores
// (IgnoredSettings) zeroed: what decides how a target behaves.
func (c RemoteWriteConfig) WithoutIgnored() RemoteWriteConfig {
	c.SendExemplars, c.SendNativeHistograms, c.MetadataConfig, c.RoundRobinDNS = nil, nil, nil, nil
	c.QueueConfig.MinShards, c.QueueConfig.SampleAgeLimit = 0, 0
	return c
}

// IgnoredSettings names the Prometheus settings of c that Sluice accepts
// and does not use.
func (c *RemoteWriteConfig) IgnoredSettings() []string {
	var out []string
	for _, s := range []struct {
		name string
		set  bool
	}{
		{"send_exemplars (Sluice forwards no exemplars)", c.SendExemplars != nil},
		{"send_native_histograms (native histograms are always sent)", c.SendNativeHistograms != nil},
		{"metadata_config (metadata goes with every request)", c.MetadataConfig != nil},
		{"round_robin_dns", c.RoundRobinDNS != nil},
		{"queue_config.min_shards (shards are fixed)", c.QueueConfig.MinShards != 0},
		{"queue_config.sample_age_limit", c.QueueConfig.SampleAgeLimit != 0},
	} {
		if s.set {
			out = append(out, s.name)
		}
	}
	return out
}

// QueueConfig tunes one target's queue, with Prometheus' names.
type QueueConfig struct {
	// Capacity is the number of samples buffered per shard.
	Capacity          int            `yaml:"capacity,omitempty"`
	MaxShards         int            `yaml:"max_shards,omitempty"`
	MaxSamplesPerSend int            `yaml:"max_samples_per_send,omitempty"`
	BatchSendDeadline model.Duration `yaml:"batch_send_deadline,omitempty"`
	MinBackoff        model.Duration `yaml:"min_backoff,omitempty"`
	MaxBackoff        model.Duration `yaml:"max_backoff,omitempty"`
	// RetryOnRateLimit retries 429 answers. Sluice defaults it to true
	// (SPEC 6: an aggregate is not re-sent by anyone else); Prometheus
	// defaults it to false.
	RetryOnRateLimit *bool `yaml:"retry_on_http_429,omitempty"`
	// MaxBacklogBytes bounds the target's backlog on disk (SPEC 6): the
	// windows waiting while the target is down. Past it the oldest windows
	// are coalesced (resolution lost, totals kept), then the oldest are
	// dropped. Not a Prometheus setting.
	MaxBacklogBytes int64 `yaml:"max_backlog_bytes,omitempty"`
	// Prometheus settings accepted and not used (IgnoredSettings).
	MinShards      int            `yaml:"min_shards,omitempty"`
	SampleAgeLimit model.Duration `yaml:"sample_age_limit,omitempty"`
}

// DefaultQueueConfig mirrors Prometheus' defaults (config.DefaultQueueConfig)
// except that 429 is retried.
func DefaultQueueConfig() QueueConfig {
	t := true
	return QueueConfig{
		// 10,000 samples per shard, as Prometheus: room for several windows
		// of a busy Sluice while a target hiccups.
		Capacity: 10_000,
		// Prometheus' 50 shards x 2,000 samples per 100 ms ~ 1 M samples/s.
		MaxShards:         50,
		MaxSamplesPerSend: 2_000,
		BatchSendDeadline: model.Duration(5 * time.Second),
		MinBackoff:        model.Duration(30 * time.Millisecond),
		MaxBackoff:        model.Duration(5 * time.Second),
		RetryOnRateLimit:  &t,
		// 256 MiB per target: at the ~13 bytes a sample takes on disk
		// (snappy-compressed), 20 M samples, a day and a half of 15 s
		// windows of a 2,000-series Sluice, before the oldest windows are
		// coalesced. Small next to a VM's disk; lower it on Cloud Run,
		// whose disk is memory.
		MaxBacklogBytes: 256 << 20,
	}
}

// defaultRemoteTimeout is Prometheus' remote_timeout default.
const defaultRemoteTimeout = model.Duration(30 * time.Second)

// NewRemoteWriteConfig returns a target with every default set, as
// --remote-write.url creates.
func NewRemoteWriteConfig(u string) RemoteWriteConfig {
	// As Prometheus' DefaultRemoteWriteHTTPClientConfig: HTTP/1.1 unless
	// enable_http2 says otherwise (one TCP connection per shard spreads
	// the load behind a load balancer; HTTP/2 would share one).
	hc := commoncfg.DefaultHTTPClientConfig
	hc.EnableHTTP2 = false
	return RemoteWriteConfig{
		URL:              u,
		RemoteTimeout:    defaultRemoteTimeout,
		ProtobufMessage:  ProtoMsgV1,
		QueueConfig:      DefaultQueueConfig(),
		HTTPClientConfig: hc,
	}
}

// UnmarshalYAML sets the defaults before decoding, so fields not given
// keep them.
func (c *RemoteWriteConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = NewRemoteWriteConfig("")
	type plain RemoteWriteConfig
	return unmarshal((*plain)(c))
}

// UnmarshalYAML sets the queue defaults before decoding.
func (q *QueueConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*q = DefaultQueueConfig()
	type plain QueueConfig
	return unmarshal((*plain)(q))
}

// reservedHeaders may not be set through headers: Sluice sets them itself
// or they carry credentials that belong in basic_auth/authorization.
func reservedHeader(h string) bool {
	switch http.CanonicalHeaderKey(h) {
	case "Authorization", "Host", "Content-Encoding", "Content-Type", "Content-Length",
		"X-Prometheus-Remote-Write-Version", "User-Agent", "Connection", "Keep-Alive",
		"Proxy-Authenticate", "Proxy-Authorization", "Www-Authenticate", "Retry-Attempt":
		return true
	}
	return false
}

// Validate checks a target. Errors never include secrets: they name the
// target by its name or its URL without user information.
func (c *RemoteWriteConfig) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q must be an absolute http or https URL", RedactURL(c.URL))
	}
	if u.User != nil {
		return fmt.Errorf("url %s: put credentials in basic_auth, not in the URL", RedactURL(c.URL))
	}
	if c.RemoteTimeout <= 0 {
		return errors.New("remote_timeout must be positive")
	}
	for _, a := range []struct {
		name string
		set  bool
	}{{"sigv4", c.SigV4 != nil}, {"azuread", c.AzureAD != nil}, {"google_iam", c.GoogleIAM != nil}} {
		if a.set {
			return fmt.Errorf("%s is a Prometheus setting Sluice does not support: authenticate with basic_auth, authorization, oauth2 or tls_config, or put a signing proxy in front (proxy_url)", a.name)
		}
	}
	switch c.ProtobufMessage {
	case ProtoMsgV1, ProtoMsgV2:
	default:
		return fmt.Errorf("protobuf_message %q: must be %s or %s", c.ProtobufMessage, ProtoMsgV1, ProtoMsgV2)
	}
	for h := range c.Headers {
		if reservedHeader(h) {
			return fmt.Errorf("headers: %s is reserved (use basic_auth or authorization for credentials)", h)
		}
	}
	q := c.QueueConfig
	switch {
	case q.Capacity <= 0, q.MaxShards <= 0, q.MaxSamplesPerSend <= 0:
		return errors.New("queue_config: capacity, max_shards and max_samples_per_send must be positive")
	case q.BatchSendDeadline <= 0, q.MinBackoff <= 0, q.MaxBackoff < q.MinBackoff:
		return errors.New("queue_config: batch_send_deadline and min_backoff must be positive and max_backoff >= min_backoff")
	case q.MaxBacklogBytes <= 0:
		return errors.New("queue_config: max_backlog_bytes must be positive")
	}
	for i, rc := range c.WriteRelabelConfigs {
		if rc == nil {
			return fmt.Errorf("write_relabel_configs[%d] is empty", i)
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			return fmt.Errorf("write_relabel_configs[%d]: %w", i, err)
		}
	}
	if err := c.HTTPClientConfig.Validate(); err != nil {
		return err
	}
	return nil
}

// DisplayName is how logs, metrics and errors name the target: its name,
// else its URL without credentials or query.
func (c *RemoteWriteConfig) DisplayName() string {
	if c.Name != "" {
		return c.Name
	}
	return RedactURL(c.URL)
}

// nameAmbiguousTargets names each unnamed target whose display name (its
// URL without user information and query) another unnamed target shares,
// such as two tenants of one Mimir told apart by an X-Scope-OrgID header
// or a query parameter: the display name, '#' and a short hash of what
// tells them apart (the whole URL, the headers, the HTTP client settings
// with secrets left out), as Prometheus names unnamed queues by a hash of
// their config. The name is stable across restarts and reloads, so each
// keeps its backlog. Targets that nothing of that tells apart keep one
// name, which Validate refuses as a duplicate.
func nameAmbiguousTargets(rws []RemoteWriteConfig) {
	count := map[string]int{}
	for i := range rws {
		if rws[i].Name == "" {
			count[RedactURL(rws[i].URL)]++
		}
	}
	for i := range rws {
		rw := &rws[i]
		if base := RedactURL(rw.URL); rw.Name == "" && count[base] > 1 {
			rw.Name = base + "#" + rw.identityHash()
		}
	}
}

// identityHash is 6 hex digits of a hash of what tells targets with one
// display name apart: the whole URL, the headers and the HTTP client
// settings (http_headers, proxy, TLS files, credential files, user names),
// with secrets marshalled as "<secret>". The client settings are hashed as
// YAML, whose fields omit their zero values: a dependency that adds a
// setting does not rename targets (and so drop their backlogs).
func (c *RemoteWriteConfig) identityHash() string {
	h := sha256.New()
	fmt.Fprintf(h, "url %s\n", c.URL)
	for _, k := range slices.Sorted(maps.Keys(c.Headers)) {
		fmt.Fprintf(h, "header %s: %s\n", k, c.Headers[k])
	}
	if b, err := yaml.Marshal(c.HTTPClientConfig); err == nil {
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:6]
}

// RedactURL drops user information and the query (which may hold API keys)
// from a URL for display.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.User == nil {
		if rest, ok := strings.CutPrefix(s, u.Scheme+"://"); ok && strings.Contains(rest, "@") {
			// "@" past the host ("https://user:1/SECRET@host/x" parses
			// with the password in the path): treat it as user
			// information, as the fallback below does.
			err = errors.New("user information in the path or fragment")
		}
	}
	if err != nil {
		// Unparsable (a bad escape, say): keep the scheme and the host,
		// never what came before an "@" or after the path.
		scheme, rest := "", s
		if i := strings.Index(s, "://"); i >= 0 {
			scheme, rest = s[:i+3], s[i+3:]
		}
		// A password may hold "/", "?", "#" or "@": drop everything up
		// to the last "@" first (over-redacting a path with one is safe).
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			rest = rest[i+1:]
		}
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		return scheme + rest + "/..."
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	return u.String()
}

// Package configs holds Sluice's YAML configuration: the schema, its
// defaults, strict loading and validation. The file says what to aggregate
// and where to send it; command-line flags say how to run the process.
//
// The package imports nothing else of Sluice, so every stage can depend on it.
package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	Global      GlobalConfig        `yaml:"global"`
	Ingest      IngestConfig        `yaml:"ingest"`
	Aggregation AggregationConfig   `yaml:"aggregation"`
	Limits      LimitsConfig        `yaml:"limits"`
	RemoteWrite []RemoteWriteConfig `yaml:"remote_write,omitempty"`
	SelfMetrics SelfMetricsConfig   `yaml:"self_metrics"`
	WAL         WALConfig           `yaml:"wal"`
	Web         WebConfig           `yaml:"web"`
}

// WALConfig tunes the write-ahead log. It applies at start-up only.
type WALConfig struct {
	// Fsync is "always" (group commit: a 2xx means the push is on stable
	// storage) or "interval" (a 2xx means it was written to the OS; a
	// machine crash can lose up to FsyncInterval of acknowledged pushes).
	Fsync         string         `yaml:"fsync"`
	FsyncInterval model.Duration `yaml:"fsync_interval,omitempty"`
	// CheckpointInterval is how often the state is checkpointed and the
	// log before it deleted; zero means every aggregation interval.
	CheckpointInterval model.Duration `yaml:"checkpoint_interval,omitempty"`
	// SegmentSize is the size at which a new log segment is started.
	SegmentSize int64 `yaml:"segment_size,omitempty"`
	// ZeroFill says who writes the zeros kept ahead of the log's end:
	// "append" (the append that reaches their end writes the next 4 MiB,
	// and its fsync carries them) or "background" (a goroutine keeps
	// 4 MiB ahead, 256 KiB and an fsync at a time). Background takes
	// those stalls off the pushes, at about 9% of the maximum push rate
	// on the development machine (README, Performance).
	ZeroFill string `yaml:"zero_fill,omitempty"`
}

// AggregationConfig chooses how pushed series are merged.
type AggregationConfig struct {
	// DefaultModes is the mode of series pushed without a clear_mode label.
	DefaultModes DefaultModes `yaml:"default_modes"`
	// Rules override the TTL and default modes for the groups they match.
	// The first matching rule wins.
	Rules []Rule `yaml:"rules,omitempty"`
}

// DefaultModes maps each metric type to the mode used when a series carries
// no clear_mode label. A zero Mode means "inherit": from the global defaults
// for a rule, from the built-in defaults for the global section.
type DefaultModes struct {
	Counter   Mode `yaml:"counter,omitempty"`
	Gauge     Mode `yaml:"gauge,omitempty"`
	Untyped   Mode `yaml:"untyped,omitempty"`
	Histogram Mode `yaml:"histogram,omitempty"`
	Summary   Mode `yaml:"summary,omitempty"`
}

// IsZero lets yaml omit unset modes.
func (m Mode) IsZero() bool { return m.Kind == ModeInvalid }

// inherit fills every unset mode of d from parent.
func (d DefaultModes) inherit(parent DefaultModes) DefaultModes {
	pick := func(a, b Mode) Mode {
		if a.IsZero() {
			return b
		}
		return a
	}
	return DefaultModes{
		Counter:   pick(d.Counter, parent.Counter),
		Gauge:     pick(d.Gauge, parent.Gauge),
		Untyped:   pick(d.Untyped, parent.Untyped),
		Histogram: pick(d.Histogram, parent.Histogram),
		Summary:   pick(d.Summary, parent.Summary),
	}
}

func (d DefaultModes) validate(where string) error {
	for _, c := range []struct {
		name string
		m    Mode
	}{{"counter", d.Counter}, {"gauge", d.Gauge}, {"untyped", d.Untyped}, {"histogram", d.Histogram}, {"summary", d.Summary}} {
		if (c.name == "histogram" || c.name == "summary") && c.m.Windowed() {
			return fmt.Errorf("%s.%s: windowed mode %s is only for counters, gauges and untyped metrics", where, c.name, c.m)
		}
	}
	return nil
}

// Rule applies to every group whose grouping labels match all of Match.
type Rule struct {
	// Match maps a grouping label name to an RE2 regular expression that
	// must match the whole value (as in relabelling). A label the group does
	// not have matches as the empty string.
	Match map[string]string `yaml:"match"`
	// TTL replaces --series.ttl for the matched groups when non-zero.
	TTL model.Duration `yaml:"ttl,omitempty"`
	// DefaultModes replaces the global default modes it sets.
	DefaultModes DefaultModes `yaml:"default_modes,omitempty"`

	// matchers holds Match compiled, sorted by label name.
	matchers []labelMatcher
}

type labelMatcher struct {
	name string
	re   *regexp.Regexp
}

// Matches reports whether a group with the given grouping labels is matched.
// get returns a grouping label's value ("" when absent).
func (r *Rule) Matches(get func(name string) string) bool {
	for _, m := range r.matchers {
		if !m.re.MatchString(get(m.name)) {
			return false
		}
	}
	return true
}

// LimitsConfig bounds what one request and the whole state may hold.
type LimitsConfig struct {
	// MaxBodyBytes caps a request body as received (compressed or not).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxDecompressedBodyBytes caps a body after gzip/snappy is undone.
	MaxDecompressedBodyBytes int64 `yaml:"max_decompressed_body_bytes"`
	// MaxSeriesPerRequest caps the series one push shows as (each bucket of
	// a classic histogram and each quantile of a summary counts, with
	// their _sum and _count).
	MaxSeriesPerRequest int `yaml:"max_series_per_request"`
	// MaxLabelsPerSeries caps the labels of one series, including the
	// grouping labels, not counting the metric name (__name__).
	MaxLabelsPerSeries int `yaml:"max_labels_per_series"`
	// MaxLabelNameLength and MaxLabelValueLength cap each label, in bytes.
	MaxLabelNameLength  int `yaml:"max_label_name_length"`
	MaxLabelValueLength int `yaml:"max_label_value_length"`
	// MaxMetadataLength caps a metric's HELP text and unit, in bytes: the
	// ones Sluice keeps (an aggregated metric's, a remote_write sender's
	// metadata cached for the series it relays) and sends with every
	// window or relayed request.
	MaxMetadataLength int `yaml:"max_metadata_length"`
	// MaxSeriesPerGroup caps the live series of one grouping key.
	MaxSeriesPerGroup int `yaml:"max_series_per_group"`
	// MaxSeries caps the live aggregated series in total.
	MaxSeries int `yaml:"max_series"`
	// MaxInflightRequests caps the push and remote_write requests being
	// decoded and applied at once; more get 429 (pushes) or 503
	// (remote_write), both with Retry-After.
	MaxInflightRequests int `yaml:"max_inflight_requests"`
}

// Default returns the configuration used when no file is given. Every
// number says why it is what it is.
func Default() Config {
	return Config{
		SelfMetrics: SelfMetricsConfig{Forward: true},
		// fsync per request (shared by concurrent ones) is SPEC 7's
		// default; 1 s is the loss window of "interval"; 128 MiB segments
		// as Prometheus' WAL, large enough for any single push.
		// Zeros ahead of the log written by the appends: the background
		// filler costs about 9% of the maximum push rate (README).
		WAL: WALConfig{Fsync: "always", FsyncInterval: model.Duration(time.Second), SegmentSize: 128 << 20, ZeroFill: "append"},
		Aggregation: AggregationConfig{
			// SPEC 4.2: counters, untyped, histograms and summaries are
			// summed (each push is one invocation's delta); gauges replace.
			DefaultModes: DefaultModes{
				Counter:   Mode{Kind: ModeSum},
				Gauge:     Mode{Kind: ModeReplace},
				Untyped:   Mode{Kind: ModeSum},
				Histogram: Mode{Kind: ModeSum},
				Summary:   Mode{Kind: ModeSum},
			},
		},
		Limits: LimitsConfig{
			// A push of a few thousand series is a few hundred KiB of text;
			// 16 MiB leaves room for big batch jobs while bounding memory.
			MaxBodyBytes: 16 << 20,
			// Text compresses about 10x; 64 MiB of plain text bounds what a
			// compressed body may expand to (gzip bombs stop here).
			MaxDecompressedBodyBytes: 64 << 20,
			// One function invocation pushes tens of series; 10k is a batch
			// job's worth and keeps a single push's validation bounded.
			MaxSeriesPerRequest: 10_000,
			// Prometheus' own default sample_limit-style guards use 30-64;
			// 64 is generous for a pushed series.
			MaxLabelsPerSeries: 64,
			// Mimir's defaults: 1 KiB names, 2 KiB values.
			MaxLabelNameLength:  1024,
			MaxLabelValueLength: 2048,
			// Mimir's max_metadata_length: longer texts a store behind
			// Mimir would refuse anyway.
			MaxMetadataLength: 1024,
			// A group is one job (plus grouping labels); 10k series in one
			// group is already a cardinality problem worth a loud 429.
			MaxSeriesPerGroup: defaultMaxSeriesPerGroup,
			// SPEC 10 sizes Sluice for 1M live series.
			MaxSeries: 1_000_000,
			// Pushes mostly wait for the shared fsync (group commit), so
			// hundreds in flight keep the disk busy; 1024 bounds the
			// goroutines and decoded bodies held at once (Mimir's
			// distributor allows 2000 in-flight pushes).
			MaxInflightRequests: 1024,
		},
		Web: defaultWeb(),
	}
}

// defaultMaxSeriesPerGroup is limits.max_series_per_group's default, or
// max_series if that is lower.
const defaultMaxSeriesPerGroup = 10_000

// Load reads and validates a configuration file. Unknown fields are errors,
// ${VAR} references are expanded from the environment, and every value not
// given keeps its default.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	c, err := parse(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load config file %s: %w", path, err)
	}
	return c, nil
}

// userinfo matches the user information of a URL in a message.
// It runs to the last "@" of the line, since a password may hold "@",
// "/", a blank or an escaped quote: over-redacting is the safe side.
var userinfo = regexp.MustCompile(`(://)[^\n]*@`)

// scrubError is err with any user information of a URL in its message
// replaced: a decoding error of a URL field (proxy_url, say) quotes the
// whole value, password included.
type scrubError struct{ err error }

func (e scrubError) Error() string {
	return userinfo.ReplaceAllString(e.err.Error(), "${1}<redacted>@")
}
func (e scrubError) Unwrap() error { return e.err }

// Parse decodes and validates a configuration from YAML bytes. Relative
// file paths in it stay relative to the working directory.
func Parse(b []byte) (*Config, error) { return parse(b, "") }

// parse is Parse with relative file paths resolved against dir (the
// config file's directory, as Prometheus resolves them), unless dir is "".
func parse(b []byte, dir string) (*Config, error) {
	c, err := decode(b, dir)
	if err != nil {
		return nil, scrubError{err}
	}
	return c, nil
}

func decode(b []byte, dir string) (*Config, error) {
	expanded, changed, err := expandEnvYAML(b)
	if err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		err = locate(expanded, err)
		if changed {
			return nil, fmt.Errorf("parse yaml (with ${VAR} expanded, so line numbers may be off): %w", err)
		}
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	if dir != "" {
		c.setDirectory(dir)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// locate names where in doc a decoding error is, when the error does not
// say (a field's own parser, such as a duration's, returns a bare "not a
// valid duration string: \"-1s\""): the first value quoted in the
// message, found in the document, gives its line and its key path.
func locate(doc []byte, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return err // yaml's own errors have their lines
	}
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) != nil {
		return err
	}
	msg := err.Error()
	var found error
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if found != nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i].Value
				if path != "" {
					key = path + "." + key
				}
				walk(n.Content[i+1], key)
			}
		case yaml.ScalarNode:
			if n.Value != "" && strings.Contains(msg, strconv.Quote(n.Value)) {
				found = fmt.Errorf("line %d: %s: %w", n.Line, path, err)
			}
		}
	}
	walk(&root, "")
	if found != nil {
		return found
	}
	return err
}

// setDirectory joins the relative file paths of the config with dir.
func (c *Config) setDirectory(dir string) {
	join := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.RemoteWrite {
		c.RemoteWrite[i].HTTPClientConfig.SetDirectory(dir)
	}
	t := &c.Web.TLSServerConfig
	join(&t.CertFile)
	join(&t.KeyFile)
	join(&t.ClientCAFile)
	for i := range c.Web.BearerTokens {
		join(&c.Web.BearerTokens[i].TokenFile)
	}
}

// expandEnvYAML expands ${VAR} (ExpandEnv) in a YAML document's scalars,
// keys included, after it is parsed: a value from the environment is
// data, so characters YAML would read (a leading "*", "&" or "!", " #")
// stay part of it. Each ${VAR} is first replaced in the text by a
// placeholder that is a plain scalar anywhere (so "{region: ${R}}" still
// parses), then the placeholders are replaced in the parsed scalars. An
// unset or empty variable that makes a whole plain value empty leaves it
// null, so a typed field keeps its default, as when the text was expanded.
// Relabel rules are left alone: "${name}" there is a capture group, as in
// Prometheus, and gets its text back. changed says whether anything was
// expanded; if not, b is returned as it is (so errors keep its line
// numbers).
func expandEnvYAML(b []byte) (_ []byte, changed bool, _ error) {
	var names []string
	marked := replaceEnvRefs(b, func(name string) string {
		names = append(names, name)
		return envPlaceholder + strconv.Itoa(len(names)-1) + "__"
	})
	if len(names) == 0 {
		return b, false, nil
	}
	var root yaml.Node
	if err := yaml.Unmarshal(marked, &root); err != nil {
		return nil, false, err
	}
	expanded := false
	fill := func(n *yaml.Node, expand bool) {
		if n.Kind != yaml.ScalarNode || !strings.Contains(n.Value, envPlaceholder) {
			return
		}
		// The text as written, then expanded as ExpandEnv expands it.
		n.Value = envPlaceholderRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			i, _ := strconv.Atoi(m[len(envPlaceholder) : len(m)-2])
			if i >= len(names) {
				return m
			}
			return "${" + names[i] + "}"
		})
		if !expand {
			return
		}
		n.Value, expanded = string(ExpandEnv([]byte(n.Value))), true
		if n.Style == 0 {
			// A plain value is typed by what it now says (a number
			// for max_shards); empty, it is null (the default); any
			// other text that reads as null stays text.
			n.Tag = ""
			switch {
			case n.Value == "":
				n.Tag = "!!null"
			case n.ShortTag() == "!!null":
				n.Tag = "!!str"
			}
		}
	}
	var walk func(n *yaml.Node, expand bool)
	walk = func(n *yaml.Node, expand bool) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, expand)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				fill(k, expand)
				switch k.Value {
				case "relabel_configs", "write_relabel_configs":
					walk(v, false)
				default:
					walk(v, expand)
				}
			}
		case yaml.ScalarNode:
			fill(n, expand)
		}
	}
	walk(&root, true)
	if !expanded {
		// Only in comments or relabel rules: the text as it is, so
		// errors keep its line numbers.
		return b, false, nil
	}
	out, err := yaml.Marshal(&root)
	return out, true, err
}

// envPlaceholder starts the text that stands for a ${VAR} while the
// document is parsed; envPlaceholderRef finds one.
const envPlaceholder = "__sluice_env_b5d2c8_"

var envPlaceholderRef = regexp.MustCompile(envPlaceholder + `[0-9]+__`)

// ExpandEnv replaces every ${VAR} with the environment variable's value
// (empty when unset). Only the braced form is expanded, so a regular
// expression ending in "$" in a match rule is left alone.
func ExpandEnv(b []byte) []byte { return replaceEnvRefs(b, os.Getenv) }

// replaceEnvRefs replaces every ${NAME} in b (the braced form, a valid
// name) with value(NAME).
func replaceEnvRefs(b []byte, value func(name string) string) []byte {
	var out []byte
	for {
		i := bytes.Index(b, []byte("${"))
		if i < 0 {
			return append(out, b...)
		}
		j := bytes.IndexByte(b[i:], '}')
		if j < 0 || !validEnvName(b[i+2:i+j]) {
			out = append(out, b[:i+2]...)
			b = b[i+2:]
			continue
		}
		out = append(out, b[:i]...)
		out = append(out, value(string(b[i+2:i+j]))...)
		b = b[i+j+1:]
	}
}

func validEnvName(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for i, c := range n {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Validate checks every section and compiles what needs compiling. It must
// be called on a Config built in code before use.
func (c *Config) Validate() error {
	if err := c.Ingest.validate(); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if err := c.Aggregation.validate(); err != nil {
		return fmt.Errorf("aggregation: %w", err)
	}
	if c.Limits.MaxSeriesPerGroup == defaultMaxSeriesPerGroup && c.Limits.MaxSeries > 0 && c.Limits.MaxSeries < defaultMaxSeriesPerGroup {
		// The per-group default is 10,000 or max_series, whichever is
		// lower: setting only max_series low must not stop the start.
		c.Limits.MaxSeriesPerGroup = c.Limits.MaxSeries
	}
	if err := c.Limits.validate(); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	if err := c.Web.validate(); err != nil {
		return fmt.Errorf("web: %w", err)
	}
	switch c.WAL.Fsync {
	case "always", "interval":
	default:
		return fmt.Errorf("wal.fsync: %q must be always or interval", c.WAL.Fsync)
	}
	switch {
	case c.WAL.FsyncInterval <= 0:
		return fmt.Errorf("wal.fsync_interval: must be positive, got %s", c.WAL.FsyncInterval)
	case c.WAL.CheckpointInterval < 0:
		return fmt.Errorf("wal.checkpoint_interval: must not be negative, got %s", c.WAL.CheckpointInterval)
	case c.WAL.SegmentSize < 1<<20:
		return fmt.Errorf("wal.segment_size: must be at least 1 MiB (1048576), got %d", c.WAL.SegmentSize)
	case c.WAL.ZeroFill != "append" && c.WAL.ZeroFill != "background":
		return fmt.Errorf("wal.zero_fill: %q must be append or background", c.WAL.ZeroFill)
	}
	for name := range c.Global.ExternalLabels {
		if !model.LegacyValidation.IsValidLabelName(name) || strings.HasPrefix(name, "__") {
			return fmt.Errorf("global.external_labels: invalid label name %q", name)
		}
	}
	nameAmbiguousTargets(c.RemoteWrite)
	names := map[string]bool{}
	for i := range c.RemoteWrite {
		rw := &c.RemoteWrite[i]
		if err := rw.Validate(); err != nil {
			return fmt.Errorf("remote_write[%d] (%s): %w", i, rw.DisplayName(), err)
		}
		if names[rw.DisplayName()] {
			return fmt.Errorf("remote_write[%d]: duplicate target %s; give each a distinct name", i, rw.DisplayName())
		}
		names[rw.DisplayName()] = true
	}
	return nil
}

func (a *AggregationConfig) validate() error {
	builtin := Default().Aggregation.DefaultModes
	a.DefaultModes = a.DefaultModes.inherit(builtin)
	if err := a.DefaultModes.validate("default_modes"); err != nil {
		return err
	}
	for i := range a.Rules {
		r := &a.Rules[i]
		where := fmt.Sprintf("rules[%d]", i)
		if len(r.Match) == 0 {
			return fmt.Errorf("%s: match must name at least one grouping label", where)
		}
		if r.TTL < 0 {
			return fmt.Errorf("%s: ttl must not be negative", where)
		}
		r.DefaultModes = r.DefaultModes.inherit(a.DefaultModes)
		if err := r.DefaultModes.validate(where + ".default_modes"); err != nil {
			return err
		}
		r.matchers = r.matchers[:0]
		for name, expr := range r.Match {
			if !model.LegacyValidation.IsValidLabelName(name) {
				return fmt.Errorf("%s: invalid label name %q in match", where, name)
			}
			re, err := regexp.Compile("^(?:" + expr + ")$")
			if err != nil {
				return fmt.Errorf("%s: match %s: %w", where, name, err)
			}
			r.matchers = append(r.matchers, labelMatcher{name: name, re: re})
		}
		sort.Slice(r.matchers, func(i, j int) bool { return r.matchers[i].name < r.matchers[j].name })
	}
	return nil
}

func (l LimitsConfig) validate() error {
	for _, c := range []struct {
		name string
		v    int64
	}{
		{"max_body_bytes", l.MaxBodyBytes},
		{"max_decompressed_body_bytes", l.MaxDecompressedBodyBytes},
		{"max_series_per_request", int64(l.MaxSeriesPerRequest)},
		{"max_labels_per_series", int64(l.MaxLabelsPerSeries)},
		{"max_label_name_length", int64(l.MaxLabelNameLength)},
		{"max_label_value_length", int64(l.MaxLabelValueLength)},
		{"max_metadata_length", int64(l.MaxMetadataLength)},
		{"max_series_per_group", int64(l.MaxSeriesPerGroup)},
		{"max_series", int64(l.MaxSeries)},
		{"max_inflight_requests", int64(l.MaxInflightRequests)},
	} {
		if c.v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", c.name, c.v)
		}
	}
	if l.MaxDecompressedBodyBytes < l.MaxBodyBytes {
		return fmt.Errorf("max_decompressed_body_bytes (%d) must be at least max_body_bytes (%d)", l.MaxDecompressedBodyBytes, l.MaxBodyBytes)
	}
	if l.MaxSeriesPerGroup > l.MaxSeries {
		return fmt.Errorf("max_series_per_group (%d) must not exceed max_series (%d)", l.MaxSeriesPerGroup, l.MaxSeries)
	}
	return nil
}

// RuleFor returns the first rule matching a group, or nil.
func (a *AggregationConfig) RuleFor(get func(name string) string) *Rule {
	for i := range a.Rules {
		if a.Rules[i].Matches(get) {
			return &a.Rules[i]
		}
	}
	return nil
}

// TTLFor returns the TTL of a group: the matching rule's, else def.
func (a *AggregationConfig) TTLFor(get func(name string) string, def time.Duration) time.Duration {
	if r := a.RuleFor(get); r != nil && r.TTL > 0 {
		return time.Duration(r.TTL)
	}
	return def
}

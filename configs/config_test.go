package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestLoadGoodFiles(t *testing.T) {
	t.Setenv("SLUICE_TEST_JOB", "from-env")
	t.Setenv("SLUICE_TEST_SECRET", "s3cr3t")
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

func TestLoadBadFiles(t *testing.T) {
	want := map[string]string{
		"unknown_field.bad.yml":              "field default_mode not found",
		"unknown_mode.bad.yml":               `unknown clear_mode "average"`,
		"windowed_histogram.bad.yml":         "windowed mode mean5m is only for counters",
		"bad_regex.bad.yml":                  "rules[0]: match job",
		"empty_match.bad.yml":                "match must name at least one grouping label",
		"negative_limit.bad.yml":             "max_series must be positive",
		"group_over_total.bad.yml":           "must not exceed max_series",
		"not_yaml.bad.yml":                   "parse yaml",
		"remote_write_unknown_field.bad.yml": "field max_sampels_per_send not found",
		"remote_write_auth_header.bad.yml":   "Authorization is reserved",
		"remote_write_bad_message.bad.yml":   `protobuf_message "prometheus.WriteRequestV3"`,
		"remote_write_duplicate.bad.yml":     "duplicate target",
		"remote_write_creds_in_url.bad.yml":  "put credentials in basic_auth",
		"ingest_relabel_no_target.bad.yml":   "ingest: relabel_configs[0]: relabel configuration for replace action requires 'target_label'",
		"ingest_relabel_bad_action.bad.yml":  `unknown relabel action "dorp"`,
		// web and limits.max_inflight_requests (configs/web.go)
		"web_plain_password.bad.yml":     `user "lambda": password must be a bcrypt hash`,
		"web_token_two_sources.bad.yml":  "bearer_tokens[0]: set exactly one of token, token_file and token_env",
		"web_token_file_missing.bad.yml": "bearer_tokens[0]: read token_file",
		"web_token_short.bad.yml":        "token shorter than 16 bytes",
		"web_tls_no_key.bad.yml":         "cert_file and key_file must be given together",
		"web_tls_bad_version.bad.yml":    `unknown TLS version "TLS14"`,
		"web_tls_mtls_no_ca.bad.yml":     "client_auth_type RequireAndVerifyClientCert needs client_ca_file",
		"web_zero_timeout.bad.yml":       "read_timeout, write_timeout and idle_timeout must be positive",
		"inflight_zero.bad.yml":          "max_inflight_requests must be positive",
		"wal_zero_fill.bad.yml":          `wal.zero_fill: "ahead" must be append or background`,
	}
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) != len(want) {
		t.Fatalf("have %d bad files, expectations for %d", len(files), len(want))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil || !strings.Contains(err.Error(), want[filepath.Base(f)]) {
				t.Fatalf("Load(%s) = %v, want an error containing %q", f, err, want[filepath.Base(f)])
			}
		})
	}
}

func TestDefaultsAndInheritance(t *testing.T) {
	t.Setenv("SLUICE_TEST_JOB", "from-env")
	c, err := Load("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	get := func(m map[string]string) func(string) string { return func(n string) string { return m[n] } }
	r := c.Aggregation.RuleFor(get(map[string]string{"job": "batch-7"}))
	if r == nil || r.DefaultModes.Gauge.String() != "max5m" || r.DefaultModes.Counter.String() != "sum" || r.DefaultModes.Summary.String() != "replace" {
		t.Fatalf("rule for batch-7: %+v; want gauge max5m and the rest inherited", r)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "batch-7"}), time.Hour); got != 2*time.Hour {
		t.Fatalf("ttl for batch-7 = %v, want 2h", got)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "lambda-x", "env": "dev"}), time.Hour); got != time.Hour {
		t.Fatalf("ttl for lambda-x in dev = %v, want the default 1h", got)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "xbatch-7"}), time.Hour); got != time.Hour {
		t.Fatalf("regexes are anchored: ttl for xbatch-7 = %v, want 1h", got)
	}
	e, err := Load("testdata/env.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Aggregation.TTLFor(get(map[string]string{"job": "from-env"}), time.Minute); got != time.Hour {
		t.Fatalf("${SLUICE_TEST_JOB} must expand from the environment; ttl = %v", got)
	}
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
	if d.Aggregation.DefaultModes.Gauge.String() != "replace" || d.Aggregation.DefaultModes.Counter.String() != "sum" {
		t.Fatalf("SPEC 4.2 defaults: %+v", d.Aggregation.DefaultModes)
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("A_B", "x")
	cases := []struct{ name, in, want string }{
		{"braced", "v: ${A_B}", "v: x"},
		{"unset_is_empty", "v: ${NOT_SET_ANYWHERE_42}", "v: "},
		{"bare_dollar_kept", "re: foo$", "re: foo$"},
		{"unbraced_kept", "v: $A_B", "v: $A_B"},
		{"unclosed_kept", "v: ${A_B", "v: ${A_B"},
		{"invalid_name_kept", "v: ${1A}", "v: ${1A}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(ExpandEnv([]byte(tc.in))); got != tc.want {
				t.Fatalf("ExpandEnv(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRemoteWriteDefaultsAndSecrets(t *testing.T) {
	t.Setenv("SLUICE_TEST_SECRET", "s3cr3t-from-env")
	c, err := Load("testdata/remote_write.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RemoteWrite) != 2 {
		t.Fatalf("targets: %d", len(c.RemoteWrite))
	}
	gc, vm := c.RemoteWrite[0], c.RemoteWrite[1]
	if string(gc.HTTPClientConfig.BasicAuth.Password) != "s3cr3t-from-env" {
		t.Fatalf("password not expanded from the environment")
	}
	if gc.QueueConfig.MaxSamplesPerSend != 1000 || gc.QueueConfig.MaxShards != 50 || gc.QueueConfig.Capacity != 10000 ||
		gc.RemoteTimeout != defaultRemoteTimeout || gc.ProtobufMessage != ProtoMsgV1 || !*gc.QueueConfig.RetryOnRateLimit {
		t.Fatalf("defaults not kept around the given field: %+v", gc.QueueConfig)
	}
	// Prometheus' remote_write defaults: redirects followed, HTTP/2 off.
	if !gc.HTTPClientConfig.FollowRedirects || gc.HTTPClientConfig.EnableHTTP2 {
		t.Fatalf("HTTP client defaults lost: %+v", gc.HTTPClientConfig)
	}
	if vm.ProtobufMessage != ProtoMsgV2 || vm.Headers["X-Scope-OrgID"] != "team-a" || len(vm.WriteRelabelConfigs) != 1 {
		t.Fatalf("second target: %+v", vm)
	}
	if c.Global.ExternalLabels["cluster"] != "eu-1" || c.SelfMetrics.Instance != "sluice-0" || !c.SelfMetrics.Forward {
		t.Fatalf("global/self_metrics: %+v %+v", c.Global, c.SelfMetrics)
	}
	out, err := yaml.Marshal(gc)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cr3t") {
		t.Fatalf("a marshalled target shows its secret:\n%s", out)
	}
	if got := RedactURL("https://u:p@host/push?api_key=abc"); strings.Contains(got, "abc") || strings.Contains(got, "p@") {
		t.Fatalf("RedactURL leaks: %s", got)
	}
}

func TestIngestRelabelConfigs(t *testing.T) {
	c, err := Load("testdata/ingest_relabel.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	rcs := c.Ingest.RelabelConfigs
	if len(rcs) != 3 || rcs[0].Action != "drop" || rcs[1].TargetLabel != "clear_mode" || rcs[2].Action != "labeldrop" {
		t.Fatalf("relabel_configs: %+v", rcs)
	}
	if rcs[0].Separator != ";" || rcs[1].Regex.String() != "lambda-.*;.*_requests_total" {
		t.Fatalf("relabel defaults not kept: %+v", rcs[1])
	}
	if d := Default(); len(d.Ingest.RelabelConfigs) != 0 {
		t.Fatalf("default ingest relabelling: %+v", d.Ingest)
	}
}

// TestExamplesLoad keeps configs/examples valid.
func TestExamplesLoad(t *testing.T) {
	for k, v := range map[string]string{
		"GRAFANA_CLOUD_PROM_URL":  "https://prometheus-prod-01-eu-west-0.grafana.net/api/prom/push",
		"GRAFANA_CLOUD_PROM_USER": "123456", "GRAFANA_CLOUD_API_KEY": "glc_x",
		"MIMIR_TENANT": "team-a", "THANOS_TENANT": "team-b", "HOSTNAME": "sluice-0",
	} {
		t.Setenv(k, v)
	}
	files, _ := filepath.Glob("examples/*.yml")
	if len(files) < 5 {
		t.Fatalf("want the five store examples, have %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.RemoteWrite) != 1 {
				t.Fatalf("want one target, got %d", len(c.RemoteWrite))
			}
		})
	}
}

// TestExpandEnvValues: a value from the environment is data, whatever
// characters it holds, and relabel rules keep their capture groups.
func TestExpandEnvValues(t *testing.T) {
	cases := []struct {
		name, pw, quoted string
	}{
		{name: "alias character", pw: "*S3cr3tAnchor"},
		{name: "tag character", pw: "!S3cr3t"},
		{name: "anchor character", pw: "&S3cr3t"},
		{name: "comment inside", pw: "abc #x"},
		{name: "double quotes and backslash", pw: `S3cr3t\x41b"q`, quoted: `"`},
		{name: "single-quoted field", pw: "it's", quoted: "'"},
		{name: "looks like null", pw: "null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SLUICE_PW", tc.pw)
			t.Setenv("SLUICE_SHARDS", "7")
			t.Setenv("svc", "from-env")
			y := "remote_write:\n  - url: http://127.0.0.1:1/w\n    basic_auth:\n      username: u\n      password: " + tc.quoted + "${SLUICE_PW}" + tc.quoted + "\n" +
				"    queue_config:\n      max_shards: ${SLUICE_SHARDS}\n" +
				"    write_relabel_configs:\n      - source_labels: [job]\n        regex: \"(?P<svc>.*)\"\n        target_label: named\n        replacement: \"svc-${svc}\"\n"
			c, err := Parse([]byte(y))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			rw := c.RemoteWrite[0]
			if got := string(rw.HTTPClientConfig.BasicAuth.Password); got != tc.pw {
				t.Errorf("password %q, want %q", got, tc.pw)
			}
			if rw.QueueConfig.MaxShards != 7 {
				t.Errorf("max_shards %d, want 7 from the environment", rw.QueueConfig.MaxShards)
			}
			if got := rw.WriteRelabelConfigs[0].Replacement; got != "svc-${svc}" {
				t.Errorf("relabel replacement %q, want the capture group kept", got)
			}
		})
	}
}

// TestExpandEnvWhereTextExpansionWorked: what loaded when ${VAR} was
// expanded in the text still loads: a reference in a flow collection, an
// unset variable in a typed field (its default), a variable in a key.
func TestExpandEnvWhereTextExpansionWorked(t *testing.T) {
	t.Setenv("SLUICE_R", "eu-1")
	t.Setenv("SLUICE_P", "*pw #x")
	t.Setenv("SLUICE_HDR", "X-Scope-OrgID")
	y := "global:\n  external_labels: {region: ${SLUICE_R}}\n" +
		"remote_write:\n  - url: http://127.0.0.1:1/w\n    basic_auth: {username: u, password: ${SLUICE_P}}\n" +
		"    remote_timeout: ${SLUICE_UNSET}\n    headers: {${SLUICE_HDR}: team-a}\n"
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	rw := c.RemoteWrite[0]
	switch {
	case c.Global.ExternalLabels["region"] != "eu-1":
		t.Errorf("external label %q", c.Global.ExternalLabels["region"])
	case string(rw.HTTPClientConfig.BasicAuth.Password) != "*pw #x":
		t.Errorf("password %q", rw.HTTPClientConfig.BasicAuth.Password)
	case rw.RemoteTimeout != defaultRemoteTimeout:
		t.Errorf("remote_timeout %v, want the default for an unset variable", rw.RemoteTimeout)
	case rw.Headers["X-Scope-OrgID"] != "team-a":
		t.Errorf("headers %v, want the key expanded", rw.Headers)
	}
}

// TestRedactURLWithAtPastTheHost: a URL that parses with a password in
// its path or fragment (an "@" past what parses as the host) is cut at its
// last "@" too.
func TestRedactURLWithAtPastTheHost(t *testing.T) {
	for _, u := range []string{"https://user:123/SECRET@host/x", "https://tok#SECRET@host/x", "https://host/x#SECRET"} {
		if got := RedactURL(u); strings.Contains(got, "SECRET") {
			t.Errorf("RedactURL(%q) = %q", u, got)
		}
	}
	if got := RedactURL("https://u:p@host:1/api?key=k"); got != "https://host:1/api?redacted" {
		t.Errorf("plain case: %q", got)
	}
}

// TestExpandEnvOnlyInCommentsKeepsLines: a ${VAR} only in a comment or a
// relabel rule expands nothing, and errors keep the file's line numbers.
func TestExpandEnvOnlyInCommentsKeepsLines(t *testing.T) {
	y := "# the token comes from ${TOKEN}\n\n\nremote_write:\n  - url: http://127.0.0.1:1/w\n    write_relabel_configs:\n      - {source_labels: [a], target_label: b, replacement: \"${1}\"}\n    remote_timeout: 5\n"
	_, err := Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), "line 8") || strings.Contains(err.Error(), "may be off") {
		t.Fatalf("Parse = %v, want an error at line 8", err)
	}
}

// TestRelativePathsFollowTheConfigFile: as in Prometheus, relative file
// paths in a loaded file are relative to its directory.
func TestRelativePathsFollowTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := "remote_write:\n  - url: http://127.0.0.1:1/w\n    basic_auth:\n      username: u\n      password_file: pw\n    tls_config:\n      ca_file: certs/ca.crt\n"
	p := filepath.Join(dir, "sluice.yml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	hc := c.RemoteWrite[0].HTTPClientConfig
	if hc.BasicAuth.PasswordFile != filepath.Join(dir, "pw") || hc.TLSConfig.CAFile != filepath.Join(dir, "certs/ca.crt") {
		t.Errorf("paths not resolved against %s: %q %q", dir, hc.BasicAuth.PasswordFile, hc.TLSConfig.CAFile)
	}
}

// TestConfigErrorsHideURLCredentials: an unparsable URL's user
// information never reaches an error message.
func TestConfigErrorsHideURLCredentials(t *testing.T) {
	for _, y := range []string{
		"remote_write:\n  - url: http://user:p%zzSECRET@127.0.0.1:1/w\n",
		"remote_write:\n  - url: http://127.0.0.1:1/w\n    proxy_url: http://pu:PROXY%zzSECRET@127.0.0.1:2\n",
		"remote_write:\n  - url: 'https://user:pa#SECRET%zz@127.0.0.1:1/x'\n",
		"remote_write:\n  - url: 'https://user:pa/SECRET%zz@127.0.0.1:1/x'\n",
		"remote_write:\n  - url: http://127.0.0.1:1/w\n    proxy_url: 'http://u:p@SECRET@127.0.0.1:bad'\n",
		"remote_write:\n  - url: http://127.0.0.1:1/w\n    proxy_url: 'http://u:p\"SECRET%zz@127.0.0.1:2'\n",
		"remote_write:\n  - url: http://127.0.0.1:1/w\n    proxy_url: 'http://u:pa SECRET@127.0.0.1:2'\n",
	} {
		_, err := Parse([]byte(y))
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error %v for %q: want one without the password", err, y)
		}
	}
}

// TestPastedPrometheusRemoteWrite: a remote_write block as Prometheus
// users have it loads; the settings Sluice does not use are named, and
// authentication it does not implement is refused by name.
func TestPastedPrometheusRemoteWrite(t *testing.T) {
	y := `remote_write:
  - url: http://127.0.0.1:1/api/v1/write
    send_exemplars: false
    send_native_histograms: true
    round_robin_dns: false
    metadata_config:
      send: true
      send_interval: 1m
      max_samples_per_send: 500
    queue_config:
      min_shards: 2
      max_shards: 10
      sample_age_limit: 10m
`
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("pasted block refused: %v", err)
	}
	got := strings.Join(c.RemoteWrite[0].IgnoredSettings(), "; ")
	for _, want := range []string{"send_exemplars", "send_native_histograms", "metadata_config", "round_robin_dns", "min_shards", "sample_age_limit"} {
		if !strings.Contains(got, want) {
			t.Errorf("ignored settings %q lack %s", got, want)
		}
	}
	if c.RemoteWrite[0].QueueConfig.MaxShards != 10 {
		t.Errorf("max_shards %d", c.RemoteWrite[0].QueueConfig.MaxShards)
	}
	for _, auth := range []string{"sigv4:\n      region: eu-west-1", "azuread:\n      cloud: AzurePublic", "google_iam:\n      credentials_file: x"} {
		_, err := Parse([]byte("remote_write:\n  - url: http://127.0.0.1:1/w\n    " + auth + "\n"))
		name := strings.SplitN(auth, ":", 2)[0]
		if err == nil || !strings.Contains(err.Error(), "remote_write[0]") || !strings.Contains(err.Error(), name+" is a Prometheus setting Sluice does not support") {
			t.Errorf("%s: %v, want a refusal naming it", name, err)
		}
	}
}

func TestMaxSeriesAloneLowersThePerGroupDefault(t *testing.T) {
	for _, tc := range []struct {
		name                string
		y                   string
		wantMax, wantPerGrp int
		wantErr             string
	}{
		{name: "only max_series", y: "limits:\n  max_series: 50\n", wantMax: 50, wantPerGrp: 50},
		{name: "both, consistent", y: "limits:\n  max_series: 50\n  max_series_per_group: 20\n", wantMax: 50, wantPerGrp: 20},
		{name: "per group over the total", y: "limits:\n  max_series: 50\n  max_series_per_group: 60\n", wantErr: "must not exceed max_series"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.y))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || c.Limits.MaxSeries != tc.wantMax || c.Limits.MaxSeriesPerGroup != tc.wantPerGrp {
				t.Fatalf("limits %+v, err %v", c.Limits, err)
			}
		})
	}
}

// TestDecodeErrorsNameTheField: a value a field's own parser refuses is
// reported with its line and key path.
func TestDecodeErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ name, y, want string }{
		{"wal duration", "wal:\n  fsync_interval: -1s\n", "line 2: wal.fsync_interval: "},
		{"remote_timeout", "remote_write:\n  - url: http://127.0.0.1:1/w\n    remote_timeout: -5s\n", "line 3: remote_write[0].remote_timeout: "},
		{"type error keeps yaml's line", "limits:\n  max_series: lots\n", "line 2: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.y))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestTargetsToldApartByHeadersOrQuery: unnamed targets that share a URL
// but not their tenant (a header, a query parameter) load, as in
// Prometheus, each under a stable name of its own; identical ones are
// refused.
func TestTargetsToldApartByHeadersOrQuery(t *testing.T) {
	cases := []struct {
		name, yaml string
		wantErr    string
	}{
		{name: "tenant_headers", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push
    headers: {X-Scope-OrgID: a}
  - url: http://127.0.0.1:9009/api/v1/push
    headers: {X-Scope-OrgID: b}
`},
		{name: "tenant_query", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push?tenant=a
  - url: http://127.0.0.1:9009/api/v1/push?tenant=b
`},
		{name: "tenant_http_headers", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push
    http_headers: {X-Scope-OrgID: {values: [a]}}
  - url: http://127.0.0.1:9009/api/v1/push
    http_headers: {X-Scope-OrgID: {values: [b]}}
`},
		{name: "proxy_url", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push
    proxy_url: http://127.0.0.1:3128
  - url: http://127.0.0.1:9009/api/v1/push
    proxy_url: http://127.0.0.1:3129
`},
		{name: "tls_key_file", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push
    tls_config: {cert_file: /c.pem, key_file: /a.key}
  - url: http://127.0.0.1:9009/api/v1/push
    tls_config: {cert_file: /c.pem, key_file: /b.key}
`},
		{name: "identical", yaml: `
remote_write:
  - url: http://127.0.0.1:9009/api/v1/push
    headers: {X-Scope-OrgID: a}
  - url: http://127.0.0.1:9009/api/v1/push
    headers: {X-Scope-OrgID: a}
`, wantErr: "duplicate target"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, b := c.RemoteWrite[0].DisplayName(), c.RemoteWrite[1].DisplayName()
			if a == b || !strings.HasPrefix(a, "http://127.0.0.1:9009/api/v1/push") || !strings.Contains(a, "#") || strings.Contains(a, "tenant=") {
				t.Fatalf("names %q and %q: want distinct, the redacted URL and a hash", a, b)
			}
			again, err := Parse([]byte(tc.yaml))
			if err != nil || again.RemoteWrite[0].DisplayName() != a || again.RemoteWrite[1].DisplayName() != b {
				t.Fatalf("names not stable across loads: %v", err)
			}
		})
	}
}

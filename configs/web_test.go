package configs

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestWebDefaults(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Web.AuthEnabled() || c.Web.TLSServerConfig.Enabled() || c.Web.ProtectMetrics || c.Web.ProtectAdmin {
		t.Fatalf("defaults must have no auth and no TLS: %+v", c.Web)
	}
	h := c.Web.HTTPServerConfig
	if time.Duration(h.ReadTimeout) != 30*time.Second || time.Duration(h.WriteTimeout) != time.Minute ||
		time.Duration(h.IdleTimeout) != 2*time.Minute || h.MaxHeaderBytes != 8192 || h.MaxConnections != 10000 {
		t.Fatalf("http_server_config defaults: %+v", h)
	}
	if c.Limits.MaxInflightRequests != 1024 {
		t.Fatalf("max_inflight_requests default = %d, want 1024", c.Limits.MaxInflightRequests)
	}
}

func TestWebGoodFile(t *testing.T) {
	c, err := Load("testdata/web.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	w := c.Web
	if !w.AuthEnabled() || !w.ProtectMetrics || !w.ProtectAdmin {
		t.Fatalf("auth settings not loaded: %+v", w)
	}
	if got := w.BearerTokens[0].Value(); got != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("token_file value = %q, want the file's content without the newline", got)
	}
	if got := w.BearerTokens[1].Value(); got != "0123456789abcdef-inline-token" {
		t.Fatalf("inline token = %q", got)
	}
	tc := w.TLSServerConfig
	if !tc.Enabled() || tc.ClientAuth() != tls.VerifyClientCertIfGiven || tc.MinVersion != tls.VersionTLS13 {
		t.Fatalf("tls_server_config: %+v (client auth %v)", tc, tc.ClientAuth())
	}
	if w.HTTPServerConfig.MaxConnections != 2000 || time.Duration(w.HTTPServerConfig.ReadTimeout) != 10*time.Second {
		t.Fatalf("http_server_config: %+v", w.HTTPServerConfig)
	}
	if c.Limits.MaxInflightRequests != 64 {
		t.Fatalf("max_inflight_requests = %d", c.Limits.MaxInflightRequests)
	}
}

func TestWebTokens(t *testing.T) {
	t.Setenv("SLUICE_TEST_TOKEN", "  from-the-environment-0123  ")
	cases := []struct {
		name, yaml, want, wantErr string
	}{
		{name: "token_env", yaml: "web: {bearer_tokens: [{token_env: SLUICE_TEST_TOKEN}]}", want: "  from-the-environment-0123  "},
		{name: "token from ${VAR}", yaml: "web: {bearer_tokens: [{token: '${SLUICE_TEST_TOKEN}'}]}", want: "  from-the-environment-0123  "},
		{name: "token_env unset", yaml: "web: {bearer_tokens: [{token_env: SLUICE_TEST_UNSET_TOKEN}]}", wantErr: "SLUICE_TEST_UNSET_TOKEN is unset or empty"},
		{name: "${VAR} unset", yaml: "web: {bearer_tokens: [{token: '${SLUICE_TEST_UNSET_TOKEN}'}]}", wantErr: "set exactly one of"},
		{name: "none", yaml: "web: {bearer_tokens: [{}]}", wantErr: "set exactly one of"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Web.BearerTokens[0].Value(); got != tc.want {
				t.Fatalf("token = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestWebTLS(t *testing.T) {
	const pair = "cert_file: testdata/web/server.crt, key_file: testdata/web/server.key"
	cases := []struct {
		name, tls  string
		wantAuth   tls.ClientAuthType
		wantMinVer uint16
		wantErr    string
	}{
		{name: "defaults to TLS 1.2 without client certs", tls: pair, wantAuth: tls.NoClientCert, wantMinVer: tls.VersionTLS12},
		{name: "client_ca_file alone means mTLS", tls: pair + ", client_ca_file: testdata/web/ca.crt", wantAuth: tls.RequireAndVerifyClientCert, wantMinVer: tls.VersionTLS12},
		{name: "CA without a verifying policy", tls: pair + ", client_ca_file: testdata/web/ca.crt, client_auth_type: NoClientCert", wantErr: "client_ca_file is set but client_auth_type is NoClientCert"},
		{name: "unknown client_auth_type", tls: pair + ", client_auth_type: Always", wantErr: `unknown client_auth_type "Always"`},
		{name: "max below min", tls: pair + ", min_version: TLS13, max_version: TLS12", wantErr: "max_version is lower than min_version"},
		{name: "key does not parse", tls: "cert_file: testdata/web/server.crt, key_file: testdata/web/ca.crt", wantErr: "load cert_file/key_file"},
		{name: "CA file without certificates", tls: pair + ", client_ca_file: testdata/web/token.txt", wantErr: "holds no PEM certificate"},
		{name: "settings without a certificate", tls: "min_version: TLS13", wantErr: "cert_file and key_file are required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte("web: {tls_server_config: {" + tc.tls + "}}"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := c.Web.TLSServerConfig
			if got.ClientAuth() != tc.wantAuth || uint16(got.MinVersion) != tc.wantMinVer {
				t.Fatalf("client auth %v, min version %x; want %v, %x", got.ClientAuth(), uint16(got.MinVersion), tc.wantAuth, tc.wantMinVer)
			}
		})
	}
}

func TestWebPlainPasswordIsNotEchoed(t *testing.T) {
	_, err := Parse([]byte("web: {basic_auth_users: {alice: correct-horse-battery}}"))
	if err == nil || strings.Contains(err.Error(), "correct-horse") {
		t.Fatalf("err = %v; want a rejection that does not repeat the password", err)
	}
}

package forward

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"

	"github.com/sluice-metrics/sluice/configs"
)

// Remote-write request headers.
const (
	contentTypeV1 = "application/x-protobuf"
	contentTypeV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
	versionV1     = "0.1.0"
	versionV2     = "2.0.0"

	// Written-count answer headers of Remote-Write 2.0.
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

const (
	// maxRetryAfter caps a server's Retry-After: a receiver asking for an
	// hour must not park a shard (and every window behind it) for an hour.
	maxRetryAfter = 5 * time.Minute
	// errorBodyBytes is how much of an error response is kept for the log.
	errorBodyBytes = 256
	// maxDrainBytes bounds how much of a response body is read to let the
	// connection be reused; a larger body costs a new connection instead.
	maxDrainBytes = 1 << 20
)

// recoverableError is a send error worth retrying (network error, 5xx, 429
// when retry_on_http_429 is set), as in Prometheus' storage/remote.
type recoverableError struct {
	err error
	// retryAfter is the server's Retry-After, 0 if none or not positive.
	retryAfter time.Duration
}

func (e recoverableError) Error() string { return e.err.Error() }
func (e recoverableError) Unwrap() error { return e.err }

// statusError is a non-2xx answer.
type statusError struct {
	code int
	// msg holds the status and the start of the body, already redacted.
	msg string
	// reason, if set, is the drop reason instead of the status code.
	reason string
}

func (e *statusError) Error() string { return e.msg }

// client posts encoded batches to one target.
type client struct {
	url       string
	timeout   time.Duration
	headers   map[string]string // from the config; values are never logged
	userAgent string
	v2        bool
	retry429  bool
	http      *http.Client
	redactor  *redactor
	metrics   *targetMetrics
}

func newClient(cfg *configs.RemoteWriteConfig, userAgent string, tm *targetMetrics) (*client, error) {
	hc, err := commoncfg.NewClientFromConfig(cfg.HTTPClientConfig, "remote_write")
	if err != nil {
		return nil, fmt.Errorf("remote_write %s: http client: %w", cfg.DisplayName(), err)
	}
	return &client{
		url:       cfg.URL,
		timeout:   time.Duration(cfg.RemoteTimeout),
		headers:   cfg.Headers,
		userAgent: userAgent,
		v2:        cfg.ProtobufMessage == configs.ProtoMsgV2,
		retry429:  cfg.QueueConfig.RetryOnRateLimit != nil && *cfg.QueueConfig.RetryOnRateLimit,
		http:      hc,
		redactor:  newRedactor(cfg),
		metrics:   tm,
	}, nil
}

// store sends one body. attempt is 0 for the first try and n for the n-th
// retry (sent as Retry-Attempt). Errors are redacted; a recoverableError
// means the same body should be sent again.
func (c *client) store(ctx context.Context, body []byte, attempt int) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		// Unreachable for a validated URL; not worth retrying.
		return errors.New(c.redact(fmt.Sprintf("build request: %v", err)))
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("User-Agent", c.userAgent)
	if c.v2 {
		req.Header.Set("Content-Type", contentTypeV2)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV2)
	} else {
		req.Header.Set("Content-Type", contentTypeV1)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV1)
	}
	if attempt > 0 {
		req.Header.Set("Retry-Attempt", strconv.Itoa(attempt))
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	c.metrics.sendDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		c.metrics.requests.WithLabelValues("error").Inc()
		return recoverableError{err: c.redactErr(err)}
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrainBytes))
		_ = resp.Body.Close()
	}()
	c.metrics.requests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	if resp.StatusCode/100 == 2 {
		if c.v2 && writtenNothing(resp.Header) {
			// As Prometheus 3 does (PRW 2.0 "required written response
			// headers"): every 2.0 request Sluice sends carries samples
			// or histograms, so a 2xx that confirms none of them comes
			// from a receiver that did not read it as 2.0. Sending it
			// again would get the same answer.
			return &statusError{code: resp.StatusCode, reason: reasonUnconfirmed, msg: c.redact(fmt.Sprintf(
				"sent a Remote-Write 2.0 request; got HTTP status %s, but the X-Prometheus-Remote-Write-*-Written headers say 0 samples, 0 histograms and 0 exemplars were written; "+
					"the target likely only supports Remote-Write 1.0 (drop protobuf_message or set it to prometheus.WriteRequest)", resp.Status))}
		}
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyBytes))
	serr := &statusError{
		code: resp.StatusCode,
		msg:  c.redact(fmt.Sprintf("server returned HTTP status %s: %s", resp.Status, bytes.TrimSpace(snippet))),
	}
	if resp.StatusCode/100 == 5 || (resp.StatusCode == http.StatusTooManyRequests && c.retry429) {
		return recoverableError{err: serr, retryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return serr
}

// writtenNothing reports whether a 2.0 answer's written-count headers sum
// to 0; a missing header counts 0 (PRW 2.0), a malformed one counts as
// something written (the receiver spoke 2.0).
func writtenNothing(h http.Header) bool {
	for _, k := range []string{headerSamplesWritten, headerHistogramsWritten, headerExemplarsWritten} {
		if v := h.Get(k); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n > 0 {
				return false
			}
		}
	}
	return true
}

// close releases idle connections once the target is stopped.
func (c *client) close() { c.http.CloseIdleConnections() }

// redactErr takes the URL (and its query, which may hold an API key) out of
// a *url.Error, which otherwise prints it whole, and scrubs what is left.
func (c *client) redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = configs.RedactURL(ue.URL)
	}
	return redactedError{msg: c.redact(err.Error()), err: err}
}

// redact removes every known secret of the target from s.
func (c *client) redact(s string) string { return c.redactor.replace(s) }

// redactedError carries a scrubbed message for an error whose own message
// may hold a secret.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

// minSecretLen keeps the redactor from replacing short values (a header
// "1") everywhere in a message.
const minSecretLen = 4

// redactor replaces the target's secrets with "<redacted>": the URL
// (whole, then its query and query values), header values, inline
// credentials, and the contents of the credential files (password_file,
// credentials_file, bearer_token_file, client_secret_file), read again on
// each use as the client reads them, so that a rotated secret is redacted
// too. Log lines and the status page only ever show text that went
// through it, in case a secret is echoed by an error or a receiver's body.
// It runs on error paths only.
type redactor struct {
	url     string // the target's URL, replaced by its display form
	secrets []string
	files   []string
	// basic is the target's basic_auth, whose Authorization header
	// carries username:password in base64, a form no configured string
	// matches.
	basic *commoncfg.BasicAuth
}

// authScheme finds the credentials of an Authorization header echoed in a
// receiver's answer: an oauth2 token is fetched at run time, so it is no
// configured string (nor is a basic_auth header, username:password in
// base64, which replace adds). The scheme may be followed by blanks or,
// URL-encoded, by %20 or +; the credentials run to a blank, a quote or a
// delimiter. Group 1 is what stays, group 2 the credentials.
var authScheme = regexp.MustCompile(`(?i)(\b(?:basic|bearer)(?:\s+|%20|\+))([^\s"'&,;<>()\[\]{}]+)`)

// authParam is an auth-param after a scheme ("Basic realm=", "Bearer
// error="), which is not a credential.
var authParam = regexp.MustCompile(`^[a-z_]+=`)

// redactAuth replaces the credentials after "Basic " or "Bearer " in s.
// What cannot be a credential stays, so that a receiver's message keeps
// its meaning: an auth-param, anything shorter than 8 bytes, and a word of
// letters alone shorter than 16 ("basic authentication failed", "Bearer
// Token is invalid"). Tokens and base64 run longer or mix in digits and
// punctuation.
func redactAuth(s string) string {
	return authScheme.ReplaceAllStringFunc(s, func(m string) string {
		sub := authScheme.FindStringSubmatch(m)
		cred := sub[2]
		letters := strings.IndexFunc(cred, func(r rune) bool { return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') }) < 0
		if authParam.MatchString(cred) || len(cred) < 8 || letters && len(cred) < 16 {
			return m
		}
		return sub[1] + "<redacted>"
	})
}

func newRedactor(cfg *configs.RemoteWriteConfig) *redactor {
	r := &redactor{}
	add := func(s string) {
		if len(s) >= minSecretLen {
			r.secrets = append(r.secrets, s)
		}
	}
	if red := configs.RedactURL(cfg.URL); red != cfg.URL {
		r.url = cfg.URL
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.RawQuery != "" {
		add(u.RawQuery)
		for _, vs := range u.Query() {
			for _, v := range vs {
				add(v)
				add(url.QueryEscape(v))
			}
		}
	}
	for _, v := range cfg.Headers {
		add(v)
	}
	hc := cfg.HTTPClientConfig
	file := func(f string) {
		if f != "" {
			r.files = append(r.files, f)
		}
	}
	if hc.BasicAuth != nil {
		add(string(hc.BasicAuth.Password))
		file(hc.BasicAuth.PasswordFile)
		r.basic = hc.BasicAuth
	}
	if hc.Authorization != nil {
		add(string(hc.Authorization.Credentials))
		file(hc.Authorization.CredentialsFile)
	}
	add(string(hc.BearerToken))
	file(hc.BearerTokenFile)
	if hc.OAuth2 != nil {
		add(string(hc.OAuth2.ClientSecret))
		file(hc.OAuth2.ClientSecretFile)
	}
	if pu := hc.ProxyURL.URL; pu != nil && pu.User != nil {
		if p, ok := pu.User.Password(); ok {
			add(p)
		}
	}
	return r
}

// replace returns s with every secret replaced.
func (r *redactor) replace(s string) string {
	secrets := r.secrets
	for _, f := range r.files {
		if b, err := os.ReadFile(f); err == nil {
			v := strings.TrimSpace(string(b))
			if len(v) >= minSecretLen {
				secrets = append(secrets[:len(secrets):len(secrets)], v)
			}
		}
	}
	if b := r.basic; b != nil {
		fromFile := func(v, f string) string {
			if f == "" {
				return v
			}
			if b, err := os.ReadFile(f); err == nil {
				return strings.TrimSpace(string(b))
			}
			return v
		}
		user, pass := fromFile(b.Username, b.UsernameFile), fromFile(string(b.Password), b.PasswordFile)
		if pass != "" {
			secrets = append(secrets[:len(secrets):len(secrets)], base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		}
	}
	pairs := make([]string, 0, 2*len(secrets)+2)
	if r.url != "" {
		// Longest first: strings.Replacer tries old strings in order.
		pairs = append(pairs, r.url, configs.RedactURL(r.url))
	}
	for _, sec := range secrets {
		pairs = append(pairs, sec, "<redacted>")
	}
	s = strings.NewReplacer(pairs...).Replace(s)
	return redactAuth(s)
}

// retryAfter parses a Retry-After header (delay in seconds or an HTTP date)
// into a positive duration capped at maxRetryAfter; 0 means none.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

package forward

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/configs"
)

func TestRing(t *testing.T) {
	t.Parallel()
	// Operations: "+N" pushes N samples numbered on, "-N" pops up to N.
	for _, tc := range []struct {
		name    string
		max     int
		ops     []string
		popped  string // t of popped samples, in order
		evicted string
		left    int
	}{
		{"fifo", 10, []string{"+3", "-2", "+2", "-10"}, "0,1,2,3,4", "", 0},
		{"evicts oldest when full", 4, []string{"+6", "-10"}, "2,3,4,5", "0,1", 0},
		{"wraps around", 4, []string{"+3", "-2", "+3", "+1", "-10"}, "0,1,3,4,5,6", "2", 0},
		{"grows past the first allocation", 1000, []string{"+700", "-1"}, "0", "", 699},
		{"pop of empty", 4, []string{"-3"}, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRing(tc.max)
			var popped, evicted []string
			next := int64(0)
			for _, op := range tc.ops {
				n, _ := strconv.Atoi(op[1:])
				if op[0] == '+' {
					for range n {
						if ev, ok := r.push(sample{t: next}); ok {
							evicted = append(evicted, strconv.FormatInt(ev.t, 10))
						}
						next++
					}
					continue
				}
				for _, s := range r.pop(nil, n) {
					popped = append(popped, strconv.FormatInt(s.t, 10))
				}
			}
			if got := strings.Join(popped, ","); got != tc.popped {
				t.Errorf("popped %s, want %s", got, tc.popped)
			}
			if got := strings.Join(evicted, ","); got != tc.evicted {
				t.Errorf("evicted %s, want %s", got, tc.evicted)
			}
			if r.len() != tc.left {
				t.Errorf("len %d, want %d", r.len(), tc.left)
			}
			if len(r.buf) > tc.max {
				t.Errorf("allocated %d > capacity %d", len(r.buf), tc.max)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name, header string
		want         time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "3", 3 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"garbage", "soon", 0},
		{"capped", "86400", maxRetryAfter},
		{"http date", now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{"http date in the past", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"http date far ahead", now.Add(time.Hour).Format(http.TimeFormat), maxRetryAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryAfter(tc.header, now); got != tc.want {
				t.Errorf("retryAfter(%q) = %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}

// TestToV2Histogram checks the direct conversion against the helpers of
// the writev2 package.
func TestToV2Histogram(t *testing.T) {
	t.Parallel()
	intH := testHistogram(1000)
	floatH := prompb.Histogram{
		Count:          &prompb.Histogram_CountFloat{CountFloat: 3.5},
		Sum:            -2,
		Schema:         -53,
		ZeroCount:      &prompb.Histogram_ZeroCountFloat{ZeroCountFloat: 0},
		PositiveSpans:  []prompb.BucketSpan{{Offset: 0, Length: 3}},
		PositiveCounts: []float64{1, 0.5, 2},
		ResetHint:      prompb.Histogram_GAUGE,
		Timestamp:      2000,
		CustomValues:   []float64{0.1, 1, 10},
	}
	for _, tc := range []struct {
		name string
		h    prompb.Histogram
		want writev2.Histogram
	}{
		{"integer", intH, writev2.FromIntHistogram(0, intH.Timestamp, intH.ToIntHistogram())},
		{"float with custom buckets", floatH, writev2.FromFloatHistogram(0, floatH.Timestamp, floatH.ToFloatHistogram())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := toV2Histogram(&tc.h); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestV2MetricType(t *testing.T) {
	t.Parallel()
	for v1, name := range prompb.MetricMetadata_MetricType_name {
		got := v2MetricType(prompb.MetricMetadata_MetricType(v1))
		want := "METRIC_TYPE_" + name
		if name == "UNKNOWN" {
			want = "METRIC_TYPE_UNSPECIFIED"
		}
		if got.String() != want {
			t.Errorf("%s -> %s, want %s", name, got, want)
		}
	}
}

func TestFamilyMetadata(t *testing.T) {
	t.Parallel()
	meta := map[string]*prompb.MetricMetadata{}
	for _, md := range []prompb.MetricMetadata{
		{MetricFamilyName: "requests", Type: prompb.MetricMetadata_COUNTER},
		{MetricFamilyName: "latency_seconds", Type: prompb.MetricMetadata_HISTOGRAM},
		{MetricFamilyName: "rpc", Type: prompb.MetricMetadata_SUMMARY},
		{MetricFamilyName: "temp", Type: prompb.MetricMetadata_GAUGE},
	} {
		meta[md.MetricFamilyName] = &md
	}
	for _, tc := range []struct {
		series, want string
	}{
		{"requests_total", "requests"},
		{"requests", "requests"},
		{"latency_seconds_bucket", "latency_seconds"},
		{"latency_seconds_count", "latency_seconds"},
		{"rpc_sum", "rpc"},
		{"rpc_bucket", ""}, // summaries have no buckets
		{"temp_total", ""}, // gauges have no _total
		{"other", ""},
	} {
		t.Run(tc.series, func(t *testing.T) {
			got := ""
			if md := familyMetadata(meta, tc.series); md != nil {
				got = md.MetricFamilyName
			}
			if got != tc.want {
				t.Errorf("family of %s = %q, want %q", tc.series, got, tc.want)
			}
		})
	}
}

func TestRedactor(t *testing.T) {
	t.Parallel()
	cfg := configs.NewRemoteWriteConfig("https://mimir.example/api/v1/push?api_key=k3y-value&tenant=t1")
	cfg.Headers = map[string]string{"X-Api-Token": "tok-123456", "X-Short": "1"}
	r := newRedactor(&cfg)
	for _, tc := range []struct{ in, want string }{
		{`Post "https://mimir.example/api/v1/push?api_key=k3y-value&tenant=t1": EOF`, `Post "https://mimir.example/api/v1/push?redacted": EOF`},
		{"bad key k3y-value", "bad key <redacted>"},
		{"echo api_key=k3y-value&tenant=t1", "echo <redacted>"},
		{"token tok-123456 at 1", "token <redacted> at 1"},
	} {
		if got := r.replace(tc.in); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRedactorAuthorization: an Authorization header a receiver echoes
// is redacted although its credentials are no configured string: basic
// auth in base64 (username and password from files too), an oauth2
// token fetched at run time. Plain words after "basic" or "bearer" stay.
func TestRedactorAuthorization(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	userFile, passFile := filepath.Join(dir, "user"), filepath.Join(dir, "pass")
	for f, v := range map[string]string{userFile: "file-user\n", passFile: "file-Pa55\n"} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name  string
		basic *commoncfg.BasicAuth
		in    string
		want  string
	}{
		{name: "basic auth header", basic: &commoncfg.BasicAuth{Username: "user1", Password: "SuperSecretPw"},
			in: "400: echo=Basic " + b64("user1:SuperSecretPw"), want: "400: echo=Basic <redacted>"},
		{name: "basic auth base64 alone", basic: &commoncfg.BasicAuth{Username: "user1", Password: "SuperSecretPw"},
			in: `{"auth":"` + b64("user1:SuperSecretPw") + `"}`, want: `{"auth":"<redacted>"}`},
		{name: "basic auth from files", basic: &commoncfg.BasicAuth{UsernameFile: userFile, PasswordFile: passFile},
			in: "creds " + b64("file-user:file-Pa55"), want: "creds <redacted>"},
		{name: "oauth2 token", in: "echo=Bearer oauth-tok-xyz, retry", want: "echo=Bearer <redacted>, retry"},
		{name: "lower case scheme", in: "authorization: bearer eyJhbGciOi.x_Y", want: "authorization: bearer <redacted>"},
		{name: "words stay", in: "basic authentication failed; bearer token required", want: "basic authentication failed; bearer token required"},
		{name: "capitalised words stay", in: "Basic Auth credentials are missing; Bearer Token is invalid", want: "Basic Auth credentials are missing; Bearer Token is invalid"},
		{name: "auth-params stay", in: `WWW-Authenticate: Basic realm="Restricted", Bearer error="invalid_token"`, want: `WWW-Authenticate: Basic realm="Restricted", Bearer error="invalid_token"`},
		{name: "token starting in lower case", in: "Authorization: Bearer abc%2Fdef.GHI", want: "Authorization: Bearer <redacted>"},
		{name: "token with a colon", in: "Bearer abcdefghij:KLMNOP123 rejected", want: "Bearer <redacted> rejected"},
		{name: "url-encoded echo", in: "echo: authorization=Bearer%20eyJhbGciOi.x_Y&next=1", want: "echo: authorization=Bearer%20<redacted>&next=1"},
		{name: "in json", in: `{"auth":"Bearer 0auth-T0ken-from-url"}`, want: `{"auth":"Bearer <redacted>"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configs.NewRemoteWriteConfig("http://127.0.0.1:1/w")
			cfg.HTTPClientConfig.BasicAuth = tc.basic
			if got := newRedactor(&cfg).replace(tc.in); got != tc.want {
				t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestRedactorFiles: secrets read from files are redacted too, as they
// are when the file changes.
func TestRedactorFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		set  func(c *configs.RemoteWriteConfig, file string)
	}{
		{"authorization credentials_file", func(c *configs.RemoteWriteConfig, f string) {
			c.HTTPClientConfig.Authorization = &commoncfg.Authorization{Type: "Bearer", CredentialsFile: f}
		}},
		{"basic_auth password_file", func(c *configs.RemoteWriteConfig, f string) {
			c.HTTPClientConfig.BasicAuth = &commoncfg.BasicAuth{Username: "u", PasswordFile: f}
		}},
		{"oauth2 client_secret_file", func(c *configs.RemoteWriteConfig, f string) {
			c.HTTPClientConfig.OAuth2 = &commoncfg.OAuth2{ClientID: "id", ClientSecretFile: f, TokenURL: "http://127.0.0.1:1/token"}
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := write(fmt.Sprintf("secret%d", i), "FILE_S3cr3t_one")
			cfg := configs.NewRemoteWriteConfig("http://127.0.0.1:1/w")
			tc.set(&cfg, f)
			r := newRedactor(&cfg)
			if got := r.replace("401: Bearer FILE_S3cr3t_one"); got != "401: Bearer <redacted>" {
				t.Errorf("redacted %q", got)
			}
			write(fmt.Sprintf("secret%d", i), "FILE_S3cr3t_two") // rotated
			if got := r.replace("401: Bearer FILE_S3cr3t_two"); got != "401: Bearer <redacted>" {
				t.Errorf("after rotation, redacted %q", got)
			}
		})
	}
}

func TestSameConfig(t *testing.T) {
	t.Parallel()
	parse := func(y string) configs.RemoteWriteConfig { return yamlConfig(t, y) }
	base := "url: http://127.0.0.1:1/w\nwrite_relabel_configs:\n  - source_labels: [a]\n    regex: x.*\n    action: drop\nbasic_auth:\n  username: u\n  password: p1\n"
	running, err := newTarget(parse(base), map[string]string{"e": "1"}, "ua", discardLogger(), newMetrics(nil), time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer running.client.close()
	for _, tc := range []struct {
		name string
		yaml string
		ext  map[string]string
		want bool
	}{
		{"identical reparse", base, map[string]string{"e": "1"}, true},
		{"other password", strings.Replace(base, "p1", "p2", 1), map[string]string{"e": "1"}, false},
		{"other regex", strings.Replace(base, "x.*", "y.*", 1), map[string]string{"e": "1"}, false},
		{"other external labels", base, map[string]string{"e": "2"}, false},
		{"other timeout", base + "remote_timeout: 10s\n", map[string]string{"e": "1"}, false},
		{"an ignored Prometheus setting", base + "send_exemplars: true\nmetadata_config:\n  send: false\n", map[string]string{"e": "1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(tc.yaml)
			if got := running.sameConfig(&cfg, tc.ext); got != tc.want {
				t.Errorf("sameConfig = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAppendLabels: external labels never override, relabelling sees them.
func TestAppendLabels(t *testing.T) {
	t.Parallel()
	cfg := yamlConfig(t, "url: http://127.0.0.1:1/w\nqueue_config:\n  max_shards: 3\nwrite_relabel_configs:\n  - source_labels: [region]\n    regex: us\n    action: drop\n")
	tg := newTestTarget(t, cfg, map[string]string{"region": "eu", "replica": "r1"})
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "a"}}, Samples: []prompb.Sample{{Value: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "b"}, {Name: "region", Value: "us"}}, Samples: []prompb.Sample{{Value: 2}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "c"}, {Name: "replica", Value: "own"}}, Samples: []prompb.Sample{{Value: 3}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "empty"}}},
	}}
	tg.append(convert(req), false)
	if n, _ := tg.q.pending(); n != 2 {
		t.Errorf("queued %d, want 2", n)
	}
	var got []string
	for _, smp := range readBacklog(t, tg.q) {
		got = append(got, smp.lset.String())
	}
	want := []string{
		labels.FromStrings("__name__", "a", "region", "eu", "replica", "r1").String(),
		labels.FromStrings("__name__", "c", "region", "eu", "replica", "own").String(),
	}
	if strings.Join(sortedCopy(got), " ") != strings.Join(sortedCopy(want), " ") {
		t.Errorf("queued %v, want %v", got, want)
	}
}

// TestRingHeadRun: the next batch is the run of samples of the oldest
// sample's frame, capped.
func TestRingHeadRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		frames []uint64 // frame of each sample pushed
		popped int      // popped before asking
		max    int
		want   int
	}{
		{"empty", nil, 0, 10, 0},
		{"one frame", []uint64{1, 1, 1}, 0, 10, 3},
		{"capped", []uint64{1, 1, 1}, 0, 2, 2},
		{"stops at the next frame", []uint64{1, 1, 2, 2}, 0, 10, 2},
		{"after a pop, across the wrap", []uint64{1, 1, 1, 2, 2}, 3, 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(4)
			i := 0
			for ; i < len(tc.frames) && r.room() > 0; i++ {
				r.push(sample{frame: tc.frames[i]})
			}
			r.pop(nil, tc.popped)
			for ; i < len(tc.frames); i++ {
				r.push(sample{frame: tc.frames[i]})
			}
			if got := r.headRun(tc.max); got != tc.want {
				t.Errorf("headRun(%d) = %d, want %d", tc.max, got, tc.want)
			}
		})
	}
}

// TestDecoderCacheAcrossWindows: a window of up to cacheFrames frames
// decodes every series from the cache at the next window, one of a few
// more frames some; a window of 2*cacheFrames frames or more (whose series
// are always dropped before the next window) caches none after its first
// frames, so the cache never holds several frames of a big window. A hit
// is seen as a series' wire labels being the very bytes of the previous
// window's.
func TestDecoderCacheAcrossWindows(t *testing.T) {
	for _, tc := range []struct {
		name          string
		frames        int // frames per window, 10 series each
		wantHits      string
		wantMaxCached int
	}{
		{name: "one frame per window", frames: 1, wantHits: "all", wantMaxCached: 10},
		{name: "cacheFrames frames per window", frames: cacheFrames, wantHits: "all", wantMaxCached: 10 * 2 * cacheFrames},
		{name: "a few frames more", frames: cacheFrames + 2, wantHits: "some", wantMaxCached: 10 * 3 * cacheFrames},
		{name: "twice as many frames as an entry outlives", frames: 2 * cacheFrames, wantHits: "none", wantMaxCached: 10 * (2*cacheFrames - 1)},
		{name: "many more frames", frames: 6 * cacheFrames, wantHits: "none", wantMaxCached: 10 * (2*cacheFrames - 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, dec := range []*frameDecoder{newFrameDecoder(), newWireDecoder()} {
				enc := newFrameEncoder()
				maxCached, hits, total := 0, 0, 0
				prev := map[string]*byte{} // a series' wire labels in the previous window
				for w := range 6 {
					ts := int64(w+1) * 15000
					cur := map[string]*byte{}
					for f := range tc.frames {
						enc.reset()
						for i := range 10 {
							ls := []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "series", Value: strconv.Itoa(f*10 + i)}}
							if err := enc.addSeriesPB(ls, nil, nil, []prompb.Sample{{Value: 1, Timestamp: ts}}, nil); err != nil {
								t.Fatal(err)
							}
						}
						got, err := dec.decode(enc.finish()[frameHeaderSize:], nil)
						if err != nil || len(got) != 10 {
							t.Fatalf("window %d frame %d: %d samples, %v", w, f, len(got), err)
						}
						for i, s := range got {
							if s.lset.IsEmpty() && len(s.wire) == 0 {
								t.Fatal("a sample without labels")
							}
							if dec.wire {
								k := strconv.Itoa(f*10 + i)
								cur[k] = &s.wire[0]
								if w == 5 {
									total++
									if prev[k] == cur[k] {
										hits++
									}
								}
							}
						}
						maxCached = max(maxCached, len(dec.cache))
					}
					prev = cur
				}
				if dec.wire {
					var got string
					switch hits {
					case total:
						got = "all"
					case 0:
						got = "none"
					default:
						got = "some"
					}
					if got != tc.wantHits {
						t.Fatalf("%d of %d series of the last window decoded from the cache (%s), want %s", hits, total, got, tc.wantHits)
					}
				}
				if maxCached > tc.wantMaxCached {
					t.Fatalf("wire=%v: the cache held %d series, want at most %d", dec.wire, maxCached, tc.wantMaxCached)
				}
			}
		})
	}
}

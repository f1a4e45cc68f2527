package aggregate

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/configs"
)

// fakeClock is the injected clock of the tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock                   { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func testSettings() Settings {
	c := configs.Default()
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return Settings{Aggregation: c.Aggregation, Limits: c.Limits, SeriesTTL: 24 * time.Hour}
}

func newTestStore(t testing.TB, set Settings) (*Store, *fakeClock) {
	t.Helper()
	clk := newClock()
	return New(set, clk.now, nil, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)), clk
}

// groupLabels parses "job=f,env=prod" into grouping labels.
func groupLabels(s string) labels.Labels {
	var b labels.ScratchBuilder
	for _, kv := range strings.Split(s, ",") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		b.Add(k, v)
	}
	b.Sort()
	return b.Labels()
}

// push applies a text-format push to a group.
func push(t testing.TB, s *Store, grp string, m Method, text string) error {
	t.Helper()
	list, err := textBody(BodyText, []byte(text))
	if err != nil {
		t.Fatalf("bad test input %q: %v", text, err)
	}
	return s.Apply(context.Background(), &Push{Group: groupLabels(grp), Method: m, Families: list})
}

// pushBody is push with the body attached, as ingest does: the
// write-ahead log records the body instead of the families.
func pushBody(t testing.TB, s *Store, grp, text string) {
	t.Helper()
	list, err := textBody(BodyText, []byte(text))
	if err != nil {
		t.Fatalf("bad test input %q: %v", text, err)
	}
	if err := s.Apply(context.Background(), &Push{Group: groupLabels(grp), Method: MethodPost, Families: list,
		Body: []byte(text), BodyFormat: BodyText}); err != nil {
		t.Fatalf("push %q: %v", text, err)
	}
}

// textBody is a BodyDecoder for the text format only, with expfmt (the
// push decoder is ingest's, which this package cannot import): families
// sorted by name, as ingest's.
func textBody(f BodyFormat, body []byte) ([]*dto.MetricFamily, error) {
	if f != BodyText {
		return nil, fmt.Errorf("test decoder: format %d", f)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].GetName() < list[j].GetName() })
	return list, nil
}

func mustPush(t testing.TB, s *Store, grp, text string) {
	t.Helper()
	if err := push(t, s, grp, MethodPost, text); err != nil {
		t.Fatalf("push %q: %v", text, err)
	}
}

// expose renders the store as text exposition, without the push-time
// families (their values are clock readings).
func expose(t *testing.T, s *Store) string {
	t.Helper()
	fams, err := s.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if f.GetName() == pushTimeName || f.GetName() == pushFailureTimeName {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.String()
}

type step struct {
	advance time.Duration
	group   string // default job=f
	method  Method
	push    string
	wantErr string // substring of the expected error; "" = must succeed
}

func TestModes(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
		want  string
	}{
		{
			name: "counter_sums_deltas",
			steps: []step{
				{push: "# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n"},
				{push: "# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n"},
				{push: "# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n"},
			},
			want: "# TYPE req_total counter\nreq_total{fn=\"a\",instance=\"\",job=\"f\"} 3\n",
		},
		{
			name: "untyped_sums_negative_deltas",
			steps: []step{
				{push: "items 5\n"},
				{push: "items -2\n"},
			},
			want: "# TYPE items untyped\nitems{instance=\"\",job=\"f\"} 3\n",
		},
		{
			name: "gauge_replaces_by_default",
			steps: []step{
				{push: "# TYPE temp gauge\ntemp 5\n"},
				{push: "# TYPE temp gauge\ntemp 7\n"},
			},
			want: "# TYPE temp gauge\ntemp{instance=\"\",job=\"f\"} 7\n",
		},
		{
			name: "replace_alias_last_on_counter",
			steps: []step{
				{push: "# TYPE c_total counter\nc_total{clear_mode=\"last\"} 10\n"},
				{push: "# TYPE c_total counter\nc_total{clear_mode=\"last\"} 4\n"},
			},
			want: "# TYPE c_total counter\nc_total{instance=\"\",job=\"f\"} 4\n",
		},
		{
			name: "sum_alias_aggregate_and_gravel_clearmode",
			steps: []step{
				{push: "# TYPE g gauge\ng{clearmode=\"aggregate\"} 2\n"},
				{push: "# TYPE g gauge\ng{clear_mode=\"sum\"} 3\n"},
			},
			want: "# TYPE g gauge\ng{instance=\"\",job=\"f\"} 5\n",
		},
		{
			name: "family_replaces_within_group_only",
			steps: []step{
				{push: "v{clear_mode=\"family\",ver=\"1\"} 1\nv{clear_mode=\"family\",ver=\"2\"} 1\n"},
				{group: "job=g", push: "v{clear_mode=\"family\",ver=\"1\"} 1\n"},
				{push: "v{clear_mode=\"info\",ver=\"3\"} 1\n"},
			},
			want: "# TYPE v untyped\nv{instance=\"\",job=\"f\",ver=\"3\"} 1\nv{instance=\"\",job=\"g\",ver=\"1\"} 1\n",
		},
		{
			name: "mean_window",
			steps: []step{
				{push: "lat{clear_mode=\"mean1m\"} 100\n"},
				{advance: 10 * time.Second, push: "lat{clear_mode=\"mean1m\"} 200\n"},
			},
			want: "# TYPE lat gauge\nlat{instance=\"\",job=\"f\"} 150\n",
		},
		{
			name: "mean_window_drops_old_values",
			steps: []step{
				{push: "lat{clear_mode=\"mean1m\"} 100\n"},
				{advance: 61 * time.Second, push: "lat{clear_mode=\"mean1m\"} 200\n"},
			},
			want: "# TYPE lat gauge\nlat{instance=\"\",job=\"f\"} 200\n",
		},
		{
			name: "window_statistics",
			steps: []step{
				{push: "a{clear_mode=\"sum5m\"} 1\nb{clear_mode=\"min5m\"} 4\nc{clear_mode=\"max5m\"} 4\nd{clear_mode=\"count5m\"} 9\n"},
				{advance: time.Minute, push: "a{clear_mode=\"sum5m\"} 2\nb{clear_mode=\"min5m\"} 2\nc{clear_mode=\"max5m\"} 8\nd{clear_mode=\"count5m\"} 9\n"},
				{advance: time.Minute, push: "a{clear_mode=\"sum5m\"} 3\nb{clear_mode=\"min5m\"} 3\nc{clear_mode=\"max5m\"} 1\nd{clear_mode=\"count5m\"} 9\n"},
			},
			want: "# TYPE a gauge\na{instance=\"\",job=\"f\"} 6\n# TYPE b gauge\nb{instance=\"\",job=\"f\"} 2\n" +
				"# TYPE c gauge\nc{instance=\"\",job=\"f\"} 8\n# TYPE d gauge\nd{instance=\"\",job=\"f\"} 3\n",
		},
		{
			name: "windowed_counter_is_exposed_as_gauge",
			steps: []step{
				{push: "# TYPE r_total counter\nr_total{clear_mode=\"sum1m\"} 4\n"},
			},
			want: "# TYPE r_total gauge\nr_total{instance=\"\",job=\"f\"} 4\n",
		},
		{
			name: "grouping_labels_override_body_labels_and_instance_kept",
			steps: []step{
				{group: "job=b,instance=i1", push: "m{job=\"other\",instance=\"zz\",x=\"1\"} 1\n"},
				{group: "job=b2", push: "m{instance=\"zz\"} 1\n"},
			},
			want: "# TYPE m untyped\nm{instance=\"i1\",job=\"b\",x=\"1\"} 1\nm{instance=\"zz\",job=\"b2\"} 1\n",
		},
		{
			name: "series_of_one_metric_may_have_different_label_names",
			steps: []step{
				{push: "m{a=\"1\"} 1\nm{b=\"2\"} 2\n"},
			},
			want: "# TYPE m untyped\nm{a=\"1\",instance=\"\",job=\"f\"} 1\nm{b=\"2\",instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "classic_histogram_sums_equal_layouts",
			steps: []step{
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"5\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 10\nh_count 3\n"},
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 2\nh_count 1\n"},
			},
			want: "# TYPE h histogram\nh_bucket{instance=\"\",job=\"f\",le=\"1\"} 1\nh_bucket{instance=\"\",job=\"f\",le=\"5\"} 3\n" +
				"h_bucket{instance=\"\",job=\"f\",le=\"+Inf\"} 4\nh_sum{instance=\"\",job=\"f\"} 12\nh_count{instance=\"\",job=\"f\"} 4\n",
		},
		{
			// Each sum is built in the newest push's memory: the state
			// must carry over, and a rejected push in between (a layout
			// change) must leave it alone.
			name: "classic_histogram_sums_over_many_pushes",
			steps: []step{
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"},
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"},
				{push: "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", wantErr: "bucket layout changed"},
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 5\nh_sum 6\nh_count 5\n"},
				{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n"},
			},
			want: "# TYPE h histogram\nh_bucket{instance=\"\",job=\"f\",le=\"1\"} 4\n" +
				"h_bucket{instance=\"\",job=\"f\",le=\"+Inf\"} 10\nh_sum{instance=\"\",job=\"f\"} 10.5\nh_count{instance=\"\",job=\"f\"} 10\n",
		},
		{
			name: "summary_sum_drops_quantiles",
			steps: []step{
				{push: "# TYPE s summary\ns{quantile=\"0.5\"} 4\ns_sum 10\ns_count 2\n"},
				{push: "# TYPE s summary\ns{quantile=\"0.5\"} 7\ns_sum 5\ns_count 1\n"},
			},
			want: "# TYPE s summary\ns_sum{instance=\"\",job=\"f\"} 15\ns_count{instance=\"\",job=\"f\"} 3\n",
		},
		{
			name: "summary_replace_keeps_quantiles",
			steps: []step{
				{push: "# TYPE s summary\ns{quantile=\"0.5\",clear_mode=\"replace\"} 4\ns_sum{clear_mode=\"replace\"} 10\ns_count{clear_mode=\"replace\"} 2\n"},
				{push: "# TYPE s summary\ns{quantile=\"0.5\",clear_mode=\"replace\"} 7\ns_sum{clear_mode=\"replace\"} 5\ns_count{clear_mode=\"replace\"} 1\n"},
			},
			want: "# TYPE s summary\ns{instance=\"\",job=\"f\",quantile=\"0.5\"} 7\ns_sum{instance=\"\",job=\"f\"} 5\ns_count{instance=\"\",job=\"f\"} 1\n",
		},
		{
			name: "client_timestamps_are_ignored",
			steps: []step{
				{push: "# TYPE c_total counter\nc_total 1 1000\n"},
				{push: "# TYPE c_total counter\nc_total 1 5\n"},
			},
			want: "# TYPE c_total counter\nc_total{instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "gravel_push_without_job",
			steps: []step{
				{group: "env=prod", push: "# TYPE c_total counter\nc_total 1\n"},
				{group: "env=prod", push: "# TYPE c_total counter\nc_total 2\n"},
			},
			want: "# TYPE c_total counter\nc_total{env=\"prod\",instance=\"\"} 3\n",
		},
		{
			name: "timestamp_families_are_not_stored",
			steps: []step{
				{push: "push_time_seconds 5\nx 1\n"},
			},
			want: "# TYPE x untyped\nx{instance=\"\",job=\"f\"} 1\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			runSteps(t, s, clk, tc.steps)
			if got := expose(t, s); got != tc.want {
				t.Errorf("exposition mismatch\n got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func runSteps(t *testing.T, s *Store, clk *fakeClock, steps []step) {
	t.Helper()
	for i, st := range steps {
		clk.advance(st.advance)
		g := st.group
		if g == "" {
			g = "job=f"
		}
		err := push(t, s, g, st.method, st.push)
		switch {
		case st.wantErr == "" && err != nil:
			t.Fatalf("step %d: unexpected error: %v", i, err)
		case st.wantErr != "" && err == nil:
			t.Fatalf("step %d: want error containing %q, got success", i, st.wantErr)
		case st.wantErr != "" && !strings.Contains(err.Error(), st.wantErr):
			t.Fatalf("step %d: want error containing %q, got %q", i, st.wantErr, err)
		}
	}
}

// TestRejectedPushChangesNothing checks every 400 case of SPEC 3 and 4: the
// error names the problem, and the exposition is exactly as before.
func TestRejectedPushChangesNothing(t *testing.T) {
	setup := "# TYPE req_total counter\nreq_total{fn=\"a\"} 5\n" +
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n" +
		"lat{clear_mode=\"mean1m\"} 3\n"
	cases := []struct {
		name    string
		group   string
		push    string
		wantErr string
		kind    Kind
	}{
		{name: "unknown_mode", push: "# TYPE req_total counter\nreq_total{fn=\"b\"} 1\nx{clear_mode=\"avg\"} 1\n", wantErr: `unknown clear_mode "avg"`, kind: KindInvalid},
		{name: "unknown_mode_lists_allowed", push: "x{clear_mode=\"p99\"} 1\n", wantErr: "allowed: sum (alias aggregate)", kind: KindInvalid},
		{name: "negative_counter_delta", push: "# TYPE req_total counter\nreq_total{fn=\"b\"} 1\nreq_total{fn=\"a\"} -1\n", wantErr: "negative counter delta -1", kind: KindInvalid},
		{name: "histogram_layout_change", push: "# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", wantErr: "bucket layout changed from le=[1] to le=[2]", kind: KindInvalid},
		{name: "type_conflict", push: "# TYPE req_total gauge\nreq_total{fn=\"z\"} 1\n", wantErr: `metric "req_total" pushed as gauge, but it is stored as counter`, kind: KindInvalid},
		{name: "type_conflict_other_group", group: "job=other", push: "# TYPE lat counter\nlat 1\n", wantErr: `metric "lat" pushed as counter`, kind: KindInvalid},
		{name: "mode_conflict", push: "lat{clear_mode=\"max1m\"} 3\n", wantErr: "is aggregated with clear_mode=mean1m, this push says max1m", kind: KindInvalid},
		{name: "duplicate_in_push", push: "y 1\ny 2\n", wantErr: "appears more than once", kind: KindInvalid},
		{name: "duplicate_in_big_push", push: manySeries(100) + "y{i=\"7\"} 2\n", wantErr: `series {__name__="y", i="7", instance="", job="f"} appears more than once`, kind: KindInvalid},
		{name: "duplicate_after_group_override", push: "y 1\ny{job=\"other\"} 2\n", wantErr: "appears more than once", kind: KindInvalid},
		{name: "both_mode_labels", push: "y{clear_mode=\"sum\",clearmode=\"sum\"} 1\n", wantErr: "both clear_mode and clearmode", kind: KindInvalid},
		{name: "series_of_other_group", group: "job=f,instance=i", push: "# TYPE req_total counter\nreq_total{fn=\"a\"} 1\n", wantErr: "", kind: 0},
		{name: "reserved_prefix", push: "sluice_x 1\n", wantErr: "reserved for Sluice's own metrics", kind: KindInvalid},
		{name: "windowed_histogram", push: "# TYPE h2 histogram\nh2_bucket{le=\"+Inf\",clear_mode=\"mean1m\"} 1\nh2_sum{clear_mode=\"mean1m\"} 1\nh2_count{clear_mode=\"mean1m\"} 1\n", wantErr: "is for counters, gauges and untyped metrics, not histogram", kind: KindInvalid},
		{name: "nan_delta", push: "x NaN\n", wantErr: "must be finite", kind: KindInvalid},
		{name: "name_of_a_histograms_count", push: "# TYPE h_count gauge\nh_count 5\n", wantErr: `metric "h_count" would collide with the _count series of histogram "h"`, kind: KindInvalid},
		{name: "name_of_a_histograms_bucket", group: "job=other", push: "h_bucket{le=\"1\"} 1\n", wantErr: `collide with the _bucket series of histogram "h"`, kind: KindInvalid},
		{name: "help_not_utf8", push: "# HELP u bad \xff help\nu 1\n", wantErr: "not valid UTF-8", kind: KindInvalid},
		{name: "le_label_on_histogram", group: "job=f,le=5", push: "# TYPE h3 histogram\nh3_bucket{le=\"+Inf\"} 1\nh3_sum 1\nh3_count 1\n", wantErr: `histogram "h3" must not have an explicit "le" label`, kind: KindInvalid},
		{name: "quantile_label_on_summary", group: "job=f,quantile=0.5", push: "# TYPE s3 summary\ns3{quantile=\"0.9\"} 1\ns3_sum 1\ns3_count 1\n", wantErr: `summary "s3" must not have an explicit "quantile" label`, kind: KindInvalid},
		{name: "empty_label_is_no_label", push: "e{a=\"\"} 5\ne 3\n", wantErr: "appears more than once", kind: KindInvalid},
		{name: "histogram_nan_count", push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} NaN\nh_sum 1\nh_count NaN\n", wantErr: "finite, non-negative counts", kind: KindInvalid},
		{name: "histogram_inf_count", push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} +Inf\nh_sum 1\nh_count +Inf\n", wantErr: "finite, non-negative counts", kind: KindInvalid},
		{name: "histogram_nan_bucket", push: "# TYPE h histogram\nh_bucket{le=\"1\"} NaN\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", wantErr: "finite, non-negative counts", kind: KindInvalid},
		{name: "reserved_label", push: "x{__y=\"1\"} 1\n", wantErr: `label name "__y" is reserved`, kind: KindInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			mustPush(t, s, "job=f", setup)
			if tc.name == "series_of_other_group" {
				// job=f,instance=i pushing req_total{fn=a} makes
				// {fn=a,instance=i,job=f}: not the same series as the
				// stored {fn=a,instance="",job=f}, so it is accepted. The
				// real clash needs the body to name the instance:
				mustPush(t, s, "job=f", "# TYPE c2_total counter\nc2_total{instance=\"i\"} 1\n")
				tc.push, tc.wantErr, tc.kind = "# TYPE c2_total counter\nc2_total 1\n", "was already pushed by group {job=\"f\"}", KindInvalid
			}
			before := expose(t, s)
			clk.advance(time.Second)
			g := tc.group
			if g == "" {
				g = "job=f"
			}
			err := push(t, s, g, MethodPost, tc.push)
			if err == nil {
				t.Fatalf("want error containing %q, got success", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want error containing %q, got %q", tc.wantErr, err)
			}
			if e, ok := AsError(err); !ok || e.Kind != tc.kind {
				t.Fatalf("want kind %d, got %#v", tc.kind, err)
			}
			if after := expose(t, s); after != before {
				t.Fatalf("state changed by a rejected push\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestRejectedPushRecordsFailureTimeOnExistingGroupOnly(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	mustPush(t, s, "job=f", "x 1\n")
	clk.advance(time.Second)
	if err := push(t, s, "job=f", MethodPost, "x{clear_mode=\"nope\"} 1\n"); err == nil {
		t.Fatal("want error")
	}
	if err := push(t, s, "job=new", MethodPost, "x{clear_mode=\"nope\"} 1\n"); err == nil {
		t.Fatal("want error")
	}
	gs := s.Groups()
	if len(gs) != 1 {
		t.Fatalf("a rejected push to a new group must not create it; groups: %d", len(gs))
	}
	if !gs[0].LastFailure.Equal(clk.t) || !gs[0].LastPush.Equal(clk.t.Add(-time.Second)) {
		t.Fatalf("last push %v, last failure %v; want failure at %v", gs[0].LastPush, gs[0].LastFailure, clk.t)
	}
}

func TestWindowExpiresOneWindowAfterLastPush(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	mustPush(t, s, "job=f", "lat{clear_mode=\"mean1m\"} 100\n")
	clk.advance(500 * time.Millisecond)
	mustPush(t, s, "job=f", "lat{clear_mode=\"mean1m\"} 200\n")
	clk.advance(58 * time.Second)
	if got := expose(t, s); !strings.Contains(got, "} 150\n") {
		t.Fatalf("58s after the last push the window still holds both values; got:\n%s", got)
	}
	clk.advance(2 * time.Second)
	if got := expose(t, s); got != "" {
		t.Fatalf("one minute after the last push the series must be gone; got:\n%s", got)
	}
}

func TestLimits(t *testing.T) {
	set := testSettings()
	set.Limits.MaxSeriesPerGroup = 2
	set.Limits.MaxSeries = 3
	s, _ := newTestStore(t, set)
	mustPush(t, s, "job=a", "x{i=\"1\"} 1\nx{i=\"2\"} 1\n")
	err := push(t, s, "job=a", MethodPost, "x{i=\"3\"} 1\n")
	if e, ok := AsError(err); !ok || e.Kind != KindLimit || !strings.Contains(e.Msg, "limits.max_series_per_group") {
		t.Fatalf("want per-group limit error, got %v", err)
	}
	mustPush(t, s, "job=b", "x{i=\"1\"} 1\n")
	err = push(t, s, "job=c", MethodPost, "x{i=\"1\"} 1\n")
	if e, ok := AsError(err); !ok || e.Kind != KindLimit || !strings.Contains(e.Msg, "limits.max_series") {
		t.Fatalf("want total limit error, got %v", err)
	}
	// Existing series keep working at the limit.
	mustPush(t, s, "job=a", "x{i=\"1\"} 1\n")
	if got := expose(t, s); !strings.Contains(got, `x{i="1",instance="",job="a"} 2`) {
		t.Fatalf("existing series must still accept pushes; got:\n%s", got)
	}
	set.Limits.MaxSeriesPerRequest = 1
	s.SetSettings(set)
	err = push(t, s, "job=a", MethodPost, "x{i=\"1\"} 1\nx{i=\"2\"} 1\n")
	if e, ok := AsError(err); !ok || e.Kind != KindTooLarge {
		t.Fatalf("want per-request limit error, got %v", err)
	}
}

func TestExpiry(t *testing.T) {
	set := testSettings()
	set.SeriesTTL = time.Hour
	set.Aggregation.Rules = []configs.Rule{{Match: map[string]string{"job": "batch-.*"}, TTL: model.Duration(5 * time.Minute)}}
	c := configs.Default()
	c.Aggregation, c.Limits = set.Aggregation, set.Limits
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	set.Aggregation = c.Aggregation
	s, clk := newTestStore(t, set)
	mustPush(t, s, "job=batch-1", "a 1\n")
	mustPush(t, s, "job=web", "a 1\nb 1\n")
	clk.advance(30 * time.Minute)
	mustPush(t, s, "job=web", "a 1\n")
	s.Expire(context.Background())
	want := "# TYPE a untyped\na{instance=\"\",job=\"web\"} 2\n# TYPE b untyped\nb{instance=\"\",job=\"web\"} 1\n"
	if got := expose(t, s); got != want {
		t.Fatalf("after 30m the batch group (rule ttl 5m) must be gone\n got:\n%s\nwant:\n%s", got, want)
	}
	clk.advance(31 * time.Minute)
	s.Expire(context.Background())
	want = "# TYPE a untyped\na{instance=\"\",job=\"web\"} 2\n"
	if got := expose(t, s); got != want {
		t.Fatalf("b not pushed for 61m must expire alone\n got:\n%s\nwant:\n%s", got, want)
	}
	clk.advance(time.Hour)
	s.Expire(context.Background())
	if got := expose(t, s); got != "" || len(s.Groups()) != 0 {
		t.Fatalf("everything must expire after the TTL; got:\n%s", got)
	}
	// The type registry is released with the series: a new type is fine.
	mustPush(t, s, "job=web", "# TYPE a gauge\na 1\n")
}

func TestDeleteAndWipe(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	mustPush(t, s, "job=a", "x 1\n")
	mustPush(t, s, "job=b", "x 2\n")
	s.Delete(context.Background(), groupLabels("job=a"))
	s.Delete(context.Background(), groupLabels("job=unknown"))
	if got := expose(t, s); got != "# TYPE x untyped\nx{instance=\"\",job=\"b\"} 2\n" {
		t.Fatalf("after DELETE only job=b remains; got:\n%s", got)
	}
	mustPush(t, s, "job=a", "x 5\n")
	if got := expose(t, s); !strings.Contains(got, `x{instance="",job="a"} 5`) {
		t.Fatalf("a deleted group starts from zero; got:\n%s", got)
	}
	s.Wipe(context.Background())
	if got := expose(t, s); got != "" {
		t.Fatalf("after wipe nothing remains; got:\n%s", got)
	}
}

func TestPushgatewaySemantics(t *testing.T) {
	set := testSettings()
	set.Semantics = SemanticsPushgateway
	cases := []struct {
		name   string
		steps  []step
		want   string
		groups int // 1 if 0
	}{
		{
			name: "put_replaces_group",
			steps: []step{
				{method: MethodPut, push: "k1 1\nk2 2\n"},
				{method: MethodPut, push: "l1 10\n"},
			},
			want: "# TYPE l1 untyped\nl1{instance=\"\",job=\"f\"} 10\n",
		},
		{
			name: "post_replaces_families",
			steps: []step{
				{method: MethodPut, push: "k1{a=\"x\"} 1\nk2 2\n"},
				{method: MethodPost, push: "k1{a=\"y\"} 10\n"},
			},
			want: "# TYPE k1 untyped\nk1{a=\"y\",instance=\"\",job=\"f\"} 10\n# TYPE k2 untyped\nk2{instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "counters_replace",
			steps: []step{
				{method: MethodPost, push: "# TYPE c_total counter\nc_total 5\n"},
				{method: MethodPost, push: "# TYPE c_total counter\nc_total 7\n"},
			},
			want: "# TYPE c_total counter\nc_total{instance=\"\",job=\"f\"} 7\n",
		},
		{
			name: "explicit_clear_mode_still_honoured",
			steps: []step{
				{method: MethodPost, push: "# TYPE c_total counter\nc_total{clear_mode=\"sum\"} 5\n"},
				{method: MethodPost, push: "# TYPE c_total counter\nc_total{clear_mode=\"sum\"} 7\n"},
			},
			want: "# TYPE c_total counter\nc_total{instance=\"\",job=\"f\"} 12\n",
		},
		{
			name: "put_with_empty_body_keeps_only_the_group",
			steps: []step{
				{method: MethodPut, push: "k1 1\n"},
				{method: MethodPut, push: ""},
			},
			want: "",
		},
		// A push that replaces a family its group alone holds replaces it
		// whole, type and HELP included, as on a Pushgateway.
		{
			name: "put_changes_the_type_of_a_metric_only_its_group_has",
			steps: []step{
				{method: MethodPut, push: "# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"2\"} 2\n"},
				{method: MethodPut, push: "# TYPE x gauge\nx{a=\"1\"} 5\n"},
			},
			want: "# TYPE x gauge\nx{a=\"1\",instance=\"\",job=\"f\"} 5\n",
		},
		{
			name: "post_changes_the_type_and_keeps_other_families",
			steps: []step{
				{method: MethodPut, push: "# TYPE x counter\nx 1\ny 2\n"},
				{method: MethodPost, push: "# TYPE x histogram\nx_bucket{le=\"+Inf\"} 3\nx_sum 4\nx_count 3\n"},
			},
			want: "# TYPE x histogram\nx_bucket{instance=\"\",job=\"f\",le=\"+Inf\"} 3\nx_sum{instance=\"\",job=\"f\"} 4\nx_count{instance=\"\",job=\"f\"} 3\n" +
				"# TYPE y untyped\ny{instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "a_summed_series_of_another_type_starts_again",
			steps: []step{
				{method: MethodPut, push: "# TYPE c counter\nc{clear_mode=\"sum\"} 5\n"},
				{method: MethodPut, push: "# TYPE c counter\nc{clear_mode=\"sum\"} 5\n"},
				{method: MethodPut, push: "# TYPE c gauge\nc{clear_mode=\"sum\"} 7\n"},
			},
			want: "# TYPE c gauge\nc{instance=\"\",job=\"f\"} 7\n",
		},
		{
			name: "put_changes_help",
			steps: []step{
				{method: MethodPut, push: "# HELP x First.\nx 1\n"},
				{method: MethodPut, push: "# HELP x Second.\nx 2\n"},
			},
			want: "# HELP x Second.\n# TYPE x untyped\nx{instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "help_change_keeps_a_sum",
			steps: []step{
				{method: MethodPut, push: "# HELP c First.\n# TYPE c counter\nc{clear_mode=\"sum\"} 5\n"},
				{method: MethodPut, push: "# HELP c Second.\n# TYPE c counter\nc{clear_mode=\"sum\"} 5\n"},
			},
			want: "# HELP c Second.\n# TYPE c counter\nc{instance=\"\",job=\"f\"} 10\n",
		},
		{
			name: "put_without_help_drops_it",
			steps: []step{
				{method: MethodPut, push: "# HELP x First.\nx 1\n"},
				{method: MethodPut, push: "x 2\n"},
			},
			want: "# TYPE x untyped\nx{instance=\"\",job=\"f\"} 2\n",
		},
		{
			name: "the_type_stays_while_another_group_has_the_metric",
			steps: []step{
				{group: "job=a", method: MethodPut, push: "# TYPE x counter\nx 1\n"},
				{group: "job=b", method: MethodPut, push: "# TYPE x counter\nx 2\n"},
				{group: "job=a", method: MethodPut, push: "# TYPE x gauge\nx 3\n", wantErr: "other groups have series of it"},
				{group: "job=b", method: MethodPost, push: "# TYPE x gauge\nx 3\n", wantErr: "other groups have series of it"},
			},
			want:   "# TYPE x counter\nx{instance=\"\",job=\"a\"} 1\nx{instance=\"\",job=\"b\"} 2\n",
			groups: 2,
		},
		{
			name: "the_first_help_stays_while_another_group_has_the_metric",
			steps: []step{
				{group: "job=a", method: MethodPut, push: "# HELP x First.\nx 1\n"},
				{group: "job=b", method: MethodPut, push: "# HELP x Second.\nx 2\n"},
				{group: "job=a", method: MethodPut, push: "# HELP x Third.\nx 3\n"},
			},
			want:   "# HELP x First.\n# TYPE x untyped\nx{instance=\"\",job=\"a\"} 3\nx{instance=\"\",job=\"b\"} 2\n",
			groups: 2,
		},
		{
			name: "the_type_changes_once_the_other_group_lets_go",
			steps: []step{
				{group: "job=a", method: MethodPut, push: "# TYPE x counter\nx 1\n"},
				{group: "job=b", method: MethodPut, push: "# TYPE x counter\nx 2\n"},
				{group: "job=b", method: MethodPut, push: "y 1\n"},
				{group: "job=a", method: MethodPut, push: "# HELP x Now a gauge.\n# TYPE x gauge\nx 3\n"},
				{group: "job=b", method: MethodPost, push: "# TYPE x counter\nx 4\n", wantErr: "stored as gauge"},
			},
			want:   "# HELP x Now a gauge.\n# TYPE x gauge\nx{instance=\"\",job=\"a\"} 3\n# TYPE y untyped\ny{instance=\"\",job=\"b\"} 1\n",
			groups: 2,
		},
		{
			name: "a_rejected_type_change_changes_nothing",
			steps: []step{
				{method: MethodPut, push: "# HELP x First.\n# TYPE x counter\nx 1\n"},
				{method: MethodPut, push: "# HELP x Second.\n# TYPE x gauge\nx 2\n# TYPE sluice_x gauge\nsluice_x 1\n", wantErr: "sluice_"},
			},
			want: "# HELP x First.\n# TYPE x counter\nx{instance=\"\",job=\"f\"} 1\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, set)
			runSteps(t, s, clk, tc.steps)
			if got := expose(t, s); got != tc.want {
				t.Errorf("exposition mismatch\n got:\n%s\nwant:\n%s", got, tc.want)
			}
			if want := max(tc.groups, 1); len(s.Groups()) != want {
				t.Errorf("want %d groups, got %d", want, len(s.Groups()))
			}
		})
	}
}

// TestSummaryOverAMetricOfItsSeriesName: a summary whose _count series
// would have the name of a metric that exists is refused, in any group.
func TestSummaryOverAMetricOfItsSeriesName(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	runSteps(t, s, clk, []step{
		{group: "job=a", push: "q_count 5\n"},
		{group: "job=b", push: "# TYPE q summary\nq_sum 1\nq_count 1\n", wantErr: `summary "q" would collide with metric "q_count"`},
		{group: "job=b", push: "# TYPE q_bucket histogram\nq_bucket_bucket{le=\"+Inf\"} 1\nq_bucket_sum 1\nq_bucket_count 1\n"},
	})
}

// TestLongHelpIsCut: a HELP text the Store keeps, and sends with every
// window, is cut to limits.max_metadata_length, at a character boundary.
func TestLongHelpIsCut(t *testing.T) {
	set := testSettings()
	set.Limits.MaxMetadataLength = 3 // "Gr" and the first byte of "ü"
	s, _ := newTestStore(t, set)
	mustPush(t, s, "job=f", "# HELP x Grüße.\nx 1\n")
	if got, want := expose(t, s), "# HELP x Gr\n# TYPE x untyped\n"; !strings.HasPrefix(got, want) {
		t.Errorf("want the HELP cut to %q:\n%s", want, got)
	}
}

// TestAggregateSemanticsKeepTypeAndHelp: with the default semantics a
// metric keeps its type and first HELP text, even in the one group that
// has it.
func TestAggregateSemanticsKeepTypeAndHelp(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	runSteps(t, s, clk, []step{
		{method: MethodPut, push: "# HELP x First.\n# TYPE x gauge\nx 1\n"},
		{method: MethodPut, push: "# TYPE x counter\nx 2\n", wantErr: "a metric name has one type"},
		{method: MethodPut, push: "# HELP x Second.\n# TYPE x gauge\nx 3\n"},
	})
	if got, want := expose(t, s), "# HELP x First.\n# TYPE x gauge\nx{instance=\"\",job=\"f\"} 3\n"; got != want {
		t.Errorf("exposition mismatch\n got:\n%s\nwant:\n%s", got, want)
	}
}

func TestPushTimeFamilies(t *testing.T) {
	s, clk := newTestStore(t, testSettings())
	mustPush(t, s, "job=f,instance=i", "")
	fams, err := s.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, f := range fams {
		_, _ = expfmt.MetricFamilyToText(&buf, f)
	}
	want := "push_time_seconds{instance=\"i\",job=\"f\"} 1.7e+09\n"
	if !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), "push_failure_time_seconds{instance=\"i\",job=\"f\"} 0\n") {
		t.Fatalf("want push time %v and failure 0 for an empty push; got:\n%s", clk.t.Unix(), buf.String())
	}
}

// TestQuantileAccuracy checks median and p99 windows against the exact
// quantile of the pushed values: within 1% relative error (SPEC 4.1).
func TestQuantileAccuracy(t *testing.T) {
	cases := []struct {
		name string
		mode string
		q    float64
		gen  func(r *rand.Rand) float64
	}{
		{name: "p99_lognormal", mode: "p99_5m", q: 0.99, gen: func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64()) * 100 }},
		{name: "median_uniform", mode: "median5m", q: 0.5, gen: func(r *rand.Rand) float64 { return r.Float64() * 1000 }},
		{name: "p50_1m_exponential", mode: "p50_1m", q: 0.5, gen: func(r *rand.Rand) float64 { return r.ExpFloat64() }},
		{name: "p99_9_heavy_tail", mode: "p99.9_5m", q: 0.999, gen: func(r *rand.Rand) float64 { return 1 / (r.Float64() + 1e-3) }},
		// Negative values: the sketch keeps them mirrored.
		{name: "p10_negative", mode: "p10_5m", q: 0.1, gen: func(r *rand.Rand) float64 { return -1 - r.Float64()*1000 }},
		{name: "median_mixed_signs", mode: "median5m", q: 0.5, gen: func(r *rand.Rand) float64 { return r.NormFloat64()*100 - 30 }},
		{name: "p90_negative", mode: "p90_5m", q: 0.9, gen: func(r *rand.Rand) float64 { return -math.Exp(r.NormFloat64()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			r := rand.New(rand.NewPCG(1, 2))
			var vals []float64
			for i := 0; i < 5000; i++ {
				v := tc.gen(r)
				vals = append(vals, v)
				mustPush(t, s, "job=f", fmt.Sprintf("lat{clear_mode=%q} %v\n", tc.mode, v))
				clk.advance(5 * time.Millisecond) // 25 s in all, inside every window
			}
			sort.Float64s(vals)
			exact := vals[int(math.Ceil(tc.q*float64(len(vals))-1e-9))-1] // nearest rank
			got := gatherOne(t, s, "lat").GetGauge().GetValue()
			if rel := math.Abs((got - exact) / exact); rel > 0.01 {
				t.Fatalf("%s = %v, exact %v: relative error %.4f > 1%%", tc.mode, got, exact, rel)
			}
		})
	}
}

// TestQuantileNearestRank checks windowed quantiles of a few values, where
// being one rank off is far more than the sketch's 1%: the nearest rank of
// negative, zero and positive values.
func TestQuantileNearestRank(t *testing.T) {
	cases := []struct {
		name   string
		values []float64
		mode   string
		want   float64
	}{
		{name: "p10_of_three_negative", values: []float64{-10, -20, -30}, mode: "p10_1m", want: -30},
		{name: "p50_of_three_negative", values: []float64{-10, -20, -30}, mode: "p50_1m", want: -20},
		{name: "p90_of_three_negative", values: []float64{-10, -20, -30}, mode: "p90_1m", want: -10},
		{name: "p50_of_three_positive", values: []float64{10, 20, 30}, mode: "p50_1m", want: 20},
		{name: "p99_of_two", values: []float64{10, 30}, mode: "p99_1m", want: 30},
		{name: "p50_of_two", values: []float64{10, 30}, mode: "p50_1m", want: 10},
		{name: "p50_across_zero", values: []float64{-5, 0, 5, 7}, mode: "p50_1m", want: 0},
		{name: "p75_across_zero", values: []float64{-5, 0, 5, 7}, mode: "p75_1m", want: 5},
		{name: "p25_across_zero", values: []float64{-5, -3, 0, 7}, mode: "p25_1m", want: -5},
		{name: "p50_negative_of_four", values: []float64{-1, -2, -3, -4}, mode: "p50_1m", want: -3},
		{name: "p75_negative_of_four", values: []float64{-1, -2, -3, -4}, mode: "p75_1m", want: -2},
		{name: "p99.9_of_1000_negative", values: negRange(1000), mode: "p99.9_1m", want: -2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestStore(t, testSettings())
			for _, v := range tc.values {
				mustPush(t, s, "job=f", fmt.Sprintf("lat{clear_mode=%q} %v\n", tc.mode, v))
				clk.advance(time.Millisecond)
			}
			got := gatherOne(t, s, "lat").GetGauge().GetValue()
			if tol := math.Abs(tc.want) * 0.01; math.Abs(got-tc.want) > tol {
				t.Fatalf("%s of %d values = %v, want %v (within 1%%)", tc.mode, len(tc.values), got, tc.want)
			}
		})
	}
}

// negRange is -1000 ... -1 for n = 1000, in pushing order -1, -2, ...
func negRange(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = -float64(i + 1)
	}
	return v
}

// manySeries is a push of n distinct untyped series y{i="0"} ... .
func manySeries(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "y{i=\"%d\"} 1\n", i)
	}
	return b.String()
}

// TestEmptyPushesObeyTheLimits: a push without series still makes a group,
// whose push_time_seconds series carry the grouping key: groups count
// against max_series, and the grouping key against max_labels_per_series.
func TestEmptyPushesObeyTheLimits(t *testing.T) {
	set := testSettings()
	set.Limits.MaxSeries, set.Limits.MaxSeriesPerGroup, set.Limits.MaxLabelsPerSeries = 3, 3, 3
	s, clk := newTestStore(t, set)
	runSteps(t, s, clk, []step{
		{group: "job=a", push: ""},
		{group: "job=b", push: ""},
		{group: "job=c", push: ""},
		{group: "job=d", push: "", wantErr: "a new group would make 4 groups, more than limits.max_series (3)"},
		{group: "job=a", push: "x 1\n"}, // existing groups still take pushes
		{group: "job=e,b=1,c=2", push: "", wantErr: "more than 3 (limits.max_labels_per_series)"},
	})
	if n := len(s.Groups()); n != 3 {
		t.Fatalf("want 3 groups, got %d", n)
	}
}

// TestGaugeHistogramDefaultsToReplace: a gauge histogram is a snapshot, so
// by default each push replaces it, as a gauge's value.
func TestGaugeHistogramDefaultsToReplace(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	gh := func(count uint64, sum float64) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr("queue_age_seconds"), Type: dto.MetricType_GAUGE_HISTOGRAM.Enum(), Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{SampleCount: ptr(count), SampleSum: ptr(sum), Bucket: []*dto.Bucket{{UpperBound: ptr(1.0), CumulativeCount: ptr(count)}}}}}}
	}
	for _, f := range []*dto.MetricFamily{gh(2, 1), gh(3, 2)} {
		if err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{f}}); err != nil {
			t.Fatal(err)
		}
	}
	if h := gatherOne(t, s, "queue_age_seconds").GetHistogram(); h.GetSampleCount() != 3 || h.GetSampleSum() != 2 {
		t.Fatalf("want the last push (count 3, sum 2), got count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
}

// TestSeriesPerRequestCountsBuckets: max_series_per_request counts the
// series a push shows as, each bucket of a classic histogram and each
// quantile of a summary, not one per histogram: one push of a histogram
// with 200,000 buckets used to pass a limit of 5.
func TestSeriesPerRequestCountsBuckets(t *testing.T) {
	set := testSettings()
	set.Limits.MaxSeriesPerRequest = 5
	s, clk := newTestStore(t, set)
	runSteps(t, s, clk, []step{
		// le=1, le=2, +Inf, _sum, _count: 5.
		{push: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
		{push: "# TYPE h2 histogram\nh2_bucket{le=\"1\"} 1\nh2_bucket{le=\"2\"} 1\nh2_bucket{le=\"3\"} 1\nh2_bucket{le=\"+Inf\"} 1\nh2_sum 1\nh2_count 1\n",
			wantErr: "more than 5 series (limits.max_series_per_request; each bucket"},
		{push: "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 1\ns{quantile=\"0.99\"} 1\ns_sum 1\ns_count 1\n"},
		// Kept quantiles count (replace); summed, they are dropped.
		{push: "# TYPE s2 summary\ns2{quantile=\"0.5\",clear_mode=\"replace\"} 1\ns2{quantile=\"0.9\",clear_mode=\"replace\"} 1\ns2{quantile=\"0.99\",clear_mode=\"replace\"} 1\ns2{quantile=\"0.999\",clear_mode=\"replace\"} 1\ns2_sum{clear_mode=\"replace\"} 1\ns2_count{clear_mode=\"replace\"} 1\n",
			wantErr: "max_series_per_request"},
		{push: "# TYPE s3 summary\ns3{quantile=\"0.5\"} 1\ns3{quantile=\"0.9\"} 1\ns3{quantile=\"0.99\"} 1\ns3{quantile=\"0.999\"} 1\ns3_sum 1\ns3_count 1\n"},
	})
}

// TestSeriesLimitsCountBuckets: max_series and max_series_per_group count
// the series a store sees, each bucket of a classic histogram (and _sum,
// _count) and each quantile of a summary, and give them back when the
// series go; a checkpoint restores the count.
func TestSeriesLimitsCountBuckets(t *testing.T) {
	set := testSettings()
	set.Limits.MaxSeries, set.Limits.MaxSeriesPerGroup = 12, 8
	hist := func(name string) string { // le=1, +Inf, _sum, _count: 4 series
		return "# TYPE " + name + " histogram\n" + name + "_bucket{le=\"1\"} 1\n" + name + "_bucket{le=\"+Inf\"} 1\n" + name + "_sum 1\n" + name + "_count 1\n"
	}
	s, clk := newTestStore(t, set)
	runSteps(t, s, clk, []step{
		{group: "job=a", push: hist("h1") + hist("h2")}, // 8 in job=a
		{group: "job=a", push: "x 1\n", wantErr: "group {job=\"a\"} would have 9 series, more than 8"},
		{group: "job=a", push: hist("h1")}, // an update adds nothing
		{group: "job=b", push: hist("h3")}, // 12 in all
		{group: "job=c", push: "y 1\n", wantErr: "sluice holds 12 series, the limit is 12"},
	})
	if err := s.Delete(context.Background(), groupLabels("job=a")); err != nil {
		t.Fatal(err)
	}
	runSteps(t, s, clk, []step{
		{group: "job=c", push: hist("h4") + "y 1\n"}, // job=a's 8 were given back: 9 in all
	})
	if got := s.counted.Load(); got != 9 {
		t.Fatalf("counted %d series, want 9", got)
	}
}

// TestHistogramBucketLinesInAnyOrder: the text format does not order a
// histogram's bucket lines and the Pushgateway takes them in any order, so
// Sluice sorts them by bound; a bound given twice, NaN or -Inf is refused.
func TestHistogramBucketLinesInAnyOrder(t *testing.T) {
	const sorted = `# TYPE h histogram
h_bucket{instance="",job="f",le="1"} 1
h_bucket{instance="",job="f",le="5"} 2
h_bucket{instance="",job="f",le="+Inf"} 3
h_sum{instance="",job="f"} 7
h_count{instance="",job="f"} 3
`
	for _, tc := range []struct {
		name, body string
		mode       string              // clear_mode of the push
		fams       []*dto.MetricFamily // instead of body
		want       string              // exposition after the push (twice for sum)
		wantErr    string
	}{
		{name: "inf first", mode: "replace", body: "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 3\nh_bucket{le=\"5\"} 2\nh_bucket{le=\"1\"} 1\nh_sum 7\n", want: sorted},
		{name: "middle swapped, summed twice", mode: "sum", body: "# TYPE h histogram\nh_bucket{le=\"5\"} 1\nh_bucket{le=\"1\"} 0.5\nh_bucket{le=\"+Inf\"} 1.5\nh_sum 3.5\nh_count 1.5\n", want: sorted},
		{name: "bound twice", mode: "replace", body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", wantErr: "le=1 is given twice"},
		// The text parsers drop a bucket at NaN; protobuf carries it.
		{name: "nan bound", mode: "replace", fams: []*dto.MetricFamily{{Name: ptr("h"), Type: dto.MetricType_HISTOGRAM.Enum(), Metric: []*dto.Metric{{
			Histogram: &dto.Histogram{SampleCount: ptr(uint64(1)), SampleSum: ptr(1.0), Bucket: []*dto.Bucket{
				{UpperBound: ptr(math.NaN()), CumulativeCount: ptr(uint64(1))}, {UpperBound: ptr(2.0), CumulativeCount: ptr(uint64(1))}}}}}}},
			wantErr: "le=NaN"},
		{name: "minus inf bound", mode: "replace", body: "# TYPE h histogram\nh_bucket{le=\"-Inf\"} 0\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", wantErr: "le=-Inf"},
		{name: "counts decrease once sorted", mode: "replace", body: "# TYPE h histogram\nh_bucket{le=\"5\"} 1\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n", wantErr: "must not decrease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, testSettings())
			fams := tc.fams
			if fams == nil {
				var err error
				if fams, err = textBody(BodyText, []byte(tc.body)); err != nil {
					t.Fatalf("bad test input: %v", err)
				}
			}
			pushes := 1
			if tc.mode == "sum" {
				pushes = 2
			}
			for range pushes {
				err := s.Apply(context.Background(), &Push{Group: groupLabels("job=f"), Method: MethodPost, Mode: tc.mode, Families: fams})
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("error %v, want one with %q", err, tc.wantErr)
					}
					if got := expose(t, s); got != "" {
						t.Fatalf("a refused push left:\n%s", got)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := expose(t, s); got != tc.want {
				t.Errorf("exposition:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

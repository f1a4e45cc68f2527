package ingest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// TestPushedStringsOutliveTheDecoder applies pushes decoded by one reused
// Decoder, as the push handler's pool does, then has it decode bodies that
// overwrite its buffer, and checks that nothing the store shows changed:
// every string the store keeps from a push (family names and help, label
// names and values, series keys) must be its own copy, as the parser's
// strings point into memory the next body reuses.
func TestPushedStringsOutliveTheDecoder(t *testing.T) {
	cfg := configs.Default()
	store := aggregate.New(aggregate.Settings{Aggregation: cfg.Aggregation, Limits: cfg.Limits, SeriesTTL: time.Hour},
		time.Now, nil, &fakeRelay{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	pushes := []struct {
		group labels.Labels
		body  string
	}{
		{group: labels.FromStrings("job", "batch", "instance", "a"), body: `# HELP jobs_done_total Jobs finished by the batch.
# TYPE jobs_done_total counter
jobs_done_total{queue="alpha",clear_mode="sum"} 3
jobs_done_total{queue="beta",clear_mode="sum"} 4
# HELP queue_depth Items waiting.
# TYPE queue_depth gauge
queue_depth{queue="alpha",clear_mode="mean1m"} 7
queue_depth{queue="beta"} 2
# HELP run_seconds How long a run took.
# TYPE run_seconds histogram
run_seconds_bucket{stage="load",le="0.5"} 1
run_seconds_bucket{stage="load",le="1"} 2
run_seconds_bucket{stage="load",le="+Inf"} 3
run_seconds_sum{stage="load"} 2.5
run_seconds_count{stage="load"} 3
# HELP step_seconds Step latency.
# TYPE step_seconds summary
step_seconds{step="parse",quantile="0.5"} 0.1
step_seconds{step="parse",quantile="0.9"} 0.3
step_seconds_sum{step="parse"} 1.5
step_seconds_count{step="parse"} 9
# TYPE rows_seen untyped
rows_seen{table="users",clear_mode="p99_5m"} 120
`},
		{group: labels.FromStrings("job", "batch", "instance", "b"), body: `# HELP jobs_done_total Jobs finished by the batch.
# TYPE jobs_done_total counter
jobs_done_total{queue="gamma",clear_mode="sum"} 5
# TYPE last_success_seconds gauge
last_success_seconds{outcome="ok"} 1.7e9
`},
	}
	var d Decoder
	ctx := context.Background()
	for _, p := range pushes {
		fams, err := d.Decode(contentTypeText, "", []byte(p.body), BodyLimits{})
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if err := store.Apply(ctx, &aggregate.Push{Group: p.group, Method: aggregate.MethodPut, Families: fams}); err != nil {
			t.Fatalf("apply to %s: %v", p.group, err)
		}
		d.Reset()
	}
	before := storeView(t, store)
	for _, want := range []string{`value:"alpha"`, `value:"gamma"`, `help:"Jobs finished by the batch."`, `name:"rows_seen"`, `[p99_5m]`} {
		if !strings.Contains(before, want) {
			t.Fatalf("the store does not show %s from the pushes:\n%s", want, before)
		}
	}
	for _, p := range pushes {
		// A body as long as each push's, comments only: it parses to
		// nothing but overwrites every byte the push's strings pointed to.
		over := []byte(strings.Repeat("#", len(p.body)-1) + "\n")
		if _, err := d.Decode(contentTypeText, "", over, BodyLimits{}); err != nil {
			t.Fatalf("decode the overwriting body: %v", err)
		}
		d.Reset()
	}
	if after := storeView(t, store); after != before {
		t.Fatalf("what the store shows changed when the decoder's memory was reused\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// storeView renders everything the store shows of its series: the scrape
// view, the groups with their families, and the checkpoint's families.
func storeView(t *testing.T, store *aggregate.Store) string {
	t.Helper()
	var b bytes.Buffer
	fams, err := store.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		fmt.Fprintln(&b, f.String())
	}
	for _, g := range store.Groups() {
		fmt.Fprintln(&b, g.Labels.String())
		for _, f := range g.Families {
			fmt.Fprintln(&b, f.Family.String(), f.Modes)
		}
	}
	durable, err := store.GatherDurable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range durable {
		fmt.Fprintln(&b, f.String())
	}
	return b.String()
}

package aggregate

import (
	"context"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// nativeX is a push API push of a native histogram x to grp.
func nativeX(t *testing.T, grp string) *Push {
	return &Push{Group: groupLabels(grp), Families: []*dto.MetricFamily{nativeNamed(t, "x", 1.1, 2)}}
}

// restartSame closes d and opens the log in dir again (openDurable fails
// if replay skips a record), checking that the state is what it was.
func restartSame(t *testing.T, d *durableStore, dir string, clk *fakeClock) *durableStore {
	t.Helper()
	before := expose(t, d.s)
	d.close(t)
	r := openDurable(t, dir, clk)
	if got := expose(t, r.s); got != before {
		t.Errorf("state differs after restart\n got:\n%s\nwant:\n%s", got, before)
	}
	return r
}

func remoteWriteXCount(grp string) *Push {
	v := 7.0
	return &Push{Group: groupLabels(grp), Method: MethodPost, TypeHint: true, Families: []*dto.MetricFamily{
		{Name: ptr("x_count"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Counter: &dto.Counter{Value: &v}}}}}}
}

// TestReplayFollowsTheLogNotTheFamilyFlags: replay does not check a push
// against family flags (restored unchecked from a checkpoint): every
// acknowledged push comes back.
func TestReplayFollowsTheLogNotTheFamilyFlags(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	ctx := context.Background()
	d := openDurable(t, dir, clk)
	if err := d.s.Apply(ctx, nativeX(t, "job=a")); err != nil {
		t.Fatal(err)
	}
	if err := d.s.Apply(ctx, remoteWriteXCount("job=b")); err != nil {
		t.Fatal(err)
	}
	if err := d.s.Checkpoint(ctx, d.w); err != nil {
		t.Fatal(err)
	}
	if err := d.s.Apply(ctx, nativeX(t, "job=c")); err != nil {
		t.Fatalf("live push: %v", err)
	}
	r := restartSame(t, d, dir, clk)
	defer r.close(t)
	s := r.s
	// Live after the restart, the family (restored unchecked) is checked
	// again: a pushed x beside x_count is the clash the check is for.
	if err := s.Apply(ctx, nativeX(t, "job=d")); err == nil || !strings.Contains(err.Error(), "collide") {
		t.Errorf("live push after restart: %v, want a clash", err)
	}
}

// TestRefusedPushLeavesNoFamilyFlags: a push refused after it joined a
// family sets none of the family's flags.
func TestRefusedPushLeavesNoFamilyFlags(t *testing.T) {
	s, _ := newTestStore(t, testSettings())
	ctx := context.Background()
	if err := s.Apply(ctx, nativeX(t, "job=a")); err != nil {
		t.Fatal(err)
	}
	mustPush(t, s, "job=b", "z{clear_mode=\"sum\"} 1\n")
	classic := "# TYPE x histogram\nx_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 2\nx_sum 3\nx_count 2\nz{clear_mode=\"replace\"} 1\n"
	if err := push(t, s, "job=b", MethodPost, classic); err == nil || !strings.Contains(err.Error(), "this push says replace") {
		t.Fatalf("want a mode conflict, got %v", err)
	}
	if err := s.Apply(ctx, remoteWriteXCount("job=c")); err != nil {
		t.Errorf("remote_write x_count beside a native-only x after a refused push: %v", err)
	}
}

// TestRestoreKeepsEveryClassicFamily: a family is marked classic from any
// restored series that shows classic series, not the first only.
func TestRestoreKeepsEveryClassicFamily(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	ctx := context.Background()
	d := openDurable(t, dir, clk)
	if err := d.s.Apply(ctx, nativeX(t, "job=a")); err != nil {
		t.Fatal(err)
	}
	mustPush(t, d.s, "job=b", "# TYPE x histogram\nx_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 2\nx_sum 3\nx_count 2\n")
	if err := d.s.Apply(ctx, remoteWriteXCount("job=c")); err == nil {
		t.Fatal("live: want a clash")
	}
	if err := d.s.Checkpoint(ctx, d.w); err != nil {
		t.Fatal(err)
	}
	d.close(t)
	r := openDurable(t, dir, clk)
	defer r.close(t)
	if err := r.s.Apply(ctx, remoteWriteXCount("job=c")); err == nil {
		t.Errorf("after restore: remote_write x_count beside classic x accepted")
	}
}

// TestRefusedPushThenReplaySkipsNothing: a refused push leaves no flag
// behind for replay (which never sees it) to differ on.
func TestRefusedPushThenReplaySkipsNothing(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	ctx := context.Background()
	d := openDurable(t, dir, clk)
	// remote_write makes x (native): checked=false
	if err := d.s.Apply(ctx, &Push{Group: groupLabels("job=a"), TypeHint: true, Families: []*dto.MetricFamily{nativeNamed(t, "x", 1.1, 2)}}); err != nil {
		t.Fatal(err)
	}
	mustPush(t, d.s, "job=b", "z{clear_mode=\"sum\"} 1\n")
	// push API joins x, then is refused (mode conflict on z)
	f := nativeNamed(t, "x", 1.1, 2)
	zv := 1.0
	f2 := &dto.MetricFamily{Name: ptr("z"), Type: dto.MetricType_UNTYPED.Enum(), Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("replace")}}, Untyped: &dto.Untyped{Value: &zv}}}}
	if err := d.s.Apply(ctx, &Push{Group: groupLabels("job=b"), Families: []*dto.MetricFamily{f, f2}}); err == nil {
		t.Fatal("want refusal")
	}
	if err := d.s.Apply(ctx, remoteWriteXCount("job=c")); err != nil {
		t.Fatal(err)
	}
	// The refused push set no flag: x is still unchecked, so this one is
	// checked, and refused for the clash.
	if err := d.s.Apply(ctx, nativeX(t, "job=d")); err == nil || !strings.Contains(err.Error(), "collide") {
		t.Fatalf("live push: %v, want a clash", err)
	}
	r := restartSame(t, d, dir, clk)
	r.close(t)
}

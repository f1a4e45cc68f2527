package main

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestSummarizeFsyncs(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		lat      []time.Duration
		elapsed  time.Duration
		wantP50  float64
		wantP99  float64
		wantMax  float64
		wantSlow int
		wantRate float64
	}{
		{name: "none slow", lat: []time.Duration{2 * ms, 1 * ms, ms / 2, ms / 4}, elapsed: 2 * time.Second,
			wantP50: 0.5, wantP99: 2, wantMax: 2, wantSlow: 0, wantRate: 2},
		{name: "two over 2.5 ms, unsorted", lat: []time.Duration{3 * ms, ms, 10 * ms, 2500 * time.Microsecond}, elapsed: time.Second,
			wantP50: 2.5, wantP99: 10, wantMax: 10, wantSlow: 2, wantRate: 4},
		{name: "empty", elapsed: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := summarizeFsyncs(fsyncOpts{size: 4096}, tc.lat, tc.elapsed)
			if r.P50 != tc.wantP50 || r.P99 != tc.wantP99 || r.Max != tc.wantMax {
				t.Errorf("p50 %v p99 %v max %v, want %v %v %v", r.P50, r.P99, r.Max, tc.wantP50, tc.wantP99, tc.wantMax)
			}
			if r.Over2500 != tc.wantSlow || r.PerSec != tc.wantRate || r.Count != len(tc.lat) {
				t.Errorf("over 2.5 ms %d, rate %v, count %d; want %d, %v, %d", r.Over2500, r.PerSec, r.Count, tc.wantSlow, tc.wantRate, len(tc.lat))
			}
		})
	}
}

func TestFsyncProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    fsyncOpts
		wantErr bool
	}{
		{name: "back to back", opts: fsyncOpts{size: 4096, count: 20}},
		{name: "small writes with a busy thread", opts: fsyncOpts{size: 100, count: 30, interval: time.Microsecond, busy: 1}},
		{name: "zero size refused", opts: fsyncOpts{size: 0, count: 5}, wantErr: true},
		{name: "negative busy refused", opts: fsyncOpts{size: 10, count: 5, busy: -1}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.opts.dir = dir
			r, err := fsyncProbe(context.Background(), tc.opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if r.Count != tc.opts.count || r.P50 <= 0 || r.Max < r.P99 || r.P99 < r.P50 {
				t.Errorf("result %+v: want %d fsyncs with ordered latencies", r, tc.opts.count)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("the probe left %d files behind", len(ents))
			}
		})
	}
}

package main

import (
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// decodedSeries is one series of a decoded request.
type decodedSeries struct {
	labels     labels.Labels
	timestamps []int64
}

func decodeRW(t *testing.T, rq *request, protocol string) []decodedSeries {
	t.Helper()
	data, err := snappy.Decode(nil, rq.body)
	if err != nil {
		t.Fatalf("snappy: %v", err)
	}
	var out []decodedSeries
	if protocol == "2.0" {
		var req writev2.Request
		if err := req.Unmarshal(data); err != nil {
			t.Fatalf("unmarshal 2.0: %v", err)
		}
		b := labels.NewScratchBuilder(8)
		for _, ts := range req.Timeseries {
			ls, err := ts.ToLabels(&b, req.Symbols)
			if err != nil {
				t.Fatalf("labels: %v", err)
			}
			if ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_GAUGE {
				t.Errorf("metadata type %v, want gauge", ts.Metadata.Type)
			}
			s := decodedSeries{labels: ls}
			for _, smp := range ts.Samples {
				s.timestamps = append(s.timestamps, smp.Timestamp)
			}
			out = append(out, s)
		}
		return out
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(data); err != nil {
		t.Fatalf("unmarshal 1.0: %v", err)
	}
	for _, ts := range req.Timeseries {
		b := labels.NewScratchBuilder(len(ts.Labels))
		for _, l := range ts.Labels {
			b.Add(l.Name, l.Value)
		}
		s := decodedSeries{labels: b.Labels()}
		for _, smp := range ts.Samples {
			s.timestamps = append(s.timestamps, smp.Timestamp)
		}
		out = append(out, s)
	}
	return out
}

func TestRWPool(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		name       string
		spec       rwSpec
		wantBodies int
	}{
		{"1.0, series divide evenly", rwSpec{seriesPerRequest: 10, samplesPerSeries: 1, totalSeries: 30, protocol: "1.0"}, 3},
		{"1.0, last body smaller, three samples per series", rwSpec{seriesPerRequest: 10, samplesPerSeries: 3, totalSeries: 25, protocol: "1.0", sampleSpacing: 15 * time.Second}, 3},
		{"2.0, interned symbols", rwSpec{seriesPerRequest: 7, samplesPerSeries: 2, totalSeries: 21, protocol: "2.0", sampleSpacing: time.Second}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.prefix = "lt"
			if err := spec.validate(); err != nil {
				t.Fatal(err)
			}
			pool, err := newRWPool(spec, "http://127.0.0.1:1/api/v1/write", now)
			if err != nil {
				t.Fatal(err)
			}
			if len(pool.reqs) != tc.wantBodies {
				t.Fatalf("%d bodies, want %d", len(pool.reqs), tc.wantBodies)
			}
			seen := map[string]bool{}
			check := func(end time.Time) {
				clear(seen)
				for seq := range uint64(tc.wantBodies) {
					rq := pool.request(seq)
					wantType, wantVersion := contentTypeRW1, rw1Version
					if spec.protocol == "2.0" {
						wantType, wantVersion = contentTypeRW2, rw2Version
					}
					if rq.contentType != wantType || rq.version != wantVersion || rq.encoding != "snappy" || rq.method != "POST" {
						t.Errorf("headers %q %q %q %s", rq.contentType, rq.version, rq.encoding, rq.method)
					}
					series := decodeRW(t, rq, spec.protocol)
					samples := 0
					for _, s := range series {
						if seen[s.labels.String()] {
							t.Errorf("series %s sent twice in one round", s.labels)
						}
						seen[s.labels.String()] = true
						if s.labels.Get("__name__") == "" || s.labels.Get("series") == "" {
							t.Errorf("series %s lacks a name or series label", s.labels)
						}
						if len(s.timestamps) != spec.samplesPerSeries {
							t.Fatalf("%d samples, want %d", len(s.timestamps), spec.samplesPerSeries)
						}
						for j, ts := range s.timestamps {
							want := end.UnixMilli() - int64(spec.samplesPerSeries-1-j)*spec.sampleSpacing.Milliseconds()
							if ts != want {
								t.Errorf("sample %d at %d, want %d", j, ts, want)
							}
						}
						samples += len(s.timestamps)
					}
					if rq.samples != samples {
						t.Errorf("request says %d samples, body has %d", rq.samples, samples)
					}
				}
				if len(seen) != spec.totalSeries {
					t.Errorf("a round sent %d distinct series, want %d", len(seen), spec.totalSeries)
				}
			}
			check(now)
			if pool.request(uint64(tc.wantBodies)) != pool.request(0) {
				t.Error("request wantBodies does not wrap to the first body")
			}
			later := now.Add(10 * time.Second)
			if err := pool.refresh(later); err != nil {
				t.Fatal(err)
			}
			check(later)
		})
	}
}

// BenchmarkRWRefresh is what re-encoding the default pool (100,000 series
// in 200 bodies) costs the generator every -refresh interval.
func BenchmarkRWRefresh(b *testing.B) {
	spec := rwSpec{prefix: "lt", seriesPerRequest: 500, samplesPerSeries: 1, totalSeries: 100_000, protocol: "1.0", sampleSpacing: time.Second}
	pool, err := newRWPool(spec, "http://127.0.0.1:1/api/v1/write", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := pool.refresh(time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCountV1 is the sink's cost per request of 500 series with a
// name prefix to match.
func BenchmarkCountV1(b *testing.B) {
	spec := rwSpec{prefix: "loadtest_rw", seriesPerRequest: 500, samplesPerSeries: 1, totalSeries: 500, protocol: "1.0", sampleSpacing: time.Second}
	pool, err := newRWPool(spec, "http://127.0.0.1:1/api/v1/write", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	data, err := snappy.Decode(nil, pool.request(0).body)
	if err != nil {
		b.Fatal(err)
	}
	prefix := []byte("loadtest_rw_")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := countV1(data, prefix); err != nil {
			b.Fatal(err)
		}
	}
}

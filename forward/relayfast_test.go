package forward

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/wal"
)

// manyLabels returns a series with n labels besides __name__, sorted.
func manyLabels(n int) []prompb.Label {
	ls := []prompb.Label{{Name: "__name__", Value: "wide"}}
	for i := range n {
		ls = append(ls, prompb.Label{Name: fmt.Sprintf("l%03d", i), Value: fmt.Sprint(i)})
	}
	return ls
}

// relayFrame encodes a frame the way target.append does (external label
// "cluster" merged), holding floats of awkward values, a histogram, a
// series of 130 labels and metadata shared by two series.
func relayFrame(t *testing.T) []byte {
	t.Helper()
	counter := &prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "req_total", Help: "Requests.", Unit: "1"}
	ext := []prompb.Label{{Name: "cluster", Value: "eu-1"}}
	enc := newFrameEncoder()
	for _, s := range []struct {
		ls     []prompb.Label
		md     *prompb.MetricMetadata
		floats []prompb.Sample
		hists  []prompb.Histogram
	}{
		{ls: []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "code", Value: "200"}}, md: counter,
			floats: []prompb.Sample{{Value: 1.5, Timestamp: 1000}, {Value: 0, Timestamp: 2000}, {Value: math.NaN(), Timestamp: 0}}},
		{ls: []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "cluster", Value: "own"}, {Name: "empty", Value: ""}}, md: counter,
			floats: []prompb.Sample{{Value: math.Copysign(0, -1), Timestamp: -5}, {Value: math.Float64frombits(0x7ff0000000000001), Timestamp: 3}}},
		{ls: manyLabels(130), floats: []prompb.Sample{{Value: -2, Timestamp: 1 << 40}}},
		{ls: []prompb.Label{{Name: "__name__", Value: "lat"}}, hists: []prompb.Histogram{{
			Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 2.5, Schema: 1, Timestamp: 7,
			ZeroCount:     &prompb.Histogram_ZeroCountInt{ZeroCountInt: 1},
			PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 2}}, PositiveDeltas: []int64{1, 0},
		}}},
	} {
		if err := enc.addSeriesPB(s.ls, ext, s.md, s.floats, s.hists); err != nil {
			t.Fatal(err)
		}
	}
	return enc.finish()
}

// generatedV1 is what the generated code marshals for batch: one
// TimeSeries per sample, metadata of each family once, in order.
func generatedV1(t *testing.T, batch []sample) []byte {
	t.Helper()
	req := prompb.WriteRequest{}
	seen := map[string]bool{}
	for _, s := range batch {
		ts := prompb.TimeSeries{Labels: prompb.FromLabels(s.lset, nil)}
		if s.h != nil {
			ts.Histograms = []prompb.Histogram{*s.h}
		} else {
			ts.Samples = []prompb.Sample{{Value: s.v, Timestamp: s.t}}
		}
		req.Timeseries = append(req.Timeseries, ts)
		if s.meta != nil && !seen[s.meta.MetricFamilyName] {
			seen[s.meta.MetricFamilyName] = true
			req.Metadata = append(req.Metadata, *s.meta)
		}
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncodeV1SameBytesAsGenerated(t *testing.T) {
	t.Parallel()
	frame := relayFrame(t)
	withLabels, err := newFrameDecoder().decode(frame[frameHeaderSize:], nil)
	if err != nil {
		t.Fatal(err)
	}
	want := generatedV1(t, withLabels)
	for _, tc := range []struct {
		name string
		dec  *frameDecoder
	}{
		{"labels", newFrameDecoder()},
		{"wire", newWireDecoder()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for round := range 2 { // the second decode hits the caches
				batch, err := tc.dec.decode(frame[frameHeaderSize:], nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(batch) != len(withLabels) {
					t.Fatalf("round %d: %d samples, want %d", round, len(batch), len(withLabels))
				}
				enc := newEncoder(configs.ProtoMsgV1)
				if err := enc.marshalV1(batch); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(enc.pb, want) {
					t.Fatalf("round %d: body differs from the generated code's\n got %x\nwant %x", round, enc.pb, want)
				}
			}
		})
	}
}

func TestWireLabelsDecodeToTheSameSeries(t *testing.T) {
	t.Parallel()
	frame := relayFrame(t)
	lsets, err := newFrameDecoder().decode(frame[frameHeaderSize:], nil)
	if err != nil {
		t.Fatal(err)
	}
	wires, err := newWireDecoder().decode(frame[frameHeaderSize:], nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range wires {
		if !wires[i].lset.IsEmpty() {
			t.Errorf("sample %d: wire decoder built labels %s", i, wires[i].lset)
		}
		var ts prompb.TimeSeries
		if err := ts.Unmarshal(wires[i].wire); err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		var sb labels.ScratchBuilder
		got := ts.ToLabels(&sb, nil)
		if !labels.Equal(got, lsets[i].lset) {
			t.Errorf("sample %d: wire labels %s, want %s", i, got, lsets[i].lset)
		}
		if got.Get("cluster") == "" || got.Has("empty") {
			t.Errorf("sample %d: external labels not merged or empty label kept: %s", i, got)
		}
	}
	if n := lsets[5].lset.Len(); n != 132 {
		t.Errorf("wide series has %d labels, want 132", n)
	}
}

// memQueue opens a queue in a temporary directory.
func memQueue(t *testing.T, dir string) *queue {
	t.Helper()
	tm := newMetrics(nil).forTarget("q")
	q, err := openQueue(dir, wal.OSFS(), 1<<30, discardLogger(), &tm)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// appendWindows appends n one-sample frames (timestamps from, from+1...),
// kept in memory if keep.
func appendWindows(t *testing.T, q *queue, from, n int, keep bool) {
	t.Helper()
	enc := newFrameEncoder()
	for i := range n {
		enc.reset()
		in := convert(counterWindow(int64(from+i), float64(from+i)))
		if err := enc.addSeriesPB(in[0].lbls, nil, in[0].meta, in[0].ts.Samples, nil); err != nil {
			t.Fatal(err)
		}
		if err := q.appendKeep(enc.finish(), 1, false, keep); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads every frame from the reader's position and returns each
// sample's timestamp and how many frames came from memory.
func readAll(t *testing.T, q *queue) (ts []int64, fromMem int) {
	t.Helper()
	dec := newWireDecoder()
	for {
		f, ok := q.nextFrame()
		if !ok {
			return ts, fromMem
		}
		if f.mem {
			fromMem++
		}
		out, err := f.decode(dec, nil)
		if err != nil {
			t.Fatal(err)
		}
		q.releaseFrame(f)
		for _, s := range out {
			ts = append(ts, s.t)
		}
		q.commit(f.end, len(out))
	}
}

func TestQueueKeepsAppendedFramesInMemory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		run      func(t *testing.T, q *queue, dir string) *queue
		want     int // timestamps 0..want-1, in order
		wantMem  int
		restarts bool
	}{
		{"kept frames are read from memory", func(t *testing.T, q *queue, _ string) *queue {
			appendWindows(t, q, 0, 5, true)
			return q
		}, 5, 5, false},
		{"frames not kept are read from disk, in order", func(t *testing.T, q *queue, _ string) *queue {
			appendWindows(t, q, 0, 2, true)
			appendWindows(t, q, 2, 2, false)
			appendWindows(t, q, 4, 2, true)
			return q
		}, 6, 4, false},
		{"a restart reads from disk what memory held", func(t *testing.T, q *queue, dir string) *queue {
			appendWindows(t, q, 0, 4, true)
			q.close()
			return memQueue(t, dir)
		}, 4, 0, true},
		{"the memory bound holds", func(t *testing.T, q *queue, _ string) *queue {
			q.mtx.Lock()
			q.memBytes = memFrameBytes - 1 // as if full
			q.mtx.Unlock()
			appendWindows(t, q, 0, 3, true)
			q.mtx.Lock()
			q.memBytes = 0
			q.mtx.Unlock()
			appendWindows(t, q, 3, 2, true)
			return q
		}, 5, 2, false},
		{"coalesced segments are not served from memory", func(t *testing.T, q *queue, _ string) *queue {
			appendWindows(t, q, 0, 3, true)
			q.mtx.Lock()
			q.forgetMemLocked(q.segs[len(q.segs)-1].idx)
			q.mtx.Unlock()
			return q
		}, 3, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			q := tc.run(t, memQueue(t, dir), dir)
			defer q.close()
			ts, fromMem := readAll(t, q)
			if len(ts) != tc.want {
				t.Fatalf("read %d samples %v, want %d", len(ts), ts, tc.want)
			}
			for i, v := range ts {
				if v != int64(i) {
					t.Fatalf("read timestamps %v, want 0..%d in order", ts, tc.want-1)
				}
			}
			if fromMem != tc.wantMem {
				t.Errorf("%d frames from memory, want %d", fromMem, tc.wantMem)
			}
			if n, _ := q.pending(); n != 0 {
				t.Errorf("%d samples pending after reading everything", n)
			}
		})
	}
}

func TestQueueMemoryFrameStartsNextSegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tm := newMetrics(nil).forTarget("q")
	// 64-byte segments: every frame gets a segment of its own.
	q, err := openQueue(dir, wal.OSFS(), 1, discardLogger(), &tm)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	appendWindows(t, q, 0, 4, true)
	if len(q.segs) < 4 {
		t.Fatalf("%d segments, want one per frame", len(q.segs))
	}
	ts, fromMem := readAll(t, q)
	if len(ts) != 4 || ts[0] != 0 || ts[3] != 3 {
		t.Fatalf("read %v, want 0..3", ts)
	}
	if fromMem != 4 {
		t.Errorf("%d frames from memory, want 4", fromMem)
	}
}

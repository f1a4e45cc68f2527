package forward

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// appendWire hands req to m in wire form, as the remote_write receiver
// does for a relayed request.
func appendWire(t *testing.T, m *Manager, req *prompb.WriteRequest) {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m.AppendWire(req, raw, snappy.Encode(nil, raw), nil)
}

// relayWindow is window with a histogram series and several samples in
// one series, as a Prometheus sender may relay.
func relayWindow(ts int64, n int) *prompb.WriteRequest {
	req := window(ts, n)
	req.Timeseries = append(req.Timeseries,
		prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "multi_total"}, {Name: "job", Value: "test"}},
			Samples: []prompb.Sample{{Timestamp: ts - 1, Value: 1}, {Timestamp: ts, Value: 2}},
		},
		prompb.TimeSeries{
			Labels:     []prompb.Label{{Name: "__name__", Value: "latency_seconds"}, {Name: "job", Value: "test"}},
			Histograms: []prompb.Histogram{testHistogram(ts)},
		})
	return req
}

// sentSeries renders what accepted requests carried as
// "labels@timestamp=value" (histograms as "labels@timestamp=h<count>"), in
// a stable order.
func sentSeries(reqs []request) []string {
	var out []string
	for _, r := range reqs {
		if !r.accepted() || r.v1 == nil {
			continue
		}
		for _, ts := range r.v1.Timeseries {
			var ls []string
			for _, l := range ts.Labels {
				ls = append(ls, l.Name+"="+l.Value)
			}
			for _, s := range ts.Samples {
				out = append(out, strings.Join(ls, ",")+"@"+strconv.FormatInt(s.Timestamp, 10)+"="+strconv.FormatFloat(s.Value, 'g', -1, 64))
			}
			for _, h := range ts.Histograms {
				out = append(out, strings.Join(ls, ",")+"@"+strconv.FormatInt(h.Timestamp, 10)+"=h"+strconv.FormatUint(h.GetCountInt(), 10))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestAppendWireSendsWhatAppendSends: a relayed request given in wire form
// reaches every kind of target exactly as the same request given to
// AppendBorrowed: a plain Remote-Write 1.0 target (relay frames), one with
// external labels and one with write_relabel_configs (which change the
// series, so take the decoded request), samples, several samples per
// series, histograms and metadata alike.
func TestAppendWireSendsWhatAppendSends(t *testing.T) {
	t.Parallel()
	relabel := yamlConfig(t, `
url: http://placeholder/
write_relabel_configs:
  - source_labels: [series]
    regex: "1"
    action: drop
`).WriteRelabelConfigs
	for _, tc := range []struct {
		name     string
		ext      map[string]string
		relabels bool
	}{
		{"plain target", nil, false},
		{"external labels", map[string]string{"cluster": "eu-1"}, false},
		{"write relabelling", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got [2][]string
			var meta [2]int
			for i, wire := range []bool{false, true} {
				rc := newReceiver(t, nil)
				h := newHarness(t)
				cfg := testConfig(rc.url(), "t")
				if tc.relabels {
					cfg.WriteRelabelConfigs = relabel
				}
				h.apply(tc.ext, cfg)
				if want := tc.ext == nil && !tc.relabels; h.m.targets[0].wire != want {
					t.Fatalf("target takes relay frames: %v, want %v", h.m.targets[0].wire, want)
				}
				for w := range 3 {
					req := relayWindow(int64(w+1)*15_000, 4)
					if wire {
						appendWire(t, h.m, req)
					} else {
						h.m.AppendBorrowed(req)
					}
				}
				if err := h.stop(5 * time.Second); err != nil {
					t.Fatal(err)
				}
				reqs := rc.pending()
				got[i] = sentSeries(reqs)
				for _, r := range reqs {
					meta[i] += len(r.v1.Metadata)
				}
			}
			if len(got[0]) == 0 {
				t.Fatal("nothing sent")
			}
			if !slices.Equal(got[0], got[1]) {
				t.Errorf("AppendWire sent\n%s\nAppendBorrowed sent\n%s", strings.Join(got[1], "\n"), strings.Join(got[0], "\n"))
			}
			if meta[1] == 0 {
				t.Errorf("no metadata sent with AppendWire (AppendBorrowed: %d)", meta[0])
			}
		})
	}
}

// TestRelayFramesSurviveACrash: relay frames written while the receiver is
// down are read back from disk after a kill -9 (not from memory) and sent,
// in order for each series.
func TestRelayFramesSurviveACrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	down := newReceiver(t, func(int, http.ResponseWriter, *http.Request) (int, string) {
		return http.StatusServiceUnavailable, "down"
	})
	h1 := newHarnessIn(t, dir)
	h1.apply(nil, testConfig(down.url(), "t"))
	times := windowTimes(6)
	for _, ts := range times {
		appendWire(t, h1.m, window(ts, 3))
	}
	waitFor(t, 5*time.Second, "a failed send", func() bool { return down.count() > 0 })
	crash(h1.m)

	up := newReceiver(t, nil)
	h2 := newHarnessIn(t, dir)
	h2.apply(nil, testConfig(up.url(), "t"))
	if err := h2.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	got := seriesSamples(up.pending())
	for i := range 3 {
		var ts []int64
		for _, s := range got[strconv.Itoa(i)] {
			ts = append(ts, s.Timestamp)
		}
		if !slices.Equal(ts, times) {
			t.Errorf("series %d: got %v, want %v", i, ts, times)
		}
	}
}

// TestFreshFramesShareBatchesButNotRejections: relay frames appended while
// the target keeps up go out together in batches of up to
// max_samples_per_send, and a receiver that rejects a batch for one
// sender's bad sample (400, as Prometheus does for an out-of-order one)
// does not drop the other frames' samples: the batch is sent again frame
// by frame, and only the bad frame is dropped.
func TestFreshFramesShareBatchesButNotRejections(t *testing.T) {
	t.Parallel()
	var (
		mtx      sync.Mutex
		sizes    []int
		accepted []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, req, err := readV1(r)
		if err != nil {
			t.Errorf("bad request: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mtx.Lock()
		defer mtx.Unlock()
		sizes = append(sizes, len(req.Timeseries))
		for _, ts := range req.Timeseries {
			if labelMap(ts.Labels)["job"] == "bad" {
				http.Error(w, "out of order sample", http.StatusBadRequest)
				return
			}
		}
		for _, ts := range req.Timeseries {
			accepted = append(accepted, labelMap(ts.Labels)["job"]+"/"+labelMap(ts.Labels)["series"])
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	h := newHarness(t)
	cfg := testConfig(srv.URL+"/api/v1/write", "t")
	cfg.QueueConfig.MaxShards = 1
	h.apply(nil, cfg)
	const frames = 20
	for i := range frames {
		req := window(int64(i+1)*1000, 5)
		job := "good"
		if i == 7 {
			job = "bad"
		}
		for k := range req.Timeseries {
			req.Timeseries[k].Labels[1].Value = job
		}
		appendWire(t, h.m, req)
	}
	if err := h.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	mtx.Lock()
	defer mtx.Unlock()
	if want := (frames - 1) * 5; len(accepted) != want {
		t.Errorf("%d samples accepted, want %d (every frame but the bad one)", len(accepted), want)
	}
	for _, a := range accepted {
		if strings.HasPrefix(a, "bad/") {
			t.Errorf("accepted %s", a)
		}
	}
	if d := h.dropped("t", "400"); d != 5 {
		t.Errorf("dropped{400} = %v, want the bad frame's 5 samples", d)
	}
	if slices.Max(sizes) <= 5 {
		t.Errorf("largest request %d series: frames were never batched together (sizes %v)", slices.Max(sizes), sizes)
	}
}

// FuzzDecodeWire: any relay frame body decodes without panicking, with a
// wire decoder and a labels decoder alike. A body in the form the receiver
// writes (the generated code's encoding of any request it accepts)
// decodes, with both, to the samples and histograms the generated code
// finds in it, in order, the wire decoder's labels being the series' Label
// messages as they are and the labels decoder's their names and values.
func FuzzDecodeWire(f *testing.F) {
	for _, req := range []*prompb.WriteRequest{window(15_000, 3), relayWindow(30_000, 2), counterWindow(45_000, 7)} {
		raw, err := req.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, uint16(relayCountOf(req)))
	}
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}, uint16(0))
	f.Fuzz(func(t *testing.T, raw []byte, count uint16) {
		_, _ = newWireDecoder().decodeWire(raw, int(count), nil)
		_, _ = newFrameDecoder().decodeWire(raw, int(count), nil)

		var req prompb.WriteRequest
		if req.Unmarshal(raw) != nil {
			return
		}
		// What the receiver relays: no unknown fields, labels sorted,
		// unique and not empty, no exemplars.
		req.XXX_unrecognized = nil
		for i := range req.Metadata {
			req.Metadata[i].XXX_unrecognized = nil
		}
		for i := range req.Timeseries {
			ts := &req.Timeseries[i]
			ts.XXX_unrecognized = nil
			for k := range ts.Samples {
				ts.Samples[k].XXX_unrecognized = nil
			}
			for k := range ts.Labels {
				ts.Labels[k].XXX_unrecognized = nil
			}
			ts.Labels = slices.DeleteFunc(ts.Labels, func(l prompb.Label) bool { return l.Name == "" || l.Value == "" })
			slices.SortStableFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
			ts.Labels = slices.CompactFunc(ts.Labels, func(a, b prompb.Label) bool { return a.Name == b.Name })
			if len(ts.Labels) == 0 {
				ts.Labels = []prompb.Label{{Name: "__name__", Value: "x"}}
			}
			ts.Exemplars = nil
		}
		canon, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		n := relayCountOf(&req)
		wireGot, err := newWireDecoder().decodeWire(canon, n, nil)
		if err != nil {
			t.Fatalf("wire decoder: %v", err)
		}
		lsGot, err := newFrameDecoder().decodeWire(canon, n, nil)
		if err != nil {
			t.Fatalf("labels decoder: %v", err)
		}
		k := 0
		for _, ts := range req.Timeseries {
			wireWant := labelRunOf(t, ts.Labels)
			want := make([]sample, 0, len(ts.Samples)+len(ts.Histograms))
			for _, s := range ts.Samples {
				want = append(want, sample{t: s.Timestamp, v: s.Value})
			}
			for i := range ts.Histograms {
				want = append(want, sample{t: ts.Histograms[i].Timestamp, h: &ts.Histograms[i]})
			}
			for _, w := range want {
				g, ls := wireGot[k], lsGot[k]
				if g.t != w.t || ls.t != w.t || math.Float64bits(g.v) != math.Float64bits(w.v) || (g.h == nil) != (w.h == nil) {
					t.Fatalf("sample %d: %+v, want %+v", k, g, w)
				}
				if g.h != nil && g.h.String() != w.h.String() {
					t.Fatalf("histogram %d: %+v, want %+v", k, g.h, w.h)
				}
				if !bytes.Equal(g.wire, wireWant) {
					t.Fatalf("sample %d: wire labels % x, want % x", k, g.wire, wireWant)
				}
				for _, l := range ts.Labels {
					if ls.lset.Get(l.Name) != l.Value {
						t.Fatalf("sample %d: labels %s, the generated code finds %v", k, ls.lset, ts.Labels)
					}
				}
				k++
			}
		}
	})
}

// relayCountOf is the number of samples (floats and histograms) of req.
func relayCountOf(req *prompb.WriteRequest) int {
	info := relayInfo(req, nil, nil, maphash.Seed{})
	return info.floats + info.hists
}

// labelRunOf is ls as a run of Label fields of a TimeSeries, encoded as
// the generated code encodes them.
func labelRunOf(t *testing.T, ls []prompb.Label) []byte {
	t.Helper()
	var run []byte
	for _, l := range ls {
		b, err := l.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		run = append(append(append(run, 0x0a), protoLen(len(b))...), b...)
	}
	return run
}

// protoLen is n as a protobuf length prefix.
func protoLen(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }

// TestRelayInfoKeys: a series' key is the same whether the receiver gave
// its label run (aggregate.Write.RelayRuns) or the queue found it in the
// raw request, and runs that do not fit raw are not used.
func TestRelayInfoKeys(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 5}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "b"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 7}}},
		{Samples: []prompb.Sample{{Value: 3, Timestamp: 6}}}, // no labels
	}}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The runs as the receiver finds them: the bytes of each series'
	// Label fields.
	var runs []int32
	off := 0
	for _, ts := range req.Timeseries {
		want := labelRunOf(t, ts.Labels)
		if len(want) == 0 {
			runs = append(runs, int32(off), int32(off))
			continue
		}
		i := bytes.Index(raw[off:], want)
		if i < 0 {
			t.Fatalf("labels of %v not in the request", ts.Labels)
		}
		runs = append(runs, int32(off+i), int32(off+i+len(want)))
		off += i + len(want)
	}
	seed := maphash.MakeSeed()
	found := relayInfo(req, raw, nil, seed).keys
	if len(found) != 3 || found[0] == found[1] || found[2] != 0 {
		t.Fatalf("keys found in raw: %v; want 3, the first two distinct, the last 0", found)
	}
	for _, tc := range []struct {
		name string
		runs []int32
	}{
		{"receiver's runs", runs},
		{"runs past the end", append(slices.Clone(runs[:4]), 0, int32(len(raw)+1))},
		{"reversed run", append(slices.Clone(runs[:4]), 3, 2)},
		{"runs of another request", runs[:4]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := relayInfo(req, raw, tc.runs, seed)
			if !slices.Equal(info.keys, found) {
				t.Fatalf("keys %v, found in raw %v", info.keys, found)
			}
			if info.floats != 3 || info.minT != 5 || info.maxT != 7 {
				t.Fatalf("info %+v", info)
			}
		})
	}
}

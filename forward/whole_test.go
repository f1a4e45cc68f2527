package forward

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// TestWholeFrameIsSentAsReceived: a relayed request that reaches a plain
// Remote-Write 1.0 target which keeps up goes out as the body Sluice
// received, byte for byte, and is counted as sent like any batch.
func TestWholeFrameIsSentAsReceived(t *testing.T) {
	t.Parallel()
	var (
		mtx    sync.Mutex
		bodies [][]byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mtx.Lock()
		bodies = append(bodies, b)
		mtx.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t)
	h.apply(nil, testConfig(srv.URL+"/api/v1/write", "t"))

	req := relayWindow(30_000, 3) // 3 floats, one series of 2, a histogram
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	block := snappy.Encode(nil, raw)
	h.m.AppendWire(req, raw, block, nil)
	if err := h.stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	mtx.Lock()
	defer mtx.Unlock()
	if len(bodies) != 1 || !bytes.Equal(bodies[0], block) {
		t.Fatalf("got %d requests; want one whose body is the block appended (%d bytes)", len(bodies), len(block))
	}
	for _, c := range []struct {
		metric string
		want   float64
	}{
		{"sluice_forward_samples_sent_total", 5},
		{"sluice_forward_histograms_sent_total", 1},
		{"sluice_forward_highest_sent_timestamp_seconds", 30},
		{"sluice_forward_queue_bytes", 0},
	} {
		if got, _ := h.metric(c.metric, map[string]string{"remote_name": "t"}); got != c.want {
			t.Errorf("%s = %v, want %v", c.metric, got, c.want)
		}
	}
}

// TestWholeFramesKeepEachSeriesInOrder relays frames that share series
// (each a random subset of a small set, some with two samples of a
// series, some too large to go whole) to a slow receiver with several
// senders. No series may be in two requests in flight at once, its
// samples must arrive in the order appended, none may be lost, and some
// frames must have gone whole and some merged.
func TestWholeFramesKeepEachSeriesInOrder(t *testing.T) {
	t.Parallel()
	const (
		frames   = 300
		pool     = 40
		perSend  = 50
		lanes    = 4
		maxDelay = 2 * time.Millisecond
	)
	var (
		mtx      sync.Mutex
		inFlight = map[string]bool{}
		last     = map[string]int64{}
		got      int
		merged   int
		blocks   = map[string]bool{} // the blocks appended
		whole    int                 // requests whose body is one of them
	)
	rng := rand.New(rand.NewPCG(7, 7))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, req, err := readV1(r)
		if err != nil {
			t.Errorf("bad request: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var names []string
		frameTs := map[int64]bool{}
		mtx.Lock()
		if blocks[string(body)] {
			whole++
		}
		for _, ts := range req.Timeseries {
			name := labelMap(ts.Labels)["series"]
			if inFlight[name] {
				t.Errorf("series %s is in two requests in flight", name)
			}
			names = append(names, name)
			for _, s := range ts.Samples {
				if s.Timestamp <= last[name] {
					t.Errorf("series %s: sample at %d after one at %d", name, s.Timestamp, last[name])
				}
				last[name] = s.Timestamp
				frameTs[s.Timestamp/1000] = true
				got++
			}
		}
		for _, n := range names {
			inFlight[n] = true
		}
		if len(frameTs) > 1 {
			merged++
		}
		mtx.Unlock()
		time.Sleep(time.Duration(rand.Int64N(int64(maxDelay))))
		mtx.Lock()
		for _, n := range names {
			delete(inFlight, n)
		}
		mtx.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	h := newHarness(t)
	cfg := testConfig(srv.URL+"/api/v1/write", "t")
	cfg.QueueConfig.MaxShards = lanes
	cfg.QueueConfig.MaxSamplesPerSend = perSend
	h.apply(nil, cfg)
	want := 0
	for f := range frames {
		req := &prompb.WriteRequest{}
		// Frame f's samples are at f seconds (and f seconds + 1 ms).
		base := int64(f+1) * 1000
		large := f%25 == 0 // 2*pool samples: through the shards
		for s := range pool {
			if !large && rng.IntN(3) != 0 {
				continue
			}
			ts := prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "series", Value: strconv.Itoa(s)}},
				Samples: []prompb.Sample{{Timestamp: base, Value: float64(f)}},
			}
			if large || rng.IntN(5) == 0 {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + 1, Value: float64(f)})
			}
			want += len(ts.Samples)
			req.Timeseries = append(req.Timeseries, ts)
		}
		if len(req.Timeseries) == 0 {
			continue
		}
		raw, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		block := snappy.Encode(nil, raw)
		mtx.Lock()
		blocks[string(block)] = true
		mtx.Unlock()
		h.m.AppendWire(req, raw, block, nil)
		switch {
		case large:
			time.Sleep(20 * maxDelay) // let the shards send it
		case f%10 == 0:
			time.Sleep(maxDelay) // let some frames go out alone
		}
	}
	if err := h.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	mtx.Lock()
	defer mtx.Unlock()
	if got != want {
		t.Errorf("%d samples arrived, want %d", got, want)
	}
	if whole == 0 || merged == 0 {
		t.Errorf("%d requests were a frame as appended, %d held several frames; want some of each", whole, merged)
	}
	t.Logf("%d samples, %d whole frames, %d requests of several frames", got, whole, merged)
}

// TestWholeFramesWaitForTheShards: once frames went through the shards
// (here: read back from disk after a restart, so not fresh), a fresh
// frame of the same series is sent only after them.
func TestWholeFramesWaitForTheShards(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	down := newHarnessIn(t, dir)
	down.apply(nil, testConfig(closedPort(t), "t"))
	for w := range 5 {
		appendWire(t, down.m, window(int64(w+1)*1000, 3))
	}
	crash(down.m)

	var (
		mtx  sync.Mutex
		last = map[string]int64{}
		bad  []string
		n    int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, req, err := readV1(r)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		time.Sleep(time.Millisecond)
		mtx.Lock()
		for _, ts := range req.Timeseries {
			name := labelMap(ts.Labels)["series"]
			for _, s := range ts.Samples {
				if s.Timestamp <= last[name] {
					bad = append(bad, fmt.Sprintf("series %s: %d after %d", name, s.Timestamp, last[name]))
				}
				last[name] = s.Timestamp
				n++
			}
		}
		mtx.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	up := newHarnessIn(t, dir)
	up.apply(nil, testConfig(srv.URL+"/api/v1/write", "t"))
	for w := 5; w < 10; w++ {
		appendWire(t, up.m, window(int64(w+1)*1000, 3))
	}
	if err := up.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	mtx.Lock()
	defer mtx.Unlock()
	if n != 30 || len(bad) > 0 {
		t.Errorf("%d samples arrived, want 30; out of order: %v", n, bad)
	}
}

// FuzzConcatBlocks: snappy blocks joined by concatBlocks decode to their
// contents one after the other.
func FuzzConcatBlocks(f *testing.F) {
	f.Add([]byte("abcabcabcabc"), []byte("abcabc"), []byte{})
	f.Add(bytes.Repeat([]byte("x"), 70_000), []byte("y"), bytes.Repeat([]byte("xy"), 40_000))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		frames := []wholeFrame{{block: snappy.Encode(nil, a)}, {block: snappy.Encode(nil, b)}, {block: snappy.Encode(nil, c)}}
		got, err := snappy.Decode(nil, concatBlocks([]byte("reused"), frames)[len("reused"):])
		if err != nil {
			t.Fatal(err)
		}
		if want := slices.Concat(a, b, c); !bytes.Equal(got, want) {
			t.Fatalf("decoded %d bytes, want the %d joined", len(got), len(want))
		}
	})
}

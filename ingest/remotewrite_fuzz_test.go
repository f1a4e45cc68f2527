package ingest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
)

// fuzzRelabel adds clear_mode to series named agg_* and drops drop_*, so
// that fuzzing reaches every path.
func fuzzRelabel() []*relabel.Config {
	addMode := relabel.DefaultRelabelConfig
	addMode.SourceLabels = model.LabelNames{"__name__"}
	addMode.Regex = relabel.MustNewRegexp("agg_.*")
	addMode.TargetLabel, addMode.Replacement = "clear_mode", "sum"
	drop := relabel.DefaultRelabelConfig
	drop.SourceLabels = model.LabelNames{"__name__"}
	drop.Regex = relabel.MustNewRegexp("drop_.*")
	drop.Action = relabel.Drop
	cfgs := []*relabel.Config{&addMode, &drop}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			panic(err)
		}
	}
	return cfgs
}

func fuzzLimits() configs.LimitsConfig {
	l := configs.Default().Limits
	l.MaxDecompressedBodyBytes = 1 << 20
	return l
}

// fuzzRemoteWrite decodes raw (snappy-compressed first if compress) as a
// request of version v and checks what a successful decode promises.
func fuzzRemoteWrite(t *testing.T, v rwVersion, raw []byte, compress, relabelOn bool) {
	body := raw
	if compress {
		body = snappy.Encode(nil, raw)
	}
	var rcs []*relabel.Config
	if relabelOn {
		rcs = fuzzRelabel()
	}
	if data, err := snappy.Decode(nil, body); err == nil {
		diffDecode(t, v, data)
	}
	var pool bufPool
	dec, err := decodeRemoteWrite(&pool, v, body, fuzzLimits(), rcs, newMetadataCache())
	defer dec.release()
	if err != nil {
		if err.msg == "" || err.reason == "" || err.code < 400 || err.code > 415 {
			t.Fatalf("bad error: %+v", err)
		}
		return
	}
	if dec == nil {
		t.Fatal("nil result without an error")
	}
	if len(dec.write.Pushes) != len(dec.pushFloats) || len(dec.write.Pushes) != len(dec.pushHists) {
		t.Fatalf("%d pushes, %d/%d counts", len(dec.write.Pushes), len(dec.pushFloats), len(dec.pushHists))
	}
	floats, hists := 0, 0
	if r := dec.write.Relay; r != nil {
		for _, ts := range r.Timeseries {
			if len(ts.Samples)+len(ts.Histograms) == 0 {
				t.Fatalf("relayed series without samples: %+v", ts)
			}
			hasName := false
			for i, l := range ts.Labels {
				if i > 0 && l.Name <= ts.Labels[i-1].Name {
					t.Fatalf("relayed labels not strictly sorted: %+v", ts.Labels)
				}
				if l.Name == aggregate.ModeLabel || l.Name == aggregate.ModeLabelAlias {
					t.Fatalf("relayed series carries %s: %+v", l.Name, ts.Labels)
				}
				if l.Value == "" {
					t.Fatalf("relayed series with an empty label: %+v", ts.Labels)
				}
				hasName = hasName || (l.Name == model.MetricNameLabel && l.Value != "")
			}
			if !hasName {
				t.Fatalf("relayed series without a name: %+v", ts.Labels)
			}
			floats += len(ts.Samples)
			hists += len(ts.Histograms)
		}
		// What is relayed goes into the write-ahead log as a snappy block
		// of a protobuf: it must decode to the relay.
		pb, err := snappy.Decode(nil, dec.write.RelaySnappy)
		if err != nil {
			t.Fatalf("relay record block: %v", err)
		}
		var back prompb.WriteRequest
		if err := back.Unmarshal(pb); err != nil {
			t.Fatalf("relay record does not unmarshal: %v", err)
		}
		if d := relayDiff(r, &back); d != "" {
			t.Fatalf("relay record differs from the relay: %s", d)
		}
		// The forward queues send series' labels from RelayRaw's bytes,
		// or the block as it is: it is the block uncompressed, each
		// series' labels are one run of Label messages as the generated
		// code writes them, and it holds nothing Sluice does not forward
		// (exemplars, unknown fields).
		if !bytes.Equal(pb, dec.write.RelayRaw) {
			t.Fatalf("RelayRaw (%d bytes) is not the record block uncompressed (%d bytes)", len(dec.write.RelayRaw), len(pb))
		}
		checkWireLabels(t, pb)
		checkForwardable(t, pb)
		checkRuns(t, r, pb, dec.write.RelayRuns)
	}
	if floats != dec.relayFloats || hists != dec.relayHists {
		t.Fatalf("relay counts %d/%d, series hold %d/%d", dec.relayFloats, dec.relayHists, floats, hists)
	}
	for i, p := range dec.write.Pushes {
		p.Group.Range(func(l labels.Label) {
			if l.Name != "job" && l.Name != "instance" {
				t.Fatalf("push %d has grouping label %q", i, l.Name)
			}
		})
		n := 0
		for _, f := range p.Families {
			n += len(f.GetMetric())
		}
		if n != dec.pushFloats[i]+dec.pushHists[i] || n == 0 {
			t.Fatalf("push %d: %d series, counted %d+%d", i, n, dec.pushFloats[i], dec.pushHists[i])
		}
	}
}

// checkWireLabels fails t unless every TimeSeries in the WriteRequest raw
// has its labels as one run of Label messages each byte for byte what
// the generated code writes for its name and value.
func checkWireLabels(t *testing.T, raw []byte) {
	t.Helper()
	for _, ts := range pbFields(t, raw, 1) {
		run, ended := false, false
		for _, f := range pbAllFields(t, ts) {
			if f.num != 1 {
				ended = ended || run
				continue
			}
			if ended {
				t.Fatalf("series labels not in one run: % x", ts)
			}
			run = true
			var l prompb.Label
			if err := l.Unmarshal(f.val); err != nil {
				t.Fatalf("label: %v", err)
			}
			want, err := l.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, f.val) {
				t.Fatalf("label % x is not what the generated code writes (% x)", f.val, want)
			}
		}
	}
}

// checkRuns fails t unless runs, if set, are where raw holds each series'
// labels, encoded as the generated code encodes them (the bytes the
// forward queues key series by).
func checkRuns(t *testing.T, r *prompb.WriteRequest, raw []byte, runs []int32) {
	t.Helper()
	if runs == nil {
		return
	}
	if len(runs) != 2*len(r.Timeseries) {
		t.Fatalf("%d run offsets for %d series", len(runs), len(r.Timeseries))
	}
	for i, ts := range r.Timeseries {
		var want []byte
		for _, l := range ts.Labels {
			b, err := l.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want = append(binary.AppendUvarint(append(want, 0x0a), uint64(len(b))), b...)
		}
		s, e := runs[2*i], runs[2*i+1]
		if s < 0 || s > e || int(e) > len(raw) || !bytes.Equal(raw[s:e], want) {
			t.Fatalf("series %d: run [%d, %d) of %d bytes is not its labels % x", i, s, e, len(raw), want)
		}
	}
}

// checkForwardable fails t unless the WriteRequest raw holds only series
// (of labels, samples and histograms) and metadata.
func checkForwardable(t *testing.T, raw []byte) {
	t.Helper()
	for _, f := range pbAllFields(t, raw) {
		if f.num != 1 && f.num != 3 {
			t.Fatalf("relay holds WriteRequest field %d", f.num)
		}
		if f.num != 1 {
			continue
		}
		for _, g := range pbAllFields(t, f.val) {
			if g.num != 1 && g.num != 2 && g.num != 4 {
				t.Fatalf("relayed series holds TimeSeries field %d (3: exemplars)", g.num)
			}
		}
	}
}

type pbTestField struct {
	num int
	val []byte
}

// pbAllFields splits a message into its fields (length-delimited ones
// with their contents; others with nil).
func pbAllFields(t *testing.T, b []byte) []pbTestField {
	t.Helper()
	var out []pbTestField
	for i := 0; i < len(b); {
		key, k := binary.Uvarint(b[i:])
		if k <= 0 {
			t.Fatalf("bad key at %d", i)
		}
		i += k
		f := pbTestField{num: int(key >> 3)}
		switch key & 7 {
		case 0:
			_, k := binary.Uvarint(b[i:])
			if k <= 0 {
				t.Fatalf("bad varint at %d", i)
			}
			i += k
		case 1:
			i += 8
		case 2:
			n, k := binary.Uvarint(b[i:])
			if k <= 0 || n > uint64(len(b)-i-k) {
				t.Fatalf("bad length at %d", i)
			}
			f.val = b[i+k : i+k+int(n)]
			i += k + int(n)
		case 5:
			i += 4
		default:
			t.Fatalf("wire type %d at %d", key&7, i)
		}
		out = append(out, f)
	}
	return out
}

// pbFields returns the contents of the length-delimited fields num of b.
func pbFields(t *testing.T, b []byte, num int) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range pbAllFields(t, b) {
		if f.num == num && f.val != nil {
			out = append(out, f.val)
		}
	}
	return out
}

// FuzzDecodeRemoteWriteV1 feeds arbitrary prometheus.WriteRequest bodies
// (mostly snappy-compressed, so that the protobuf decoder is reached) to
// the remote_write decoder. Seeds: testdata/fuzz/FuzzDecodeRemoteWriteV1.
func FuzzDecodeRemoteWriteV1(f *testing.F) {
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: lbls("__name__", "up", "job", "a"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
			{Labels: lbls("__name__", "agg_total", "job", "a"), Samples: []prompb.Sample{{Value: 2, Timestamp: 2}, {Value: 3, Timestamp: 1}}},
			{Labels: lbls("__name__", "h", "clear_mode", "sum"), Histograms: []prompb.Histogram{prompb.FromIntHistogram(1, testHistogram())}},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "agg_total"}},
	}
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, true, true)
	f.Add(b, true, false)
	f.Add(snappy.Encode(nil, b), false, false)
	// Relayed as received: the body stands for the relay.
	relayOnly, err := (&prompb.WriteRequest{Timeseries: req.Timeseries[:1]}).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(relayOnly, true, false)
	f.Fuzz(func(t *testing.T, raw []byte, compress, relabelOn bool) {
		fuzzRemoteWrite(t, rwV1, raw, compress, relabelOn)
	})
}

// FuzzDecodeRemoteWriteV2 is FuzzDecodeRemoteWriteV1 for
// io.prometheus.write.v2.Request. Seeds: testdata/fuzz/FuzzDecodeRemoteWriteV2.
func FuzzDecodeRemoteWriteV2(f *testing.F) {
	req := newRW2().
		add([]string{"__name__", "up", "job", "a"}, writev2.Metadata_METRIC_TYPE_GAUGE, "Up.", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "agg_total", "job", "a"}, writev2.Metadata_METRIC_TYPE_COUNTER, "", []writev2.Sample{{Value: 1, Timestamp: 1}}, nil).
		add([]string{"__name__", "h", "clear_mode", "sum"}, writev2.Metadata_METRIC_TYPE_HISTOGRAM, "", nil,
			[]writev2.Histogram{writev2.FromIntHistogram(0, 1, testHistogram())}).
		build()
	b, err := req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, true, true)
	f.Add(b, true, false)
	f.Add(snappy.Encode(nil, b), false, false)
	f.Fuzz(func(t *testing.T, raw []byte, compress, relabelOn bool) {
		fuzzRemoteWrite(t, rwV2, raw, compress, relabelOn)
	})
}

// relayDiff compares the series and metadata of two relays (exemplars and
// unknown fields aside).
func relayDiff(a, b *prompb.WriteRequest) string {
	if len(a.Timeseries) != len(b.Timeseries) {
		return fmt.Sprintf("%d series, want %d", len(b.Timeseries), len(a.Timeseries))
	}
	for i := range a.Timeseries {
		if d := seriesDiff(&a.Timeseries[i], &b.Timeseries[i]); d != "" {
			return fmt.Sprintf("timeseries[%d]: %s", i, d)
		}
	}
	return metadataDiff(a.Metadata, b.Metadata)
}

func seriesDiff(a, b *prompb.TimeSeries) string {
	if !slices.EqualFunc(a.Labels, b.Labels, func(x, y prompb.Label) bool { return x.Name == y.Name && x.Value == y.Value }) {
		return fmt.Sprintf("labels %v, want %v", b.Labels, a.Labels)
	}
	// Bit for bit (NaN payloads included), except that -0 and +0 are
	// equal: the generated code leaves a zero value out, so a relay
	// encoded again carries -0 as +0.
	if !slices.EqualFunc(a.Samples, b.Samples, func(x, y prompb.Sample) bool {
		return x.Timestamp == y.Timestamp && (math.Float64bits(x.Value) == math.Float64bits(y.Value) || x.Value == 0 && y.Value == 0)
	}) {
		return fmt.Sprintf("samples %v, want %v", b.Samples, a.Samples)
	}
	if len(a.Histograms) != len(b.Histograms) {
		return fmt.Sprintf("%d histograms, want %d", len(b.Histograms), len(a.Histograms))
	}
	for i := range a.Histograms {
		x, y := a.Histograms[i], b.Histograms[i]
		x.XXX_unrecognized, y.XXX_unrecognized = nil, nil
		xb, _ := x.Marshal()
		yb, _ := y.Marshal()
		if !bytes.Equal(xb, yb) {
			return fmt.Sprintf("histogram %d: %v, want %v", i, y, x)
		}
	}
	return ""
}

func metadataDiff(a, b []prompb.MetricMetadata) string {
	if !slices.EqualFunc(a, b, func(x, y prompb.MetricMetadata) bool {
		return x.Type == y.Type && x.MetricFamilyName == y.MetricFamilyName && x.Help == y.Help && x.Unit == y.Unit
	}) {
		return fmt.Sprintf("metadata %v, want %v", b, a)
	}
	return ""
}

// diffDecode checks the pooled decoder against the generated code on an
// uncompressed body: both accept it or both reject it, and when they
// accept it they yield the same series, samples, histograms, exemplar
// count and metadata. The pooled request first decodes another body, so
// that reuse is exercised too.
func diffDecode(t *testing.T, v rwVersion, data []byte) {
	t.Helper()
	var r rwRequest
	warm, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "warm", "a", "b"),
		Samples: []prompb.Sample{{Value: 1, Timestamp: 2}}}}}).Marshal()
	if err != nil || r.parseV1(warm) != nil {
		t.Fatalf("warm-up request: %v", err)
	}
	r.reset()
	if v == rwV1 {
		var want prompb.WriteRequest
		werr := want.Unmarshal(data)
		gerr := r.parseV1(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("generated code: %v; pooled decoder: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		ex := 0
		for _, ts := range want.Timeseries {
			ex += len(ts.Exemplars)
		}
		if ex != r.exemplars {
			t.Fatalf("%d exemplars, want %d", r.exemplars, ex)
		}
		if d := relayDiff(&want, &r.v1); d != "" {
			t.Fatal(d)
		}
		return
	}
	var want writev2.Request
	werr := want.Unmarshal(data)
	gerr := r.parseV2(data)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("generated code: %v; pooled decoder: %v", werr, gerr)
	}
	if werr != nil {
		return
	}
	if !slices.Equal(want.Symbols, r.v2.Symbols) {
		t.Fatalf("symbols %q, want %q", r.v2.Symbols, want.Symbols)
	}
	if len(want.Timeseries) != len(r.v2.Timeseries) {
		t.Fatalf("%d series, want %d", len(r.v2.Timeseries), len(want.Timeseries))
	}
	ex := 0
	for i := range want.Timeseries {
		w, g := &want.Timeseries[i], &r.v2.Timeseries[i]
		ex += len(w.Exemplars)
		if !slices.Equal(w.LabelsRefs, g.LabelsRefs) {
			t.Fatalf("timeseries[%d]: labels_refs %v, want %v", i, g.LabelsRefs, w.LabelsRefs)
		}
		if !slices.EqualFunc(w.Samples, g.Samples, func(x, y writev2.Sample) bool {
			return x.Timestamp == y.Timestamp && x.StartTimestamp == y.StartTimestamp && math.Float64bits(x.Value) == math.Float64bits(y.Value)
		}) {
			t.Fatalf("timeseries[%d]: samples %v, want %v", i, g.Samples, w.Samples)
		}
		if w.Metadata.Type != g.Metadata.Type || w.Metadata.HelpRef != g.Metadata.HelpRef || w.Metadata.UnitRef != g.Metadata.UnitRef {
			t.Fatalf("timeseries[%d]: metadata %v, want %v", i, g.Metadata, w.Metadata)
		}
		if len(w.Histograms) != len(g.Histograms) {
			t.Fatalf("timeseries[%d]: %d histograms, want %d", i, len(g.Histograms), len(w.Histograms))
		}
		for k := range w.Histograms {
			x, y := w.Histograms[k], g.Histograms[k]
			x.XXX_unrecognized, y.XXX_unrecognized = nil, nil
			xb, _ := x.Marshal()
			yb, _ := y.Marshal()
			if !bytes.Equal(xb, yb) {
				t.Fatalf("timeseries[%d]: histogram %d differs", i, k)
			}
		}
	}
	if ex != r.exemplars {
		t.Fatalf("%d exemplars, want %d", r.exemplars, ex)
	}
}

// TestRelayBodyKeptOnlyWithoutExemplars: a relayed request in canonical
// form is relayed as the body received (the forward queues may send it
// as it is), unless it carries exemplars, which Sluice does not forward:
// then the relay is encoded again, without them.
func TestRelayBodyKeptOnlyWithoutExemplars(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sample    prompb.Sample
		exemplars bool
	}{
		{name: "without exemplars", sample: prompb.Sample{Value: 1, Timestamp: 1}},
		{name: "with exemplars", sample: prompb.Sample{Value: 1, Timestamp: 1}, exemplars: true},
		// The generated code leaves zero fields out; such samples are
		// as it writes them too.
		{name: "value zero", sample: prompb.Sample{Value: 0, Timestamp: 1}},
		{name: "timestamp zero", sample: prompb.Sample{Value: 2, Timestamp: 0}},
		{name: "both zero", sample: prompb.Sample{}},
		{name: "negative timestamp", sample: prompb.Sample{Value: 2, Timestamp: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
				{Labels: lbls("__name__", "up", "job", "a"), Samples: []prompb.Sample{tc.sample}},
			}}
			if tc.exemplars {
				req.Timeseries[0].Exemplars = []prompb.Exemplar{{Labels: lbls("trace_id", "abc"), Value: 1, Timestamp: 1}}
			}
			raw, err := req.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			dec, same := decodeRelayV1(t, raw)
			if same == tc.exemplars {
				t.Errorf("relay block is the body received: %v, want %v", same, !tc.exemplars)
			}
			checkForwardable(t, dec.write.RelayRaw)
			if got := dec.write.Relay.Timeseries[0].Samples; len(got) != 1 || got[0].Timestamp != tc.sample.Timestamp || got[0].Value != tc.sample.Value {
				t.Errorf("relayed samples %+v, want %+v", got, tc.sample)
			}
		})
	}
}

// TestRelayBodyReencodedWhenNotCanonical: a body that gogo decodes but the
// generated code would not write (a long field key, a length prefix
// longer than needed, a key with bits past the 64th) is not kept as
// received; the relay is encoded again, in a form the forward queues
// read.
func TestRelayBodyReencodedWhenNotCanonical(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: lbls("__name__", "up", "job", "a"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: lbls("__name__", "up", "job", "b"), Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}},
	}}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 0x0a || raw[1] >= 0x80 {
		t.Fatalf("unexpected encoding % x", raw[:2])
	}
	n := raw[1]
	for _, tc := range []struct {
		name string
		head []byte // replaces the first series' key and length
		kept bool
	}{
		{"as generated", []byte{0x0a, n}, true},
		{"two-byte key", []byte{0x8a, 0x00, n}, false},
		{"key of field 1<<32|1", []byte{0x8a, 0x80, 0x80, 0x80, 0x80, 0x01, n}, false},
		{"key with bits past the 64th", []byte{0x8a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, n}, false},
		{"two-byte length", []byte{0x0a, n | 0x80, 0x00}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := append(slices.Clone(tc.head), raw[2:]...)
			var back prompb.WriteRequest
			if err := back.Unmarshal(b); err != nil || len(back.Timeseries) != 2 {
				t.Fatalf("the generated code does not read the body: %v, %d series", err, len(back.Timeseries))
			}
			dec, same := decodeRelayV1(t, b)
			if same != tc.kept {
				t.Errorf("relay block is the body received: %v, want %v", same, tc.kept)
			}
			checkForwardable(t, dec.write.RelayRaw)
			checkRuns(t, dec.write.Relay, dec.write.RelayRaw, dec.write.RelayRuns)
			if len(dec.write.Relay.Timeseries) != 2 {
				t.Errorf("relayed %d series, want 2", len(dec.write.Relay.Timeseries))
			}
		})
	}
}

// decodeRelayV1 decodes raw, a Remote-Write 1.0 request, snappy-compressed
// as a sender sends it, and reports whether the relay block is that body
// itself, the request as received, rather than an encoding of the relay
// (which, for a body the generated code wrote, may be byte for byte the
// same).
func decodeRelayV1(t *testing.T, raw []byte) (*rwDecoded, bool) {
	t.Helper()
	body := snappy.Encode(nil, raw)
	var pool bufPool
	dec, rerr := decodeRemoteWrite(&pool, rwV1, body, fuzzLimits(), nil, newMetadataCache())
	if rerr != nil {
		t.Fatal(rerr.msg)
	}
	t.Cleanup(dec.release)
	kept := unsafe.SliceData(dec.write.RelaySnappy) == unsafe.SliceData(body) && len(dec.write.RelaySnappy) == len(body)
	return dec, kept
}

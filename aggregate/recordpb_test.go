package aggregate

import (
	"bytes"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// familyEncodingSeeds are text exposition bodies covering every shape the
// hand encoder handles, and some it hands to the protobuf marshaller.
var familyEncodingSeeds = []string{
	"# HELP c_total A counter.\n# TYPE c_total counter\nc_total{clear_mode=\"sum\",series=\"1\"} 3\nc_total{series=\"2\"} 4 1700000000000\n",
	"# TYPE g gauge\ng -1.5e-300\ng{a=\"\"} NaN\n",
	"u 1\nu{x=\"y\"} +Inf -5\n",
	"# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 4.5\nh_count 3\n",
	"# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\nh_bucket{le=\"+Inf\"} 2.5\nh_count 2.5\n",
	"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.99\"} 2\ns_sum 10\ns_count 4\n",
	"# HELP long " + strings.Repeat("x", 300) + "\n# TYPE long gauge\nlong{l=\"" + strings.Repeat("v", 200) + "\"} 1\n",
}

// TestFamilyEncodingMatchesProtobuf checks that the hand encoder writes
// exactly what protodelim.MarshalTo writes, for the shapes it covers and
// for native histograms and exemplars, which it hands on.
func TestFamilyEncodingMatchesProtobuf(t *testing.T) {
	fams := nativeFamilies(t)
	for _, seed := range familyEncodingSeeds {
		fams = append(fams, parseFamilies(t, seed)...)
	}
	fams = append(fams, &dto.MetricFamily{Name: ptr("ex_total"), Type: dto.MetricType_COUNTER.Enum(), Metric: []*dto.Metric{{
		Counter: &dto.Counter{Value: ptr(1.0), Exemplar: &dto.Exemplar{Value: ptr(1.0), Label: []*dto.LabelPair{{Name: ptr("trace_id"), Value: ptr("a")}}}},
	}}})
	for _, f := range fams {
		t.Run(f.GetName(), func(t *testing.T) { checkFamilyEncoding(t, f) })
	}
}

// FuzzFamilyEncoding checks the hand encoder against protodelim.MarshalTo
// on whatever the text parser or the protobuf decoder makes of the input.
func FuzzFamilyEncoding(f *testing.F) {
	for _, s := range familyEncodingSeeds {
		f.Add([]byte(s))
	}
	for _, fam := range nativeFamilies(f) {
		b, err := proto.Marshal(fam)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var fams []*dto.MetricFamily
		p := expfmt.NewTextParser(model.LegacyValidation)
		if byName, err := p.TextToMetricFamilies(bytes.NewReader(in)); err == nil {
			for _, fam := range byName {
				fams = append(fams, fam)
			}
		}
		var fam dto.MetricFamily
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(in, &fam); err == nil {
			fams = append(fams, &fam)
		}
		for _, fam := range fams {
			checkFamilyEncoding(t, fam)
		}
	})
}

func checkFamilyEncoding(t *testing.T, f *dto.MetricFamily) {
	t.Helper()
	var want bytes.Buffer
	_, wantErr := protodelim.MarshalTo(&want, f)
	got, err := appendFamilyDelimited([]byte("prefix"), f)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("error %v, protobuf's %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("what was in the buffer before was changed: %q", got)
	}
	if got := got[len("prefix"):]; !bytes.Equal(got, want.Bytes()) {
		var back dto.MetricFamily
		err := protodelim.UnmarshalFrom(bytes.NewReader(got), &back)
		t.Fatalf("encoding differs from protobuf's (decodes: %v, equal: %v)\n got %x\nwant %x", err, proto.Equal(&back, f), got, want.Bytes())
	}
}

func parseFamilies(t testing.TB, text string) []*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	byName, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse %q: %v", text, err)
	}
	var out []*dto.MetricFamily
	for _, f := range byName {
		out = append(out, f)
	}
	return out
}

package aggregate

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-metrics/sluice/configs"
)

func TestOpRoundTrip(t *testing.T) {
	at := time.Unix(1_700_000_000, 123456789)
	fams := nativeFamilies(t)
	fams = append(fams, &dto.MetricFamily{Name: ptr("c_total"), Type: dto.MetricType_COUNTER.Enum(),
		Metric: []*dto.Metric{{Label: []*dto.LabelPair{{Name: ptr("clear_mode"), Value: ptr("sum")}}, Counter: &dto.Counter{Value: ptr(2.5)}}}})
	cases := []struct {
		name string
		op   Op
	}{
		{"push", Op{Type: RecordPush, Time: at, Push: &Push{Group: groupLabels("job=f,env=prod"), Method: MethodPut, Families: fams,
			Modes: []configs.Mode{{Kind: configs.ModeSum}, {Kind: configs.ModeWindowQuantile, Window: time.Minute, Quantile: 0.99, Percent: 99}}, Semantics: ptr(SemanticsPushgateway)}}},
		{"push_body", Op{Type: RecordPush, Time: at, Push: &Push{Group: groupLabels("job=f"), Method: MethodPost,
			Modes: []configs.Mode{{Kind: configs.ModeSum}}, Body: []byte("c_total{clear_mode=\"sum\"} 2.5\n"), BodyFormat: BodyText}}},
		{"push_type_hint", Op{Type: RecordPush, Time: at, Push: &Push{Group: groupLabels("job=f"), Method: MethodPost, Families: fams[len(fams)-1:],
			Modes: []configs.Mode{{Kind: configs.ModeSum}}, Semantics: ptr(SemanticsAggregate), TypeHint: true}}},
		{"push_empty_group_and_body", Op{Type: RecordPush, Time: at, Push: &Push{Group: labels.EmptyLabels(), Method: MethodPost}}},
		{"push_empty_label_value", Op{Type: RecordPush, Time: at, Push: &Push{Group: groupLabels("job=f,e="), Method: MethodPost}}},
		{"delete", Op{Type: RecordDelete, Time: at, Group: groupLabels("job=f")}},
		{"wipe", Op{Type: RecordWipe, Time: at}},
		{"relay", Op{Type: RecordRelay, Time: at, Relay: relayReq("temp", 1_700_000_000_123, 21.5)}},
		{"expire", Op{Type: RecordExpire, Time: at, ExpiredGroups: []labels.Labels{groupLabels("job=a"), groupLabels("job=b,i=1")}, ExpiredSeries: []string{"k1", "", "k\x003"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeOp(&tc.op)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeOp(tc.op.Type, b)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Time.Equal(tc.op.Time) || got.Type != tc.op.Type {
				t.Fatalf("header: %v %d", got.Time, got.Type)
			}
			if tc.op.Push != nil {
				if labels.Compare(got.Push.Group, tc.op.Push.Group) != 0 || got.Push.Method != tc.op.Push.Method || len(got.Push.Families) != len(tc.op.Push.Families) ||
					got.Push.TypeHint != tc.op.Push.TypeHint {
					t.Fatalf("push: %+v", got.Push)
				}
				if len(got.Push.Modes) != len(tc.op.Push.Modes) || (tc.op.Push.Semantics != nil && *got.Push.Semantics != *tc.op.Push.Semantics) {
					t.Fatalf("modes %v semantics %v", got.Push.Modes, *got.Push.Semantics)
				}
				for i := range got.Push.Modes {
					if got.Push.Modes[i] != tc.op.Push.Modes[i] {
						t.Fatalf("mode %d: %v != %v", i, got.Push.Modes[i], tc.op.Push.Modes[i])
					}
				}
				if got.Push.Group.String() != tc.op.Push.Group.String() {
					t.Fatalf("group %s != %s", got.Push.Group, tc.op.Push.Group)
				}
				for i := range got.Push.Families {
					if !proto.Equal(got.Push.Families[i], tc.op.Push.Families[i]) {
						t.Fatalf("family %d differs", i)
					}
				}
				if !bytes.Equal(got.Push.Body, tc.op.Push.Body) || got.Push.BodyFormat != tc.op.Push.BodyFormat {
					t.Fatalf("body %q format %d, want %q format %d", got.Push.Body, got.Push.BodyFormat, tc.op.Push.Body, tc.op.Push.BodyFormat)
				}
			}
			if labels.Compare(got.Group, tc.op.Group) != 0 || len(got.ExpiredGroups) != len(tc.op.ExpiredGroups) || len(got.ExpiredSeries) != len(tc.op.ExpiredSeries) {
				t.Fatalf("got %+v", got)
			}
			for i := range got.ExpiredSeries {
				if got.ExpiredSeries[i] != tc.op.ExpiredSeries[i] {
					t.Fatalf("series key %d: %q", i, got.ExpiredSeries[i])
				}
			}
			if tc.op.Relay != nil && !reflect.DeepEqual(got.Relay, tc.op.Relay) {
				t.Fatalf("relay: %+v", got.Relay)
			}
			// Every strict prefix is an error, never a panic or a silent success
			// (a push body may end at any family boundary, and a relay's
			// protobuf at any field boundary, so only the other records are
			// checked for that).
			for n := 0; n < len(b); n++ {
				_, err := DecodeOp(tc.op.Type, b[:n])
				if err == nil && tc.op.Type != RecordPush && tc.op.Type != RecordRelay && n < len(b) {
					t.Fatalf("prefix of %d/%d bytes decoded without error", n, len(b))
				}
			}
		})
	}
}

// TestPushBodyRecord: a push with its body attached is recorded as the
// body, not its families; bad body formats do not decode.
func TestPushBodyRecord(t *testing.T) {
	fams, err := textBody(BodyText, []byte("a 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("# a body the families are not encoded from\na 1\n")
	p := &Push{Group: groupLabels("job=f"), Method: MethodPut, Families: fams, Modes: []configs.Mode{{Kind: configs.ModeSum}},
		Semantics: ptr(SemanticsPushgateway), Body: body, BodyFormat: BodyProtoDelimited}
	rec, err := EncodeOp(&Op{Type: RecordPush, Time: time.Unix(1, 0), Push: p})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(rec, append([]byte{byte(BodyProtoDelimited)}, body...)) {
		t.Fatalf("record %q does not end with the format and the body", rec)
	}
	op, err := DecodeOp(RecordPush, rec)
	if err != nil {
		t.Fatal(err)
	}
	if op.Push.Method != MethodPut || *op.Push.Semantics != SemanticsPushgateway || len(op.Push.Families) != 0 {
		t.Errorf("decoded %+v: want PUT, Pushgateway semantics, no families", op.Push)
	}
	for _, tc := range []struct {
		name string
		rec  []byte
		want string
	}{
		{name: "unknown format", rec: append(rec[:len(rec)-len(body)-1:len(rec)-len(body)-1], 9), want: "unknown body format 9"},
		{name: "format missing", rec: rec[: len(rec)-len(body)-1 : len(rec)-len(body)-1], want: "decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeOp(RecordPush, tc.rec); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// Without a format the families are recorded as before.
	p.BodyFormat = 0
	rec, err = EncodeOp(&Op{Type: RecordPush, Time: time.Unix(1, 0), Push: p})
	if err != nil {
		t.Fatal(err)
	}
	if op, err = DecodeOp(RecordPush, rec); err != nil || len(op.Push.Families) != 1 || op.Push.Body != nil {
		t.Errorf("without a format: %+v, %v; want the families", op, err)
	}
}

func FuzzDecodeOp(f *testing.F) {
	at := time.Unix(1_700_000_000, 0)
	for _, op := range []Op{
		{Type: RecordPush, Time: at, Push: &Push{Group: groupLabels("job=f"), Families: []*dto.MetricFamily{{Name: ptr("x"), Type: dto.MetricType_GAUGE.Enum(), Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: ptr(1.0)}}}}}}},
		{Type: RecordDelete, Time: at, Group: groupLabels("job=f")},
		{Type: RecordExpire, Time: at, ExpiredGroups: []labels.Labels{groupLabels("job=a")}, ExpiredSeries: []string{"k"}},
		{Type: RecordRelay, Time: at, Relay: relayReq("temp", 1, 2)},
	} {
		b, _ := EncodeOp(&op)
		f.Add(op.Type, b)
	}
	f.Fuzz(func(t *testing.T, typ uint8, b []byte) {
		op, err := DecodeOp(typ, b)
		if err != nil {
			return
		}
		again, err := EncodeOp(op)
		if err != nil {
			t.Fatalf("decoded op does not encode: %v", err)
		}
		if _, err := DecodeOp(typ, again); err != nil {
			t.Fatalf("re-encoded op does not decode: %v", err)
		}
	})
}

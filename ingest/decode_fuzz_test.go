package ingest

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeBody feeds arbitrary content types, encodings and bodies to
// DecodeBody. Besides the f.Add seeds below, the seed corpus in
// testdata/fuzz/FuzzDecodeBody covers text, OpenMetrics, protobuf, gzip and
// snappy bodies.
func FuzzDecodeBody(f *testing.F) {
	f.Add(contentTypeText, "", []byte("# TYPE c counter\nc{a=\"b\"} 1 1700000000000\n"))
	f.Add(contentTypeText, "", []byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"))
	f.Add(contentTypeOpenMetrics, "", []byte("# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_count 2\ns_sum 3\ns_created 1700000000\n# EOF\n"))
	f.Add("", "", []byte("# TYPE st stateset\nst{st=\"a\"} 1\n# TYPE i info\ni_info{v=\"1\"} 1\n# EOF\n"))
	f.Add(contentTypeProto, "", encodeDelimited(f, familyFromText(f, `name: "g" type: GAUGE metric { gauge { value: 1 } }`)))
	f.Add("", "gzip", gzipped(f, []byte("a 1\n")))
	f.Add("", "snappy", snappyFramed(f, []byte("# TYPE e counter\ne_total 1\n# EOF\n")))
	f.Add("", "br", []byte("a 1\n"))

	f.Fuzz(func(t *testing.T, contentType, contentEncoding string, body []byte) {
		fams, err := DecodeBody(contentType, contentEncoding, body, BodyLimits{MaxDecompressedBytes: 1 << 20})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error with an empty message")
			}
			if fams != nil {
				t.Fatalf("got %d families along with error %v", len(fams), err)
			}
			return
		}
		for i, mf := range fams {
			checkFuzzFamily(t, i, mf)
		}
		if len(body) == 0 && len(fams) != 0 {
			t.Fatalf("empty body gave %d families", len(fams))
		}
		checkRecordedBody(t, contentType, contentEncoding, body, fams)
	})
}

// checkRecordedBody checks that the source DecodePush reports for body
// (what the write-ahead log records) decodes again to fams, which DecodeBody
// returned for it: recovery must rebuild exactly the push that was
// acknowledged.
func checkRecordedBody(t *testing.T, contentType, contentEncoding string, body []byte, fams []*dto.MetricFamily) {
	t.Helper()
	var live, replay Decoder
	got, src, err := live.DecodePush(contentType, contentEncoding, body, BodyLimits{MaxDecompressedBytes: 1 << 20})
	if err != nil {
		t.Fatalf("DecodePush failed where DecodeBody did not: %v", err)
	}
	if len(got) != len(fams) {
		t.Fatalf("DecodePush gave %d families, DecodeBody %d", len(got), len(fams))
	}
	if len(src.Body) == 0 {
		if len(fams) != 0 {
			t.Fatalf("%d families from no recorded body", len(fams))
		}
		return
	}
	again, err := replay.DecodeRecorded(src.Format, src.Body)
	if err != nil {
		t.Fatalf("recorded body (format %d) does not decode again: %v", src.Format, err)
	}
	if len(again) != len(fams) {
		t.Fatalf("recorded body decodes to %d families, the push had %d", len(again), len(fams))
	}
	for i := range fams {
		if !proto.Equal(again[i], fams[i]) {
			t.Fatalf("family %d decoded again differs:\n got %v\nwant %v", i, again[i], fams[i])
		}
	}
}

func checkFuzzFamily(t *testing.T, i int, mf *dto.MetricFamily) {
	t.Helper()
	if mf == nil {
		t.Fatalf("family %d is nil", i)
	}
	if mf.GetName() == "" {
		t.Fatalf("family %d has no name: %v", i, mf)
	}
	if mf.Type == nil {
		t.Fatalf("family %d (%q) has no type", i, mf.GetName())
	}
	if _, known := dto.MetricType_name[int32(mf.GetType())]; !known {
		t.Fatalf("family %d (%q) has unknown type %d", i, mf.GetName(), mf.GetType())
	}
	// Consumers may rely on the value field that matches the type.
	for j, m := range mf.GetMetric() {
		var ok bool
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			ok = m.GetCounter() != nil
		case dto.MetricType_GAUGE:
			ok = m.GetGauge() != nil
		case dto.MetricType_SUMMARY:
			ok = m.GetSummary() != nil
		case dto.MetricType_UNTYPED:
			ok = m.GetUntyped() != nil
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			ok = m.GetHistogram() != nil
		}
		if !ok {
			t.Fatalf("metric %d of %s family %q lacks its value: %v", j, mf.GetType(), mf.GetName(), m)
		}
	}
}

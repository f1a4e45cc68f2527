package aggregate

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestAppendLabelsKeyMatchesLabels checks the direct key encoding against
// Labels.Bytes, which the checkpoint uses to rebuild keys: a difference
// would make restored series different from pushed ones.
func TestAppendLabelsKeyMatchesLabels(t *testing.T) {
	if !directKeysWork() {
		t.Fatal("appendLabelsKey does not match Labels.Bytes in this build; prepare falls back to the slower ScratchBuilder")
	}
	cases := []struct {
		name string
		ls   []labels.Label
	}{
		{"empty", nil},
		{"name only", []labels.Label{{Name: "__name__", Value: "up"}}},
		{"empty value", []labels.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: ""}}},
		{"254 bytes", []labels.Label{{Name: "a", Value: strings.Repeat("x", 254)}}},
		{"255 bytes", []labels.Label{{Name: "a", Value: strings.Repeat("x", 255)}}},
		{"256 bytes", []labels.Label{{Name: "a", Value: strings.Repeat("x", 256)}}},
		{"70000 bytes", []labels.Label{{Name: strings.Repeat("n", 300), Value: strings.Repeat("x", 70000)}}},
		{"utf-8", []labels.Label{{Name: "__name__", Value: "m"}, {Name: "job", Value: "ü→✓"}, {Name: "z", Value: "1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendLabelsKey([]byte("keep"), tc.ls))
			want := "keep" + string(labels.New(tc.ls...).Bytes(nil))
			if got != want {
				t.Fatalf("appendLabelsKey = %q, Labels.Bytes = %q", got, want)
			}
		})
	}
}

package aggregate

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/sluice-metrics/sluice/configs"
)

func TestModeTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		texts   []string // parsed in order before the check
		check   string
		wantErr bool
		stored  int // entries in the table afterwards
	}{
		{name: "plain mode", check: "sum", stored: 1},
		{name: "windowed mode twice", texts: []string{"p99_5m"}, check: "p99_5m", stored: 1},
		{name: "alias is its own spelling", texts: []string{"sum"}, check: "aggregate", stored: 2},
		{name: "unknown mode is refused and not kept", check: "p101_5m", wantErr: true},
		{name: "missing window is refused", check: "mean", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tab modeTable
			for _, s := range tc.texts {
				if _, err := tab.parse(s); err != nil {
					t.Fatalf("parse(%q): %v", s, err)
				}
			}
			got, err := tab.parse(tc.check)
			want, wantErr := configs.ParseMode(tc.check)
			if (err != nil) != tc.wantErr || (wantErr != nil) != tc.wantErr {
				t.Fatalf("parse(%q) error %v, ParseMode error %v, want error: %v", tc.check, err, wantErr, tc.wantErr)
			}
			if err == nil && got != want {
				t.Errorf("parse(%q) = %v, ParseMode says %v", tc.check, got, want)
			}
			if n := int(tab.n.Load()); n != tc.stored {
				t.Errorf("table holds %d spellings, want %d", n, tc.stored)
			}
		})
	}
}

// The table keeps its own copy of a spelling: the text a push passes
// points into its body, which the next push overwrites.
func TestModeTableCopiesText(t *testing.T) {
	var tab modeTable
	buf := []byte("mean1m")
	if _, err := tab.parse(unsafe.String(&buf[0], len(buf))); err != nil {
		t.Fatal(err)
	}
	copy(buf, "max_1h")
	got, err := tab.parse("mean1m")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := configs.ParseMode("mean1m"); got != want {
		t.Errorf("after the body changed, mean1m = %v, want %v", got, want)
	}
}

// Past maxModeTable spellings the table stops growing but still parses.
func TestModeTableBounded(t *testing.T) {
	var tab modeTable
	for i := range maxModeTable + 50 {
		s := fmt.Sprintf("mean%ds", i+1)
		got, err := tab.parse(s)
		if err != nil {
			t.Fatalf("parse(%q): %v", s, err)
		}
		if want, _ := configs.ParseMode(s); got != want {
			t.Fatalf("parse(%q) = %v, want %v", s, got, want)
		}
	}
	if n := tab.n.Load(); n != maxModeTable {
		t.Errorf("table holds %d spellings, want the bound %d", n, maxModeTable)
	}
}

// spell gives Mode.String for every mode, aliases resolved, and remembers
// at most maxModeTable of them.
func TestModeTableSpell(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{name: "plain mode", text: "sum", want: "sum"},
		{name: "alias resolved", text: "aggregate", want: "sum"},
		{name: "quantile alias", text: "median5m", want: "p50_5m"},
		{name: "windowed mode", text: "mean1h", want: "mean1h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tab modeTable
			m, err := tab.parse(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 { // the second from the table
				if got := tab.spell(m); got != tc.want {
					t.Errorf("spell #%d of %q = %q, want %q", i+1, tc.text, got, tc.want)
				}
			}
		})
	}
	var tab modeTable
	for i := range maxModeTable + 50 {
		m, err := configs.ParseMode(fmt.Sprintf("max%ds", i+1))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tab.spell(m), m.String(); got != want {
			t.Fatalf("spell = %q, want %q", got, want)
		}
	}
	if n := tab.nSpelled.Load(); n != maxModeTable {
		t.Errorf("table holds %d modes' spellings, want the bound %d", n, maxModeTable)
	}
}

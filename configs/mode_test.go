package configs

import (
	"strings"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	cases := []struct {
		name, in string
		want     Mode
		canon    string
	}{
		{"sum", "sum", Mode{Kind: ModeSum}, "sum"},
		{"aggregate_alias", "aggregate", Mode{Kind: ModeSum}, "sum"},
		{"replace", "replace", Mode{Kind: ModeReplace}, "replace"},
		{"last_alias", "last", Mode{Kind: ModeReplace}, "replace"},
		{"family", "family", Mode{Kind: ModeFamily}, "family"},
		{"info_alias", "info", Mode{Kind: ModeFamily}, "family"},
		{"mean1m", "mean1m", Mode{Kind: ModeWindowMean, Window: time.Minute}, "mean1m"},
		{"mean_with_underscore", "mean_30s", Mode{Kind: ModeWindowMean, Window: 30 * time.Second}, "mean30s"},
		{"sum5m", "sum5m", Mode{Kind: ModeWindowSum, Window: 5 * time.Minute}, "sum5m"},
		{"min1h30m", "min1h30m", Mode{Kind: ModeWindowMin, Window: 90 * time.Minute}, "min1h30m"},
		{"max1h", "max1h", Mode{Kind: ModeWindowMax, Window: time.Hour}, "max1h"},
		{"count10s", "count10s", Mode{Kind: ModeWindowCount, Window: 10 * time.Second}, "count10s"},
		{"median5m", "median5m", Mode{Kind: ModeWindowQuantile, Window: 5 * time.Minute, Quantile: 0.5}, "p50_5m"},
		{"p99_5m", "p99_5m", Mode{Kind: ModeWindowQuantile, Window: 5 * time.Minute, Quantile: 0.99}, "p99_5m"},
		{"p50_1m", "p50_1m", Mode{Kind: ModeWindowQuantile, Window: time.Minute, Quantile: 0.5}, "p50_1m"},
		{"p99.9_1m", "p99.9_1m", Mode{Kind: ModeWindowQuantile, Window: time.Minute, Quantile: 0.999}, "p99.9_1m"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.want.Kind || got.Window != tc.want.Window || absDiff(got.Quantile, tc.want.Quantile) > 1e-12 {
				t.Fatalf("ParseMode(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if got.String() != tc.canon {
				t.Fatalf("String() = %q, want %q", got.String(), tc.canon)
			}
			again, err := ParseMode(got.String())
			if err != nil || again != got {
				t.Fatalf("canonical form %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func absDiff(a, b float64) float64 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestParseModeErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"typo", "summ", `unknown clear_mode "summ"`},
		{"empty", "", `unknown clear_mode ""`},
		{"avg", "avg1m", "not a known mode"},
		{"no_window", "mean", "missing window duration"},
		{"bad_window", "mean1x", `invalid window duration "1x"`},
		{"tiny_window", "mean1ms", "at least 1s"},
		{"huge_window", "max48h", "at most 24h"},
		{"quantile_no_underscore", "p995m", "p<NN>_<D>"},
		{"quantile_out_of_range", "p101_1m", "from 0 to 100"},
		{"quantile_negative", "p-1_1m", "from 0 to 100"},
		{"p_without_window", "p99", "p<NN>_<D>"},
		{"quantile_nan", "pNaN_5m", "from 0 to 100"},
		{"quantile_nan_lower", "pnan_1m", "from 0 to 100"},
		{"quantile_inf", "pInf_1m", "from 0 to 100"},
		{"quantile_exponent", "p1e1_1m", "from 0 to 100"},
		{"quantile_hex", "p0x1p4_1m", "from 0 to 100"},
		{"quantile_trailing_dot", "p99._1m", "from 0 to 100"},
		{"quantile_leading_dot", "p.5_1m", "from 0 to 100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMode(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "allowed:") {
				t.Fatalf("ParseMode(%q) error = %v, want it to contain %q and the allowed list", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"sum", "p99_5m", "median1m", "mean1h30m", "p0_1s", "count", "p1e2_1m", "pNaN_1m", "p99.90_1m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMode(s)
		if err != nil {
			return
		}
		again, err := ParseMode(m.String())
		if err != nil || again != m {
			t.Fatalf("%q parsed to %+v whose canonical form %q parses to %+v, %v", s, m, m.String(), again, err)
		}
	})
}

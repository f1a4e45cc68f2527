package configs

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ModeKind is the family of a clear_mode value.
type ModeKind uint8

// The clear_mode kinds. The zero value is invalid so that an unset Mode is
// recognisable.
const (
	ModeInvalid ModeKind = iota
	// ModeSum keeps a running total: every pushed value is a delta.
	ModeSum
	// ModeReplace keeps the last pushed value.
	ModeReplace
	// ModeFamily replaces every series of the pushed metric name within the group.
	ModeFamily
	// ModeWindowMean and the other window kinds compute a statistic of the
	// values pushed in the trailing window Mode.Window.
	ModeWindowMean
	ModeWindowSum
	ModeWindowMin
	ModeWindowMax
	ModeWindowCount
	// ModeWindowQuantile is the Mode.Quantile quantile of the trailing window.
	ModeWindowQuantile
)

// Mode is a parsed clear_mode value. It is comparable, so two series agree on
// their mode iff their Modes are ==.
type Mode struct {
	Kind ModeKind
	// Window is the trailing window of the windowed kinds, zero otherwise.
	Window time.Duration
	// Quantile is in [0,1] for ModeWindowQuantile, zero otherwise.
	Quantile float64
	// Percent is the quantile as written (99 for p99), kept so that the
	// canonical spelling round-trips exactly.
	Percent float64
}

// Windowed reports whether the mode computes a statistic over a trailing window.
func (m Mode) Windowed() bool { return m.Kind >= ModeWindowMean }

// String returns the canonical spelling (aliases are resolved: "aggregate"
// prints as "sum", "median5m" as "p50_5m").
func (m Mode) String() string {
	switch m.Kind {
	case ModeSum:
		return "sum"
	case ModeReplace:
		return "replace"
	case ModeFamily:
		return "family"
	case ModeWindowMean:
		return "mean" + formatWindow(m.Window)
	case ModeWindowSum:
		return "sum" + formatWindow(m.Window)
	case ModeWindowMin:
		return "min" + formatWindow(m.Window)
	case ModeWindowMax:
		return "max" + formatWindow(m.Window)
	case ModeWindowCount:
		return "count" + formatWindow(m.Window)
	case ModeWindowQuantile:
		return "p" + strconv.FormatFloat(m.Percent, 'f', -1, 64) + "_" + formatWindow(m.Window)
	}
	return "invalid"
}

// formatWindow prints a duration the way users write it ("5m", not "5m0s").
func formatWindow(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, so modes can be used in
// YAML and JSON.
func (m *Mode) UnmarshalText(b []byte) error {
	p, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = p
	return nil
}

// UnmarshalYAML lets yaml.v3 decode a mode from a scalar.
func (m *Mode) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	return m.UnmarshalText([]byte(s))
}

// MarshalYAML prints the canonical spelling.
func (m Mode) MarshalYAML() (any, error) { return m.String(), nil }

// AllowedModes is the text used in error messages that list the valid values.
const AllowedModes = "sum (alias aggregate), replace (alias last), family (alias info), " +
	"mean<D>, sum<D>, min<D>, max<D>, count<D>, median<D>, p<NN>_<D> (e.g. mean1m, p99_5m)"

// maxWindow bounds windowed modes; a window longer than a day would keep a
// day of per-slot state for every series, which is what a TSDB is for.
const maxWindow = 24 * time.Hour

// ParseMode parses a clear_mode value. Errors name the bad value and list the
// allowed ones.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "sum", "aggregate":
		return Mode{Kind: ModeSum}, nil
	case "replace", "last":
		return Mode{Kind: ModeReplace}, nil
	case "family", "info":
		return Mode{Kind: ModeFamily}, nil
	}
	bad := func(why string) (Mode, error) {
		return Mode{}, fmt.Errorf("unknown clear_mode %q (%s); allowed: %s", s, why, AllowedModes)
	}
	var kind ModeKind
	var q, pct float64
	rest := ""
	for _, p := range []struct {
		prefix string
		kind   ModeKind
	}{
		{"mean", ModeWindowMean}, {"sum", ModeWindowSum}, {"min", ModeWindowMin},
		{"max", ModeWindowMax}, {"count", ModeWindowCount}, {"median", ModeWindowQuantile},
	} {
		if strings.HasPrefix(s, p.prefix) {
			kind, rest = p.kind, s[len(p.prefix):]
			if kind == ModeWindowQuantile {
				q, pct = 0.5, 50
			}
			break
		}
	}
	if kind == ModeInvalid {
		if !strings.HasPrefix(s, "p") {
			return bad("not a known mode")
		}
		// p<NN>_<D>: the underscore is required because "p995m" is ambiguous.
		num, dur, ok := strings.Cut(s[1:], "_")
		if !ok {
			return bad("a quantile mode is p<NN>_<D>, e.g. p99_5m")
		}
		// Plain decimals only: ParseFloat also takes NaN (a mode never
		// equal to itself), Inf, exponents and hexadecimal.
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || !plainDecimal(num) || f > 100 {
			return bad("quantile must be a number from 0 to 100")
		}
		kind, q, pct, rest = ModeWindowQuantile, f/100, f, "_"+dur
	}
	rest = strings.TrimPrefix(rest, "_")
	if rest == "" {
		return bad("missing window duration")
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return bad("invalid window duration " + strconv.Quote(rest))
	}
	if d < time.Second {
		return bad("window must be at least 1s")
	}
	if d > maxWindow {
		return bad("window must be at most 24h")
	}
	return Mode{Kind: kind, Window: d, Quantile: q, Percent: pct}, nil
}

// plainDecimal reports whether s is digits with at most one inner '.'.
func plainDecimal(s string) bool {
	digits, dot := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && digits > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

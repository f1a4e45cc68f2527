package configs

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGoodFiles(t *testing.T) {
	t.Setenv("SLUICE_TEST_JOB", "from-env")
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no good test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		})
	}
}

func TestLoadBadFiles(t *testing.T) {
	want := map[string]string{
		"unknown_field.bad.yml":      "field default_mode not found",
		"unknown_mode.bad.yml":       `unknown clear_mode "average"`,
		"windowed_histogram.bad.yml": "windowed mode mean5m is only for counters",
		"bad_regex.bad.yml":          "rules[0]: match job",
		"empty_match.bad.yml":        "match must name at least one grouping label",
		"negative_limit.bad.yml":     "max_series must be positive",
		"group_over_total.bad.yml":   "must not exceed max_series",
		"not_yaml.bad.yml":           "parse yaml",
	}
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) != len(want) {
		t.Fatalf("have %d bad files, expectations for %d", len(files), len(want))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil || !strings.Contains(err.Error(), want[filepath.Base(f)]) {
				t.Fatalf("Load(%s) = %v, want an error containing %q", f, err, want[filepath.Base(f)])
			}
		})
	}
}

func TestDefaultsAndInheritance(t *testing.T) {
	t.Setenv("SLUICE_TEST_JOB", "from-env")
	c, err := Load("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	get := func(m map[string]string) func(string) string { return func(n string) string { return m[n] } }
	r := c.Aggregation.RuleFor(get(map[string]string{"job": "batch-7"}))
	if r == nil || r.DefaultModes.Gauge.String() != "max5m" || r.DefaultModes.Counter.String() != "sum" || r.DefaultModes.Summary.String() != "replace" {
		t.Fatalf("rule for batch-7: %+v; want gauge max5m and the rest inherited", r)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "batch-7"}), time.Hour); got != 2*time.Hour {
		t.Fatalf("ttl for batch-7 = %v, want 2h", got)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "lambda-x", "env": "dev"}), time.Hour); got != time.Hour {
		t.Fatalf("ttl for lambda-x in dev = %v, want the default 1h", got)
	}
	if got := c.Aggregation.TTLFor(get(map[string]string{"job": "xbatch-7"}), time.Hour); got != time.Hour {
		t.Fatalf("regexes are anchored: ttl for xbatch-7 = %v, want 1h", got)
	}
	e, err := Load("testdata/env.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Aggregation.TTLFor(get(map[string]string{"job": "from-env"}), time.Minute); got != time.Hour {
		t.Fatalf("${SLUICE_TEST_JOB} must expand from the environment; ttl = %v", got)
	}
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults must validate: %v", err)
	}
	if d.Aggregation.DefaultModes.Gauge.String() != "replace" || d.Aggregation.DefaultModes.Counter.String() != "sum" {
		t.Fatalf("SPEC 4.2 defaults: %+v", d.Aggregation.DefaultModes)
	}
}

func TestExpandEnv(t *testing.T) {
	t.Setenv("A_B", "x")
	cases := []struct{ name, in, want string }{
		{"braced", "v: ${A_B}", "v: x"},
		{"unset_is_empty", "v: ${NOT_SET_ANYWHERE_42}", "v: "},
		{"bare_dollar_kept", "re: foo$", "re: foo$"},
		{"unbraced_kept", "v: $A_B", "v: $A_B"},
		{"unclosed_kept", "v: ${A_B", "v: ${A_B"},
		{"invalid_name_kept", "v: ${1A}", "v: ${1A}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(ExpandEnv([]byte(tc.in))); got != tc.want {
				t.Fatalf("ExpandEnv(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

package ingest

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func TestParseGroupingKey(t *testing.T) {
	cases := []struct {
		name, path, want, wantErr string
	}{
		{name: "job_only", path: "/job/f", want: `{job="f"}`},
		{name: "job_and_pairs", path: "/job/f/env/prod/region/eu", want: `{env="prod", job="f", region="eu"}`},
		{name: "trailing_slash", path: "/job/j3/", want: `{job="j3"}`},
		{name: "base64_job", path: "/job@base64/L3Zhci90bXA", want: `{job="/var/tmp"}`},
		{name: "base64_value_padded", path: "/job/f/path@base64/L3Zhci90bXA=", want: `{job="f", path="/var/tmp"}`},
		{name: "base64_empty_value_is_no_label", path: "/job/f/empty@base64/=", want: `{job="f"}`},
		{name: "empty_value_is_no_label", path: "/job/f/a/1/empty/", want: `{a="1", job="f"}`},
		{name: "plus_stays_literal", path: "/job/f/v/a+b", want: `{job="f", v="a+b"}`},
		{name: "utf8_percent_escape", path: "/job/f/v/%CE%A0", want: `{job="f", v="Π"}`},
		{name: "job_pair_overridden_by_path_job", path: "/job/g/job/h", want: `{job="g"}`},
		{name: "repeated_name_last_wins", path: "/job/f/a/1/b/2/a/3", want: `{a="3", b="2", job="f"}`},
		{name: "more_pairs_than_the_stack_arrays", path: "/job/f/a/1/b/2/c/3/d/4/e/5/f/6/g/7/h/8/i/9/j/10", want: `{a="1", b="2", c="3", d="4", e="5", f="6", g="7", h="8", i="9", j="10", job="f"}`},
		{name: "gravel_no_job", path: "/env/prod", want: `{env="prod"}`},
		{name: "gravel_empty", path: "", want: `{}`},
		{name: "gravel_slash", path: "/", want: `{}`},
		{name: "odd_segments", path: "/job/f/a", wantErr: `odd number of components in label string "/a"`},
		{name: "escaped_slash_splits", path: "/job/f/v/a%2Fb", wantErr: "odd number of components"},
		{name: "reserved_label", path: "/job/f/__x/1", wantErr: `improper label name "__x"`},
		{name: "invalid_label", path: "/job/f/a-b/1", wantErr: `improper label name "a-b"`},
		{name: "empty_job", path: "/job/", wantErr: "job name is required"},
		{name: "empty_job_segment", path: "/job//a/b", wantErr: "job name is required"},
		{name: "empty_base64_job", path: "/job@base64/=", wantErr: "job name is required"},
		{name: "bad_base64_job", path: "/job@base64/!!", wantErr: "invalid base64 encoding in job name"},
		{name: "bad_base64_value", path: "/job/f/a@base64/!!", wantErr: `invalid base64 encoding in value of label "a"`},
		{name: "bad_percent", path: "/job/f/a/%zz", wantErr: "invalid percent-encoding"},
		{name: "invalid_utf8_value", path: "/job/f/a@base64/_w", wantErr: "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseGroupingKey(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseGroupingKey(%q) = %v, %v; want error containing %q", tc.path, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseGroupingKey(%q): %v", tc.path, err)
			}
			if got.String() != tc.want {
				t.Fatalf("ParseGroupingKey(%q) = %s, want %s", tc.path, got, tc.want)
			}
		})
	}
}

func FuzzParseGroupingKey(f *testing.F) {
	for _, s := range []string{"/job/f", "/job@base64/L3Zhci90bXA/a@base64/=", "/env/prod/", "/job/f/%CE%A0/x", "/job//", "/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		ls, err := ParseGroupingKey(path)
		if err != nil {
			return
		}
		if ls.Has("") {
			t.Fatalf("%q gave an empty label name: %s", path, ls)
		}
		seen := map[string]bool{}
		ls.Range(func(l labels.Label) {
			if seen[l.Name] {
				t.Fatalf("%q gave a duplicate label %q", path, l.Name)
			}
			seen[l.Name] = true
			if strings.HasPrefix(l.Name, "__") {
				t.Fatalf("%q gave a reserved label %q", path, l.Name)
			}
		})
	})
}

// TestParseGroupingKeyAllocations: a usual push path costs one allocation,
// the label set itself.
func TestParseGroupingKeyAllocations(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseGroupingKey("/job/load/instance/17/env/prod"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("%.1f allocations per path, want 1", allocs)
	}
}

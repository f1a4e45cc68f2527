package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	cases := []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{name: "no build info", ok: false, want: "devel"},
		{name: "stamped module version", ok: true, want: "0.0.0-20261122234406-509091d7f9ef",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261122234406-509091d7f9ef"}}},
		{name: "tagged release", ok: true, want: "1.2.3", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}},
		{name: "devel with a commit", ok: true, want: "devel-509091d7f9ef",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("509091d7f9efb19dc5e7a650c3ded2260c46b89a", "false")}},
		{name: "devel with local changes", ok: true, want: "devel-509091d7f9ef-dirty",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("509091d7f9efb19dc5e7a650c3ded2260c46b89a", "true")}},
		{name: "devel without vcs (-buildvcs=false)", ok: true, want: "devel", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildVersion(tc.bi, tc.ok); got != tc.want {
				t.Errorf("buildVersion = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFlagErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"duration with =", []string{"--aggregation.interval=abc"}, "--aggregation.interval: "},
		{"duration as next argument", []string{"--series.ttl", "soon"}, "--series.ttl: "},
		{"float", []string{"--auto-gomemlimit.ratio=abc"}, "--auto-gomemlimit.ratio: "},
		{"interval under a second", []string{"--aggregation.interval=500ms"}, "--aggregation.interval must be at least 1s"},
		{"negative drain timeout", []string{"--forward.drain-timeout=-1s"}, "--forward.drain-timeout must not be negative"},
		{"enum", []string{"--push.semantics=foo"}, "--push.semantics: "},
		{"log level", []string{"--log.level=trace"}, "--log.level: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseFlags(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseFlags(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

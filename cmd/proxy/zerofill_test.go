package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWALZeroFillSetting checks wal.zero_fill on the real binary: by
// default the appends write the zeros ahead of the log (4 MiB at a time)
// and the filler none; with "background" the filler writes them, and the
// appends only the first 256 KiB of the segment, as the zero-fill metric
// shows.
func TestWALZeroFillSetting(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		name, config string
		want, other  string  // the by label that must grow, and the other
		otherMax     float64 // bytes the other may have written
	}{
		{name: "default", config: "", want: "append", other: "background", otherMax: 0},
		{name: "background", config: "wal:\n  zero_fill: background\n", want: "background", other: "append", otherMax: 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--log.level=warn"}
			if tc.config != "" {
				path := filepath.Join(t.TempDir(), "sluice.yml")
				if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config.file="+path)
			}
			p := startSluice(t, bin, args...)
			for i := range 20 {
				body := fmt.Sprintf("# TYPE zf_total counter\nzf_total{n=\"%d\"} 1\n", i)
				req, _ := http.NewRequest(http.MethodPut, p.url+"/metrics/job/zerofill", strings.NewReader(body))
				r, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != 200 {
					t.Fatalf("push %d: %d", i, r.StatusCode)
				}
			}
			fill := func(by string) float64 {
				_, m := p.get(t, "/metrics")
				v, _ := metricValue(m, `sluice_wal_zero_fill_bytes_total{by="`+by+`"}`)
				return v
			}
			deadline := time.Now().Add(10 * time.Second)
			for fill(tc.want) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no zeros written by %q after 20 pushes", tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if v := fill(tc.other); v > tc.otherMax {
				t.Fatalf("%v bytes of zeros written by %q, want at most %v", v, tc.other, tc.otherMax)
			}
		})
	}
}

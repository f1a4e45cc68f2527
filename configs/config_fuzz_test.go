package configs

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseConfig feeds arbitrary YAML to Parse: it must return a config
// or an error, never panic, and a config it returns must validate again.
// The seeds are every file in testdata.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("limits: {max_series: 1, max_series_per_group: 1}\nweb: {bearer_tokens: [{token: '${HOME}'}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error with an empty message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("a parsed config does not validate again: %v", err)
		}
	})
}

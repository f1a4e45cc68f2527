//go:build pprof

// Profiling build (go build -tags pprof): with SLUICE_PPROF=<host:port>,
// net/http/pprof serves /debug/pprof/ on that address, for the CPU
// profiles and traces the README's Performance section was made with. Not
// in release builds: it is an unauthenticated listener.

package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("SLUICE_PPROF")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintf(os.Stderr, "SLUICE_PPROF: %v\n", err)
		}
	}()
}

//go:build pprof

// Profiling build (go build -tags pprof): with LT_CPUPROFILE=<file> the
// generator writes a CPU profile of its first LT_PROFSECS seconds (default
// 10) to file, to see what the generator itself costs on the machine it
// shares with the proxy.

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	path := os.Getenv("LT_CPUPROFILE")
	if path == "" {
		return
	}
	secs, err := strconv.Atoi(os.Getenv("LT_PROFSECS"))
	if err != nil || secs <= 0 {
		secs = 10
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "LT_CPUPROFILE: %v\n", err)
		return
	}
	go func() {
		time.Sleep(time.Duration(secs) * time.Second)
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "LT_CPUPROFILE: %v\n", err)
		}
	}()
}

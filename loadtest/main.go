// Command loadtest generates load for Sluice and measures it against the
// reference implementations (SPEC section 10).
//
//	go run ./loadtest push -url http://127.0.0.1:9091 -concurrency 64 -duration 20s
//	go run ./loadtest remote-write -url http://127.0.0.1:9091/api/v1/write -duration 20s
//	go run ./loadtest sink -listen 127.0.0.1:9201
//	go run ./loadtest series -url http://127.0.0.1:9091 -groups 1000 -series 1000
//	go run ./loadtest fsync -dir /var/lib/sluice -interval 1ms -busy 2
//
// Requests are encoded before the run, so the generator spends its CPU on
// sending; loadtest/compare.sh runs the whole side-by-side comparison.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	help string
}

func commands() map[string]command {
	return map[string]command{
		"push":         {cmdPush, "Pushgateway pushes (text or protobuf) to many grouping keys"},
		"remote-write": {cmdRemoteWrite, "Remote-Write 1.0 or 2.0 requests over rotating distinct series"},
		"series":       {cmdSeries, "push groups x series distinct live series once (memory and restart measurements)"},
		"sink":         {cmdSink, "counting remote_write receiver; GET /count answers JSON, POST /reset zeroes"},
		"freeport":     {cmdFreePort, "print free 127.0.0.1 ports"},
		"wait":         {cmdWait, "poll a URL until 200 and print the seconds it took"},
		"fetch":        {cmdFetch, "GET a URL; with -sum NAME, sum a metric of a text exposition"},
		"fsync":        {cmdFsync, "time write+fsync on a disk as the WAL's group commit does, optionally with busy CPUs"},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: loadtest <command> [flags]  (loadtest <command> -h for its flags)")
	for _, name := range []string{"push", "remote-write", "series", "sink", "freeport", "wait", "fetch", "fsync"} {
		fmt.Fprintf(w, "  %-13s %s\n", name, commands()[name].help)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "help" || args[0] == "--help" {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "loadtest: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "loadtest %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

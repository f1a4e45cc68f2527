// Command proxy is the Sluice binary: it parses flags, builds the logger,
// registry and configuration, wires the stages together and runs them until
// a signal or /-/quit stops it. No logic lives here.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"

	"github.com/sluice-metrics/sluice/aggregate"
	"github.com/sluice-metrics/sluice/configs"
	"github.com/sluice-metrics/sluice/forward"
	"github.com/sluice-metrics/sluice/ingest"
	"github.com/sluice-metrics/sluice/wal"
)

// shutdownTimeout bounds how long in-flight requests may take on shutdown.
const shutdownTimeout = 30 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

type flags struct {
	listenAddress   string
	configFile      string
	walDir          string
	remoteWriteURLs []string
	interval        time.Duration
	seriesTTL       time.Duration
	enableAdminAPI  bool
	enableLifecycle bool
	semantics       string
	drainTimeout    time.Duration
	autoMemLimit    bool
	memLimitRatio   float64
	minProcs        int
	extraProcs      int
	log             promslog.Config
}

// nameFlag adds the flag to an error kingpin gives for a value that does
// not parse ("time: invalid duration" says nothing of which flag).
func nameFlag(app *kingpin.Application, args []string, err error) error {
	ctx, cerr := app.ParseContext(args)
	if cerr != nil || ctx == nil {
		return err
	}
	for _, e := range ctx.Elements {
		fc, ok := e.Clause.(*kingpin.FlagClause)
		if !ok || e.Value == nil || *e.Value == "" {
			continue
		}
		// Parsers quote the value "so", 'so' (kingpin's enums), or end
		// with it (promslog's "unrecognized log level trace").
		msg, v := err.Error(), *e.Value
		if strings.Contains(msg, strconv.Quote(v)) || strings.Contains(msg, "'"+v+"'") || strings.HasSuffix(msg, " "+v) {
			return fmt.Errorf("--%s: %w", fc.Model().Name, err)
		}
	}
	return err
}

// ownFamilies returns the type of each metric family reg gathers now.
func ownFamilies(reg prometheus.Gatherer) map[string]dto.MetricType {
	fams, _ := reg.Gather() // what gathered is enough; an error is not ours to report here
	out := make(map[string]dto.MetricType, len(fams))
	for _, mf := range fams {
		out[mf.GetName()] = mf.GetType()
	}
	return out
}

// buildVersion is Sluice's version when the build did not set one with
// -ldflags "-X github.com/prometheus/common/version.Version=...": the
// main module's version if the go command stamped one, else "devel" and
// the commit, else "devel". It shows in --version, User-Agent
// (Sluice/<version>), the log and sluice_build_info.
func buildVersion(bi *debug.BuildInfo, ok bool) string {
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return strings.TrimPrefix(v, "v")
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	v := "devel-" + rev[:min(12, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

func parseFlags(args []string) (*flags, *kingpin.Application, error) {
	if version.Version == "" {
		// The variable -ldflags -X sets; wiring, before anything reads it.
		version.Version = buildVersion(debug.ReadBuildInfo())
	}
	f := &flags{log: promslog.Config{}}
	app := kingpin.New("sluice", "Sluice: a push-first metrics ingestion proxy.").UsageWriter(os.Stdout)
	app.Version(version.Print("sluice"))
	app.HelpFlag.Short('h')
	app.Flag("web.listen-address", "Address to listen on for pushes, remote_write and the API.").Default(":9091").StringVar(&f.listenAddress)
	app.Flag("config.file", "Optional YAML configuration file.").StringVar(&f.configFile)
	app.Flag("wal.dir", "Directory of the write-ahead log and its checkpoints.").Default("data/wal").StringVar(&f.walDir)
	app.Flag("remote-write.url", "Remote-write URL to forward to, with default settings (repeatable; adds to the config file's remote_write).").StringsVar(&f.remoteWriteURLs)
	app.Flag("aggregation.interval", "Aggregation interval: how often series are emitted and expired.").Default("15s").DurationVar(&f.interval)
	app.Flag("series.ttl", "Drop a series (and a group) not pushed to for this long, unless a config rule says otherwise.").Default("24h").DurationVar(&f.seriesTTL)
	app.Flag("web.enable-admin-api", "Enable PUT /api/v1/admin/wipe.").Default("false").BoolVar(&f.enableAdminAPI)
	app.Flag("web.enable-lifecycle", "Enable shutdown via POST /-/quit.").Default("false").BoolVar(&f.enableLifecycle)
	app.Flag("push.semantics", "aggregate: merge pushes by clear_mode; pushgateway: behave like a Pushgateway (replace by default, PUT replaces the group).").
		Default("aggregate").EnumVar(&f.semantics, "aggregate", "pushgateway")
	app.Flag("forward.drain-timeout", "On shutdown, how long to keep sending queued windows to the targets before dropping them.").
		Default("10s").DurationVar(&f.drainTimeout)
	app.Flag("auto-gomemlimit", "Set the Go runtime's soft memory limit (GOMEMLIMIT) from the container's memory limit, or the machine's memory if there is none. Skipped when GOMEMLIMIT is set.").
		Default("true").BoolVar(&f.autoMemLimit)
	app.Flag("auto-gomemlimit.ratio", "The fraction of that memory that --auto-gomemlimit sets as the limit, in (0, 1].").
		Default("0.9").Float64Var(&f.memLimitRatio)
	app.Flag("runtime.min-gomaxprocs", "Raise the Go runtime's GOMAXPROCS to at least this when its default (the CPUs, or the container's CPU limit) is lower: a WAL fsync holds a Go processor while it runs, and with a single one no push is decoded meanwhile. Skipped when GOMAXPROCS is set; 1, with --runtime.extra-gomaxprocs=0, keeps the Go default.").
		Default("2").IntVar(&f.minProcs)
	app.Flag("runtime.extra-gomaxprocs", "Go processors to add to the Go runtime's default GOMAXPROCS (the CPUs, or the container's CPU limit): a WAL fsync keeps its processor while it runs, and one more lets the handlers use every CPU meanwhile. Skipped when GOMAXPROCS is set; 0 keeps the Go default.").
		Default("1").IntVar(&f.extraProcs)
	promslogflag.AddFlags(app, &f.log)
	if _, err := app.Parse(args); err != nil {
		return nil, nil, nameFlag(app, args, err)
	}
	if f.drainTimeout < 0 {
		return nil, nil, fmt.Errorf("--forward.drain-timeout must not be negative, got %s", f.drainTimeout)
	}
	if f.interval < time.Second {
		// Each window waits up to an interval for the log; below a
		// second a busy disk would skip every window.
		return nil, nil, fmt.Errorf("--aggregation.interval must be at least 1s, got %s", f.interval)
	}
	if f.seriesTTL <= 0 {
		return nil, nil, fmt.Errorf("--series.ttl must be positive, got %s", f.seriesTTL)
	}
	if !(f.memLimitRatio > 0 && f.memLimitRatio <= 1) {
		return nil, nil, fmt.Errorf("--auto-gomemlimit.ratio must be in (0, 1], got %v", f.memLimitRatio)
	}
	if f.minProcs < 1 {
		return nil, nil, fmt.Errorf("--runtime.min-gomaxprocs must be at least 1, got %d", f.minProcs)
	}
	if f.extraProcs < 0 {
		return nil, nil, fmt.Errorf("--runtime.extra-gomaxprocs must not be negative, got %d", f.extraProcs)
	}
	return f, app, nil
}

// goMaxProcs is the GOMAXPROCS Sluice runs with when GOMAXPROCS is not
// set: the Go default plus extra, and at least floor.
func goMaxProcs(def, extra, floor int) int {
	return max(def+extra, floor)
}

func run(args []string) error {
	f, app, err := parseFlags(args)
	if err != nil {
		return err
	}
	logger := promslog.New(&f.log)
	start := time.Now()
	if f.autoMemLimit {
		// As Prometheus does: a window's flush at a million series needs
		// several times the memory of the series (README, Performance),
		// and under a container's limit the collector should work harder
		// rather than the process be killed. Set logs the outcome.
		_, _ = memlimit.Set(
			memlimit.WithRatio(f.memLimitRatio),
			memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)),
			memlimit.WithLogger(logger.With("component", "automemlimit")),
		)
	}

	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		procs := runtime.GOMAXPROCS(0)
		if want := goMaxProcs(procs, f.extraProcs, f.minProcs); want != procs {
			// The committer's fsync keeps its P while the disk works
			// (wal/fsync_linux.go), so with as many Ps as CPUs the
			// handlers get one CPU fewer whenever an fsync runs; on one
			// CPU they get none (README, "Go processors").
			runtime.GOMAXPROCS(want)
			logger.Info("raised GOMAXPROCS", "from", procs, "to", want)
		}
	}

	cfg, err := loadConfig(f.configFile)
	if err != nil {
		return err
	}
	// own: Sluice's own metric families, once everything is registered.
	var own map[string]dto.MetricType
	settings := func(c *configs.Config) aggregate.Settings {
		sem := aggregate.SemanticsAggregate
		if f.semantics == "pushgateway" {
			sem = aggregate.SemanticsPushgateway
		}
		return aggregate.Settings{Aggregation: c.Aggregation, Limits: c.Limits, SeriesTTL: f.seriesTTL, Semantics: sem, OwnFamilies: own}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("sluice"),
	)
	reloads := newReloadMetrics(reg)
	replayDuration := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_wal_replay_duration_seconds", Help: "Time the last start-up took to restore the checkpoint and replay the write-ahead log.",
	})
	reg.MustRegister(replayDuration)

	walOpts := wal.Options{SegmentSize: cfg.WAL.SegmentSize, Sync: wal.SyncAlways, BackgroundZeroFill: cfg.WAL.ZeroFill == "background"}
	if cfg.WAL.Fsync == "interval" {
		walOpts.Sync, walOpts.SyncInterval = wal.SyncInterval, time.Duration(cfg.WAL.FsyncInterval)
	}
	wlog, err := wal.Open(f.walDir, wal.OSFS(), walOpts, reg, logger.With("component", "wal"))
	if err != nil {
		return fmt.Errorf("open write-ahead log in %s: %w", f.walDir, err)
	}
	defer wlog.Close()
	tgts, err := targets(cfg, f.remoteWriteURLs)
	if err != nil {
		return err
	}
	warnIgnored(logger, tgts)
	fwd := forward.NewManager(logger.With("component", "forward"), reg, "Sluice/"+version.Version, filepath.Join(f.walDir, "queues"))
	if err := fwd.ApplyConfig(tgts, cfg.Global.ExternalLabels); err != nil {
		return fmt.Errorf("start forwarding: %w", err)
	}

	committer := aggregate.NewCommitter(wlog)
	// Relayed remote_write series go to the forward queues once durable.
	store := aggregate.New(settings(cfg), time.Now, committer, fwd, reg, logger.With("component", "aggregate"))
	// The forward queues are synced before a checkpoint drops the log:
	// until then, the log holds the only durable copy of relayed series.
	checkpointLog := aggregate.SyncBeforeTruncate(wlog, fwd.Sync)
	checkpointEvery := time.Duration(cfg.WAL.CheckpointInterval)
	if checkpointEvery == 0 {
		checkpointEvery = f.interval
	}
	var recovered atomic.Bool
	sources := []aggregate.Source{{Gatherer: aggregate.Durable{Store: store, Timeout: f.interval}}}
	if cfg.SelfMetrics.Forward {
		sources = append(sources, aggregate.Source{Gatherer: reg, Labels: map[string]string{"job": "sluice", "instance": selfInstance(cfg)}})
	}
	flusher := aggregate.NewFlusher(f.interval, time.Now, fwd, sources, reg, logger.With("component", "flush"))
	if ms, iv, err := readEarlyWindow(f.walDir); err != nil {
		logger.Warn("read the window emitted early at the last shutdown", "err", err)
	} else if now := time.Now(); ms > now.UnixMilli() {
		if iv <= 0 {
			iv = f.interval.Milliseconds() // recorded by an older Sluice
		}
		if ms <= now.UnixMilli()+iv {
			// Restarted within the window the last shutdown emitted
			// early. Windows up to its end are not emitted (with a
			// shorter interval than then, the ones ending before it:
			// a store refuses samples older than one it has).
			flusher.SetLastEmitted(ms)
			logger.Info("the window ending at window_end was emitted at the last shutdown; the first window emitted is the one after it", "window_end", time.UnixMilli(ms))
		} else {
			// Further ahead than the window it ended: the clock went
			// back while Sluice was stopped. Trusting it would emit
			// nothing until then.
			logger.Warn("the window end recorded at the last shutdown is further ahead than its window (the clock was set back?); ignoring it, so that window's end may be emitted twice",
				"recorded", time.UnixMilli(ms), "recorded_interval", time.Duration(iv)*time.Millisecond)
		}
	}

	var cfgMu sync.Mutex // serialises reloads
	// started is the config the process started with: what changes only
	// on restart is compared with it.
	started := cfg
	var ingestCfg atomic.Pointer[configs.IngestConfig]
	ingestCfg.Store(&cfg.Ingest)
	var webCfg atomic.Pointer[configs.WebConfig] // credentials and TLS files reload; the rest needs a restart
	webCfg.Store(&cfg.Web)
	reload := func() error {
		cfgMu.Lock()
		defer cfgMu.Unlock()
		c, err := loadConfig(f.configFile)
		if err != nil {
			reloads.failure()
			logger.Error("reload config rejected; the old config stays in force", "file", f.configFile, "err", err)
			return err
		}
		t, err := targets(c, f.remoteWriteURLs)
		if err == nil {
			err = fwd.ApplyConfig(t, c.Global.ExternalLabels)
		}
		if err == nil {
			warnIgnored(logger, t)
		}
		if err != nil {
			reloads.failure()
			logger.Error("reload config rejected; the old config stays in force", "file", f.configFile, "err", err)
			return err
		}
		if c.Limits.MaxBodyBytes != started.Limits.MaxBodyBytes {
			logger.Warn("limits.max_body_bytes changes only on restart", "running", started.Limits.MaxBodyBytes, "file", c.Limits.MaxBodyBytes)
		}
		store.SetSettings(settings(c))
		ingestCfg.Store(&c.Ingest)
		if c.Web.TLSServerConfig.Enabled() != started.Web.TLSServerConfig.Enabled() {
			logger.Warn("turning TLS on or off changes only on restart", "running_tls", started.Web.TLSServerConfig.Enabled(), "file_tls", c.Web.TLSServerConfig.Enabled())
		}
		if c.Web.HTTPServerConfig != started.Web.HTTPServerConfig {
			logger.Warn("web.http_server_config changes only on restart", "running", fmt.Sprintf("%+v", started.Web.HTTPServerConfig), "file", fmt.Sprintf("%+v", c.Web.HTTPServerConfig))
		}
		if c.WAL != started.WAL {
			logger.Warn("wal settings change only on restart", "running", fmt.Sprintf("%+v", started.WAL), "file", fmt.Sprintf("%+v", c.WAL))
		}
		webCfg.Store(&c.Web)
		reloads.success()
		logger.Info("reloaded config", "file", f.configFile)
		return nil
	}
	reloads.success()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()

	flagValues := map[string]string{}
	for _, fl := range app.Model().Flags {
		if fl.Hidden || fl.Name == "help" || fl.Name == "version" {
			continue
		}
		flagValues[fl.Name] = fl.String()
	}
	// A remote-write URL may carry an API key in its query.
	redacted := make([]string, len(f.remoteWriteURLs))
	for i, u := range f.remoteWriteURLs {
		redacted[i] = configs.RedactURL(u)
	}
	flagValues["remote-write.url"] = strings.Join(redacted, ",")
	web := ingest.NewApp(ingest.Options{
		Logger:          logger.With("component", "web"),
		Registerer:      reg,
		Gatherer:        reg,
		Aggregator:      store,
		Limits:          func() configs.LimitsConfig { return store.Settings().Limits },
		Ingest:          func() configs.IngestConfig { return *ingestCfg.Load() },
		Web:             webCfg.Load,
		EnableAdminAPI:  f.enableAdminAPI,
		EnableLifecycle: f.enableLifecycle,
		Ready: func() string {
			if !recovered.Load() {
				return "replaying the write-ahead log"
			}
			if err := store.Healthy(); err != nil {
				return "write-ahead log failed: " + err.Error()
			}
			// SPEC 2: not ready while a forward queue is full. Pushes are
			// still taken (a full backlog coalesces windows, totals
			// survive); this tells a load balancer to prefer another.
			for _, t := range fwd.Targets() {
				if t.BacklogFull {
					return fmt.Sprintf("forward backlog of %s is full (%d bytes; queue_config.max_backlog_bytes): windows are being coalesced", t.Name, t.BacklogBytes)
				}
			}
			return ""
		},
		// A failed log refuses everything until a restart rebuilds the
		// state from it: a liveness probe must see that, or nothing ever
		// restarts Sluice (Cloud Run has no readiness probe at all).
		Healthy: func() string {
			if err := store.Healthy(); err != nil {
				return "write-ahead log failed; restart Sluice: " + err.Error()
			}
			return ""
		},
		Reload: reload,
		Quit:   cancel,
		Status: ingest.Status{
			BuildInformation: map[string]string{
				"branch": version.Branch, "buildDate": version.BuildDate, "buildUser": version.BuildUser,
				"goVersion": version.GoVersion, "revision": version.GetRevision(), "version": version.Version,
			},
			Flags:     flagValues,
			StartTime: start,
		},
		Targets: func() []ingest.TargetInfo { return targetInfos(fwd.Targets()) },
	}, int(cfg.Limits.MaxBodyBytes))

	ln, err := net.Listen("tcp", f.listenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listenAddress, err)
	}
	conns := ingest.TrackConns(ln)
	ln = conns
	if cfg.Web.TLSServerConfig.Enabled() {
		tlsCfg := func() configs.TLSServerConfig { return webCfg.Load().TLSServerConfig }
		if ln, err = ingest.TLSListener(ln, tlsCfg, logger.With("component", "web")); err != nil {
			return fmt.Errorf("serve TLS on %s: %w", f.listenAddress, err)
		}
	}
	own = ownFamilies(reg)
	store.SetSettings(settings(cfg))
	logger.Info("starting sluice", "version", version.Version, "listen", ln.Addr().String(), "config", f.configFile,
		"interval", f.interval, "series_ttl", f.seriesTTL, "semantics", f.semantics)
	if len(tgts) == 0 {
		logger.Info("no remote_write target configured; nothing is forwarded, results are on GET /metrics")
	} else {
		names := make([]string, len(tgts))
		for i := range tgts {
			names[i] = tgts[i].DisplayName()
		}
		logger.Info("forwarding", "targets", names)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := web.Listener(ln); err != nil {
			errc <- fmt.Errorf("serve http: %w", err)
			cancel()
		}
	}()

	// Recovery: the HTTP server is up (ready answers 503), the state is
	// rebuilt from the last checkpoint plus the log after it.
	replayStart := time.Now()
	// Push records hold the bodies as they came; the push decoder turns
	// them back into families.
	if err := aggregate.Recover(store, wlog, new(ingest.Decoder).DecodeRecorded); err != nil {
		_ = web.Shutdown()
		wg.Wait()
		return fmt.Errorf("recover from the write-ahead log: %w", err)
	}
	store.SetReady()
	recovered.Store(true)
	replayDuration.Set(time.Since(replayStart).Seconds())
	logger.Info("recovered from the write-ahead log", "dir", f.walDir, "duration", time.Since(replayStart), "fsync", cfg.WAL.Fsync)
	commitCtx, stopCommit := context.WithCancel(context.Background())
	commitDone := make(chan struct{})
	go func() {
		defer close(commitDone)
		_ = committer.Run(commitCtx)
	}()
	checkpointCtx, stopCheckpoints := context.WithCancel(context.Background())
	checkpointDone := make(chan struct{})
	go func() {
		defer close(checkpointDone)
		_ = store.RunCheckpoints(checkpointCtx, checkpointEvery, checkpointLog)
	}()

	// The flusher outlives the signal context: it must emit the last
	// window after the HTTP server stopped taking pushes.
	flushCtx, stopFlush := context.WithCancel(context.Background())
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		_ = flusher.Run(flushCtx)
	}()

	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = store.Run(ctx, f.interval)
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = reload() // logged and counted inside
			}
		}
	}()

	<-ctx.Done()
	logger.Info("shutting down: stop taking requests, flush the current window, drain the forward queues")
	// Connections that never sent a byte (a browser's spare ones) would
	// hold the shutdown for the read timeout; they carry no request.
	silentCtx, stopSilent := context.WithCancel(context.Background())
	go conns.CloseSilentUntil(silentCtx, 100*time.Millisecond)
	if err := web.ShutdownWithTimeout(shutdownTimeout); err != nil {
		logger.Error("shut down http server", "err", err)
	}
	stopSilent()
	wg.Wait()
	stopFlush()
	<-flushDone
	if ms := flusher.LastEmitted(); ms > time.Now().UnixMilli() {
		if err := writeEarlyWindow(f.walDir, ms, f.interval.Milliseconds()); err != nil {
			logger.Error("record the window emitted early; a restart within it emits its end again", "err", err)
		}
	}
	stopCheckpoints()
	<-checkpointDone
	if err := store.Checkpoint(context.Background(), checkpointLog); err != nil {
		logger.Error("final checkpoint", "err", err)
	}
	stopCommit()
	<-commitDone
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), f.drainTimeout)
	if err := fwd.Stop(drainCtx); err != nil {
		logger.Error("drain forward queues", "err", err)
	}
	cancelDrain()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			return err
		}
	default:
	}
	logger.Info("stopped")
	return nil
}

// targets are the config file's remote_write targets plus one per
// --remote-write.url.
func targets(c *configs.Config, urls []string) ([]configs.RemoteWriteConfig, error) {
	out := append([]configs.RemoteWriteConfig(nil), c.RemoteWrite...)
	for _, u := range urls {
		rw := configs.NewRemoteWriteConfig(u)
		if err := rw.Validate(); err != nil {
			return nil, fmt.Errorf("--remote-write.url: %w", err)
		}
		out = append(out, rw)
	}
	return out, nil
}

// warnIgnored logs the Prometheus settings each target has that Sluice
// accepts and does not use.
func warnIgnored(logger *slog.Logger, tgts []configs.RemoteWriteConfig) {
	for i := range tgts {
		if ign := tgts[i].IgnoredSettings(); len(ign) > 0 {
			logger.Warn("remote_write settings accepted and ignored", "target", tgts[i].DisplayName(), "settings", strings.Join(ign, ", "))
		}
	}
}

func selfInstance(c *configs.Config) string {
	if c.SelfMetrics.Instance != "" {
		return c.SelfMetrics.Instance
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "sluice"
}

func loadConfig(path string) (*configs.Config, error) {
	if path == "" {
		c := configs.Default()
		if err := c.Validate(); err != nil {
			return nil, err
		}
		return &c, nil
	}
	return configs.Load(path)
}

type reloadMetrics struct {
	ok   prometheus.Gauge
	when prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_config_last_reload_successful",
			Help: "Whether the last configuration reload attempt was successful.",
		}),
		when: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_config_last_reload_success_timestamp_seconds",
			Help: "Timestamp of the last successful configuration reload.",
		}),
	}
	reg.MustRegister(m.ok, m.when)
	return m
}

func (m *reloadMetrics) success() { m.ok.Set(1); m.when.SetToCurrentTime() }
func (m *reloadMetrics) failure() { m.ok.Set(0) }

// targetInfos converts the forward targets' state for the web page.
func targetInfos(ts []forward.TargetStatus) []ingest.TargetInfo {
	out := make([]ingest.TargetInfo, len(ts))
	for i, t := range ts {
		out[i] = ingest.TargetInfo{Name: t.Name, URL: t.URL, ProtobufMessage: t.ProtobufMessage, Shards: t.Shards,
			QueuedSamples: t.QueuedSamples, BacklogBytes: t.BacklogBytes, LastSend: t.LastSend,
			LastError: t.LastError, LastErrorTime: t.LastErrorTime}
	}
	return out
}

// earlyWindowFile, in the WAL directory, holds the end of the window the
// last shutdown emitted before its time and the aggregation interval then
// (Unix milliseconds and milliseconds, decimal, separated by a blank).
const earlyWindowFile = "early_window_end"

// writeEarlyWindow records ms and the interval iv durably: a restart
// within that window reads them (readEarlyWindow) and emits that window
// end no more.
func writeEarlyWindow(dir string, ms, iv int64) error {
	tmp := filepath.Join(dir, earlyWindowFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatInt(ms, 10) + " " + strconv.FormatInt(iv, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, earlyWindowFile))
	}
	if err == nil {
		err = wal.OSFS().SyncDir(dir)
	}
	return err
}

// readEarlyWindow returns what writeEarlyWindow recorded, zeros if
// nothing; the interval is 0 in a file that an older Sluice wrote.
func readEarlyWindow(dir string) (ms, iv int64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, earlyWindowFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	msText, ivText, hasIv := strings.Cut(strings.TrimSpace(string(b)), " ")
	if ms, err = strconv.ParseInt(msText, 10, 64); err == nil && hasIv {
		iv, err = strconv.ParseInt(ivText, 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", earlyWindowFile, err)
	}
	return ms, iv, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db/open"
	"github.com/gbc-farm/gbc/keys"
	"github.com/gbc-farm/gbc/metrics"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/sshd"
	"github.com/gbc-farm/gbc/web"
)

const coordinatorUsage = `usage: gbc coordinator --state-dir DIR [flags]
       gbc coordinator migrate-data --from sqlite:PATH --to postgres://…

Serves agents and operators over SSH, schedules the submitted derivations
onto the agents and publishes their outputs as a signed binary cache.

flags:
`

func runCoordinator(ctx context.Context, e env, args []string) error {
	if len(args) > 0 && args[0] == "migrate-data" {
		return runMigrateData(ctx, e, args[1:])
	}
	fs := pflag.NewFlagSet("coordinator", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	stateDir := fs.String("state-dir", "", "state directory: database, host key, uploads, cache (required)")
	database := fs.String("database", "", "`URL` of the database: sqlite:PATH or postgres://user:pass@host/db (default sqlite:STATE/gbc.db)")
	listen := fs.String("listen", "127.0.0.1:2222", "SSH listen address")
	adminKey := fs.String("admin-key", "", "public key file (.pub) that gets the admin role")
	comp := fs.String("compression", "zstd", "compression of NARs the cache writes itself (imports, .drv closures)")
	signingKey := fs.String("signing-key", "", "Nix secret key `FILE` (name:base64) for narinfos; default STATE/signing-key.sec, generated on first start")
	keyName := fs.String("signing-key-name", "", "name of a generated signing key (default HOSTNAME-1)")
	storeDir := fs.String("store-dir", "/nix/store", "the farm's store directory (/gnu/store adds Guix signatures)")
	cacheStore := fs.String("cache-store", "", "where the cache keeps its objects (`URL`): file:DIR, or s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&scheme=http|https with credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --cache-store-credentials (default file:STATE/cache)")
	directUpload := fs.Bool("cache-direct-upload", false, "hand agents presigned URLs to PUT their outputs straight into the s3:// --cache-store (verified by reading each object back before it is signed); agents without them, or whose PUT fails, upload over SFTP")
	cacheCreds := fs.String("cache-store-credentials", "", "AWS shared credentials `FILE` for an s3:// --cache-store (profile default, or ?profile= in the URL)")
	streamUploads := fs.String("stream-uploads", "auto", "on: agents' uploads stream through verification straight into the cache store, never written to STATE/uploads; off: each is written there, verified, then moved into the cache; auto: on with an s3:// --cache-store")
	httpListen := fs.String("http-listen", "", "also serve the cache read-only over plain HTTP on `ADDR` (e.g. 127.0.0.1:8080)")
	metricsListen := fs.String("metrics-listen", "", "also serve Prometheus metrics at /metrics over plain HTTP on `ADDR` (e.g. 127.0.0.1:9100); they are always reachable through the SSH port at "+sshd.MetricsAddress)
	webListen := fs.String("web-listen", "", "also serve the read-only web interface over plain HTTP on `ADDR` (for a reverse proxy; without it, ssh -L 8080:web.gbc:80 reaches it for reader keys and above)")
	strategy := fs.String("allocation-strategy", "derivation-ordered", "derivation-ordered: an input without a successful build here or in the cache blocks its dependents; permissive: such inputs are assumed substitutable")
	heartbeat := fs.Duration("heartbeat", coordinator.DefaultHeartbeat, "interval agents send heartbeats at; three missed end the session")
	grace := fs.Duration("disconnect-grace", coordinator.DefaultDisconnectGrace, "how long an absent agent keeps its builds before they are requeued")
	keepalive := fs.Duration("keepalive", 15*time.Second, "SSH keepalive interval for agent connections (two unanswered close it)")
	buildTimeout := fs.Duration("build-timeout", 0, "default timeout of a build that has none (0: none)")
	maxSilent := fs.Duration("max-silent-time", 0, "default max time without log output of a build that has none (0: none)")
	maxSetup := fs.Int("max-setup-failures", coordinator.DefaultMaxSetupFailures, "setup failures after which a build fails")
	pprofListen := fs.String("pprof-listen", "", "serve net/http/pprof on `ADDR` (loopback only; for profiling)")
	pprofBlock := fs.Int("pprof-block-rate", 0, "with --pprof-listen: record blocking events of this many `NS` or longer (and mutex contention) for /debug/pprof/block and /debug/pprof/mutex; 0: off (recording costs CPU)")
	maxUpload := fs.Int64("max-upload-bytes", sshd.DefaultMaxUploadBytes, "largest file an agent may upload")
	handshakeTimeout := fs.Duration("handshake-timeout", sshd.DefaultHandshakeTimeout, "close a connection that has not authenticated this long after TCP accept")
	maxUnauth := fs.Int("max-unauthenticated", sshd.DefaultMaxUnauthenticated, "connections still in the SSH handshake at once; more are closed at accept (authenticated ones do not count)")
	maxUnauthSource := fs.Int("max-unauthenticated-per-source", sshd.DefaultMaxUnauthenticatedPerSource, "the same, per source IP address")
	maxAgentUpload := fs.Int64("max-agent-upload-bytes", sshd.DefaultMaxAgentUploadBytes, "bytes one agent may have uploaded and not yet verified, all its builds together")
	memLimit := fs.String("memory-limit", "", "soft limit of the Go heap and runtime (`SIZE` such as 450MiB, as GOMEMLIMIT, which applies when this is not given): the garbage collector runs more often near it, trading CPU for RSS; it is not a hard cap (docs/scheduling.md)")
	minFree := fs.String("min-free-space", "2GiB", "reserve of free space in the state directory (`SIZE`): under it no build is allocated and upload writes are refused, charged to no build or agent, until space returns (0: only a full disk pauses)")
	hf := addHookFlags(fs)
	gcf := addCacheGCFlags(fs)
	retention := daysDuration(coordinator.DefaultEventRetention)
	fs.Var(&retention, "event-retention", "delete events older than this (30d, 720h; 0: keep forever); events a hook has not finished stay")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, coordinatorUsage+fs.FlagUsages())
			return nil
		}
		return usageError{fmt.Sprintf("%v; run 'gbc coordinator --help' for the flags", err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	if *stateDir == "" {
		return usageError{"--state-dir is required"}
	}
	if *directUpload && !strings.HasPrefix(*cacheStore, "s3://") {
		return usageError{"--cache-direct-upload needs an s3:// --cache-store (agents PUT into its bucket)"}
	}
	if !compression.Writable(*comp) {
		return usageError{fmt.Sprintf("--compression %q: want one of zstd, xz, gzip, none", *comp)}
	}
	strat, err := scheduler.ParseStrategy(*strategy)
	if err != nil {
		return usageError{"--" + err.Error()}
	}
	if *heartbeat < time.Second || *grace <= 0 || *keepalive <= 0 || *buildTimeout < 0 || *maxSilent < 0 || *maxSetup < 1 {
		return usageError{"--heartbeat (≥1s), --disconnect-grace, --keepalive and --max-setup-failures must be positive; timeouts not negative"}
	}
	if *maxUpload <= 0 || *maxAgentUpload <= 0 {
		return usageError{"--max-upload-bytes and --max-agent-upload-bytes must be positive"}
	}
	if *handshakeTimeout <= 0 || *maxUnauth < 1 || *maxUnauthSource < 1 {
		return usageError{"--handshake-timeout, --max-unauthenticated and --max-unauthenticated-per-source must be positive"}
	}
	policy, err := gcf.policy()
	if err != nil {
		return usageError{err.Error()}
	}
	log := e.log
	reserve, err := parseSize("min free space", *minFree)
	if err != nil {
		return usageError{"--" + err.Error()}
	}
	fdLimit, unauthCap, err := raiseFileLimit(log, *maxUnauth)
	if err != nil {
		return err
	}
	*maxUnauth = unauthCap
	if *memLimit != "" {
		n, err := parseMemoryLimit(*memLimit)
		if err != nil {
			return usageError{"--" + err.Error()}
		}
		debug.SetMemoryLimit(n)
		log.Info("memory limit set", "bytes", n)
	}
	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		return fmt.Errorf("state dir %q: %w", *stateDir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	host, err := keys.LoadOrCreateHostKey(dir)
	if err != nil {
		return err
	}
	dbURL := *database
	if dbURL == "" {
		dbURL = "sqlite:" + filepath.Join(dir, "gbc.db")
	}
	target, err := open.Parse(dbURL)
	if err != nil {
		return usageError{"--database: " + err.Error()}
	}
	dbMetrics := metrics.NewStore()
	store, err := target.OpenObserved(ctx, log, dbMetrics)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close database", "err", err)
		}
	}()
	clk := clock.Real{}
	if *keyName == "" {
		h, _ := os.Hostname()
		if h == "" {
			h = "gbc"
		}
		*keyName = h + "-1"
	}
	ck, err := cache.LoadOrCreateKeys(dir, *keyName, *storeDir, *signingKey)
	if err != nil {
		return err
	}
	storeURL := *cacheStore
	if storeURL == "" {
		storeURL = "file:" + filepath.Join(dir, "cache")
	}
	cst, err := cache.OpenStoreURL(ctx, storeURL, cache.Credentials{
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken: os.Getenv("AWS_SESSION_TOKEN"), File: *cacheCreds,
	}, filepath.Join(dir, "cache-spool"), log)
	if err != nil {
		return fmt.Errorf("--cache-store: %w", err)
	}
	var stream bool
	switch *streamUploads {
	case "auto":
		stream = strings.HasPrefix(storeURL, "s3://")
	case "on":
		stream = true
	case "off":
	default:
		return fmt.Errorf("--stream-uploads %q: want auto, on or off", *streamUploads)
	}
	bc, err := cache.OpenStore(ctx, cst, cache.Options{
		StoreDir: *storeDir, Compression: *comp, NixKey: ck.Nix, GuixKey: ck.Guix, Logger: log, Clock: clk,
	})
	if err != nil {
		return err
	}
	var direct *cache.DirectUploads
	if *directUpload {
		s3st, ok := cst.(*cache.S3Store)
		if !ok {
			return fmt.Errorf("--cache-direct-upload: %s is not an object store", cst)
		}
		direct = cache.NewDirectUploads(s3st, 0)
	}
	// Submitted .drv files must live in the farm's store directory; the two
	// usual ones stay accepted as before.
	storeDirs := []string{"/nix/store", "/gnu/store"}
	if !slices.Contains(storeDirs, *storeDir) {
		storeDirs = append(storeDirs, *storeDir)
	}
	coord, err := coordinator.New(ctx, coordinator.Config{
		StateDir: dir, Store: store, Clock: clk, Logger: log, StoreDirs: storeDirs,
		Cache: bc, DirectUploads: direct, CacheAddress: protocol.CacheAddress, StreamUploads: stream,
		Strategy: strat, Heartbeat: *heartbeat, DisconnectGrace: *grace, BuildTimeout: *buildTimeout,
		MaxSilentTime: *maxSilent, MaxSetupFailures: *maxSetup, SubmitMissingInputs: *hf.submitMissing,
		MinFreeSpace: uint64(reserve), CachePolicy: policy,
	})
	if err != nil {
		return err
	}
	defer coord.Close()
	if *adminKey != "" {
		ak, err := keys.ParseAuthorizedKeyFile(*adminKey)
		if err != nil {
			return fmt.Errorf("--admin-key: %w", err)
		}
		if _, err := coord.EnsureAdminKey(ctx, ak.Line); err != nil {
			return fmt.Errorf("--admin-key %s: %w", *adminKey, err)
		}
	}
	hookList, err := hf.hooks(log, submitVia(coord), submitMissingVia(coord), store)
	if err != nil {
		return err
	}
	stopHooks, hookMetrics, err := startHooks(ctx, log, store, clk, hookList)
	if err != nil {
		return err
	}
	defer stopHooks()
	defer startRetention(ctx, log, store, clk, time.Duration(retention), hookList)()
	defer startCacheGC(ctx, log, coord, *gcf.interval)()
	// The cache's gauges appear once it has been counted (a read of every
	// narinfo, in the background).
	go func() {
		if err := bc.Count(ctx); err != nil {
			log.Warn("cache not counted for the metrics", "err", err)
			return
		}
		st := bc.Stats()
		log.Info("cache counted", "narinfos", st.Narinfos, "nar_bytes", st.NarBytes)
	}()
	collectors := []prometheus.Collector{coord.Collector(), dbMetrics, bc.Collector()}
	if hookMetrics != nil {
		collectors = append(collectors, hookMetrics)
	}
	reg, err := metrics.NewRegistry(collectors...)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	metricsHandler := metrics.Handler(reg, log)
	ui, err := web.New(web.Config{Coordinator: coord, Cache: bc.Handler(), Logger: log, Clock: clk})
	if err != nil {
		return err
	}
	srv, err := sshd.New(sshd.Config{Coordinator: coord, HostKey: host, Logger: log, Clock: clk,
		MaxUploadBytes: *maxUpload, MaxAgentUploadBytes: *maxAgentUpload, Cache: bc.Handler(), KeepAlive: *keepalive,
		HandshakeTimeout: *handshakeTimeout, MaxUnauthenticated: *maxUnauth, MaxUnauthenticatedPerSource: *maxUnauthSource,
		Metrics: metricsHandler, Web: ui})
	if err != nil {
		return err
	}
	if err := reg.Register(srv.Collector()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if *pprofListen != "" {
		if err := servePprof(*pprofListen); err != nil {
			return err
		}
		if *pprofBlock > 0 {
			runtime.SetBlockProfileRate(*pprofBlock)
			runtime.SetMutexProfileFraction(100)
		}
	}
	if *httpListen != "" {
		hl, err := net.Listen("tcp", *httpListen)
		if err != nil {
			return fmt.Errorf("--http-listen %s: %w", *httpListen, err)
		}
		hs := &http.Server{Handler: bc.Handler(), ReadHeaderTimeout: 30 * time.Second}
		go hs.Serve(hl) //nolint:errcheck // ends at Close
		defer hs.Close()
		log.Info("cache listening", "http", hl.Addr().String())
	}
	if *metricsListen != "" {
		ml, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", *metricsListen, err)
		}
		ms := &http.Server{Handler: metricsHandler, ReadHeaderTimeout: 30 * time.Second}
		go ms.Serve(ml) //nolint:errcheck // ends at Close
		defer ms.Close()
		log.Info("metrics listening", "http", ml.Addr().String(), "path", metrics.Path)
	}
	if *webListen != "" {
		wl, err := net.Listen("tcp", *webListen)
		if err != nil {
			return fmt.Errorf("--web-listen %s: %w", *webListen, err)
		}
		// No WriteTimeout: a followed log is one long response.
		ws := &http.Server{Handler: ui, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		go ws.Serve(wl) //nolint:errcheck // ends at Close
		defer ws.Close()
		log.Info("web interface listening", "http", wl.Addr().String())
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("coordinator listening", "addr", l.Addr().String(), "database", target.String(), "host_key", keys.Fingerprint(host.PublicKey()),
		"state_dir", dir, "compression", *comp, "cache_store", cst.String(), "cache_public_key", bc.PublicKey().String(),
		"open_file_limit", fdLimit, "max_unauthenticated", *maxUnauth, "max_unauthenticated_per_source", *maxUnauthSource,
		"handshake_timeout", *handshakeTimeout)
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		srv.Close()
		<-served
		return nil
	case err := <-served:
		return fmt.Errorf("ssh server: %w", err)
	}
}

// servePprof serves the Go profiler on a loopback address only: profiles
// expose internals and cost CPU.
func servePprof(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %s: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--pprof-listen %s: want a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(l) //nolint:errcheck // lives as long as the process
	return nil
}

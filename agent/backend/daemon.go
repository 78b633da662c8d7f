package backend

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/signing"
	"github.com/gbc-farm/gbc/storedaemon"
)

// Bounds on one build's preparation.
const (
	// prepareTimeout bounds fetching and importing a build's inputs.
	prepareTimeout = 30 * time.Minute
	// queryTimeout bounds one daemon query outside a build.
	queryTimeout = 5 * time.Minute
	// maxClosure bounds the paths fetched for one build.
	maxClosure = 100000
	// dialTimeout bounds connecting to the daemon and its handshake.
	dialTimeout = time.Minute
	// DefaultConnBuilds is how many builds one connection serves before it
	// is retired (DaemonConfig.ConnBuilds).
	DefaultConnBuilds = 50
)

// DaemonConfig configures a Daemon.
type DaemonConfig struct {
	Kind     string              // "nix" or "guix", as sent in hello
	StoreDir string              // e.g. /nix/store
	Address  storedaemon.Address // the daemon
	// GuixKey signs what is imported into a guix-daemon (ImportPaths
	// needs every path signed by a key in the daemon's /etc/guix/acl),
	// after the agent verified the coordinator's signature. Unused with a
	// Nix daemon.
	GuixKey *signing.GuixSecretKey
	// HTTP fetches from the coordinator's cache (through the agent's
	// tunnel); nil: a client with connection timeouts.
	HTTP *http.Client
	// ConnBuilds is how many builds a connection serves before it is
	// retired, which drops its temporary roots (DefaultConnBuilds if 0).
	ConnBuilds int
	Clock      clock.Clock
	Log        *slog.Logger
}

// Daemon is the store, reached through its daemon. A daemon holds
// everything a connection imported or built as a temporary GC root until
// the connection ends, and the worker protocol cannot drop one; so a
// connection serves at most ConnBuilds builds and is then retired, which
// bounds what the agent keeps from the garbage collector to the inputs of
// that many builds per slot. A connection is not closed after every build
// because dialing costs as much as a trivial build (an exec: daemon starts
// a process; bench/README.md); the replacement of a retired connection is
// dialed in the background, off the builds' path. A connection that broke
// (the daemon died, a build was canceled) is retired the same way. An
// output held alive by a reused connection's own temporary roots is built
// again on a fresh connection instead of being refused.
type Daemon struct {
	cfg DaemonConfig
	// bg ends at Close; it bounds the background dials.
	bg     context.Context
	stopBg context.CancelFunc

	mu       sync.Mutex
	idle     []*storedaemon.Conn
	uses     map[*storedaemon.Conn]int // builds served, for connections in use or idle
	closed   bool
	inFlight int           // background dials not finished
	refilled chan struct{} // closed (and replaced) when one finishes
	dials    sync.WaitGroup
}

// NewDaemon returns the backend; it connects on first use.
func NewDaemon(cfg DaemonConfig) *Daemon {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Transport: &http.Transport{
			ResponseHeaderTimeout: time.Minute,
			IdleConnTimeout:       time.Minute,
		}}
	}
	if cfg.ConnBuilds <= 0 {
		cfg.ConnBuilds = DefaultConnBuilds
	}
	bg, stop := context.WithCancel(context.Background())
	return &Daemon{cfg: cfg, bg: bg, stopBg: stop, uses: map[*storedaemon.Conn]int{}, refilled: make(chan struct{})}
}

var _ Backend = (*Daemon)(nil)

func (d *Daemon) Name() string     { return d.cfg.Kind }
func (d *Daemon) StoreDir() string { return d.cfg.StoreDir }

func (d *Daemon) Version(ctx context.Context) (string, error) {
	c, err := d.get(ctx)
	if err != nil {
		return "", err
	}
	defer d.put(c, false)
	v := c.ProtocolVersion()
	name := c.Dialect().String() + "-daemon"
	if c.DaemonVersion() != "" {
		name += " " + c.DaemonVersion()
	}
	return fmt.Sprintf("%s (protocol %d.%d)", name, v>>8, v&0xff), nil
}

func (d *Daemon) References(ctx context.Context, path string) ([]string, error) {
	c, err := d.get(ctx)
	if err != nil {
		return nil, err
	}
	defer d.put(c, false)
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	info, err := c.QueryPathInfo(qctx, path)
	if err != nil {
		return nil, err
	}
	if info == nil {
		return nil, fmt.Errorf("references of %s: not valid in the store", path)
	}
	if info.References == nil {
		return []string{}, nil
	}
	return info.References, nil
}

// setup is a Result for a build that could not run here.
func setup(msg string, missing ...string) Result {
	return Result{Outcome: SetupFailed, ExitCode: -1, Message: msg, Missing: missing}
}

func (d *Daemon) Build(ctx context.Context, req Request, log io.Writer) (Result, error) {
	c, err := d.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return setup(fmt.Sprintf("connect to the store daemon: %v", err)), nil
	}
	res, ownRoots := d.build(ctx, c, req, log)
	if ownRoots {
		// An output this connection built or imported earlier is held by
		// its own temporary roots: close it (waiting, so an exec: daemon
		// and its roots are gone) and build on a fresh one.
		d.mu.Lock()
		delete(d.uses, c)
		d.mu.Unlock()
		c.Close()
		d.cfg.Log.Info("output held by the daemon connection's own temporary roots; building on a new connection", "derivation", req.Derivation)
		if c, err = d.dial(ctx); err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return setup(fmt.Sprintf("connect to the store daemon: %v", err)), nil
		}
		res, _ = d.build(ctx, c, req, log)
	}
	d.put(c, true)
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	return res, nil
}

// build runs one build on c. ownRoots reports that an output could not
// be deleted while c had served builds before, so c's own temporary roots
// may be what holds it.
func (d *Daemon) build(ctx context.Context, c *storedaemon.Conn, req Request, log io.Writer) (res Result, ownRoots bool) {
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	d.mu.Lock()
	reused := d.uses[c] > 0
	d.mu.Unlock()
	outputs, r, alive := d.prepare(pctx, c, req, log)
	if alive && reused {
		return Result{}, true
	}
	if r != nil {
		return *r, false
	}
	return d.run(ctx, c, req, outputs, log), false
}

// run builds once the inputs are in place.
func (d *Daemon) run(ctx context.Context, c *storedaemon.Conn, req Request, outputs []Output, log io.Writer) Result {
	if err := c.SetOptions(ctx, storedaemon.Options{
		Timeout:       req.Options.Timeout,
		MaxSilentTime: req.Options.MaxSilentTime,
	}); err != nil {
		return setup(fmt.Sprintf("set build options: %v", err))
	}
	if req.Started != nil {
		req.Started()
	}
	names := make([]string, len(outputs))
	for i, o := range outputs {
		names[i] = o.Name
	}
	start := d.cfg.Clock.Now()
	br, err := c.Build(ctx, req.Derivation, names, storedaemon.BuildNormal, log)
	elapsed := d.cfg.Clock.Now().Sub(start)
	if err != nil {
		// A refusal or a daemon that died: not the derivation's fault.
		return setup(fmt.Sprintf("build: %v", err))
	}
	r := Result{ExitCode: exitCode(br.Status), Message: br.ErrorMsg, Outcome: outcome(br.Status, req.Options, elapsed)}
	if r.Outcome != Succeeded {
		return r
	}
	r.Message = ""
	if req.Options.GCRoot != "" {
		if err := d.addRoots(ctx, c, req.Options.GCRoot, outputs); err != nil {
			return setup(err.Error())
		}
	}
	return r
}

// outcome maps the daemon's build status to gbc's outcomes. Both daemons
// report both timeouts as TimedOut; the build's duration tells them
// apart: it reached Timeout, or else it was the silence.
func outcome(s storedaemon.BuildStatus, o Options, elapsed time.Duration) Outcome {
	switch s {
	case storedaemon.Built, storedaemon.Substituted, storedaemon.AlreadyValid:
		return Succeeded
	case storedaemon.PermanentFailure, storedaemon.OutputRejected, storedaemon.CachedFailure,
		storedaemon.LogLimitExceeded, storedaemon.NotDeterministic:
		return BuildFailed
	case storedaemon.TimedOut:
		if o.MaxSilentTime > 0 && (o.Timeout == 0 || elapsed < o.Timeout) {
			return SilentTimedOut
		}
		return TimedOut
	}
	// InputRejected, TransientFailure, MiscFailure, DependencyFailed.
	return SetupFailed
}

// exitCode is the exit status nix-store --realise gives a build that
// ended with s.
func exitCode(s storedaemon.BuildStatus) int {
	switch s {
	case storedaemon.Built, storedaemon.Substituted, storedaemon.AlreadyValid:
		return 0
	case storedaemon.PermanentFailure, storedaemon.CachedFailure, storedaemon.LogLimitExceeded:
		return 0x64
	case storedaemon.TimedOut:
		return 0x65
	case storedaemon.OutputRejected:
		return 0x66
	case storedaemon.NotDeterministic:
		return 0x6c
	}
	return 1
}

// addRoots makes GCRoot (and GCRoot-NAME) symlinks to the outputs and
// registers them as indirect roots.
func (d *Daemon) addRoots(ctx context.Context, c *storedaemon.Conn, root string, outputs []Output) error {
	for _, o := range outputs {
		link := root
		if o.Name != "out" {
			link = root + "-" + o.Name
		}
		tmp := link + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(o.Path, tmp); err != nil {
			return fmt.Errorf("GC root for %s: %w", o.Path, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			return fmt.Errorf("GC root for %s: %w", o.Path, err)
		}
		if err := c.AddIndirectRoot(ctx, link); err != nil {
			return fmt.Errorf("GC root for %s: %w", o.Path, err)
		}
	}
	return nil
}

// DefaultAddress is the daemon socket for kind ("nix" or "guix").
func DefaultAddress(kind string) storedaemon.Address {
	if kind == "guix" {
		return storedaemon.Address{Socket: storedaemon.GuixSocket}
	}
	return storedaemon.Address{Socket: storedaemon.NixSocket}
}

// DefaultStoreDir is the store directory for kind.
func DefaultStoreDir(kind string) string {
	if kind == "guix" {
		return "/gnu/store"
	}
	return "/nix/store"
}

package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/narinfo"
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

// get returns an idle connection, else waits for a background dial in
// flight (it started earlier than a new one would), else dials.
func (d *Daemon) get(ctx context.Context) (*storedaemon.Conn, error) {
	for {
		d.mu.Lock()
		for len(d.idle) > 0 {
			c := d.idle[len(d.idle)-1]
			d.idle = d.idle[:len(d.idle)-1]
			if c.Err() == nil {
				d.mu.Unlock()
				return c, nil
			}
			delete(d.uses, c)
			go c.Close()
		}
		if d.inFlight == 0 || d.closed {
			d.mu.Unlock()
			return d.dial(ctx)
		}
		refilled := d.refilled
		d.mu.Unlock()
		select {
		case <-refilled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (d *Daemon) dial(ctx context.Context) (*storedaemon.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := storedaemon.Dial(dctx, d.cfg.Address, d.cfg.Log)
	if err != nil {
		return nil, err
	}
	d.cfg.Log.Debug("connected to the store daemon", "daemon", d.cfg.Address.String(),
		"dialect", c.Dialect().String(), "protocol", fmt.Sprintf("%#x", c.ProtocolVersion()))
	return c, nil
}

// put returns c after use; build says whether a build ran on it. A
// connection that broke or served ConnBuilds builds is retired, and a
// build's connection retired is replaced in the background.
func (d *Daemon) put(c *storedaemon.Conn, build bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if build {
		d.uses[c]++
	}
	if d.closed || c.Err() != nil || d.uses[c] >= d.cfg.ConnBuilds {
		d.retireLocked(c, build)
		return
	}
	d.idle = append(d.idle, c)
}

// retireLocked closes c and, if refill, dials its replacement in the
// background. The caller holds d.mu.
func (d *Daemon) retireLocked(c *storedaemon.Conn, refill bool) {
	delete(d.uses, c)
	go c.Close() // an exec: daemon may take a moment to exit
	if refill && !d.closed {
		d.inFlight++
		d.dials.Add(1)
		go d.refill()
	}
}

// refill dials a connection for the next build.
func (d *Daemon) refill() {
	defer d.refillDone()
	c, err := d.dial(d.bg)
	if err != nil {
		if d.bg.Err() == nil {
			d.cfg.Log.Warn("store daemon: connection for the next build not dialed; the build dials itself", "daemon", d.cfg.Address.String(), "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		go c.Close()
		return
	}
	d.idle = append(d.idle, c)
}

// refillDone wakes the builds waiting in get.
func (d *Daemon) refillDone() {
	d.mu.Lock()
	d.inFlight--
	close(d.refilled)
	d.refilled = make(chan struct{})
	d.mu.Unlock()
	d.dials.Done()
}

// Close closes the idle connections and stops dialing; connections in use
// close when their build ends.
func (d *Daemon) Close() error {
	d.mu.Lock()
	d.closed = true
	idle := d.idle
	d.idle = nil
	d.mu.Unlock()
	d.stopBg()
	d.dials.Wait()
	for _, c := range idle {
		c.Close()
		d.mu.Lock()
		delete(d.uses, c)
		d.mu.Unlock()
	}
	return nil
}

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

// prepare makes the .drv closure and the inputs valid, fetching what is
// missing from the coordinator's cache (then, if allowed, the daemon's
// upstream substituters), keeps them alive with temporary roots, and
// deletes outputs already present where nothing keeps them alive. It
// returns the outputs to build, or a Result when the build cannot run.
// alive reports that the Result is for an output that could not be
// deleted.
func (d *Daemon) prepare(ctx context.Context, c *storedaemon.Conn, req Request, log io.Writer) (outs []Output, res *Result, alive bool) {
	fail := func(r Result) ([]Output, *Result, bool) { return nil, &r, false }
	var f *fetcher
	if req.Sources.CacheURL != "" {
		var err error
		if f, err = newFetcher(req.Sources, d.cfg.HTTP, d.cfg.StoreDir); err != nil {
			return fail(setup(err.Error()))
		}
	}
	missing, fetched, err := d.ensure(ctx, c, f, []string{req.Derivation})
	if err != nil {
		return fail(setup(fmt.Sprintf("fetch derivation: %v", err), req.Derivation))
	}
	if leaves := outputPaths(missing); len(leaves) > 0 && len(req.Sources.Upstream) > 0 {
		// Sources of the .drv's closure the coordinator's cache lacks may
		// come from upstream; .drv files come from the coordinator only.
		if _, err := d.substitute(ctx, c, req.Sources.Upstream, leaves, log); err != nil {
			return fail(setup(fmt.Sprintf("substitute the derivation's sources: %v", err)))
		}
		var n int
		if missing, n, err = d.ensure(ctx, c, f, []string{req.Derivation}); err != nil {
			return fail(setup(fmt.Sprintf("fetch derivation: %v", err), req.Derivation))
		}
		fetched += n
	}
	if len(missing) > 0 {
		return fail(setup("the derivation or its closure is not in the coordinator's cache", missing...))
	}
	drv, err := derivation.ReadFile(req.Derivation)
	if err != nil {
		return fail(setup(fmt.Sprintf("read %s: %v", req.Derivation, err)))
	}
	inputs, err := InputPaths(drv)
	if err != nil {
		return fail(setup(err.Error()))
	}
	n, err := 0, error(nil)
	if missing, n, err = d.ensure(ctx, c, f, inputs); err != nil {
		return fail(setup(fmt.Sprintf("fetch inputs: %v", err)))
	}
	fetched += n
	if len(missing) > 0 && len(req.Sources.Upstream) > 0 {
		if missing, err = d.substitute(ctx, c, req.Sources.Upstream, missing, log); err != nil {
			return fail(setup(fmt.Sprintf("substitute inputs: %v", err)))
		}
	}
	if len(missing) > 0 {
		return fail(setup("inputs could not be substituted from the coordinator's cache or the upstream caches", missing...))
	}
	if fetched > 0 {
		d.cfg.Log.Info("inputs substituted", "derivation", req.Derivation, "fetched", fetched)
	}
	outputs := req.Outputs
	if len(outputs) == 0 {
		for _, o := range drv.Outputs {
			outputs = append(outputs, Output{Name: o.Name, Path: o.Path})
		}
	}
	paths := make([]string, len(outputs))
	for i, o := range outputs {
		paths[i] = o.Path
	}
	present, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return fail(setup(fmt.Sprintf("check outputs: %v", err)))
	}
	for _, p := range present {
		err := c.DeletePath(ctx, p)
		var de *storedaemon.Error
		switch {
		case errors.As(err, &de):
			// Alive (a GC root, or a valid path that refers to it): the
			// daemon would return it at once as already valid, and the
			// agent would upload an output it did not build. Not the
			// derivation's fault: another agent may build it.
			r := setup(fmt.Sprintf("output %s is valid in this agent's store before the build and cannot be deleted (%s): "+
				"it would be uploaded without being built here", p, de.Message))
			return nil, &r, true
		case err != nil:
			return fail(setup(fmt.Sprintf("delete output present before the build: %v", err)))
		}
	}
	return outputs, nil, false
}

// InputPaths lists what building d needs valid: the wanted outputs of its
// input derivations (read from the local store) and its sources.
func InputPaths(d *derivation.Derivation) ([]string, error) {
	paths := slices.Clone(d.InputSrcs)
	for _, in := range d.InputDrvs {
		id, err := derivation.ReadFile(in.Path)
		if err != nil {
			return nil, fmt.Errorf("input derivation: %w", err)
		}
		for _, name := range in.Outputs {
			o, ok := id.Output(name)
			if !ok {
				return nil, fmt.Errorf("input derivation %s has no output %q", in.Path, name)
			}
			paths = append(paths, o.Path)
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths), nil
}

// ensure makes paths and their closures valid from f, importing in
// reference order, and holds them with temporary roots. It returns the
// paths that stay invalid because the cache does not have them (or a
// path they refer to), followed by the paths of their closures the cache
// lacks; other failures are errors.
func (d *Daemon) ensure(ctx context.Context, c *storedaemon.Conn, f *fetcher, paths []string) ([]string, int, error) {
	valid, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range valid {
		if err := c.AddTempRoot(ctx, p); err != nil {
			return nil, 0, err
		}
	}
	todo := without(paths, valid)
	if len(todo) == 0 {
		return nil, 0, nil
	}
	if f == nil {
		return todo, 0, nil
	}
	// Depth-first over references: a path is imported after everything
	// it refers to.
	infos := map[string]*narinfo.NarInfo{}
	state := map[string]int{} // 1 visiting, 2 done
	unavailable := map[string]bool{}
	var order []string
	var visit func(p string) error
	visit = func(p string) error {
		if state[p] != 0 {
			return nil
		}
		if len(state) >= maxClosure {
			return fmt.Errorf("the closure has more than %d paths", maxClosure)
		}
		state[p] = 1
		ni, err := f.narinfo(ctx, p)
		if errors.Is(err, errNotInCache) {
			unavailable[p] = true
			state[p] = 2
			return nil
		}
		if err != nil {
			return err
		}
		infos[p] = ni
		refs := make([]string, 0, len(ni.References))
		for _, r := range ni.References {
			if full := d.cfg.StoreDir + "/" + r; full != p {
				refs = append(refs, full)
			}
		}
		if len(refs) > 0 {
			ok, err := c.QueryValidPaths(ctx, refs)
			if err != nil {
				return err
			}
			for _, r := range without(refs, ok) {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}
	for _, p := range todo {
		if err := visit(p); err != nil {
			return nil, 0, err
		}
	}
	imported := 0
	for _, p := range order {
		ni := infos[p]
		if slices.ContainsFunc(ni.References, func(r string) bool { return unavailable[d.cfg.StoreDir+"/"+r] }) {
			unavailable[p] = true
			continue
		}
		if err := d.importPath(ctx, c, f, ni); err != nil {
			return nil, 0, err
		}
		imported++
	}
	// What stays invalid: the requested paths, then the paths the cache
	// lacks that they need.
	var missing []string
	for _, p := range todo {
		if unavailable[p] {
			missing = append(missing, p)
		}
	}
	for p := range unavailable {
		if infos[p] == nil && !slices.Contains(missing, p) {
			missing = append(missing, p)
		}
	}
	slices.Sort(missing[min(len(missing), len(todo)):])
	return missing, imported, nil
}

// importPath imports one verified path: AddToStoreNar on Nix (the
// signatures go along, for a daemon that checks them itself), a signed
// ImportPaths on guix-daemon.
func (d *Daemon) importPath(ctx context.Context, c *storedaemon.Conn, f *fetcher, ni *narinfo.NarInfo) error {
	refs := make([]string, len(ni.References))
	for i, r := range ni.References {
		refs[i] = d.cfg.StoreDir + "/" + r
	}
	deriver := ""
	if ni.Deriver != "" {
		deriver = d.cfg.StoreDir + "/" + ni.Deriver
	}
	nar, err := f.nar(ctx, ni)
	if err != nil {
		return err
	}
	defer nar.Close()
	if c.Dialect() == storedaemon.Nix {
		info := &storedaemon.PathInfo{Path: ni.StorePath, Deriver: deriver, NarHash: ni.NarHash, References: refs,
			NarSize: ni.NarSize, Sigs: ni.Sigs, CA: ni.CA}
		// dontCheckSigs: the agent checked the cache's signature itself;
		// a daemon ignores it for untrusted clients and checks Sigs.
		if err := c.AddToStoreNar(ctx, info, nar, true); err != nil {
			return fmt.Errorf("import %s: %w", ni.StorePath, err)
		}
		return nil
	}
	var sign storedaemon.ExportSigner
	if k := d.cfg.GuixKey; k != nil {
		sign = func(sum [32]byte) ([]byte, error) { return k.SignGuixHash(sum).Bytes(), nil }
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(storedaemon.WriteExport(pw, []storedaemon.ExportRecord{{Path: ni.StorePath, References: refs, Deriver: deriver, NAR: nar}}, sign))
	}()
	_, err = c.ImportPaths(ctx, pr)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return fmt.Errorf("import %s: %w", ni.StorePath, err)
	}
	return nil
}

// substitute lets the daemon fetch paths from the upstream caches (the
// daemon checks their signatures with its own trusted keys) and returns
// those still invalid.
func (d *Daemon) substitute(ctx context.Context, c *storedaemon.Conn, upstream, paths []string, log io.Writer) ([]string, error) {
	setting := "substituters"
	if c.Dialect() == storedaemon.Guix {
		setting = "substitute-urls"
	}
	if err := c.SetOptions(ctx, storedaemon.Options{UseSubstitutes: true, KeepGoing: true,
		Settings: [][2]string{{setting, strings.Join(upstream, " ")}}}); err != nil {
		return nil, err
	}
	err := c.Substitute(ctx, paths, log)
	var de *storedaemon.Error
	if err != nil && !errors.As(err, &de) {
		return nil, err
	}
	valid, err := c.QueryValidPaths(ctx, paths)
	if err != nil {
		return nil, err
	}
	for _, p := range valid {
		if err := c.AddTempRoot(ctx, p); err != nil {
			return nil, err
		}
	}
	return without(paths, valid), nil
}

// outputPaths are those of paths that are not .drv files.
func outputPaths(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !strings.HasSuffix(p, ".drv") {
			out = append(out, p)
		}
	}
	return out
}

func without(all, drop []string) []string {
	var out []string
	for _, p := range all {
		if !slices.Contains(drop, p) {
			out = append(out, p)
		}
	}
	return out
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

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/storepath"
)

// MaxSubmit bounds the derivations in one submission.
const MaxSubmit = 10000

// Submission asks for derivations to be built.
type Submission struct {
	Derivations []string // .drv paths in one of Config.StoreDirs
	Priority    int
	Tags        []db.Tag
	// DeferUntil holds the builds back until then.
	DeferUntil time.Time
	// Timeout and MaxSilentTime bound each build on its agent (zero: the
	// coordinator's defaults).
	Timeout, MaxSilentTime time.Duration
	// IgnoreIfExists reuses a build of the same derivation that is queued,
	// running or succeeded instead of recording a new one.
	IgnoreIfExists bool
	// EnsureInputs also submits builds for every derivation in the input
	// closure whose outputs have no successful build here, are not in the
	// cache and have no build queued or running.
	EnsureInputs bool
}

// Submit reads every derivation and records one build per derivation, all
// or none; it returns the build ids in the order given (builds added for
// the input closure are not listed).
func (c *Coordinator) Submit(ctx context.Context, sub Submission) ([]string, error) {
	if len(sub.Derivations) == 0 {
		return nil, fmt.Errorf("%w: no derivations given", ErrBadSubmission)
	}
	if len(sub.Derivations) > MaxSubmit {
		return nil, fmt.Errorf("%w: %d derivations, at most %d per submission", ErrBadSubmission, len(sub.Derivations), MaxSubmit)
	}
	if sub.Timeout < 0 || sub.MaxSilentTime < 0 {
		return nil, fmt.Errorf("%w: negative timeout or max-silent-time", ErrBadSubmission)
	}
	now := c.clk.Now()
	start := time.Now()
	ids := make([]string, len(sub.Derivations))
	byDrv := map[string]int{} // derivation → index in builds
	builds := make([]db.NewBuild, 0, len(sub.Derivations))
	inputs := make([][]string, 0, len(sub.Derivations))
	existing, err := c.existingBuilds(ctx, sub)
	if err != nil {
		return nil, err
	}
	loaded := c.preload(ctx, sub.Derivations, existing)
	published := time.Now()
	add := func(p string) (int, []string, error) {
		nb, in, err := c.readDerivation(ctx, p, loaded[p])
		if err != nil {
			return 0, nil, err
		}
		nb.ID = newBuildID()
		nb.Priority = sub.Priority
		nb.Tags = slices.Clone(sub.Tags)
		nb.CreatedAt = now
		nb.DeferUntil = sub.DeferUntil
		nb.TimeoutSeconds = int(sub.Timeout / time.Second)
		nb.MaxSilentSeconds = int(sub.MaxSilentTime / time.Second)
		byDrv[p] = len(builds)
		builds = append(builds, nb)
		inputs = append(inputs, in)
		return len(builds) - 1, in, nil
	}
	for i, p := range sub.Derivations {
		if id, ok := existing[p]; ok {
			ids[i] = id
			continue
		}
		if j, ok := byDrv[p]; ok && sub.IgnoreIfExists {
			ids[i] = builds[j].ID
			continue
		}
		j, _, err := add(p)
		if err != nil {
			return nil, err
		}
		ids[i] = builds[j].ID
	}
	if sub.EnsureInputs {
		if err := c.addClosure(ctx, builds, inputs, byDrv, add); err != nil {
			return nil, err
		}
	}
	parsed := time.Now()
	if len(builds) > 0 {
		if err := c.store.CreateBuilds(ctx, builds); err != nil {
			return nil, fmt.Errorf("record builds: %w", err)
		}
	}
	recorded := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	locked := time.Now()
	var unresolved []string
	batch := make([]scheduler.Build, len(builds))
	for i, b := range builds {
		batch[i] = toSched(b.Queued(), inputs[i])
		for _, in := range inputs[i] {
			if _, ok := byDrv[in]; !ok {
				unresolved = append(unresolved, in)
			}
		}
	}
	if err := c.resolveInputsLocked(ctx, unresolved); err != nil {
		// Recorded but not queued would be lost until a restart; the
		// inputs just stay unavailable, which a later success fixes.
		c.log.Error("resolve input derivations", "err", err)
	}
	if err := c.sched.AddBatch(batch); err != nil {
		// A cycle among untrusted derivations: cancel what was recorded
		// but could not be queued, so nothing waits forever.
		for _, b := range builds {
			if _, ok := c.sched.StateOf(b.ID); !ok {
				if cerr := c.store.CancelBuild(ctx, b.ID, now); cerr != nil {
					c.log.Error("cancel unqueueable build", "build", b.ID, "err", cerr)
				}
			}
		}
		return nil, fmt.Errorf("%w: %w", ErrBadSubmission, err)
	}
	for _, b := range builds {
		c.log.Debug("build submitted", "build", b.ID, "derivation", b.Derivation, "system", b.System, "priority", b.Priority)
	}
	queued := time.Now()
	c.dispatchLocked(ctx)
	// Where a slow submission spent its time: reading the .drv files and
	// publishing their closures to the cache (publish), turning them into
	// builds (parse; for a single .drv, which preload leaves alone, the
	// reading and publishing too), the database (record), the coordinator
	// lock, the scheduler, or dispatching what became runnable.
	c.log.Info("builds submitted", "count", len(builds), "requested", len(sub.Derivations),
		"publish_ms", millis(published.Sub(start)), "parse_ms", millis(parsed.Sub(published)),
		"record_ms", millis(recorded.Sub(parsed)), "lock_ms", millis(locked.Sub(recorded)),
		"queue_ms", millis(queued.Sub(locked)), "dispatch_ms", millis(time.Since(queued)))
	return ids, nil
}

// existingBuilds finds, for --ignore-if-build-for-outputs-exists, a build
// of each derivation that is queued, running or succeeded.
func (c *Coordinator) existingBuilds(ctx context.Context, sub Submission) (map[string]string, error) {
	out := map[string]string{}
	if !sub.IgnoreIfExists {
		return out, nil
	}
	bs, err := c.store.BuildsForDerivations(ctx, sub.Derivations)
	if err != nil {
		return nil, fmt.Errorf("look up existing builds: %w", err)
	}
	for _, b := range bs {
		switch b.State {
		case db.StateFailed, db.StateCanceled, db.StateFailedDependency:
			continue
		}
		if _, ok := out[b.Derivation]; !ok { // newest first
			out[b.Derivation] = b.ID
		}
	}
	return out, nil
}

// addClosure walks the input closure of the submitted builds and adds a
// build for every derivation that needs one. The walk stops at inputs that
// are available or have a live build here (their own inputs are theirs).
func (c *Coordinator) addClosure(ctx context.Context, builds []db.NewBuild, inputs [][]string,
	byDrv map[string]int, add func(string) (int, []string, error)) error {
	var queue []string
	for _, in := range inputs {
		queue = append(queue, in...)
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		// Look up a whole level at once.
		var level []string
		for _, d := range queue {
			if _, ok := byDrv[d]; !ok && !seen[d] {
				seen[d] = true
				level = append(level, d)
			}
		}
		queue = queue[:0]
		if len(level) == 0 {
			break
		}
		skip := map[string]bool{}
		c.mu.Lock()
		for _, d := range level {
			if live, avail := c.sched.Derivation(d); live || avail {
				skip[d] = true
			}
		}
		c.mu.Unlock()
		bs, err := c.store.BuildsForDerivations(ctx, level)
		if err != nil {
			return fmt.Errorf("look up builds of input derivations: %w", err)
		}
		for _, b := range bs {
			switch b.State {
			case db.StateSucceeded, db.StateScheduled, db.StateAllocated, db.StateStarted:
				skip[b.Derivation] = true
			}
		}
		for _, d := range level {
			if skip[d] || c.outputsInCache(ctx, d) {
				continue
			}
			if len(byDrv) >= MaxSubmit {
				return fmt.Errorf("%w: the input closure needs more than %d builds; submit it in parts", ErrBadSubmission, MaxSubmit)
			}
			_, in, err := add(d)
			if err != nil {
				return fmt.Errorf("input closure: %w", err)
			}
			queue = append(queue, in...)
		}
	}
	return nil
}

// preloadWorkers bounds the derivations read and published at once.
// Publishing a .drv closure is mostly waiting for fsync, which overlaps
// well, so this is well above the core count.
const preloadWorkers = 32

type loadedDrv struct {
	d   *derivation.Derivation
	err error
}

// preload reads the submitted derivations concurrently (those not reused
// from existing builds) and publishes the closures of those in this host's
// store to the cache as one batch, with one durability barrier for all of
// them; readDerivation then takes the result.
func (c *Coordinator) preload(ctx context.Context, drvs []string, existing map[string]string) map[string]*loadedDrv {
	out := make(map[string]*loadedDrv, len(drvs))
	var todo []string
	for _, p := range drvs {
		if _, ok := existing[p]; ok || out[p] != nil {
			continue
		}
		out[p] = &loadedDrv{}
		todo = append(todo, p)
	}
	if len(todo) < 2 {
		return nil // one derivation: nothing to overlap
	}
	local := make([]bool, len(todo)) // read from this host's store
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(preloadWorkers, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(todo) {
					return
				}
				p := todo[i]
				if _, err := c.checkDrvPath(p); err != nil {
					out[p].err = err
					continue
				}
				if c.cfg.Cache == nil {
					out[p].d, out[p].err = c.loadDerivation(ctx, p)
					continue
				}
				d, err := derivation.ReadStoreFile("", p)
				if err != nil {
					// Not here (or unreadable): the cache path decides.
					out[p].d, out[p].err = c.loadDerivation(ctx, p)
					continue
				}
				out[p].d, local[i] = d, true
			}
		}()
	}
	wg.Wait()
	var publish []string
	for i, p := range todo {
		if local[i] {
			publish = append(publish, p)
		}
	}
	if len(publish) > 0 {
		bad, err := c.cfg.Cache.PublishDerivationClosures(ctx, publish, "")
		for _, p := range publish {
			e := bad[p]
			if e == nil {
				e = err
			}
			if e != nil {
				out[p].d, out[p].err = nil, fmt.Errorf("%w: publish the closure of %s to the cache: %w", ErrBadSubmission, p, e)
			}
		}
	}
	return out
}

// checkDrvPath accepts a clean absolute .drv path in one of the store directories.
func (c *Coordinator) checkDrvPath(p string) (storepath.StorePath, error) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return storepath.StorePath{}, fmt.Errorf("%w: %q is not a clean absolute path", ErrBadSubmission, p)
	}
	sp, err := storepath.Parse(p)
	if err != nil {
		return storepath.StorePath{}, fmt.Errorf("%w: %q: %w", ErrBadSubmission, p, err)
	}
	if !sp.IsDerivation() {
		return storepath.StorePath{}, fmt.Errorf("%w: %q is not a .drv", ErrBadSubmission, p)
	}
	if !slices.Contains(c.cfg.StoreDirs, sp.StoreDir) {
		return storepath.StorePath{}, fmt.Errorf("%w: %q is not in a store directory (%s)", ErrBadSubmission, p, strings.Join(c.cfg.StoreDirs, ", "))
	}
	return sp, nil
}

// readDerivation reads (or takes the preloaded) derivation p and returns
// the build to record and its input derivations.
func (c *Coordinator) readDerivation(ctx context.Context, p string, pre *loadedDrv) (db.NewBuild, []string, error) {
	if pre != nil && pre.err != nil {
		return db.NewBuild{}, nil, pre.err
	}
	if _, err := c.checkDrvPath(p); err != nil {
		return db.NewBuild{}, nil, err
	}
	var d *derivation.Derivation
	if pre != nil {
		d = pre.d
	} else {
		var err error
		if d, err = c.loadDerivation(ctx, p); err != nil {
			return db.NewBuild{}, nil, err
		}
	}
	if d.System == "" {
		return db.NewBuild{}, nil, fmt.Errorf("%w: derivation %s has no system", ErrBadSubmission, p)
	}
	nb := db.NewBuild{Derivation: p, System: d.System, RequiredFeatures: d.RequiredSystemFeatures()}
	for _, o := range d.Outputs {
		nb.Outputs = append(nb.Outputs, db.DerivationOutput{Name: o.Name, Path: o.Path})
	}
	if len(nb.Outputs) == 0 {
		return db.NewBuild{}, nil, fmt.Errorf("%w: derivation %s declares no outputs", ErrBadSubmission, p)
	}
	inputs := make([]string, 0, len(d.InputDrvs))
	for _, in := range d.InputDrvs {
		inputs = append(inputs, in.Path)
	}
	// Recorded with the build, so that a restart rebuilds the queue
	// without re-reading the .drv.
	nb.InputDerivations = inputs
	return nb, inputs, nil
}

// loadDerivation reads a submitted .drv and makes sure its closure is in
// the cache, so agents can fetch it through their SSH connection. A .drv
// in this host's store is read there and its closure (input derivations
// and sources) published from it; otherwise it must already be in the
// cache with its whole closure (ssh coordinator import).
func (c *Coordinator) loadDerivation(ctx context.Context, p string) (*derivation.Derivation, error) {
	d, err := derivation.ReadStoreFile("", p)
	if c.cfg.Cache == nil {
		if err != nil {
			return nil, fmt.Errorf("%w: read derivation %s: %w", ErrBadSubmission, p, err)
		}
		return d, nil
	}
	if err == nil {
		if _, err := c.cfg.Cache.PublishDerivationClosure(ctx, p, ""); err != nil {
			return nil, fmt.Errorf("%w: publish the closure of %s to the cache: %w", ErrBadSubmission, p, err)
		}
		return d, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: read derivation %s: %w", ErrBadSubmission, p, err)
	}
	d, cerr := c.cfg.Cache.ReadDerivation(ctx, p)
	if cerr != nil {
		return nil, fmt.Errorf("%w: %s is neither in this host's store nor in the cache (import it first: nix-store --export $(nix-store -qR %s) | ssh COORDINATOR import): %w",
			ErrBadSubmission, p, p, cerr)
	}
	if missing := c.cfg.Cache.MissingFromClosure([]string{p}, 10); len(missing) > 0 {
		return nil, fmt.Errorf("%w: the closure of %s is incomplete in the cache, missing %s (import nix-store -qR of it)",
			ErrBadSubmission, p, strings.Join(missing, " "))
	}
	return d, nil
}

// Import publishes a nix-store --export / guix archive --export stream to
// the cache and returns the paths it held.
func (c *Coordinator) Import(ctx context.Context, r io.Reader) ([]string, error) {
	if c.cfg.Cache == nil {
		return nil, errors.New("import: this coordinator has no cache")
	}
	return c.cfg.Cache.Import(ctx, r)
}

// inputDerivations re-reads a recorded derivation's input .drv paths, from
// this host's store or the cache.
func (c *Coordinator) inputDerivations(ctx context.Context, p string) ([]string, error) {
	d, err := c.readDrv(ctx, p)
	if err != nil {
		return nil, err
	}
	inputs := make([]string, 0, len(d.InputDrvs))
	for _, in := range d.InputDrvs {
		inputs = append(inputs, in.Path)
	}
	return inputs, nil
}

// newBuildID makes a time-ordered UUID (version 7): the ids of a batch
// sort together, so the indexes keyed by build id (builds.id, and the
// tags, features and outputs tables) grow at their end instead of
// dirtying a random page per build; random (version 4) ids made recording
// a 1,000-build submission touch about a thousand scattered pages per
// index. The time it reveals is the build's creation time, which
// `builds` shows anyway.
func newBuildID() string {
	u, err := uuid.NewV7()
	if err != nil {
		// Only the random source can fail; v4 needs it too.
		return uuid.NewString()
	}
	return u.String()
}

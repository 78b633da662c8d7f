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

	"github.com/google/uuid"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/storepath"
)

// MaxSubmit bounds the derivations in one submission.
const MaxSubmit = 10000

// Submission asks for derivations to be built.
type Submission struct {
	Derivations []string // .drv paths in one of Config.StoreDirs
	Priority    int
	Tags        []db.Tag
}

// Submit reads every derivation and records one build per derivation, all
// or none; it returns the build ids in the order given.
func (c *Coordinator) Submit(ctx context.Context, sub Submission) ([]string, error) {
	if len(sub.Derivations) == 0 {
		return nil, fmt.Errorf("%w: no derivations given", ErrBadSubmission)
	}
	if len(sub.Derivations) > MaxSubmit {
		return nil, fmt.Errorf("%w: %d derivations, at most %d per submission", ErrBadSubmission, len(sub.Derivations), MaxSubmit)
	}
	now := c.clk.Now()
	builds := make([]db.NewBuild, 0, len(sub.Derivations))
	inputs := make([][]string, 0, len(sub.Derivations))
	for _, p := range sub.Derivations {
		nb, in, err := c.readDerivation(ctx, p)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, in)
		nb.ID = uuid.NewString()
		nb.Priority = sub.Priority
		nb.Tags = slices.Clone(sub.Tags)
		nb.CreatedAt = now
		builds = append(builds, nb)
	}
	if err := c.store.CreateBuilds(ctx, builds); err != nil {
		return nil, fmt.Errorf("record builds: %w", err)
	}
	ids := make([]string, len(builds))
	c.mu.Lock()
	for _, b := range builds {
		c.trackLocked(b.ID, b.Derivation)
	}
	for i, b := range builds {
		ids[i] = b.ID
		c.admitLocked(b, inputs[i])
		c.log.Info("build submitted", "build", b.ID, "derivation", b.Derivation, "system", b.System, "priority", b.Priority)
	}
	c.dispatchLocked(ctx)
	c.mu.Unlock()
	return ids, nil
}

func (c *Coordinator) readDerivation(ctx context.Context, p string) (db.NewBuild, []string, error) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return db.NewBuild{}, nil, fmt.Errorf("%w: %q is not a clean absolute path", ErrBadSubmission, p)
	}
	sp, err := storepath.Parse(p)
	if err != nil {
		return db.NewBuild{}, nil, fmt.Errorf("%w: %q: %w", ErrBadSubmission, p, err)
	}
	if !sp.IsDerivation() {
		return db.NewBuild{}, nil, fmt.Errorf("%w: %q is not a .drv", ErrBadSubmission, p)
	}
	if !slices.Contains(c.cfg.StoreDirs, sp.StoreDir) {
		return db.NewBuild{}, nil, fmt.Errorf("%w: %q is not in a store directory (%s)", ErrBadSubmission, p, strings.Join(c.cfg.StoreDirs, ", "))
	}
	d, err := c.loadDerivation(ctx, p)
	if err != nil {
		return db.NewBuild{}, nil, err
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
	return nb, inputs, nil
}

// loadDerivation reads a submitted .drv and makes sure its closure is in
// the cache, so agents can fetch it through their SSH connection. A .drv
// in this host's store is read there and its closure (input derivations
// and sources) published from it; otherwise it must already be in the
// cache with its whole closure (ssh coordinator import).
func (c *Coordinator) loadDerivation(ctx context.Context, p string) (*derivation.Derivation, error) {
	d, err := derivation.ReadFile(p)
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
func (c *Coordinator) inputDerivations(p string) ([]string, error) {
	d, err := derivation.ReadFile(p)
	if err != nil && c.cfg.Cache != nil {
		d, err = c.cfg.Cache.ReadDerivation(context.Background(), p)
	}
	if err != nil {
		return nil, err
	}
	inputs := make([]string, 0, len(d.InputDrvs))
	for _, in := range d.InputDrvs {
		inputs = append(inputs, in.Path)
	}
	return inputs, nil
}

// Cancel cancels a build that has not ended; an agent holding it is told to stop.
func (c *Coordinator) Cancel(ctx context.Context, id string) error {
	b, err := c.store.Build(ctx, id)
	if err != nil {
		return fmt.Errorf("build %s: %w", id, err)
	}
	if b.State.Terminal() {
		return fmt.Errorf("build %s is already %s: %w", id, b.State, db.ErrConflict)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.store.CancelBuild(ctx, id, c.clk.Now()); err != nil {
		return fmt.Errorf("cancel build %s: %w", id, err)
	}
	c.dequeueLocked(id)
	if b.AgentID != "" && (b.State == db.StateAllocated || b.State == db.StateStarted) {
		if s := c.sessions[b.AgentID]; s != nil && s.holds[id] {
			s.push(&protocol.Cancel{Build: id})
		}
		c.releaseLocked(id, b.AgentID)
	}
	c.log.Info("build canceled", "build", id)
	c.endedLocked(ctx, id, outcomeCanceled)
	c.dispatchLocked(ctx)
	return nil
}

// Wait blocks until the build reaches a terminal state and returns it.
func (c *Coordinator) Wait(ctx context.Context, id string) (db.Build, error) {
	for {
		// Register before reading, so an end recorded after the read
		// still wakes us.
		ch := make(chan struct{})
		c.mu.Lock()
		c.waiters[id] = append(c.waiters[id], ch)
		c.mu.Unlock()
		b, err := c.store.Build(ctx, id)
		if err != nil {
			c.dropWaiter(id, ch)
			return db.Build{}, fmt.Errorf("build %s: %w", id, err)
		}
		if b.State.Terminal() {
			c.dropWaiter(id, ch)
			return b, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.dropWaiter(id, ch)
			return db.Build{}, ctx.Err()
		case <-c.done:
			return db.Build{}, errors.New("coordinator is shutting down")
		}
	}
}

func (c *Coordinator) dropWaiter(id string, ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = slices.Delete(ws, i, i+1)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
	} else {
		c.waiters[id] = ws
	}
}

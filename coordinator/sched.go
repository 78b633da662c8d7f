package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/storepath"
)

// The in-memory queue is a scheduler.Scheduler (dependency graph, derived
// priority, per-(system, features, tags) heaps). The database stays the
// truth: every transition is written first, then the scheduler is told. The
// scheduler keeps only what ordering and matching need; what an agent needs
// to run a build (outputs, timeouts) is read from the store at dispatch.

// toSched converts a recorded build for the scheduler.
func toSched(b db.NewBuild, inputs []string) scheduler.Build {
	sb := scheduler.Build{
		ID:         b.ID,
		Derivation: b.Derivation,
		System:     b.System,
		InputDrvs:  inputs,
		Features:   b.RequiredFeatures,
		Priority:   b.Priority,
		CreatedAt:  b.CreatedAt,
		DeferUntil: b.DeferUntil,
	}
	if len(b.Tags) > 0 {
		sb.Tags = make(map[string]string, len(b.Tags))
		for _, t := range b.Tags {
			sb.Tags[t.Key] = t.Value
		}
	}
	return sb
}

// restore rebuilds the scheduler from the database: scheduled builds are
// queued, allocated and started builds are put back with the agent that
// holds them (it may reconnect and continue them within the grace period).
// It returns the agents that hold builds.
func (c *Coordinator) restore(ctx context.Context) (map[string]bool, error) {
	runnable, err := c.store.RunnableBuilds(ctx)
	if err != nil {
		return nil, fmt.Errorf("load runnable builds: %w", err)
	}
	var heldBuilds []db.Build
	for _, st := range []db.BuildState{db.StateAllocated, db.StateStarted} {
		bs, err := c.store.Builds(ctx, db.BuildFilter{State: st})
		if err != nil {
			return nil, fmt.Errorf("load %s builds: %w", st, err)
		}
		heldBuilds = append(heldBuilds, bs...)
	}
	// The rebuild's peak memory is what is held at once: at 1,000,000
	// queued builds the store's rows (with outputs and tags) were about a
	// third of it, and a copy of them (append) another. So the rows are
	// converted one by one and each is dropped once converted, and input
	// paths share the string of the live build's derivation instead of
	// keeping the parsed .drv's own copy.
	live := make(map[string]string, len(runnable)+len(heldBuilds))
	for _, bs := range [][]db.Build{runnable, heldBuilds} {
		for _, b := range bs {
			live[b.Derivation] = b.Derivation
		}
	}
	inputsOf := map[string][]string{}
	var unresolved []string
	seen := map[string]bool{}
	batch := make([]scheduler.Build, 0, len(runnable)+len(heldBuilds))
	add := func(b db.NewBuild) {
		in, ok := inputsOf[b.Derivation]
		if !ok {
			var err error
			in, err = c.inputDerivations(b.Derivation)
			if err != nil {
				// Without its inputs the build still runs; the agent reports
				// anything missing as a setup failure.
				c.log.Warn("re-read derivation for dependencies", "build", b.ID, "err", err)
			}
			for i, d := range in {
				if s, ok := live[d]; ok {
					in[i] = s
					continue
				}
				if !seen[d] {
					seen[d] = true
					unresolved = append(unresolved, d)
				}
			}
			inputsOf[b.Derivation] = in
		}
		batch = append(batch, toSched(b, in))
	}
	for i := range runnable {
		add(runnable[i].NewBuild)
		runnable[i] = db.Build{}
	}
	runnable = nil
	// Held builds are few; their rows are kept for Restore below.
	for _, b := range heldBuilds {
		add(b.NewBuild)
	}
	live, inputsOf, seen = nil, nil, nil
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.resolveInputsLocked(ctx, unresolved); err != nil {
		return nil, err
	}
	if err := c.sched.AddBatch(batch); err != nil {
		return nil, fmt.Errorf("rebuild queue: %w", err)
	}
	held := map[string]bool{}
	for _, b := range heldBuilds {
		if b.AgentID == "" {
			continue
		}
		if err := c.sched.Restore(b.ID, b.AgentID); err != nil {
			return nil, fmt.Errorf("rebuild queue: %w", err)
		}
		held[b.AgentID] = true
	}
	return held, nil
}

// resolveInputsLocked marks as available, in the derivation-ordered
// strategy, the input derivations that have no live build here but whose
// outputs exist: a build of them succeeded here, or every output has a
// narinfo in the cache. Permissive mode assumes them substitutable anyway.
func (c *Coordinator) resolveInputsLocked(ctx context.Context, drvs []string) error {
	if c.cfg.Strategy != scheduler.DerivationOrdered || len(drvs) == 0 {
		return nil
	}
	var ask []string
	for _, d := range drvs {
		if live, avail := c.sched.Derivation(d); !live && !avail {
			ask = append(ask, d)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	done := map[string]bool{}
	if sc, ok := c.store.(db.Scheduling); ok {
		bs, err := sc.BuildsForDerivations(ctx, ask)
		if err != nil {
			return fmt.Errorf("look up builds of %d input derivations: %w", len(ask), err)
		}
		for _, b := range bs {
			if b.State == db.StateSucceeded {
				done[b.Derivation] = true
			}
		}
	}
	for _, d := range ask {
		if done[d] || c.outputsInCache(d) {
			c.sched.MarkAvailable(d)
		}
	}
	return nil
}

// outputsInCache reports whether every output of the derivation has a
// narinfo in the cache directory (the cache names them by hash part).
func (c *Coordinator) outputsInCache(drvPath string) bool {
	d, err := derivation.ReadFile(drvPath)
	if err != nil && c.cfg.Cache != nil {
		d, err = c.cfg.Cache.ReadDerivation(context.Background(), drvPath)
	}
	if err != nil || len(d.Outputs) == 0 {
		return false
	}
	for _, o := range d.Outputs {
		if c.cfg.Cache != nil {
			if !c.cfg.Cache.Has(o.Path) {
				return false
			}
			continue
		}
		sp, err := storepath.Parse(o.Path)
		if err != nil {
			return false
		}
		if _, err := os.Stat(filepath.Join(c.cfg.StateDir, "cache", sp.HashPart+".narinfo")); err != nil {
			return false
		}
	}
	return true
}

func (s *Session) schedAgent() scheduler.Agent {
	a := scheduler.Agent{ID: s.agentID, Systems: s.systems}
	for f := range s.features {
		a.Features = append(a.Features, f)
	}
	sort.Strings(a.Features)
	if len(s.requireTags) > 0 {
		a.RequireTags = map[string]string{}
		for _, kv := range s.requireTags {
			k, v, _ := cutKV(kv)
			a.RequireTags[k] = v
		}
	}
	return a
}

// dispatchLocked hands runnable builds to agents with free slots, one
// build per agent per round (least loaded first) so work spreads.
func (c *Coordinator) dispatchLocked(ctx context.Context) {
	if c.closed {
		return
	}
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		if !s.gone && !s.inactive && len(s.holds) < s.maxParallel {
			sessions = append(sessions, s)
		}
	}
	if len(sessions) == 0 {
		return
	}
	sort.Slice(sessions, func(i, j int) bool {
		li, lj := len(sessions[i].holds), len(sessions[j].holds)
		if li != lj {
			return li < lj
		}
		return sessions[i].agentID < sessions[j].agentID
	})
	var passed map[*Session]bool // gave back a build to avoid it this round
	for progress := true; progress; {
		progress = false
		for _, s := range sessions {
			if len(s.holds) >= s.maxParallel || passed[s] {
				continue
			}
			sb, ok := c.sched.Allocate(s.sched)
			if !ok {
				continue
			}
			if c.avoid[sb.ID][s.agentID] && c.otherCanTakeLocked(sb, s, sessions) {
				// Setup failed here before; a free agent that has not
				// failed it gets it in this round instead.
				c.sched.Requeue(sb.ID, s.agentID)
				if passed == nil {
					passed = map[*Session]bool{}
				}
				passed[s] = true
				progress = true
				continue
			}
			switch err := c.assignLocked(ctx, s, sb.ID); {
			case err == nil:
				progress = true
			case errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrNotFound):
				// Changed behind our back: the store is the truth, so
				// forget the build here and move on.
				c.log.Warn("allocate build", "build", sb.ID, "agent", s.agentID, "err", err)
				c.sched.Cancel(sb.ID)
				progress = true
			default:
				// The store failed: keep the build queued and try again at
				// the next event rather than spinning here.
				c.log.Error("allocate build", "build", sb.ID, "agent", s.agentID, "err", err)
				c.sched.Requeue(sb.ID, "")
				return
			}
		}
	}
}

func (c *Coordinator) otherCanTakeLocked(b scheduler.Build, except *Session, free []*Session) bool {
	for _, o := range free {
		if o != except && len(o.holds) < o.maxParallel && !c.avoid[b.ID][o.agentID] && o.canTake(b) {
			return true
		}
	}
	return false
}

// canTake: agent systems ⊇ build system, required features ⊆ agent
// features, and the agent's required tags are all on the build.
func (s *Session) canTake(b scheduler.Build) bool {
	if !slices.Contains(s.systems, b.System) {
		return false
	}
	for _, f := range b.Features {
		if !s.features[f] {
			return false
		}
	}
	for k, v := range s.sched.RequireTags {
		if bv, ok := b.Tags[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// assignLocked records the allocation and pushes the build to the agent.
func (c *Coordinator) assignLocked(ctx context.Context, s *Session, id string) error {
	a, err := c.allocate(ctx, id, s.agentID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.uploadDir(s.agentID, id), 0o755); err != nil {
		c.log.Error("create upload dir", "build", id, "err", err)
	}
	s.holds[id] = true
	outs := make([]protocol.OutputRef, 0, len(a.Outputs))
	for _, o := range a.Outputs {
		outs = append(outs, protocol.OutputRef{Name: o.Name, Path: o.Path})
	}
	timeout, silent := a.TimeoutSeconds, a.MaxSilentSeconds
	if timeout == 0 {
		timeout = int(c.cfg.BuildTimeout.Seconds())
	}
	if silent == 0 {
		silent = int(c.cfg.MaxSilentTime.Seconds())
	}
	s.push(&protocol.Build{
		Build:                id,
		Derivation:           a.Derivation,
		System:               a.System,
		Outputs:              outs,
		TimeoutSeconds:       timeout,
		MaxSilentTimeSeconds: silent,
		UploadDir:            "/uploads/" + id,
	})
	c.log.Info("build allocated", "build", id, "agent", s.agentID, "system", a.System, "priority", a.Priority)
	return nil
}

// allocate records the allocation and returns what the agent needs, in
// one transaction where the store can (db.Scheduling), else with a read
// after it.
func (c *Coordinator) allocate(ctx context.Context, id, agentID string) (db.Allocation, error) {
	if sc, ok := c.store.(db.Scheduling); ok {
		return sc.AllocateBuildFor(ctx, id, agentID, c.clk.Now())
	}
	if err := c.store.AllocateBuild(ctx, id, agentID, c.clk.Now()); err != nil {
		return db.Allocation{}, err
	}
	b, err := c.store.Build(ctx, id)
	if err != nil {
		return db.Allocation{}, fmt.Errorf("reload allocated build: %w", err)
	}
	return db.Allocation{ID: id, Derivation: b.Derivation, System: b.System, Priority: b.Priority,
		Attempt: len(b.Attempts), Outputs: b.Outputs, TimeoutSeconds: b.TimeoutSeconds, MaxSilentSeconds: b.MaxSilentSeconds}, nil
}

// outcome is how a build ended, for dependency handling.
type outcome int

const (
	outcomeSucceeded outcome = iota
	outcomeFailed
	outcomeCanceled
)

// endedLocked is called once per build reaching a terminal state: it tells
// the scheduler, wakes waiters and records failed-dependency for the
// dependents of a failed build (each naming the input that failed).
func (c *Coordinator) endedLocked(ctx context.Context, id string, how outcome) {
	c.wakeLocked(id)
	delete(c.avoid, id)
	switch how {
	case outcomeSucceeded:
		c.sched.Succeeded(id)
	case outcomeCanceled:
		c.sched.Cancel(id)
	case outcomeFailed:
		deps := c.sched.Failed(id)
		if len(deps) == 0 {
			return
		}
		failer, ok := c.store.(db.DependencyFailer)
		if !ok {
			c.log.Error("store cannot record failed-dependency; dependents stay scheduled in the database", "build", id, "dependents", len(deps))
			return
		}
		// The dependents already left the scheduler, so nothing can
		// dispatch them; recording them (one transaction for all) need not
		// hold the lock that every report and dispatch waits for. A crash
		// before the commit leaves them all scheduled in the database, as
		// a crash before the write did when it held the lock.
		// Waiters are woken after the write, so Wait sees the new state.
		now := c.clk.Now()
		batch := make([]db.DependencyFailure, len(deps))
		for i, d := range deps {
			batch[i] = db.DependencyFailure{ID: d.ID,
				Cause: fmt.Sprintf("dependency failed: input %s (build %s)", d.FailedInput, d.FailedBuild)}
		}
		write := func(ctx context.Context, locked bool) {
			var done []string
			skipped, err := failer.FailDependencies(ctx, now, batch)
			if err != nil {
				c.log.Error("mark failed dependencies", "build", id, "dependents", len(batch), "err", err)
			} else {
				for _, d := range batch {
					if e := skipped[d.ID]; e != nil {
						c.log.Error("mark failed dependency", "build", d.ID, "err", e)
						continue
					}
					c.log.Info("build failed: dependency", "build", d.ID, "cause", d.Cause)
					done = append(done, d.ID)
				}
			}
			if !locked {
				c.mu.Lock()
				defer c.mu.Unlock()
			}
			for _, id := range done {
				c.wakeLocked(id)
			}
		}
		if c.closed {
			write(ctx, true)
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			// The caller's context ends with its request; the writes
			// must not.
			write(context.WithoutCancel(ctx), false)
		}()
	}
}

func (c *Coordinator) wakeLocked(id string) {
	for _, ch := range c.waiters[id] {
		close(ch)
	}
	delete(c.waiters, id)
}

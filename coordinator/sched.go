package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/storepath"
)

// The in-memory queue is a scheduler.Scheduler (dependency graph, derived
// priority, per-(system, features, tags) heaps). The database stays the
// truth: every transition is written first, then the scheduler is told. The
// scheduler keeps only what ordering and matching need; what an agent needs
// to run a build (outputs, timeouts) is read from the store at dispatch.

// toSched converts a queued build (a page row of the rebuild, or a new
// build's db.NewBuild.Queued) for the scheduler, with its resolved inputs.
func toSched(b db.QueuedBuild, inputs []string) scheduler.Build {
	return scheduler.Build{
		ID:         b.ID,
		Derivation: b.Derivation,
		System:     b.System,
		InputDrvs:  inputs,
		Features:   b.RequiredFeatures,
		Tags:       tagMap(b.Tags),
		Priority:   b.Priority,
		CreatedAt:  b.CreatedAt,
		DeferUntil: b.DeferUntil,
	}
}

func tagMap(tags []db.Tag) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[t.Key] = t.Value
	}
	return m
}

// defaultRestorePage is how many scheduled builds the queue rebuild reads
// and queues at a time: the rebuild's transient memory is about one page
// of rows (a few MB), not the whole queue.
const defaultRestorePage = 10000

// restore rebuilds the scheduler from the database: scheduled builds are
// queued, allocated and started builds are put back with the agent that
// holds them (it may reconnect and continue them within the grace period).
// It returns the agents that hold builds.
//
// The scheduled builds come a page at a time (ScheduledBuildsPage, in
// recording order, which is inputs first in
// practice; the scheduler is exact in any order, AddBatch sorts each page)
// with their recorded input derivations; only builds recorded before
// inputs were stored (or by a store without the paged read) have their
// .drv re-read.
func (c *Coordinator) restore(ctx context.Context) (map[string]bool, error) {
	var heldBuilds []db.Build
	for _, st := range []db.BuildState{db.StateAllocated, db.StateStarted} {
		bs, err := c.store.Builds(ctx, db.BuildFilter{State: st})
		if err != nil {
			return nil, fmt.Errorf("load %s builds: %w", st, err)
		}
		heldBuilds = append(heldBuilds, bs...)
	}
	// Nothing else runs yet; the lock is for the scheduler's invariant.
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &restorer{ctx: ctx, c: c, unresolved: map[string]struct{}{}}
	// Held builds first: few, and usually inputs of the queued ones.
	batch := make([]scheduler.Build, 0, len(heldBuilds))
	for _, b := range heldBuilds {
		batch = append(batch, toSched(b.Queued(), r.inputs(b.ID, b.Derivation, b.InputDerivations)))
	}
	if err := r.add(batch); err != nil {
		return nil, err
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
		// Its attempt, for phases (few builds: one read each).
		if full, err := c.store.Build(ctx, b.ID); err == nil {
			c.restorePhasesLocked(full)
		} else {
			c.log.Warn("read held build for its phases", "build", b.ID, "err", err)
		}
	}
	for after := int64(0); ; {
		page, last, err := c.store.ScheduledBuildsPage(ctx, after, c.cfg.restorePage)
		if err != nil {
			return nil, fmt.Errorf("load scheduled builds: %w", err)
		}
		if len(page) == 0 {
			break
		}
		batch = batch[:0]
		for i := range page {
			batch = append(batch, toSched(page[i], r.inputs(page[i].ID, page[i].Derivation, page[i].InputDerivations)))
		}
		if err := r.add(batch); err != nil {
			return nil, err
		}
		after = last
	}
	clear(batch)
	unresolved := make([]string, 0, len(r.unresolved))
	for d := range r.unresolved {
		unresolved = append(unresolved, d)
	}
	r.unresolved = nil
	if err := c.resolveInputsLocked(ctx, unresolved); err != nil {
		return nil, err
	}
	return held, nil
}

// restorer is the state of one queue rebuild.
type restorer struct {
	ctx context.Context
	c   *Coordinator
	// unresolved holds input derivations that had no live build when the
	// page naming them was queued; once every page is in, those still
	// without one are looked up (resolveInputsLocked).
	unresolved map[string]struct{}
	// reread memoizes re-read .drv inputs per derivation for the current
	// batch (rebuilds of one derivation share them).
	reread map[string][]string
}

// inputs returns a build's input derivations: as recorded, else re-read
// from its .drv (host store, else the cache).
func (r *restorer) inputs(id, drv string, recorded []string) []string {
	if recorded != nil {
		return recorded
	}
	if in, ok := r.reread[drv]; ok {
		return in
	}
	in, err := r.c.inputDerivations(r.ctx, drv)
	if err != nil {
		// Without its inputs the build still runs; the agent reports
		// anything missing as a setup failure.
		r.c.log.Warn("re-read derivation for dependencies", "build", id, "err", err)
	}
	if r.reread == nil {
		r.reread = map[string][]string{}
	}
	r.reread[drv] = in
	return in
}

// add queues one batch and notes its inputs that have no live build yet.
func (r *restorer) add(batch []scheduler.Build) error {
	if err := r.c.sched.AddBatch(batch); err != nil {
		return fmt.Errorf("rebuild queue: %w", err)
	}
	for i := range batch {
		for _, in := range batch[i].InputDrvs {
			if _, ok := r.unresolved[in]; ok {
				continue
			}
			if live, _ := r.c.sched.Derivation(in); !live {
				// A re-read path may be a substring of its whole .drv.
				r.unresolved[strings.Clone(in)] = struct{}{}
			}
		}
	}
	clear(r.reread)
	return nil
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
	bs, err := c.store.BuildsForDerivations(ctx, ask)
	if err != nil {
		return fmt.Errorf("look up builds of %d input derivations: %w", len(ask), err)
	}
	for _, b := range bs {
		if b.State == db.StateSucceeded {
			done[b.Derivation] = true
		}
	}
	for _, d := range ask {
		if done[d] || c.outputsInCache(ctx, d) {
			c.sched.MarkAvailable(d)
		}
	}
	return nil
}

// outputsInCache reports whether every output of the derivation has a
// narinfo in the cache directory (the cache names them by hash part).
func (c *Coordinator) outputsInCache(ctx context.Context, drvPath string) bool {
	d, err := c.readDrv(ctx, drvPath)
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
	if c.closed || c.space.low {
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
				c.metrics.queueWait.WithLabelValues(sb.System).Observe(max(0, c.clk.Now().Sub(sb.Ready).Seconds()))
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
	c.openPhasesLocked(id, a.Attempt, s.agentID, a.System)
	s.holds[id] = s.push(&protocol.Build{
		Build:                id,
		Derivation:           a.Derivation,
		System:               a.System,
		Outputs:              outs,
		TimeoutSeconds:       timeout,
		MaxSilentTimeSeconds: silent,
		UploadDir:            "/uploads/" + id,
	})
	c.checkAllocatedLocked(id, s.agentID)
	c.log.Info("build allocated", "build", id, "agent", s.agentID, "system", a.System, "priority", a.Priority)
	return nil
}

// allocate records the allocation and returns, from the same
// transaction, what the agent needs.
func (c *Coordinator) allocate(ctx context.Context, id, agentID string) (db.Allocation, error) {
	return c.store.AllocateBuildFor(ctx, id, agentID, c.clk.Now())
}

// failChunk is how many failed-dependency transitions share one
// transaction: large enough to amortise the commit, small enough that a
// success waiting behind it is not delayed by more than a few ms.
const failChunk = 32

// outcome is how a build ended, for dependency handling.
type outcome int

const (
	outcomeSucceeded outcome = iota
	outcomeFailed
	outcomeCanceled
)

// endedLocked is called once per build reaching a terminal state: it tells
// the scheduler, wakes waiters and records failed-dependency for the
// dependents of a failed build (each naming the input that failed), and
// for those of a canceled build that would otherwise wait forever for it
// (derivation-ordered mode; see scheduler.CancelInput).
func (c *Coordinator) endedLocked(ctx context.Context, id string, how outcome) {
	c.wakeLocked(id)
	delete(c.avoid, id)
	c.activity.ended(c.clk.Now(), how)
	switch how {
	case outcomeSucceeded:
		c.sched.Succeeded(id)
	case outcomeCanceled:
		deps, _ := c.sched.CancelInput(id)
		c.failDependentsLocked(ctx, id, deps, true)
	case outcomeFailed:
		deps := c.sched.Failed(id)
		c.failDependentsLocked(ctx, id, deps, false)
	}
}

// failDependentsLocked records failed-dependency for deps, the dependents
// the scheduler removed with build id (failed, or canceled).
func (c *Coordinator) failDependentsLocked(ctx context.Context, id string, deps []scheduler.Dep, canceled bool) {
	if len(deps) == 0 {
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
		batch[i] = db.DependencyFailure{ID: d.ID, FailedInput: d.FailedInput, FailedBuild: d.FailedBuild, InputCanceled: canceled}
	}
	write := func(ctx context.Context, locked bool) {
		var done []string
		// In chunks: the store lets waiting transitions (a success,
		// an allocation) go between them, so a build with thousands
		// of dependents does not hold up dispatch for its length.
		for chunk := range slices.Chunk(batch, failChunk) {
			skipped, err := c.store.FailDependencies(ctx, now, chunk)
			if err != nil {
				c.log.Error("mark failed dependencies", "build", id, "dependents", len(chunk), "err", err)
				continue
			}
			for _, d := range chunk {
				if e := skipped[d.ID]; e != nil {
					c.log.Error("mark failed dependency", "build", d.ID, "err", e)
					continue
				}
				c.log.Info("build failed: dependency", "build", d.ID, "cause", d.Reason())
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
		// Not the caller's context, which ends with its request: the
		// coordinator's lifetime, which Close cancels (the dependents
		// then stay scheduled in the database, as after a crash).
		write(c.life, false)
	}()
}

func (c *Coordinator) wakeLocked(id string) {
	c.checkEndedLocked(id)
	for _, ch := range c.waiters[id] {
		close(ch)
	}
	delete(c.waiters, id)
}

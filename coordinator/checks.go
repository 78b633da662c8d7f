package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
)

// A reproducibility check builds one derivation on N distinct agents (its
// build sides: ordinary builds, recorded with the check) and compares
// every output's NAR; --against-cache also counts the NAR already
// published (the cache side). The coordinator keeps, in memory, which
// agent holds or built each side of a pending check, and excludes those
// agents from the other sides in the scheduler (scheduler.SetExcluded),
// so no agent builds two sides. A side's verified NAR is kept under
// StateDir/checks/<check>/<side>/ before it is published as usual (the
// cache keeps the first NAR it got; see publish). When every side has
// ended, the settler (settleChecks) records the verdict with its
// check-finished event.

// Check limits and defaults.
const (
	DefaultCheckAgents = 2
	MaxCheckAgents     = 32
	// DefaultCheckPriority is below ordinary builds' default (0), so
	// checks use idle agents.
	DefaultCheckPriority = -100
)

// CheckRequest asks for reproducibility checks of derivations.
type CheckRequest struct {
	Derivations  []string
	Agents       int // build sides per derivation; 0: DefaultCheckAgents
	AgainstCache bool
	Priority     int
}

// checkState is the coordinator's memory of pending checks (under c.mu).
type checkState struct {
	groups  map[string]*checkGroup // by check id
	byBuild map[string]checkRef
	// ended are checks a side of which ended since the settler last
	// looked; kick wakes it.
	ended map[string]bool
	kick  chan struct{}
}

type checkRef struct {
	check string
	side  int
}

type checkGroup struct {
	id    string
	pre   []string // excluded from every side (the cache side's builder)
	sides []*checkSideRun
}

type checkSideRun struct {
	side  int
	build string
	agent string // holds it, or built it once ended
	last  string // held it until released
	ended bool
}

func newCheckState() checkState {
	return checkState{groups: map[string]*checkGroup{}, byBuild: map[string]checkRef{}, ended: map[string]bool{},
		kick: make(chan struct{}, 1)}
}

func (c *Coordinator) addCheckGroupLocked(g *checkGroup) {
	c.checks.groups[g.id] = g
	for _, sd := range g.sides {
		c.checks.byBuild[sd.build] = checkRef{g.id, sd.side}
	}
	c.excludeLocked(g)
}

// excludeLocked gives every side not held or ended the agents of the
// others as its excluded set.
func (c *Coordinator) excludeLocked(g *checkGroup) {
	for _, sd := range g.sides {
		if sd.ended || sd.agent != "" {
			continue
		}
		excl := slices.Clone(g.pre)
		for _, o := range g.sides {
			if o != sd && o.agent != "" && !slices.Contains(excl, o.agent) {
				excl = append(excl, o.agent)
			}
		}
		c.sched.SetExcluded(sd.build, excl)
	}
}

func (c *Coordinator) checkSideLocked(buildID string) (*checkGroup, *checkSideRun) {
	ref, ok := c.checks.byBuild[buildID]
	if !ok {
		return nil, nil
	}
	g := c.checks.groups[ref.check]
	if g == nil {
		return nil, nil
	}
	for _, sd := range g.sides {
		if sd.side == ref.side {
			return g, sd
		}
	}
	return nil, nil
}

// checkAllocatedLocked: a side went to agentID; the other sides may not.
func (c *Coordinator) checkAllocatedLocked(buildID, agentID string) {
	g, sd := c.checkSideLocked(buildID)
	if sd == nil {
		return
	}
	sd.agent, sd.last = agentID, agentID
	c.excludeLocked(g)
}

// checkReleasedLocked: the side left its agent (requeued, or about to
// end: checkEndedLocked then gives it its agent back).
func (c *Coordinator) checkReleasedLocked(buildID string) {
	g, sd := c.checkSideLocked(buildID)
	if sd == nil || sd.ended {
		return
	}
	sd.agent = ""
	c.excludeLocked(g)
}

// checkEndedLocked: the side's build reached a final state.
func (c *Coordinator) checkEndedLocked(buildID string) {
	g, sd := c.checkSideLocked(buildID)
	if sd == nil {
		return
	}
	sd.ended = true
	sd.agent = sd.last
	c.excludeLocked(g)
	c.checks.ended[g.id] = true
	select {
	case c.checks.kick <- struct{}{}:
	default:
	}
}

// restoreChecks rebuilds the memory of pending checks from the store,
// after the queue: sides' holders and builders, exclusions, and one look
// by the settler (sides may have ended while the coordinator was down).
func (c *Coordinator) restoreChecks(ctx context.Context) error {
	pending, err := c.store.Checks(ctx, db.CheckFilter{State: db.CheckPending})
	if err != nil {
		return fmt.Errorf("load pending checks: %w", err)
	}
	var groups []*checkGroup
	for _, ck := range pending {
		g := &checkGroup{id: ck.ID}
		for _, sd := range ck.Sides {
			if sd.Side == db.CheckSideCache {
				if sd.AgentID != "" {
					g.pre = append(g.pre, sd.AgentID)
				}
				continue
			}
			run := &checkSideRun{side: sd.Side, build: sd.BuildID}
			b, err := c.store.Build(ctx, sd.BuildID)
			switch {
			case errors.Is(err, db.ErrNotFound):
				run.ended = true
			case err != nil:
				return fmt.Errorf("load check %s side %d: %w", ck.ID, sd.Side, err)
			default:
				switch {
				case b.State.Terminal():
					run.ended, run.agent, run.last = true, b.AgentID, b.AgentID
				case b.State == db.StateAllocated || b.State == db.StateStarted:
					run.agent, run.last = b.AgentID, b.AgentID
				}
			}
			g.sides = append(g.sides, run)
		}
		groups = append(groups, g)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range groups {
		c.addCheckGroupLocked(g)
		c.checks.ended[g.id] = true
	}
	if len(groups) > 0 {
		select {
		case c.checks.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// SubmitChecks records one check per derivation, each with its build
// sides, and queues the builds. It returns the check ids in order.
func (c *Coordinator) SubmitChecks(ctx context.Context, req CheckRequest) ([]string, error) {
	if len(req.Derivations) == 0 {
		return nil, fmt.Errorf("%w: no derivations given", ErrBadSubmission)
	}
	if len(req.Derivations)*max(1, req.Agents) > MaxSubmit {
		return nil, fmt.Errorf("%w: %d derivations × %d agents, at most %d builds per submission", ErrBadSubmission, len(req.Derivations), req.Agents, MaxSubmit)
	}
	if req.Agents == 0 {
		req.Agents = DefaultCheckAgents
	}
	minAgents := 2
	if req.AgainstCache {
		minAgents = 1
	}
	if req.Agents < minAgents || req.Agents > MaxCheckAgents {
		return nil, fmt.Errorf("%w: --agents %d: want %d to %d (a check compares at least two NARs)", ErrBadSubmission, req.Agents, minAgents, MaxCheckAgents)
	}
	now := c.clk.Now()
	loaded := c.preload(ctx, req.Derivations, nil)
	type planned struct {
		check  db.NewCheck
		builds []db.NewBuild
		inputs []string
		group  *checkGroup
	}
	plans := make([]planned, 0, len(req.Derivations))
	var kept []string // files copied for cache sides, removed if recording fails
	fail := func(err error) ([]string, error) {
		for _, f := range kept {
			os.Remove(f)
		}
		return nil, err
	}
	for _, p := range req.Derivations {
		nb, in, err := c.readDerivation(ctx, p, loaded[p])
		if err != nil {
			return fail(err)
		}
		pl := planned{inputs: in}
		pl.check = db.NewCheck{ID: newBuildID(), Derivation: nb.Derivation, System: nb.System, Agents: req.Agents,
			AgainstCache: req.AgainstCache, Priority: req.Priority, CreatedAt: now}
		pl.group = &checkGroup{id: pl.check.ID}
		if req.AgainstCache {
			side, files, err := c.cacheSide(ctx, pl.check.ID, nb)
			kept = append(kept, files...)
			if err != nil {
				return fail(err)
			}
			pl.check.Sides = append(pl.check.Sides, side)
			if side.AgentID != "" {
				pl.group.pre = []string{side.AgentID}
			}
		}
		for i := 1; i <= req.Agents; i++ {
			b := nb
			b.ID = newBuildID()
			b.Priority = req.Priority
			b.CreatedAt = now
			b.Tags = nil
			pl.builds = append(pl.builds, b)
			pl.check.Sides = append(pl.check.Sides, db.CheckSide{Side: i, BuildID: b.ID})
			pl.group.sides = append(pl.group.sides, &checkSideRun{side: i, build: b.ID})
		}
		plans = append(plans, pl)
	}
	ids := make([]string, 0, len(plans))
	for i, pl := range plans {
		if err := c.store.CreateCheck(ctx, pl.check, pl.builds); err != nil {
			if i == 0 {
				return fail(fmt.Errorf("record check of %s: %w", pl.check.Derivation, err))
			}
			// Earlier checks are recorded and queued: say which.
			return ids, fmt.Errorf("record check of %s (the checks before it were recorded): %w", pl.check.Derivation, err)
		}
		c.mu.Lock()
		if err := c.resolveInputsLocked(ctx, pl.inputs); err != nil {
			c.log.Error("resolve input derivations", "err", err)
		}
		for _, b := range pl.builds {
			if err := c.sched.Add(toSched(b.Queued(), pl.inputs)); err != nil {
				c.log.Error("queue check build", "check", pl.check.ID, "build", b.ID, "err", err)
			}
		}
		c.addCheckGroupLocked(pl.group)
		c.dispatchLocked(ctx)
		c.mu.Unlock()
		c.log.Info("check submitted", "check", pl.check.ID, "derivation", pl.check.Derivation, "agents", req.Agents, "against_cache", req.AgainstCache)
		ids = append(ids, pl.check.ID)
	}
	return ids, nil
}

// cacheSide copies the published NAR of every output of nb into the
// check area: the cache side of a check --against-cache. Its agent is
// that of the newest successful build of the derivation here, if any.
func (c *Coordinator) cacheSide(ctx context.Context, checkID string, nb db.NewBuild) (db.CheckSide, []string, error) {
	side := db.CheckSide{Side: db.CheckSideCache}
	if c.cfg.Cache == nil {
		return side, nil, fmt.Errorf("%w: --against-cache: this coordinator has no cache", ErrBadSubmission)
	}
	var files []string
	for _, o := range nb.Outputs {
		ni, err := c.cfg.Cache.Lookup(o.Path)
		if err != nil {
			return side, files, fmt.Errorf("%w: --against-cache: output %s of %s (%s) is not in the cache: %w", ErrBadSubmission, o.Name, nb.Derivation, o.Path, err)
		}
		rel := filepath.Join("checks", checkID, "0", filepath.Base(ni.URL))
		if err := copyKept(filepath.Join(c.cfg.Cache.Dir(), filepath.FromSlash(ni.URL)), filepath.Join(c.cfg.StateDir, rel)); err != nil {
			return side, files, fmt.Errorf("keep the cached NAR of %s: %w", o.Path, err)
		}
		files = append(files, filepath.Join(c.cfg.StateDir, rel))
		side.Outputs = append(side.Outputs, db.CheckOutput{Name: o.Name, Path: o.Path, NarHash: ni.NarHash.String(),
			NarSize: int64(ni.NarSize), File: rel, Compression: ni.Compression})
	}
	bs, err := c.store.BuildsForDerivations(ctx, []string{nb.Derivation})
	if err != nil {
		return side, files, fmt.Errorf("look up the builds of %s: %w", nb.Derivation, err)
	}
	for _, b := range bs { // newest first
		if b.State == db.StateSucceeded {
			side.AgentID = b.AgentID
			break
		}
	}
	return side, files, nil
}

// copyKept copies src to dst through a temporary name in dst's directory,
// synced before the rename; a hard link when both are on one filesystem.
func copyKept(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// keepCheckSide keeps a check side's verified NARs in the check area and
// records them, before they are published: a build whose success is
// recorded always has its side recorded.
func (c *Coordinator) keepCheckSide(ctx context.Context, buildID, agentID, dir string, reported []protocol.OutputResult, results []db.OutputResult) error {
	c.mu.Lock()
	ref, ok := c.checks.byBuild[buildID]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	outs := make([]db.CheckOutput, 0, len(results))
	for i, r := range results {
		rel := filepath.Join("checks", ref.check, strconv.Itoa(ref.side), filepath.Base(r.File))
		src := filepath.Join(dir, reported[i].Upload)
		if err := copyKept(src, filepath.Join(c.cfg.StateDir, rel)); err != nil {
			if _, serr := os.Stat(filepath.Join(c.cfg.StateDir, rel)); serr != nil {
				return fmt.Errorf("keep the NAR of %s for check %s: %w", r.Path, ref.check, err)
			}
			// Kept by an earlier copy of this result (a resend).
		}
		outs = append(outs, db.CheckOutput{Name: r.Name, Path: r.Path, NarHash: r.NarHash, NarSize: r.NarSize, File: rel, Compression: r.Compression})
	}
	if err := c.store.RecordCheckSide(ctx, ref.check, ref.side, agentID, outs); err != nil {
		return fmt.Errorf("record side %d of check %s: %w", ref.side, ref.check, err)
	}
	return nil
}

// settleChecks records the verdict of every check whose sides all ended.
// It runs until Close, woken by checkEndedLocked; a check it could not
// settle (the store failing) is tried again a little later.
func (c *Coordinator) settleChecks() {
	defer c.wg.Done()
	ctx := c.life
	var retry <-chan time.Time
	for {
		select {
		case <-c.checks.kick:
		case <-retry:
		case <-c.done:
			return
		}
		retry = nil
		c.mu.Lock()
		ids := make([]string, 0, len(c.checks.ended))
		for id := range c.checks.ended {
			ids = append(ids, id)
		}
		clear(c.checks.ended)
		c.mu.Unlock()
		sort.Strings(ids)
		for _, id := range ids {
			if err := c.settleCheck(ctx, id); err != nil {
				c.log.Error("settle check", "check", id, "err", err)
				c.mu.Lock()
				c.checks.ended[id] = true
				c.mu.Unlock()
				retry = c.clk.After(5 * time.Second)
			}
		}
	}
}

// verdict decides a check from its sides: failed if a build side did
// not succeed, else unreproducible (naming the outputs) if some output's
// NAR hashes differ, else reproducible. done is false while a side runs.
func verdict(ck db.Check, builds map[string]db.Build) (state db.CheckState, unrep []string, done bool) {
	failed := false
	for _, sd := range ck.Sides {
		if sd.Side == db.CheckSideCache {
			continue
		}
		b, ok := builds[sd.BuildID]
		switch {
		case !ok:
			failed = true // the build is gone (pruned)
		case !b.State.Terminal():
			return db.CheckPending, nil, false
		case b.State != db.StateSucceeded || len(sd.Outputs) == 0:
			failed = true
		}
	}
	if failed {
		return db.CheckFailed, nil, true
	}
	hashes := map[string]map[string]bool{}
	var names []string
	for _, sd := range ck.Sides {
		for _, o := range sd.Outputs {
			if hashes[o.Name] == nil {
				hashes[o.Name] = map[string]bool{}
				names = append(names, o.Name)
			}
			hashes[o.Name][o.NarHash] = true
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if len(hashes[n]) > 1 {
			unrep = append(unrep, n)
		}
	}
	if len(unrep) > 0 {
		return db.CheckUnreproducible, unrep, true
	}
	return db.CheckReproducible, nil, true
}

func (c *Coordinator) checkBuilds(ctx context.Context, ck db.Check) (map[string]db.Build, error) {
	builds := map[string]db.Build{}
	for _, sd := range ck.Sides {
		if sd.BuildID == "" {
			continue
		}
		b, err := c.store.Build(ctx, sd.BuildID)
		if errors.Is(err, db.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("check %s side %d: %w", ck.ID, sd.Side, err)
		}
		builds[sd.BuildID] = b
	}
	return builds, nil
}

func (c *Coordinator) settleCheck(ctx context.Context, id string) error {
	ck, err := c.store.Check(ctx, id)
	if err != nil {
		return err
	}
	if ck.State == db.CheckPending {
		builds, err := c.checkBuilds(ctx, ck)
		if err != nil {
			return err
		}
		// The sides again, read after their builds: a side is recorded
		// before its build's success, so a build read as succeeded has
		// its outputs in this read (the first may predate them).
		if ck, err = c.store.Check(ctx, id); err != nil {
			return err
		}
		state, unrep, done := verdict(ck, builds)
		if !done {
			return nil
		}
		if err := c.store.FinishCheck(ctx, id, c.clk.Now(), state, unrep); err != nil && !errors.Is(err, db.ErrConflict) {
			return err
		}
		c.metrics.checksFinished.WithLabelValues(string(state)).Inc()
		c.log.Info("check finished", "check", id, "derivation", ck.Derivation, "verdict", string(state), "unreproducible", unrep)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.checks.groups[id]; g != nil {
		for _, sd := range g.sides {
			delete(c.checks.byBuild, sd.build)
		}
		delete(c.checks.groups, id)
	}
	c.wakeLocked(id)
	return nil
}

// Checks lists checks newest first.
func (c *Coordinator) Checks(ctx context.Context, f db.CheckFilter) ([]db.Check, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, fmt.Errorf("%w: state %q: want pending, reproducible, unreproducible or failed", ErrBadSubmission, text.Truncate(string(f.State), 40))
	}
	return c.store.Checks(ctx, f)
}

// ChecksSummary counts derivations by system and latest verdict and lists
// the unreproducible ones.
func (c *Coordinator) ChecksSummary(ctx context.Context) ([]db.CheckCount, []db.Check, error) {
	return c.store.ChecksSummary(ctx)
}

// WaitCheck blocks until the check has a verdict and returns it; pending,
// when set, is told why the check waits whenever that changes (looked at
// every 30 s).
func (c *Coordinator) WaitCheck(ctx context.Context, id string, pending func(string)) (db.Check, error) {
	last := ""
	for {
		ch := make(chan struct{})
		c.mu.Lock()
		c.waiters[id] = append(c.waiters[id], ch)
		c.mu.Unlock()
		ck, err := c.store.Check(ctx, id)
		if err != nil {
			c.dropWaiter(id, ch)
			return db.Check{}, c.checkNotFound(id, err)
		}
		if ck.State != db.CheckPending {
			c.dropWaiter(id, ch)
			return ck, nil
		}
		if pending != nil {
			if why := c.CheckWaiting(ck); why != last && why != "" {
				pending(why)
				last = why
			}
		}
		select {
		case <-ch:
		case <-c.clk.After(30 * time.Second):
			c.dropWaiter(id, ch)
		case <-ctx.Done():
			c.dropWaiter(id, ch)
			return db.Check{}, ctx.Err()
		case <-c.done:
			return db.Check{}, errors.New("coordinator is shutting down")
		}
	}
}

func (c *Coordinator) checkNotFound(id string, err error) error {
	if errors.Is(err, db.ErrNotFound) {
		return &plainError{fmt.Sprintf("no check %q ('checks' lists them)", text.Truncate(id, 64)), db.ErrNotFound}
	}
	return err
}

// CheckWaiting says why a pending check's queued sides do not run
// (no agent left that has not built a side, inputs, system), or "".
func (c *Coordinator) CheckWaiting(ck db.Check) string {
	var why []string
	for _, sd := range ck.Sides {
		if sd.BuildID == "" {
			continue
		}
		bl, queued := c.Blockage(sd.BuildID)
		if !queued {
			continue
		}
		switch {
		case bl.NoAgent != nil && bl.NoAgent.Kind == NoAgentNotExcluded:
			var names []string
			for _, a := range bl.NoAgent.Agents {
				names = append(names, a.Name)
			}
			why = append(why, fmt.Sprintf("side %d (build %s): every agent that could take it holds or built another side of this check (%s); the %d sides of a check need %d distinct agents",
				sd.Side, sd.BuildID, strings.Join(names, ", "), ck.Agents, ck.Agents))
		case bl.NoAgent != nil:
			why = append(why, fmt.Sprintf("side %d (build %s): %s", sd.Side, sd.BuildID, bl.NoAgent.Message))
		case len(bl.Inputs) > 0:
			why = append(why, fmt.Sprintf("side %d (build %s) waits for %d input derivations", sd.Side, sd.BuildID, len(bl.Inputs)))
		}
	}
	return strings.Join(why, "; ")
}

// openCheckNar opens the NAR of one output of one side, decompressed.
func (c *Coordinator) openCheckNar(o db.CheckOutput) (io.ReadCloser, error) {
	if o.File == "" || filepath.IsAbs(o.File) || strings.Contains(o.File, "..") {
		return nil, fmt.Errorf("kept NAR %q: not a path in the state directory", o.File)
	}
	f, err := os.Open(filepath.Join(c.cfg.StateDir, o.File))
	if err != nil {
		return nil, fmt.Errorf("open the kept NAR of %s: %w", o.Path, err)
	}
	dec, err := compression.NewReader(f, o.Compression)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompress the kept NAR of %s (%s): %w", o.Path, o.Compression, err)
	}
	return readCloser{dec, func() error { dec.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

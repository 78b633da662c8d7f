package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
)

// Attempt phases. The coordinator keeps the current phase of every held
// build in memory (live), which is what validates agents' reports and
// what the phase metrics observe. A phase change is recorded in the store by a
// background writer that takes every mark pending at once (one
// transaction for all of them, letting other writes go first), so a
// tiny build pays no commit of its own for its phases; building is the
// attempt's start, which its own transition records anyway. Until a mark
// is committed, Build merges it in from memory, so readers never see a
// phase go missing.

// maxPendingMarks bounds the phase marks waiting for the writer (a store
// that stays unreachable must not grow memory); marks beyond it are
// dropped and logged.
const maxPendingMarks = 1 << 16

// livePhase is a held build's attempt and where it is.
type livePhase struct {
	attempt int
	agent   string
	system  string
	phase   db.Phase // "" until the first phase
	since   time.Time
}

// phaseLog is the marks not yet committed.
type phaseLog struct {
	mu       sync.Mutex
	pending  []db.PhaseMark
	flushing []db.PhaseMark // taken by the writer, not yet committed
	dropped  int
	wake     chan struct{} // capacity 1
}

// openPhasesLocked starts tracking a build just allocated.
func (c *Coordinator) openPhasesLocked(id string, attempt int, agentID, system string) {
	c.live[id] = &livePhase{attempt: attempt, agent: agentID, system: system, since: c.clk.Now()}
}

// closePhasesLocked ends tracking when the build leaves its agent: its
// last phase ends now.
func (c *Coordinator) closePhasesLocked(id string) {
	lp := c.live[id]
	if lp == nil {
		return
	}
	delete(c.live, id)
	c.observeLocked(id, lp, c.clk.Now())
}

func (c *Coordinator) observeLocked(id string, lp *livePhase, end time.Time) {
	if lp.phase == "" {
		return
	}
	c.metrics.phaseDuration.WithLabelValues(lp.system, string(lp.phase)).Observe(max(0, end.Sub(lp.since).Seconds()))
}

// enterPhaseLocked moves the build's live attempt to phase p at at, if
// that is forward; building is not marked (the start records it).
func (c *Coordinator) enterPhaseLocked(id string, lp *livePhase, p db.Phase, at time.Time) {
	if p.Rank() <= lp.phase.Rank() {
		return
	}
	c.observeLocked(id, lp, at)
	lp.phase, lp.since = p, at
	if p == db.PhaseBuilding {
		return
	}
	c.markPhase(db.PhaseMark{Build: id, Attempt: lp.attempt, Phase: p, At: at})
}

// markPhase queues a mark for the writer.
func (c *Coordinator) markPhase(m db.PhaseMark) {
	pl := &c.phases
	pl.mu.Lock()
	if len(pl.pending) >= maxPendingMarks {
		if pl.dropped == 0 {
			c.log.Warn("phase marks dropped: the store does not keep up", "pending", len(pl.pending))
		}
		pl.dropped++
		pl.mu.Unlock()
		return
	}
	pl.pending = append(pl.pending, m)
	pl.mu.Unlock()
	select {
	case pl.wake <- struct{}{}:
	default:
	}
}

// writePhases is the background writer: every wake takes all pending
// marks into one transaction. Close writes what is left once it stopped
// (finalPhases).
func (c *Coordinator) writePhases() {
	defer c.wg.Done()
	for {
		select {
		case <-c.phases.wake:
			c.flushPhases(c.life)
		case <-c.done:
			return
		}
	}
}

// finalPhases writes, once Close stopped the writer, the marks still
// pending (those of the last moments, and a batch whose write Close
// canceled): one transaction, Close's own, after the lifetime ended.
func (c *Coordinator) finalPhases() { c.flushPhases(context.Background()) }

func (c *Coordinator) flushPhases(ctx context.Context) {
	pl := &c.phases
	pl.mu.Lock()
	batch := pl.pending
	pl.pending, pl.flushing = nil, batch
	pl.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := c.store.RecordPhases(ctx, batch)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.flushing = nil
	if err != nil {
		// Kept for the next wake (the next mark), within the bound: a
		// store that is down does not make the writer spin.
		c.log.Error("record phase marks; retried with the next ones", "marks", len(batch), "err", err)
		if room := maxPendingMarks - len(pl.pending); room > 0 {
			pl.pending = append(batch[:min(len(batch), room):min(len(batch), room)], pl.pending...)
		}
		return
	}
	if pl.dropped > 0 {
		c.log.Warn("phase marks were dropped while the store did not keep up", "dropped", pl.dropped)
		pl.dropped = 0
	}
}

// unflushedMarks returns the marks of build id not yet committed.
func (c *Coordinator) unflushedMarks(id string) []db.PhaseMark {
	pl := &c.phases
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var out []db.PhaseMark
	for _, set := range [][]db.PhaseMark{pl.flushing, pl.pending} {
		for _, m := range set {
			if m.Build == id {
				out = append(out, m)
			}
		}
	}
	return out
}

// withMarks merges uncommitted marks into the attempts they belong to.
func withMarks(b db.Build, marks []db.PhaseMark) db.Build {
	for _, m := range marks {
		i := m.Attempt - 1
		if i < 0 || i >= len(b.Attempts) || b.Attempts[i].Number != m.Attempt {
			continue
		}
		a := &b.Attempts[i]
		if slices.ContainsFunc(a.Phases, func(p db.PhaseTime) bool { return p.Phase == m.Phase }) {
			continue
		}
		a.Phases = append(slices.Clip(a.Phases), db.PhaseTime{Phase: m.Phase, At: m.At})
		slices.SortStableFunc(a.Phases, func(x, y db.PhaseTime) int { return x.Phase.Rank() - y.Phase.Rank() })
	}
	return b
}

// liveFor returns the live phase of a build this session holds. After a
// coordinator restart a held build has none until it is first asked for:
// then its latest attempt is read from the store (outside the lock).
// The caller holds c.mu; it may be released and taken again.
func (s *Session) liveForLocked(ctx context.Context, id string) (*livePhase, error) {
	c := s.c
	if _, held := s.holds[id]; !held || c.sessions[s.agentID] != s {
		return nil, fmt.Errorf("build %s: %w", text.Truncate(id, 64), ErrNotYourBuild)
	}
	if lp := c.live[id]; lp != nil {
		return lp, nil
	}
	c.mu.Unlock()
	b, err := c.store.Build(ctx, id)
	c.mu.Lock()
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", id, err)
	}
	if _, held := s.holds[id]; !held || c.sessions[s.agentID] != s || b.AgentID != s.agentID || len(b.Attempts) == 0 {
		return nil, fmt.Errorf("build %s: %w", id, ErrNotYourBuild)
	}
	if lp := c.live[id]; lp != nil {
		return lp, nil
	}
	c.restorePhasesLocked(b)
	return c.live[id], nil
}

// errPhaseBackward refuses a phase report that would move an attempt back.
var errPhaseBackward = errors.New("phases only move forward")

// Phase records that the agent moved a build it holds to another phase
// (protocol.Phase): preparing or uploading. A repeat of the current phase
// is accepted and changes nothing (a resend); an earlier one, a phase
// agents do not report or a build the agent does not hold is refused.
func (s *Session) Phase(ctx context.Context, m *protocol.Phase) error {
	if m.Build == "" {
		return errors.New("phase: missing build id")
	}
	var p db.Phase
	switch m.Phase {
	case protocol.PhasePreparing:
		p = db.PhasePreparing
	case protocol.PhaseUploading:
		p = db.PhaseUploading
	default:
		return fmt.Errorf("phase: %q is not a phase agents report (%s, %s)", text.Truncate(m.Phase, 64), protocol.PhasePreparing, protocol.PhaseUploading)
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	lp, err := s.liveForLocked(ctx, m.Build)
	if err != nil {
		return err
	}
	if p.Rank() < lp.phase.Rank() {
		return fmt.Errorf("phase %s of build %s after %s: %w", p, m.Build, lp.phase, errPhaseBackward)
	}
	c.enterPhaseLocked(m.Build, lp, p, c.clk.Now())
	return nil
}

// coordinatorPhase moves a build whose result this session delivered to
// one of the coordinator's phases (verifying, publishing), even if a
// newer session of the agent replaced this one meanwhile. A build no
// longer tracked gets no mark: phases are what was seen, never invented.
func (s *Session) coordinatorPhase(id string, p db.Phase) {
	s.enterTracked(id, p, s.c.clk.Now())
}

// enterTracked moves a build this agent holds, if it is tracked, to p.
func (s *Session) enterTracked(id string, p db.Phase, at time.Time) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if lp := c.live[id]; lp != nil && lp.agent == s.agentID {
		c.enterPhaseLocked(id, lp, p, at)
	}
}

// restorePhasesLocked tracks a build the store says an agent held when
// the coordinator stopped, from its latest attempt.
func (c *Coordinator) restorePhasesLocked(b db.Build) {
	if len(b.Attempts) == 0 || b.AgentID == "" {
		return
	}
	a := b.Attempts[len(b.Attempts)-1]
	lp := &livePhase{attempt: a.Number, agent: b.AgentID, system: b.System, since: a.AllocatedAt}
	if n := len(a.Phases); n > 0 {
		lp.phase, lp.since = a.Phases[n-1].Phase, a.Phases[n-1].At
	}
	c.live[b.ID] = lp
}

// RunningPhases counts the builds held by agents by the phase their
// attempt is in ("" for those that reported none yet): for gauges read at
// scrape time, from memory.
func (c *Coordinator) RunningPhases() map[db.Phase]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := make(map[db.Phase]int, 6)
	for _, lp := range c.live {
		n[lp.phase]++
	}
	return n
}

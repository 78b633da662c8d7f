package coordinator

import (
	"github.com/gbc-farm/gbc/scheduler"
)

// MaxBlockers bounds the input derivations one Blockage lists.
const MaxBlockers = 50

// FixUnbuildable is what an operator can do about inputs nothing builds.
const FixUnbuildable = "submit them, or resubmit with --ensure-all-related-derivation-outputs-have-successful-builds (which also submits every input whose outputs are not in the cache)"

// BlockingInput is an input derivation a queued build waits for.
type BlockingInput struct {
	Derivation string `json:"derivation"`
	// Builds are its queued or running builds here; none means nothing
	// here will build it.
	Builds []string `json:"builds"`
	// Unbuildable: nothing here will make its outputs available (no build
	// of it, or every build of it waits for such an input itself).
	Unbuildable bool `json:"unbuildable"`
}

// Blockage explains why a queued build is not running, from the
// scheduler's state (no query over the builds table).
type Blockage struct {
	// Inputs it waits for (at most MaxBlockers).
	Inputs []BlockingInput
	// Unbuildable are the derivations in its input closure that nothing
	// here will build, which keep it waiting forever (at most MaxBlockers
	// of UnbuildableTotal).
	Unbuildable      []string
	UnbuildableTotal int
	// NoAgent says why no agent takes it now; nil when a free one can.
	NoAgent *NoAgent
}

// Stuck reports whether the build waits for something nothing will build.
func (b Blockage) Stuck() bool { return b.UnbuildableTotal > 0 }

// Blockage explains why a queued build waits; false when the build is not
// queued (running, ended or unknown).
func (c *Coordinator) Blockage(id string) (Blockage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.sched.StateOf(id)
	if !ok || st == scheduler.Allocated {
		return Blockage{}, false
	}
	inputs, unb, total, _ := c.sched.Blockers(id, MaxBlockers)
	bl := Blockage{Unbuildable: unb, UnbuildableTotal: total}
	for _, in := range inputs {
		bl.Inputs = append(bl.Inputs, BlockingInput{Derivation: in.Derivation, Builds: nonNilStrings(in.Builds), Unbuildable: in.Unbuildable})
	}
	if sb, ok := c.sched.Lookup(id); ok {
		bl.NoAgent = c.noAgentLocked(sb, st == scheduler.Ready)
	}
	return bl, true
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// blockedLocked counts, for Status, the queued builds that wait for inputs
// nothing will build and the ready builds no connected active agent can
// take.
func (c *Coordinator) blockedLocked() (stuck, unmatched int) {
	var agents []scheduler.Agent
	for _, s := range c.sessions {
		if !s.gone && !s.inactive {
			agents = append(agents, s.sched)
		}
	}
	return c.sched.Stuck(), c.sched.Unmatched(agents)
}

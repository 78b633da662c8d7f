package coordinator

import (
	"fmt"
	"slices"
	"sort"
	"strings"

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
	// NoAgent says why no connected agent can take it; empty when one can.
	NoAgent string
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
		bl.NoAgent = c.noAgentLocked(sb)
	}
	return bl, true
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// noAgentLocked says why no connected agent can take b (system, required
// features, the agents' required tags, deactivation), or "" if one can.
func (c *Coordinator) noAgentLocked(b scheduler.Build) string {
	var sessions []*Session
	for _, s := range c.sessions {
		if !s.gone {
			sessions = append(sessions, s)
		}
	}
	if len(sessions) == 0 {
		return "no agent is connected"
	}
	sort.Slice(sessions, func(i, j int) bool { return sessions[i].agentID < sessions[j].agentID })
	var systems []string
	var bySystem, byFeatures, byTags []*Session
	for _, s := range sessions {
		for _, sys := range s.systems {
			if !slices.Contains(systems, sys) {
				systems = append(systems, sys)
			}
		}
		if !slices.Contains(s.systems, b.System) {
			continue
		}
		bySystem = append(bySystem, s)
		has := true
		for _, f := range b.Features {
			has = has && s.features[f]
		}
		if !has {
			continue
		}
		byFeatures = append(byFeatures, s)
		if !s.canTake(b) {
			continue
		}
		byTags = append(byTags, s)
		if !s.inactive {
			return ""
		}
	}
	sort.Strings(systems)
	switch {
	case len(bySystem) == 0:
		return fmt.Sprintf("no connected agent builds system %s (the connected agents build %s)", b.System, strings.Join(systems, ", "))
	case len(byFeatures) == 0:
		return fmt.Sprintf("no connected agent for %s has every required feature (%s)", b.System, strings.Join(b.Features, ", "))
	case len(byTags) == 0:
		var req []string
		for _, s := range byFeatures {
			req = append(req, fmt.Sprintf("%s requires %s", s.name, strings.Join(s.requireTags, ",")))
		}
		return fmt.Sprintf("every connected agent for %s takes only builds with tags this one lacks (%s); resubmit with --tag K=V", b.System, strings.Join(req, "; "))
	}
	var names []string
	for _, s := range byTags {
		names = append(names, s.name+" ("+s.agentID+")")
	}
	return fmt.Sprintf("the connected agents that could take it are deactivated: %s ('agent ID activate' gives them builds again)", strings.Join(names, ", "))
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

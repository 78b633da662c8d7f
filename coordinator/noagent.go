package coordinator

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/scheduler"
)

// NoAgentKind says, as data, why no agent takes a queued build now.
type NoAgentKind string

const (
	// NoAgentSeen: no agent connected since the coordinator started.
	NoAgentSeen NoAgentKind = "no-agent"
	// NoAgentForSystem: no agent builds the build's system.
	NoAgentForSystem NoAgentKind = "no-agent-for-system"
	// NoAgentWithFeatures: no agent for the system has every feature the
	// build requires.
	NoAgentWithFeatures NoAgentKind = "missing-features"
	// NoAgentForTags: every agent for the system and features takes only
	// builds with tags this one lacks (their require_tags).
	NoAgentForTags NoAgentKind = "required-tags"
	// NoAgentNotExcluded: every agent that matches is excluded from the
	// build.
	NoAgentNotExcluded NoAgentKind = "agents-excluded"
	// NoAgentActive: the agents that could take it are deactivated.
	NoAgentActive NoAgentKind = "agents-deactivated"
	// NoAgentConnected: the agents that could take it are absent
	// (disconnected since they were last seen).
	NoAgentConnected NoAgentKind = "agents-absent"
	// NoAgentFree: every connected agent that could take it is running
	// as many builds as it takes (the build is runnable and waits its
	// turn).
	NoAgentFree NoAgentKind = "agents-full"
	// NoAgentSpace: an agent could take it, but the coordinator
	// allocates nothing while its state directory is short of space.
	NoAgentSpace NoAgentKind = "coordinator-short-of-space"
)

// Passing reports whether the reason goes away without anyone acting
// (slots free up, space is freed by the coordinator's own cleanup), so
// that a submission need not warn about it.
func (k NoAgentKind) Passing() bool { return k == NoAgentFree || k == NoAgentSpace }

// NoAgent explains, from the coordinator's sessions and scheduler (no
// query), why no agent takes a queued build. The agents considered are
// those connected now and those that disconnected since the coordinator
// started (absent).
type NoAgent struct {
	Kind   NoAgentKind `json:"kind"`
	System string      `json:"system"`
	// Features are the build's required features (missing-features).
	Features []string `json:"features,omitempty"`
	// Systems are what the agents considered build (no-agent-for-system).
	Systems []string `json:"systems,omitempty"`
	// Agents are those the reason is about: the ones requiring tags, the
	// excluded, deactivated, absent or full ones (at most MaxBlockers).
	Agents []NoAgentAgent `json:"agents,omitempty"`
	// Message says it for people.
	Message string `json:"message"`
}

// NoAgentAgent is an agent a NoAgent reason names.
type NoAgentAgent struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Connected   bool      `json:"connected"`
	Active      bool      `json:"active"`
	RequireTags []string  `json:"require_tags,omitempty"`
	Running     int       `json:"running"`
	MaxParallel int       `json:"max_parallel_builds"`
	LastSeen    time.Time `json:"last_seen_at"`
}

// noAgentLocked says why no agent takes b now, or nil when a connected,
// active agent with a free slot can. ready: b is runnable, so full agents
// and a paused coordinator are reasons too (for a build still waiting for
// inputs they are not what holds it back).
func (c *Coordinator) noAgentLocked(b scheduler.Build, ready bool) *NoAgent {
	var cands []*Session
	for _, s := range c.sessions {
		if !s.gone {
			cands = append(cands, s)
		}
	}
	for id, s := range c.departed {
		if cur := c.sessions[id]; cur == nil || cur.gone {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		return &NoAgent{Kind: NoAgentSeen, System: b.System, Message: "no agent has connected since the coordinator started"}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].agentID < cands[j].agentID })
	connected := func(s *Session) bool { return c.sessions[s.agentID] == s && !s.gone }
	var systems []string
	var bySystem, byFeatures, byTags, matching []*Session
	for _, s := range cands {
		for _, sys := range s.systems {
			if !slices.Contains(systems, sys) {
				systems = append(systems, sys)
			}
		}
		if !slices.Contains(s.systems, b.System) {
			continue
		}
		bySystem = append(bySystem, s)
		if slices.ContainsFunc(b.Features, func(f string) bool { return !s.features[f] }) {
			continue
		}
		byFeatures = append(byFeatures, s)
		if !s.canTake(b) {
			continue
		}
		byTags = append(byTags, s)
		if slices.Contains(b.ExcludeAgents, s.agentID) {
			continue
		}
		matching = append(matching, s)
	}
	sort.Strings(systems)
	na := &NoAgent{System: b.System}
	refs := func(ss []*Session) []NoAgentAgent {
		out := make([]NoAgentAgent, 0, min(len(ss), MaxBlockers))
		for _, s := range ss[:min(len(ss), MaxBlockers)] {
			out = append(out, NoAgentAgent{ID: s.agentID, Name: s.name, Connected: connected(s), Active: !s.inactive,
				RequireTags: slices.Clone(s.requireTags), MaxParallel: s.maxParallel, LastSeen: s.lastSeen})
			if connected(s) {
				out[len(out)-1].Running = len(s.holds)
			}
		}
		return out
	}
	names := func(ss []*Session, each func(*Session) string) string {
		var parts []string
		for _, s := range ss[:min(len(ss), MaxBlockers)] {
			parts = append(parts, each(s))
		}
		if len(ss) > MaxBlockers {
			parts = append(parts, fmt.Sprintf("and %d more", len(ss)-MaxBlockers))
		}
		return strings.Join(parts, ", ")
	}
	switch {
	case len(bySystem) == 0:
		na.Kind, na.Systems = NoAgentForSystem, systems
		na.Message = fmt.Sprintf("no agent builds system %s (the agents build %s)", b.System, strings.Join(systems, ", "))
		return na
	case len(byFeatures) == 0:
		na.Kind, na.Features = NoAgentWithFeatures, slices.Clone(b.Features)
		na.Message = fmt.Sprintf("no agent for %s has every required feature (%s)", b.System, strings.Join(b.Features, ", "))
		return na
	case len(byTags) == 0:
		na.Kind, na.Agents = NoAgentForTags, refs(byFeatures)
		na.Message = fmt.Sprintf("every agent for %s takes only builds with tags this one lacks (%s); resubmit with --tag K=V", b.System,
			names(byFeatures, func(s *Session) string { return s.name + " requires " + strings.Join(s.requireTags, ",") }))
		return na
	case len(matching) == 0:
		na.Kind, na.Agents = NoAgentNotExcluded, refs(byTags)
		na.Message = fmt.Sprintf("every agent that could take it is excluded from it: %s", names(byTags, func(s *Session) string { return s.name }))
		return na
	}
	var free, full, absent, inactive []*Session
	for _, s := range matching {
		switch {
		case s.inactive:
			inactive = append(inactive, s)
		case !connected(s):
			absent = append(absent, s)
		case len(s.holds) < s.maxParallel:
			free = append(free, s)
		default:
			full = append(full, s)
		}
	}
	switch {
	case len(free) > 0:
		if ready && c.space.low {
			na.Kind = NoAgentSpace
			na.Message = "the coordinator allocates nothing while its state directory is short of free space ('status' says how much is free)"
			return na
		}
		return nil
	case len(full) > 0:
		if !ready {
			return nil
		}
		na.Kind, na.Agents = NoAgentFree, refs(full)
		na.Message = "every agent that can take it is running all the builds it takes: " +
			names(full, func(s *Session) string { return fmt.Sprintf("%s (%d/%d)", s.name, len(s.holds), s.maxParallel) })
		return na
	case len(absent) > 0:
		na.Kind, na.Agents = NoAgentConnected, refs(absent)
		na.Message = "the agents that could take it are absent: " +
			names(absent, func(s *Session) string { return s.name + " (last seen " + s.lastSeen.UTC().Format(time.RFC3339) + ")" })
		return na
	}
	na.Kind, na.Agents = NoAgentActive, refs(inactive)
	na.Message = fmt.Sprintf("the agents that could take it are deactivated: %s ('agent ID activate' gives them builds again)",
		names(inactive, func(s *Session) string { return s.name + " (" + s.agentID + ")" }))
	return na
}

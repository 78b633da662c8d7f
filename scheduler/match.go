package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Requeue puts an allocated build back in the queue after an infrastructure
// failure. If avoidAgent is set, that agent gets the build only when it has
// nothing else to do. The retry limit is the caller's.
func (s *Scheduler) Requeue(id, avoidAgent string) {
	idx, ok := s.lookupID(id)
	if !ok {
		return
	}
	b := &s.builds[idx]
	if b.state == stAllocated {
		s.release(idx)
		b.state = stQueued
	}
	b.avoid = -1
	if avoidAgent != "" {
		b.avoid = s.agentIdx(avoidAgent)
	}
	s.refresh(idx)
}

// NextWakeup is the earliest DeferUntil still pending, so the caller can set a
// timer and then call Wake (or just Allocate).
func (s *Scheduler) NextWakeup() (time.Time, bool) {
	if len(s.deferred) == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, s.deferUntil[s.deferred[0]]), true
}

// Wake releases builds whose deferral has passed and returns those that became
// runnable. Allocate does this itself; Wake is for pushing work on a timer.
func (s *Scheduler) Wake() (nowRunnable []string) {
	now := s.clk.Now().UnixNano()
	for len(s.deferred) > 0 && s.deferUntil[s.deferred[0]] <= now {
		x := s.deferred[0]
		s.dremove(x)
		if s.refresh(x) {
			nowRunnable = append(nowRunnable, s.idOf(x))
		}
	}
	return nowRunnable
}

// Allocate picks the best runnable build this agent may take and marks it
// allocated to the agent. It refuses when the agent already holds MaxParallel
// builds (if MaxParallel > 0).
func (s *Scheduler) Allocate(a Agent) (Build, bool) {
	s.Wake()
	ai := s.agentIdx(a.ID)
	if a.MaxParallel > 0 && s.agents[ai].held >= a.MaxParallel {
		return Build{}, false
	}
	best, bestAvoided := int32(-1), int32(-1)
	for si, sys := range a.Systems {
		if slices.Contains(a.Systems[:si], sys) {
			continue
		}
		for _, bi := range s.bucketsBySystem[sys] {
			bk := &s.buckets[bi]
			if len(bk.heap) == 0 || !matches(bk, a) || slices.Contains(bk.exclude, ai) {
				continue
			}
			c, avoided := s.bestIn(bk, ai)
			if avoided {
				if bestAvoided < 0 || s.less(c, bestAvoided) {
					bestAvoided = c
				}
			} else if best < 0 || s.less(c, best) {
				best = c
			}
		}
	}
	if best < 0 {
		best = bestAvoided
	}
	if best < 0 {
		return Build{}, false
	}
	s.hremove(best)
	b := &s.builds[best]
	b.state = stAllocated
	b.agent = ai
	s.agents[ai].held++
	s.agents[ai].slots[best] = struct{}{}
	s.allocated++
	return s.export(best), true
}

// bestIn returns the best build in bk that agent ai is not asked to avoid,
// searching a bounded frontier of the heap; failing that, the top, flagged.
func (s *Scheduler) bestIn(bk *bucket, ai int32) (int32, bool) {
	h := bk.heap
	if s.builds[h[0]].avoid != ai {
		return h[0], false
	}
	var frontier []int32 // heap positions
	push := func(pos int) {
		for _, c := range []int{2*pos + 1, 2*pos + 2} {
			if c < len(h) {
				frontier = append(frontier, int32(c))
			}
		}
	}
	push(0)
	for steps := 0; steps < 256 && len(frontier) > 0; steps++ {
		bi := 0
		for i := range frontier {
			if s.less(h[frontier[i]], h[frontier[bi]]) {
				bi = i
			}
		}
		pos := frontier[bi]
		frontier = slices.Delete(frontier, bi, bi+1)
		if s.builds[h[pos]].avoid != ai {
			return h[pos], false
		}
		push(int(pos))
	}
	return h[0], true
}

// internBucket finds or makes the bucket of builds that match the same
// agents: same system, features and tags, and the same excluded agents
// (so that an excluded agent skips the whole bucket, and the heap search
// stays exact however many builds exclude it).
func (s *Scheduler) internBucket(system string, features []string, tags map[string]string, exclude []int32) int32 {
	key := system
	var fs []string
	if len(features) > 0 || len(tags) > 0 || len(exclude) > 0 {
		fs = slices.Clone(features)
		sort.Strings(fs)
		fs = slices.Compact(fs)
		var kb strings.Builder
		kb.WriteString(system)
		kb.WriteByte(0)
		kb.WriteString(strings.Join(fs, "\x01"))
		kb.WriteByte(0)
		keys := make([]string, 0, len(tags))
		for k := range tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			kb.WriteString(k)
			kb.WriteByte('=')
			kb.WriteString(tags[k])
			kb.WriteByte(1)
		}
		kb.WriteByte(0)
		for _, ai := range exclude {
			fmt.Fprintf(&kb, "%d,", ai)
		}
		key = kb.String()
	}
	if bi, ok := s.bucketByKey[key]; ok {
		return bi
	}
	bk := bucket{system: strings.Clone(system), features: fs, exclude: exclude}
	if len(tags) > 0 {
		bk.tags = make(map[string]string, len(tags))
		for k, v := range tags {
			bk.tags[k] = v
		}
	}
	bi := int32(len(s.buckets))
	s.buckets = append(s.buckets, bk)
	s.bucketByKey[key] = bi
	s.bucketsBySystem[bk.system] = append(s.bucketsBySystem[bk.system], bi)
	return bi
}

// agentSet is the sorted, deduplicated agent indexes of ids (nil for none).
func (s *Scheduler) agentSet(ids []string) []int32 {
	if len(ids) == 0 {
		return nil
	}
	out := make([]int32, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.agentIdx(id))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// SetExcluded replaces the agents that must never get a queued or
// allocated build (none: nil). An allocated build keeps its agent; the
// set applies to its next allocation. The build moves to the bucket of
// its new set.
func (s *Scheduler) SetExcluded(id string, agents []string) {
	idx, ok := s.lookupID(id)
	if !ok {
		return
	}
	b := &s.builds[idx]
	old := &s.buckets[b.bucket]
	nb := s.internBucket(old.system, old.features, old.tags, s.agentSet(agents))
	if nb == b.bucket {
		return
	}
	inHeap := b.hpos >= 0
	if inHeap {
		s.hremove(idx)
	}
	b.bucket = nb
	if inHeap {
		s.refresh(idx)
	}
}

func matches(bk *bucket, a Agent) bool {
	for _, f := range bk.features {
		if !slices.Contains(a.Features, f) {
			return false
		}
	}
	for k, v := range a.RequireTags {
		if got, ok := bk.tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s *Scheduler) agentIdx(id string) int32 {
	if ai, ok := s.agentByID[id]; ok {
		return ai
	}
	ai := int32(len(s.agents))
	s.agents = append(s.agents, agentSlot{id: id, slots: make(map[int32]struct{})})
	s.agentByID[id] = ai
	return ai
}

// refresh puts a queued build in or out of its ready heap according to its
// state, and reports whether it just became ready.
func (s *Scheduler) refresh(x int32) bool {
	b := &s.builds[x]
	ready := b.state == stQueued && b.dpos < 0 && b.waiting == 0
	switch {
	case ready && b.hpos < 0:
		s.hpush(x)
		return true
	case !ready && b.hpos >= 0:
		s.hremove(x)
	}
	return false
}

// Restore marks a queued build as allocated to agentID without choosing it:
// the database says the agent held it when the coordinator stopped. Inputs
// need not be available (the agent already has the build); if it is later
// requeued it waits like any other build. Restoring a build already
// allocated to the same agent is a no-op.
func (s *Scheduler) Restore(id, agentID string) error {
	if agentID == "" {
		return fmt.Errorf("scheduler: restore build %q: empty agent", id)
	}
	idx, ok := s.lookupID(id)
	if !ok {
		return fmt.Errorf("scheduler: restore build %q: unknown build", id)
	}
	ai := s.agentIdx(agentID)
	b := &s.builds[idx]
	if b.state == stAllocated {
		if b.agent == ai {
			return nil
		}
		return fmt.Errorf("scheduler: restore build %q on %q: allocated to %q", id, agentID, s.agents[b.agent].id)
	}
	if b.hpos >= 0 {
		s.hremove(idx)
	}
	if b.dpos >= 0 {
		s.dremove(idx)
	}
	b.state = stAllocated
	b.agent = ai
	s.agents[ai].held++
	s.agents[ai].slots[idx] = struct{}{}
	s.allocated++
	return nil
}

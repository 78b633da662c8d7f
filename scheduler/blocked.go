package scheduler

import "slices"

// Builds that cannot go forward: in derivation-ordered mode an input
// derivation with no live build here that is not available blocks its
// dependents until someone submits a build of it or its outputs appear.
// Nothing here will do either, so those builds would wait forever. The
// scheduler keeps the set of such derivations (orphans) as candidates,
// checked when asked, so the questions below cost the builds they concern,
// not the whole queue.

// noteOrphan records d as a possible orphan input: it blocks and has no
// live build. Whether builds still wait on it is checked when asked.
func (s *Scheduler) noteOrphan(d int32) {
	if s.strategy != DerivationOrdered || s.drvs[d].available || s.drvs[d].head != 0 {
		return
	}
	if s.orphans == nil {
		s.orphans = make(map[int32]struct{})
	}
	s.orphans[d] = struct{}{}
}

// isOrphan reports whether d blocks its dependents with no live build of it.
func (s *Scheduler) isOrphan(d int32) bool {
	dn := &s.drvs[d]
	return s.strategy == DerivationOrdered && !dn.available && dn.head == 0
}

// liveDependent reports whether a live build not being removed lists d as
// an input.
func (s *Scheduler) liveDependent(d int32) bool {
	for _, r := range s.drvs[d].dependents {
		if s.valid(r) && !s.builds[r.idx].dying {
			return true
		}
	}
	return false
}

// Stuck counts the queued builds that wait, directly or through other
// queued builds, on an input derivation nothing here will build: it has no
// build here (queued, running or succeeded) and was not marked available.
// Only derivation-ordered mode has such builds; permissive mode assumes
// those inputs substitutable. Costs the stuck builds and their dependents.
func (s *Scheduler) Stuck() int {
	if len(s.orphans) == 0 {
		return 0
	}
	ep := s.nextEpoch()
	// Dead derivations whose dependents are to visit. Each is pushed once:
	// an orphan at the start, any other when the last of its live builds
	// is marked (every build is marked once).
	var work []int32
	for d := range s.orphans {
		if !s.isOrphan(d) || !s.liveDependent(d) {
			delete(s.orphans, d) // pruned: built, available, or nothing waits
			continue
		}
		work = append(work, d)
	}
	n := 0
	for len(work) > 0 {
		d := work[len(work)-1]
		work = work[:len(work)-1]
		for _, r := range s.drvs[d].dependents {
			if !s.valid(r) {
				continue
			}
			z := &s.builds[r.idx]
			if z.dying || z.mark == ep || z.state != stQueued {
				continue
			}
			z.mark = ep
			n++
			// Its derivation is dead too once every live build of it is.
			e := z.drv
			if s.drvs[e].available {
				continue
			}
			all := true
			for y := s.drvs[e].head - 1; y >= 0; y = s.builds[y].nextSame - 1 {
				if s.builds[y].mark != ep {
					all = false
					break
				}
			}
			if all {
				work = append(work, e)
			}
		}
	}
	return n
}

// Blocker is an input derivation that keeps a queued build waiting.
type Blocker struct {
	Derivation string
	// Builds are the live builds of it here (none: nothing here builds it).
	Builds []string
	// Unbuildable: nothing here will make it available: it has no live
	// build, or every live build of it is itself blocked that way.
	Unbuildable bool
}

// Blockers explains why a queued build waits: its input derivations that
// block it (at most limit), and the input derivations in its closure that
// nothing here will build (at most limit, with their total): those have no
// live build and are not available, and every build between them and this
// one waits on them. An empty unbuildable list means the build will run
// once the builds it waits on succeed. False if the build is not queued.
func (s *Scheduler) Blockers(id string, limit int) (inputs []Blocker, unbuildable []string, total int, ok bool) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil, nil, 0, false
	}
	w := &stuckWalk{s: s, memo: map[int32]bool{}}
	for _, di := range s.builds[idx].inputs {
		if !s.blocking(di) {
			continue
		}
		dead := w.drvDead(di)
		if len(inputs) < limit {
			bl := Blocker{Derivation: s.pathOf(di), Unbuildable: dead}
			for z := s.drvs[di].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
				bl.Builds = append(bl.Builds, s.idOf(z))
			}
			inputs = append(inputs, bl)
		}
	}
	for _, d := range w.orphansBelow(s.builds[idx].inputs) {
		if len(unbuildable) < limit {
			unbuildable = append(unbuildable, s.pathOf(d))
		}
		total++
	}
	slices.Sort(unbuildable)
	return inputs, unbuildable, total, true
}

// stuckWalk decides, depth first with memos, which derivations below a
// build are dead: nothing here will make them available.
type stuckWalk struct {
	s    *Scheduler
	memo map[int32]bool // derivation → dead
}

func (w *stuckWalk) drvDead(d int32) bool {
	s := w.s
	if dead, ok := w.memo[d]; ok {
		return dead
	}
	if !s.blocking(d) {
		w.memo[d] = false
		return false
	}
	if s.drvs[d].head == 0 {
		w.memo[d] = true
		return true
	}
	// Provisionally alive: the graph of live builds is acyclic, so this
	// only guards against walking a derivation twice.
	w.memo[d] = false
	dead := true
	for z := s.drvs[d].head - 1; z >= 0 && dead; z = s.builds[z].nextSame - 1 {
		dead = w.buildDead(z)
	}
	w.memo[d] = dead
	return dead
}

// buildDead: a queued build waits on a dead input. An allocated build is
// running, so it may still succeed. Every input is decided (no short cut),
// so that orphansBelow finds them all in the memo.
func (w *stuckWalk) buildDead(z int32) bool {
	b := &w.s.builds[z]
	if b.state != stQueued {
		return false
	}
	dead := false
	for _, di := range b.inputs {
		if w.drvDead(di) {
			dead = true
		}
	}
	return dead
}

// orphansBelow lists the orphans reached from inputs through dead
// derivations only (drvDead has decided each of them).
func (w *stuckWalk) orphansBelow(inputs []int32) []int32 {
	s := w.s
	var out []int32
	seen := map[int32]bool{}
	stack := slices.Clone(inputs)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[d] || !w.memo[d] {
			continue
		}
		seen[d] = true
		if s.drvs[d].head == 0 {
			out = append(out, d)
			continue
		}
		for z := s.drvs[d].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
			stack = append(stack, s.builds[z].inputs...)
		}
	}
	return out
}

// Dependents returns the live builds that wait on build id's derivation,
// directly or not (queued and allocated), at most limit of them, and how
// many there are; e.g. to cancel them with it.
func (s *Scheduler) Dependents(id string, limit int) (ids []string, total int) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil, 0
	}
	up, _ := s.upFromDrv(s.builds[idx].drv)
	for _, u := range up {
		if u == idx || len(ids) >= limit {
			continue
		}
		ids = append(ids, s.idOf(u))
	}
	n := len(up)
	if slices.Contains(up, idx) {
		n--
	}
	return ids, n
}

// CancelInput cancels a build as Cancel does, and settles what waited on
// it. In derivation-ordered mode, when no other live build of its
// derivation remains and it is not available, the queued builds waiting on
// it would wait forever: they leave the queue with it, directly or not, and
// are returned, each naming the canceled build, for the caller to record as
// failed-dependency. In permissive mode such a derivation no longer blocks
// (assumed substitutable) and the builds that became runnable are returned.
func (s *Scheduler) CancelInput(id string) (stranded []Dep, nowRunnable []string) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil, nil
	}
	if s.strategy == Permissive {
		return nil, s.Cancel(id)
	}
	s.canceled++
	F, deps := s.withDependents(idx)
	s.failedDep += uint64(len(deps))
	return deps, s.detach(F)
}

// Unmatched counts the ready builds that none of agents can take (system,
// required features, the agents' required tags), e.g. the connected agents.
// Costs the buckets times the agents.
func (s *Scheduler) Unmatched(agents []Agent) int {
	n := 0
	for i := range s.buckets {
		bk := &s.buckets[i]
		if len(bk.heap) == 0 {
			continue
		}
		taken := false
		for _, a := range agents {
			if slices.Contains(a.Systems, bk.system) && matches(bk, a) && !bk.excludes(s, a.ID) {
				taken = true
				break
			}
		}
		if !taken {
			n += len(bk.heap)
		}
	}
	return n
}

// excludes reports whether the bucket's builds never go to agent id.
func (bk *bucket) excludes(s *Scheduler, id string) bool {
	if len(bk.exclude) == 0 {
		return false
	}
	ai, ok := s.agentByID[id]
	return ok && slices.Contains(bk.exclude, ai)
}

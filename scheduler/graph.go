package scheduler

import (
	"errors"
	"fmt"
	"slices"
)

// Add queues a build.
func (s *Scheduler) Add(b Build) error {
	switch {
	case b.ID == "":
		return errors.New("scheduler: add build: empty ID")
	case b.Derivation == "":
		return fmt.Errorf("scheduler: add build %q: empty Derivation", b.ID)
	case b.System == "":
		return fmt.Errorf("scheduler: add build %q: empty System", b.ID)
	}
	if _, dup := s.lookupID(b.ID); dup {
		return fmt.Errorf("scheduler: add build %q: duplicate ID", b.ID)
	}
	for _, in := range b.InputDrvs {
		if in == b.Derivation {
			return fmt.Errorf("scheduler: add build %q: derivation %q lists itself as an input", b.ID, in)
		}
		if in == "" {
			return fmt.Errorf("scheduler: add build %q: empty input derivation", b.ID)
		}
	}

	d := s.internDrv(b.Derivation)
	inputs := make([]int32, 0, len(b.InputDrvs))
	for _, in := range b.InputDrvs {
		di := s.internDrv(in)
		if !slices.Contains(inputs, di) {
			inputs = append(inputs, di)
		}
	}
	// Builds already waiting on this derivation (added dependents first, a
	// rebuild, or permissive mode) will also wait on everything below the
	// new build. A cycle would make them wait on themselves: real derivations
	// cannot form one, but the input is not trusted.
	up, upMax := s.upFromDrv(d)
	for _, u := range up {
		if slices.Contains(inputs, s.builds[u].drv) {
			return fmt.Errorf("scheduler: add build %q: dependency cycle through build %q (%s)",
				b.ID, s.idOf(u), s.drvs[s.builds[u].drv].path)
		}
	}
	bk := s.internBucket(b.System, b.Features, b.Tags, s.agentSet(b.ExcludeAgents))

	idx := s.allocSlot()
	nb := &s.builds[idx]
	created := b.CreatedAt
	if created.IsZero() {
		created = s.clk.Now()
	}
	*nb = build{
		inputs:  inputs,
		created: created.UnixNano(),
		drv:     d,
		bucket:  bk,
		prio:    clamp32(b.Priority),
		hpos:    -1,
		dpos:    -1,
		agent:   -1,
		avoid:   -1,
		gen:     nb.gen,
		mark:    nb.mark,
		state:   stQueued,
	}
	nb.derived = nb.prio
	if !b.DeferUntil.IsZero() {
		s.deferUntil[idx] = b.DeferUntil.UnixNano()
	}
	s.setID(idx, b.ID)
	s.byID.insert(s.hashID(idx), idx, s.hashID)
	for _, di := range inputs {
		if s.blocking(di) {
			s.builds[idx].waiting++
		}
		s.drvs[di].dependents = append(s.drvs[di].dependents, ref{idx, s.builds[idx].gen})
		s.noteOrphan(di)
	}

	// Two exact ways to account for the builds in up: recount everything
	// below the new build (Σ count below), or walk below each build in up
	// (about |up|·|below|·2). Random submission order needs the second.
	var below []int32
	reinsert := false
	if len(up) > 0 {
		below = append([]int32(nil), s.collectDown([]int32{idx})...)
		if len(below) > 0 {
			recountCost := 0
			for _, y := range below {
				recountCost += int(s.builds[y].count) + len(up)
			}
			reinsert = 2*len(up)*(len(below)+1) < recountCost
		}
		if s.path != 0 {
			reinsert = s.path == 2
		}
	}
	if reinsert {
		// Only the closure below the new build gains members: each build in
		// up that did not already reach y (in the graph without the new
		// build) now does.
		for _, u := range up {
			s.collectDown([]int32{u})
			ep := s.epoch
			for _, y := range below {
				if s.builds[y].mark != ep {
					s.builds[y].count++
				}
			}
		}
	}

	dn := &s.drvs[d]
	hadLive := dn.head != 0
	s.builds[idx].nextSame = dn.head
	dn.head = idx + 1
	if s.strategy == Permissive && !hadLive && !dn.available {
		// The derivation now has a build here, so its dependents wait for it.
		for _, r := range s.drvs[d].dependents {
			if y := r.idx; s.valid(r) && y != idx {
				s.builds[y].waiting++
				s.refresh(y)
			}
		}
	}
	if du, ok := s.deferUntil[idx]; ok && du > s.clk.Now().UnixNano() {
		s.dpush(idx)
	}

	if len(up) == 0 || reinsert {
		nb := &s.builds[idx]
		nb.count = int32(len(up)) // up is exactly what waits on it
		nb.derived = max(nb.prio, upMax)
		p := nb.derived
		for _, y := range s.collectDown([]int32{idx}) {
			yb := &s.builds[y]
			yb.count++
			yb.derived = max(yb.derived, p)
			s.hfix(y)
		}
	} else {
		nb := &s.builds[idx]
		nb.count = int32(len(up)) // up is exactly what waits on it
		nb.derived = max(nb.prio, upMax)
		for _, y := range below {
			s.recount(y)
		}
	}
	s.refresh(idx)
	return nil
}

// AddBatch adds many builds (a submission, or the queue rebuilt from the
// database at start) in dependency order — inputs before the builds that need
// them — whatever order they come in, so every Add takes the cheap path. On
// error the builds added before it stay; the error names the build.
func (s *Scheduler) AddBatch(bs []Build) error {
	byDrv := make(map[string][]int32, len(bs))
	for i := range bs {
		byDrv[bs[i].Derivation] = append(byDrv[bs[i].Derivation], int32(i))
	}
	// Kahn's algorithm over builds: i must follow every batch build of each of
	// its input derivations.
	indeg := make([]int32, len(bs))
	for i := range bs {
		for j, in := range bs[i].InputDrvs {
			if in != bs[i].Derivation && !slices.Contains(bs[i].InputDrvs[:j], in) {
				indeg[i] += int32(len(byDrv[in]))
			}
		}
	}
	// Dependents of derivation D in the batch, built once.
	needs := make(map[string][]int32)
	for i := range bs {
		for j, in := range bs[i].InputDrvs {
			if _, ok := byDrv[in]; ok && in != bs[i].Derivation && !slices.Contains(bs[i].InputDrvs[:j], in) {
				needs[in] = append(needs[in], int32(i))
			}
		}
	}
	queue := make([]int32, 0, len(bs))
	for i := range bs {
		if indeg[i] == 0 {
			queue = append(queue, int32(i))
		}
	}
	done := 0
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		if err := s.Add(bs[i]); err != nil {
			return fmt.Errorf("scheduler: batch item %d: %w", i, err)
		}
		done++
		for _, k := range needs[bs[i].Derivation] {
			if indeg[k]--; indeg[k] == 0 {
				queue = append(queue, k)
			}
		}
	}
	if done < len(bs) {
		// Left over: builds on a cycle. Add reports it for the first.
		for i := range bs {
			if indeg[i] > 0 {
				if err := s.Add(bs[i]); err != nil {
					return fmt.Errorf("scheduler: batch item %d: %w", i, err)
				}
			}
		}
	}
	return nil
}

// MarkAvailable records that a derivation's outputs are available (in the
// cache, or built elsewhere). It returns the builds that became runnable.
// Queued builds of that derivation stay queued: whether to cancel them is the
// caller's decision.
func (s *Scheduler) MarkAvailable(drvPath string) (nowRunnable []string) {
	d := s.internDrv(drvPath)
	if s.drvs[d].available {
		return nil
	}
	return s.makeAvailable(d, -1)
}

// makeAvailable flips d to available. The live builds of d stop having
// anything waiting on them, so they and everything below them are recounted.
// finishing, if not -1, is a build of d being freed as part of the change.
func (s *Scheduler) makeAvailable(d, finishing int32) (nowRunnable []string) {
	var roots []int32
	for z := s.drvs[d].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
		roots = append(roots, z)
	}
	var affected []int32
	if len(roots) > 0 {
		affected = append(affected, s.collectDown(roots)...)
	}
	wasBlocking := s.blocking(d)
	s.drvs[d].available = true
	if finishing >= 0 {
		s.freeSlot(finishing)
	}
	for _, r := range roots {
		if r != finishing {
			affected = append(affected, r)
		}
	}
	if wasBlocking {
		for _, r := range s.drvs[d].dependents {
			if !s.valid(r) {
				continue
			}
			y := r.idx
			s.builds[y].waiting--
			if s.refresh(y) {
				nowRunnable = append(nowRunnable, s.idOf(y))
			}
		}
	}
	for _, y := range affected {
		if s.builds[y].state != stFree {
			s.recount(y)
		}
	}
	return nowRunnable
}

// Succeeded records a successful build (its derivation becomes available) and
// releases its agent slot. It returns the builds that became runnable.
func (s *Scheduler) Succeeded(id string) (nowRunnable []string) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil
	}
	s.succeeded++
	d := s.builds[idx].drv
	if s.drvs[d].available {
		// Already available (a rebuild): nothing waits on this build, but it
		// may wait on builds added below it later in permissive mode.
		return s.detach([]int32{idx})
	}
	return s.makeAvailable(d, idx)
}

// Failed records a failed build and releases its slot. Queued builds that
// depend on it, directly or not, become failed-dependency and are returned,
// each naming the build that failed. If another build of the same derivation
// is still queued or running, dependents wait for that one instead.
// Allocated dependents (possible only in permissive mode) are left running.
func (s *Scheduler) Failed(id string) (failedDependency []Dep) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil
	}
	s.failed++
	F, failedDependency := s.withDependents(idx)
	s.failedDep += uint64(len(failedDependency))
	s.detach(F)
	return failedDependency
}

// withDependents marks build idx as leaving and, unless its derivation is
// available or another live build of it remains, the queued builds waiting
// on it, directly or not; it returns them all (idx first) and the
// dependents as Deps naming idx. The caller detaches them.
func (s *Scheduler) withDependents(idx int32) (F []int32, deps []Dep) {
	x := &s.builds[idx]
	x.dying = true
	cause := Dep{FailedBuild: s.idOf(idx), FailedInput: s.drvs[x.drv].path}
	F = []int32{idx}
	if !s.drvs[x.drv].available && s.allDying(x.drv) {
		gone := map[int32]bool{x.drv: true}
		queue := []int32{x.drv}
		for len(queue) > 0 {
			di := queue[0]
			queue = queue[1:]
			for _, r := range s.drvs[di].dependents {
				if !s.valid(r) {
					continue
				}
				y := &s.builds[r.idx]
				if y.dying || y.state != stQueued {
					continue
				}
				y.dying = true
				F = append(F, r.idx)
				dep := cause
				dep.ID, dep.Derivation = s.idOf(r.idx), s.drvs[y.drv].path
				deps = append(deps, dep)
				if e := y.drv; !gone[e] && !s.drvs[e].available && s.allDying(e) {
					gone[e] = true
					queue = append(queue, e)
				}
			}
		}
	}
	return F, deps
}

// Cancel removes a build, queued or allocated (the caller stops it on its
// agent). Dependents keep waiting for the derivation, except in permissive
// mode where a derivation without a live build no longer blocks: those that
// become runnable are returned.
func (s *Scheduler) Cancel(id string) (nowRunnable []string) {
	idx, ok := s.lookupID(id)
	if !ok {
		return nil
	}
	s.canceled++
	return s.detach([]int32{idx})
}

func (s *Scheduler) allocSlot() int32 {
	if n := len(s.free); n > 0 {
		idx := s.free[n-1]
		s.free = s.free[:n-1]
		return idx
	}
	s.builds = append(s.builds, build{})
	return int32(len(s.builds) - 1)
}

func (s *Scheduler) internDrv(path string) int32 {
	if d, ok := s.drvByPath.get(path, s.pathOf); ok {
		return d
	}
	path = s.paths.clone(path) // don't pin the caller's larger buffer
	d := int32(len(s.drvs))
	s.drvs = append(s.drvs, drvNode{path: path})
	s.drvByPath.put(path, d, s.pathOf)
	return d
}

func (s *Scheduler) valid(r ref) bool {
	b := &s.builds[r.idx]
	return b.gen == r.gen && b.state != stFree
}

// blocking reports whether input derivation d keeps its dependents waiting.
func (s *Scheduler) blocking(d int32) bool {
	dn := &s.drvs[d]
	return !dn.available && (s.strategy == DerivationOrdered || dn.head != 0)
}

func (s *Scheduler) allDying(d int32) bool {
	for z := s.drvs[d].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
		if !s.builds[z].dying {
			return false
		}
	}
	return true
}

func (s *Scheduler) release(x int32) {
	b := &s.builds[x]
	if b.state == stAllocated {
		s.agents[b.agent].held--
		delete(s.agents[b.agent].slots, x)
		s.allocated--
		b.agent = -1
	}
}

// detach removes the builds in F (all live) from the graph, keeping dependents
// counts and derived priorities exact, and returns builds that became runnable
// (permissive mode: a derivation lost its last live build).
func (s *Scheduler) detach(F []int32) (nowRunnable []string) {
	for _, f := range F {
		s.builds[f].dying = true
	}
	closed := true
	for _, f := range F {
		d := &s.drvs[s.builds[f].drv]
		if d.available {
			continue
		}
		for _, r := range d.dependents {
			if s.valid(r) && !s.builds[r.idx].dying {
				closed = false
				break
			}
		}
		if !closed {
			break
		}
	}
	var affected []int32
	if closed && len(F) > 1 {
		// Two exact ways: walk below each removed build (cost Σ|D(f)|, at
		// most |F|·|below|), or recount each build below F afterwards (cost
		// at most Σ count). A failed core build with a million dependents
		// wants the second; a short chain above a core build the first.
		var cost int
		for _, y := range s.collectDown(F) {
			if !s.builds[y].dying {
				affected = append(affected, y)
				cost += int(s.builds[y].count)
			}
		}
		if useRecount := cost < len(F)*(len(affected)+1); s.path == 1 || (s.path == 0 && useRecount) {
			closed = false
		} else {
			affected = affected[:0]
		}
	} else if !closed {
		for _, y := range s.collectDown(F) {
			if !s.builds[y].dying {
				affected = append(affected, y)
			}
		}
	}
	if closed {
		// Nothing outside F waits on F, so each f leaves exactly the waiting
		// sets of the builds below it.
		var boundary []int32
		for _, f := range F {
			for _, di := range s.builds[f].inputs {
				if s.drvs[di].available {
					continue
				}
				for z := s.drvs[di].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
					if !s.builds[z].dying {
						boundary = append(boundary, z)
					}
				}
			}
			for _, y := range s.collectDown([]int32{f}) {
				if yb := &s.builds[y]; !yb.dying {
					yb.count--
					s.hfix(y)
				}
			}
		}
		for _, f := range F {
			nowRunnable = append(nowRunnable, s.freeSlot(f)...)
		}
		s.settleDerived(boundary)
		return nowRunnable
	}
	for _, f := range F {
		nowRunnable = append(nowRunnable, s.freeSlot(f)...)
	}
	for _, y := range affected {
		s.recount(y)
	}
	return nowRunnable
}

// freeSlot forgets a build. Counts and priorities are the caller's business.
func (s *Scheduler) freeSlot(x int32) (nowRunnable []string) {
	b := &s.builds[x]
	if b.hpos >= 0 {
		s.hremove(x)
	}
	if b.dpos >= 0 {
		s.dremove(x)
	}
	s.release(x)
	dn := &s.drvs[b.drv]
	if dn.head == x+1 {
		dn.head = b.nextSame
	} else {
		for z := dn.head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
			if s.builds[z].nextSame == x+1 {
				s.builds[z].nextSame = b.nextSame
				break
			}
		}
	}
	delete(s.deferUntil, x)
	b.state = stFree
	if dn.head == 0 && len(dn.dependents) > 0 {
		s.noteOrphan(b.drv)
	}
	if s.strategy == Permissive && !dn.available && dn.head == 0 {
		// No build of it here any more: assumed substitutable again.
		for _, r := range dn.dependents {
			if !s.valid(r) || s.builds[r.idx].dying {
				continue
			}
			s.builds[r.idx].waiting--
			if s.refresh(r.idx) {
				nowRunnable = append(nowRunnable, s.idOf(r.idx))
			}
		}
	}
	for _, di := range b.inputs {
		in := &s.drvs[di]
		in.dead++
		if int(in.dead) > 8 && int(in.dead) > len(in.dependents)/2 {
			s.compact(di)
		}
	}
	s.byID.remove(s.hashID(x), func(v int32) bool { return v == x })
	s.clearID(x)
	*b = build{gen: b.gen + 1, mark: b.mark, hpos: -1, dpos: -1, agent: -1, avoid: -1}
	s.free = append(s.free, x)
	return nowRunnable
}

func (s *Scheduler) compact(di int32) {
	in := &s.drvs[di]
	kept := in.dependents[:0]
	for _, r := range in.dependents {
		if s.valid(r) && !s.builds[r.idx].dying {
			kept = append(kept, r)
		}
	}
	clear(in.dependents[len(kept):])
	in.dependents = kept
	if cap(kept) > 16 && len(kept) < cap(kept)/4 {
		in.dependents = slices.Clip(slices.Clone(kept))
	}
	in.dead = 0
}

package scheduler

import (
	"math"
)

// SetPriority changes a build's own priority; everything it waits on,
// directly or not, is re-ordered through derived priority.
func (s *Scheduler) SetPriority(id string, p int) {
	idx, ok := s.lookupID(id)
	if !ok {
		return
	}
	b := &s.builds[idx]
	b.prio = clamp32(p)
	nv := s.localDerived(idx)
	switch {
	case nv > b.derived:
		b.derived = nv
		s.hfix(idx)
		s.raiseBelow(idx, nv)
	case nv < b.derived:
		s.settleDerived([]int32{idx})
	}
}

// raiseBelow lifts derived priority below x to at least p, stopping where it
// is already that high.
func (s *Scheduler) raiseBelow(x int32, p int32) {
	stack := []int32{x}
	for len(stack) > 0 {
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, di := range s.builds[b].inputs {
			if s.drvs[di].available {
				continue
			}
			for z := s.drvs[di].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
				if s.builds[z].derived < p {
					s.builds[z].derived = p
					s.hfix(z)
					stack = append(stack, z)
				}
			}
		}
	}
}

func (s *Scheduler) nextEpoch() uint32 {
	s.epoch++
	if s.epoch == 0 {
		for i := range s.builds {
			s.builds[i].mark = 0
		}
		s.epoch = 1
	}
	return s.epoch
}

// collectDown returns every live build that the roots wait on, directly or
// not, excluding the roots. The slice is scratch, valid until the next call.
func (s *Scheduler) collectDown(roots []int32) []int32 {
	ep := s.nextEpoch()
	stack := s.stack[:0]
	for _, r := range roots {
		s.builds[r].mark = ep
		stack = append(stack, r)
	}
	out := s.down[:0]
	for len(stack) > 0 {
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, di := range s.builds[b].inputs {
			if s.drvs[di].available {
				continue
			}
			for z := s.drvs[di].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
				if s.builds[z].mark != ep {
					s.builds[z].mark = ep
					out = append(out, z)
					stack = append(stack, z)
				}
			}
		}
	}
	s.stack, s.down = stack, out
	return out
}

// upFromDrv returns the live builds waiting on derivation d, directly or not,
// and the highest priority among them.
func (s *Scheduler) upFromDrv(d int32) (up []int32, maxp int32) {
	maxp = math.MinInt32
	if s.drvs[d].available {
		return nil, maxp
	}
	ep := s.nextEpoch()
	drvs := []int32{d}
	for len(drvs) > 0 {
		dd := drvs[len(drvs)-1]
		drvs = drvs[:len(drvs)-1]
		for _, r := range s.drvs[dd].dependents {
			if !s.valid(r) {
				continue
			}
			z := &s.builds[r.idx]
			if z.dying || z.mark == ep {
				continue
			}
			z.mark = ep
			up = append(up, r.idx)
			maxp = max(maxp, z.prio)
			if !s.drvs[z.drv].available {
				drvs = append(drvs, z.drv)
			}
		}
	}
	return up, maxp
}

// recount recomputes a build's dependents count and derived priority from
// scratch by walking everything that waits on it.
func (s *Scheduler) recount(y int32) {
	ep := s.nextEpoch()
	stack := append(s.stack[:0], y)
	s.builds[y].mark = ep
	var cnt int32
	maxp := s.builds[y].prio
	for len(stack) > 0 {
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d := &s.drvs[s.builds[b].drv]
		if d.available {
			continue
		}
		for _, r := range d.dependents {
			if !s.valid(r) {
				continue
			}
			z := &s.builds[r.idx]
			if z.dying || z.mark == ep {
				continue
			}
			z.mark = ep
			cnt++
			maxp = max(maxp, z.prio)
			stack = append(stack, r.idx)
		}
	}
	s.stack = stack
	yb := &s.builds[y]
	if yb.count != cnt || yb.derived != maxp {
		yb.count, yb.derived = cnt, maxp
		s.hfix(y)
	}
}

// localDerived is max(own priority, derived priority of direct dependents).
func (s *Scheduler) localDerived(x int32) int32 {
	b := &s.builds[x]
	v := b.prio
	d := &s.drvs[b.drv]
	if d.available {
		return v
	}
	for _, r := range d.dependents {
		if s.valid(r) && !s.builds[r.idx].dying {
			v = max(v, s.builds[r.idx].derived)
		}
	}
	return v
}

// settleDerived recomputes derived priority from work downwards, only while
// values change. The graph is acyclic, so this reaches the fixpoint.
func (s *Scheduler) settleDerived(work []int32) {
	for len(work) > 0 {
		z := work[len(work)-1]
		work = work[:len(work)-1]
		if s.builds[z].state == stFree {
			continue
		}
		nv := s.localDerived(z)
		if nv == s.builds[z].derived {
			continue
		}
		s.builds[z].derived = nv
		s.hfix(z)
		for _, di := range s.builds[z].inputs {
			if !s.drvs[di].available {
				for z := s.drvs[di].head - 1; z >= 0; z = s.builds[z].nextSame - 1 {
					work = append(work, z)
				}
			}
		}
	}
}

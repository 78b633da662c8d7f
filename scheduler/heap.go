package scheduler

// Hand-written heaps over build indexes: each build records its position, so
// a change of derived priority or dependents count is an O(log n) fix, and
// there is no interface boxing on the hot path.

// less orders ready builds: derived priority, then dependents, then age, then
// ID so that equal builds come out in a reproducible order.
func (s *Scheduler) less(a, b int32) bool {
	x, y := &s.builds[a], &s.builds[b]
	if x.derived != y.derived {
		return x.derived > y.derived
	}
	if x.count != y.count {
		return x.count > y.count
	}
	if x.created != y.created {
		return x.created < y.created
	}
	return s.idLess(a, b)
}

func (s *Scheduler) hpush(x int32) {
	s.builds[x].ready = s.clk.Now().UnixNano()
	bk := &s.buckets[s.builds[x].bucket]
	bk.heap = append(bk.heap, x)
	s.builds[x].hpos = int32(len(bk.heap) - 1)
	s.hup(bk.heap, len(bk.heap)-1)
}

func (s *Scheduler) hremove(x int32) {
	bk := &s.buckets[s.builds[x].bucket]
	i := int(s.builds[x].hpos)
	last := len(bk.heap) - 1
	if i != last {
		bk.heap[i] = bk.heap[last]
		s.builds[bk.heap[i]].hpos = int32(i)
	}
	bk.heap = bk.heap[:last]
	s.builds[x].hpos = -1
	if i != last {
		if !s.hdown(bk.heap, i) {
			s.hup(bk.heap, i)
		}
	}
}

// hfix restores heap order after x's keys changed; a no-op if x is not ready.
func (s *Scheduler) hfix(x int32) {
	i := int(s.builds[x].hpos)
	if i < 0 {
		return
	}
	h := s.buckets[s.builds[x].bucket].heap
	if !s.hdown(h, i) {
		s.hup(h, i)
	}
}

func (s *Scheduler) hup(h []int32, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(h[i], h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		s.builds[h[i]].hpos = int32(i)
		s.builds[h[p]].hpos = int32(p)
		i = p
	}
}

func (s *Scheduler) hdown(h []int32, i0 int) bool {
	i := i0
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && s.less(h[r], h[l]) {
			j = r
		}
		if !s.less(h[j], h[i]) {
			break
		}
		h[i], h[j] = h[j], h[i]
		s.builds[h[i]].hpos = int32(i)
		s.builds[h[j]].hpos = int32(j)
		i = j
	}
	return i > i0
}

// The deferral heap is ordered by DeferUntil.

func (s *Scheduler) dless(a, b int32) bool {
	if x, y := s.deferUntil[a], s.deferUntil[b]; x != y {
		return x < y
	}
	return a < b
}

func (s *Scheduler) dpush(x int32) {
	s.deferred = append(s.deferred, x)
	s.builds[x].dpos = int32(len(s.deferred) - 1)
	s.dup(len(s.deferred) - 1)
}

func (s *Scheduler) dremove(x int32) {
	h := s.deferred
	i := int(s.builds[x].dpos)
	last := len(h) - 1
	if i != last {
		h[i] = h[last]
		s.builds[h[i]].dpos = int32(i)
	}
	s.deferred = h[:last]
	s.builds[x].dpos = -1
	if i != last {
		if !s.ddown(i) {
			s.dup(i)
		}
	}
}

func (s *Scheduler) dup(i int) {
	h := s.deferred
	for i > 0 {
		p := (i - 1) / 2
		if !s.dless(h[i], h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		s.builds[h[i]].dpos = int32(i)
		s.builds[h[p]].dpos = int32(p)
		i = p
	}
}

func (s *Scheduler) ddown(i0 int) bool {
	h := s.deferred
	i := i0
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && s.dless(h[r], h[l]) {
			j = r
		}
		if !s.dless(h[j], h[i]) {
			break
		}
		h[i], h[j] = h[j], h[i]
		s.builds[h[i]].dpos = int32(i)
		s.builds[h[j]].dpos = int32(j)
		i = j
	}
	return i > i0
}

package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
)

// model is the reference: the definitions from the issue, evaluated by
// brute-force scans on every question.
type model struct {
	strategy Strategy
	clk      *clock.Fake
	live     map[string]*mbuild
	avail    map[string]bool
	held     map[string]int
}

type mbuild struct {
	Build
	allocated bool
	agent     string
	avoid     string
}

func newModel(st Strategy, clk *clock.Fake) *model {
	return &model{strategy: st, clk: clk, live: map[string]*mbuild{}, avail: map[string]bool{}, held: map[string]int{}}
}

func (m *model) waitsOn(y, x *mbuild) bool {
	return y != x && !m.avail[x.Derivation] && slices.Contains(y.InputDrvs, x.Derivation)
}

func (m *model) up(x *mbuild) map[*mbuild]bool {
	seen := map[*mbuild]bool{}
	stack := []*mbuild{x}
	for len(stack) > 0 {
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, y := range m.live {
			if !seen[y] && m.waitsOn(y, b) {
				seen[y] = true
				stack = append(stack, y)
			}
		}
	}
	delete(seen, x)
	return seen
}

func (m *model) order(x *mbuild) (derived, count int) {
	u := m.up(x)
	derived = int(clamp32(x.Priority))
	for y := range u {
		derived = max(derived, int(clamp32(y.Priority)))
	}
	return derived, len(u)
}

func (m *model) blocking(d string) bool {
	if m.avail[d] {
		return false
	}
	if m.strategy == DerivationOrdered {
		return true
	}
	for _, b := range m.live {
		if b.Derivation == d {
			return true
		}
	}
	return false
}

func (m *model) state(b *mbuild) State {
	switch {
	case b.allocated:
		return Allocated
	case !b.DeferUntil.IsZero() && b.DeferUntil.After(m.clk.Now()):
		return Deferred
	}
	for _, in := range b.InputDrvs {
		if m.blocking(in) {
			return Waiting
		}
	}
	return Ready
}

func (m *model) runnable() map[string]bool {
	out := map[string]bool{}
	for id, b := range m.live {
		if m.state(b) == Ready {
			out[id] = true
		}
	}
	return out
}

func (m *model) less(a, b *mbuild) bool {
	da, ca := m.order(a)
	db, cb := m.order(b)
	if da != db {
		return da > db
	}
	if ca != cb {
		return ca > cb
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

func (m *model) allocate(a Agent) (string, bool) {
	if a.MaxParallel > 0 && m.held[a.ID] >= a.MaxParallel {
		return "", false
	}
	var best, bestAvoided *mbuild
	for _, b := range m.live {
		if m.state(b) != Ready || !slices.Contains(a.Systems, b.System) {
			continue
		}
		ok := true
		for _, f := range b.Features {
			ok = ok && slices.Contains(a.Features, f)
		}
		for k, v := range a.RequireTags {
			got, has := b.Tags[k]
			ok = ok && has && got == v
		}
		if !ok {
			continue
		}
		if slices.Contains(b.ExcludeAgents, a.ID) {
			continue
		}
		if b.avoid == a.ID {
			if bestAvoided == nil || m.less(b, bestAvoided) {
				bestAvoided = b
			}
		} else if best == nil || m.less(b, best) {
			best = b
		}
	}
	if best == nil {
		best = bestAvoided
	}
	if best == nil {
		return "", false
	}
	best.allocated, best.agent = true, a.ID
	m.held[a.ID]++
	return best.ID, true
}

// unmatched counts the ready builds none of agents may take (system,
// features, required tags, exclusion).
func (m *model) unmatched(agents []Agent) int {
	n := 0
	for _, b := range m.live {
		if m.state(b) != Ready {
			continue
		}
		taken := false
		for _, a := range agents {
			ok := slices.Contains(a.Systems, b.System) && !slices.Contains(b.ExcludeAgents, a.ID)
			for _, f := range b.Features {
				ok = ok && slices.Contains(a.Features, f)
			}
			for k, v := range a.RequireTags {
				got, has := b.Tags[k]
				ok = ok && has && got == v
			}
			taken = taken || ok
		}
		if !taken {
			n++
		}
	}
	return n
}

func (m *model) remove(id string) {
	b := m.live[id]
	if b.allocated {
		m.held[b.agent]--
	}
	delete(m.live, id)
}

// newlyRunnable runs f and reports which builds became ready.
func (m *model) newlyRunnable(f func()) []string {
	before := m.runnable()
	f()
	var out []string
	for id := range m.runnable() {
		if !before[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) failed(id string) []Dep {
	x := m.live[id]
	var deps []Dep
	inF := map[string]bool{id: true}
	if !m.avail[x.Derivation] && m.allIn(x.Derivation, inF) {
		gone := map[string]bool{x.Derivation: true}
		for changed := true; changed; {
			changed = false
			for _, y := range m.live {
				if inF[y.ID] || y.allocated {
					continue
				}
				hit := false
				for _, in := range y.InputDrvs {
					hit = hit || gone[in]
				}
				if !hit {
					continue
				}
				inF[y.ID] = true
				changed = true
				deps = append(deps, Dep{ID: y.ID, Derivation: y.Derivation, FailedInput: x.Derivation, FailedBuild: id})
				if !m.avail[y.Derivation] && m.allIn(y.Derivation, inF) {
					gone[y.Derivation] = true
				}
			}
		}
	}
	for fid := range inF {
		m.remove(fid)
	}
	sortDeps(deps)
	return deps
}

// stuck is the least fixpoint: a queued build is stuck when one of its
// inputs is dead, and a derivation is dead when it blocks and every live
// build of it (none: an orphan) is stuck. Only derivation-ordered mode.
func (m *model) stuck() map[string]bool {
	out := map[string]bool{}
	if m.strategy != DerivationOrdered {
		return out
	}
	for changed := true; changed; {
		changed = false
		for id, b := range m.live {
			if out[id] || b.allocated {
				continue
			}
			for _, in := range b.InputDrvs {
				if m.dead(in, out) {
					out[id] = true
					changed = true
					break
				}
			}
		}
	}
	return out
}

func (m *model) dead(d string, stuck map[string]bool) bool {
	if !m.blocking(d) {
		return false
	}
	for _, b := range m.live {
		if b.Derivation == d && !stuck[b.ID] {
			return false
		}
	}
	return true
}

// orphansBelow: the derivations without a live build reached from b's
// inputs through dead derivations only.
func (m *model) orphansBelow(b *mbuild, stuck map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	stack := slices.Clone(b.InputDrvs)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[d] || !m.dead(d, stuck) {
			continue
		}
		seen[d] = true
		orphan := true
		for _, y := range m.live {
			if y.Derivation == d {
				orphan = false
				stack = append(stack, y.InputDrvs...)
			}
		}
		if orphan {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) allIn(d string, set map[string]bool) bool {
	for _, b := range m.live {
		if b.Derivation == d && !set[b.ID] {
			return false
		}
	}
	return true
}

func sortDeps(d []Dep) {
	sort.Slice(d, func(i, j int) bool { return d[i].ID < d[j].ID })
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// byteSource turns fuzz input into choices; it yields zeros once exhausted.
type byteSource struct {
	b []byte
	i int
}

func (r *byteSource) n(k int) int {
	if r.i >= len(r.b) {
		return 0
	}
	v := int(r.b[r.i])
	r.i++
	return v % k
}

func (r *byteSource) done() bool { return r.i >= len(r.b) }

var modelAgents = []Agent{
	{ID: "a1", Systems: []string{"x86_64-linux"}, Features: []string{"kvm"}, MaxParallel: 2},
	{ID: "a2", Systems: []string{"x86_64-linux", "aarch64-linux"}, MaxParallel: 1},
	{ID: "a3", Systems: []string{"x86_64-linux"}, RequireTags: map[string]string{"team": "a"}, MaxParallel: 3},
	{ID: "a4", Systems: []string{"aarch64-linux", "x86_64-linux"}, Features: []string{"kvm", "big"}},
}

// pickAgents is a subset of modelAgents, possibly empty.
func pickAgents(src *byteSource) []string {
	var out []string
	for _, a := range modelAgents {
		if src.n(2) == 0 {
			out = append(out, a.ID)
		}
	}
	return out
}

// runModel drives the scheduler and the model with the same operations and
// fails at the first difference.
func runModel(t *testing.T, data []byte) {
	src := &byteSource{b: data}
	st := Strategy(src.n(2))
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	s := New(st, clk)
	s.path = uint8(src.n(3))
	m := newModel(st, clk)
	const ndrv = 10
	drv := func(i int) string { return fmt.Sprintf("/nix/store/%02d-d.drv", i) }
	nextID := 0
	// Every other id is a UUID, which the scheduler keeps as bytes; both
	// forms start with "b" so that they interleave in the id order.
	idOf := func(n int) string {
		if n%2 == 1 {
			return fmt.Sprintf("b%07x-0000-4000-8000-%012x", n, n)
		}
		return fmt.Sprintf("b%02d", n)
	}
	pick := func() string { // any id, live or not
		if nextID == 0 {
			return "none"
		}
		return idOf(src.n(nextID))
	}
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("strategy %v, path %d, after ops:\n%s\n%s", st, s.path, joinLines(log), fmt.Sprintf(format, args...))
	}
	for step := 0; !src.done() && step < 400; step++ {
		switch op := src.n(10); op {
		case 0, 1, 2: // add
			di := 1 + src.n(ndrv-1)
			b := Build{ID: idOf(nextID), Derivation: drv(di), Priority: src.n(4)}
			nextID++
			b.System = []string{"x86_64-linux", "aarch64-linux"}[src.n(2)]
			if src.n(4) == 0 {
				b.Features = []string{"kvm"}
			}
			if src.n(4) == 0 {
				b.Tags = map[string]string{"team": "a"}
			}
			for j := 0; j < di; j++ {
				if src.n(3) == 0 {
					b.InputDrvs = append(b.InputDrvs, drv(j))
				}
			}
			if src.n(5) == 0 {
				b.DeferUntil = clk.Now().Add(time.Duration(1+src.n(3)) * time.Minute)
			}
			if src.n(4) == 0 {
				b.ExcludeAgents = pickAgents(src)
			}
			b.CreatedAt = clk.Now()
			log = append(log, fmt.Sprintf("add %s drv=%d in=%v prio=%d sys=%s feat=%v tags=%v defer=%v exclude=%v", b.ID, di, b.InputDrvs, b.Priority, b.System, b.Features, b.Tags, !b.DeferUntil.IsZero(), b.ExcludeAgents))
			if err := s.Add(b); err != nil {
				fail("add: %v", err)
			}
			m.live[b.ID] = &mbuild{Build: b}
		case 3: // allocate
			a := modelAgents[src.n(len(modelAgents))]
			log = append(log, "allocate "+a.ID)
			s.Wake()
			want, wok := m.allocate(a)
			got, gok := s.Allocate(a)
			if wok != gok || got.ID != want {
				fail("allocate %s: got %q,%v want %q,%v", a.ID, got.ID, gok, want, wok)
			}
		case 4: // succeeded
			id := pick()
			log = append(log, "succeeded "+id)
			if _, ok := m.live[id]; !ok {
				s.Succeeded(id)
				continue
			}
			var got []string
			want := m.newlyRunnable(func() {
				m.avail[m.live[id].Derivation] = true
				m.remove(id)
				got = s.Succeeded(id)
			})
			if !slices.Equal(sorted(got), want) {
				fail("succeeded %s: runnable %v want %v", id, sorted(got), want)
			}
		case 5: // failed
			id := pick()
			log = append(log, "failed "+id)
			if _, ok := m.live[id]; !ok {
				s.Failed(id)
				continue
			}
			got := s.Failed(id)
			sortDeps(got)
			want := m.failed(id)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				fail("failed %s: deps %v want %v", id, got, want)
			}
		case 6: // cancel or requeue
			id := pick()
			switch src.n(4) {
			case 3:
				excl := pickAgents(src)
				log = append(log, fmt.Sprintf("exclude %s %v", id, excl))
				s.SetExcluded(id, excl)
				if b, ok := m.live[id]; ok {
					b.ExcludeAgents = excl
				}
			case 0:
				log = append(log, "cancel "+id)
				if _, ok := m.live[id]; !ok {
					s.Cancel(id)
					continue
				}
				var got []string
				want := m.newlyRunnable(func() { m.remove(id); got = s.Cancel(id) })
				if !slices.Equal(sorted(got), want) {
					fail("cancel %s: runnable %v want %v", id, sorted(got), want)
				}
			case 1:
				log = append(log, "cancel input "+id)
				if _, ok := m.live[id]; !ok {
					s.CancelInput(id)
					continue
				}
				if st == Permissive {
					var got []string
					want := m.newlyRunnable(func() { m.remove(id); _, got = s.CancelInput(id) })
					if !slices.Equal(sorted(got), want) {
						fail("cancel input %s: runnable %v want %v", id, sorted(got), want)
					}
					continue
				}
				got, runnable := s.CancelInput(id)
				sortDeps(got)
				if want := m.failed(id); fmt.Sprint(got) != fmt.Sprint(want) {
					fail("cancel input %s: stranded %v want %v", id, got, want)
				}
				if len(runnable) > 0 {
					fail("cancel input %s: runnable %v in derivation-ordered mode", id, runnable)
				}
			default:
				avoid := modelAgents[src.n(len(modelAgents))].ID
				log = append(log, "requeue "+id+" avoid "+avoid)
				s.Requeue(id, avoid)
				if b, ok := m.live[id]; ok {
					if b.allocated {
						m.held[b.agent]--
						b.allocated = false
					}
					b.avoid = avoid
				}
			}
		case 7: // mark available
			d := drv(src.n(ndrv))
			log = append(log, "available "+d)
			var got []string
			want := m.newlyRunnable(func() { m.avail[d] = true; got = s.MarkAvailable(d) })
			if !slices.Equal(sorted(got), want) {
				fail("available %s: runnable %v want %v", d, sorted(got), want)
			}
		case 8: // set priority
			id, p := pick(), src.n(6)
			log = append(log, fmt.Sprintf("priority %s %d", id, p))
			s.SetPriority(id, p)
			if b, ok := m.live[id]; ok {
				b.Priority = p
			}
		case 9: // time passes
			log = append(log, "advance 1m")
			var got []string
			want := m.newlyRunnable(func() { clk.Advance(time.Minute); got = s.Wake() })
			if !slices.Equal(sorted(got), want) {
				fail("wake: runnable %v want %v", sorted(got), want)
			}
		}
		// Every live build: same state and the same ordering keys.
		for id, b := range m.live {
			gs, ok := s.StateOf(id)
			if !ok || gs != m.state(b) {
				fail("state of %s: got %v,%v want %v", id, gs, ok, m.state(b))
			}
			gd, gc, _ := s.Order(id)
			wd, wc := m.order(b)
			if gd != wd || gc != wc {
				fail("order of %s: got derived %d count %d, want %d %d", id, gd, gc, wd, wc)
			}
		}
		for _, a := range modelAgents {
			if s.Held(a.ID) != m.held[a.ID] {
				fail("held by %s: got %d want %d", a.ID, s.Held(a.ID), m.held[a.ID])
			}
			var want []string
			for id, b := range m.live {
				if b.allocated && b.agent == a.ID {
					want = append(want, id)
				}
			}
			if got := s.AllocatedTo(a.ID); !slices.Equal(got, sorted(want)) && len(got)+len(want) > 0 {
				fail("allocated to %s: got %v want %v", a.ID, got, sorted(want))
			}
		}
		stuck := m.stuck()
		if got := s.Stuck(); got != len(stuck) {
			fail("stuck: got %d want %d (%v)", got, len(stuck), stuck)
		}
		for id, b := range m.live {
			if b.allocated {
				continue
			}
			inputs, unb, total, ok := s.Blockers(id, 100)
			want := m.orphansBelow(b, stuck)
			if !ok || !slices.Equal(unb, want) || total != len(want) || (len(want) > 0) != stuck[id] {
				fail("blockers of %s: unbuildable %v (%d) want %v, stuck %v", id, unb, total, want, stuck[id])
			}
			var wantIn []string
			for _, in := range b.InputDrvs {
				if m.blocking(in) {
					wantIn = append(wantIn, fmt.Sprintf("%s:%v", in, m.dead(in, stuck)))
				}
			}
			var gotIn []string
			for _, bl := range inputs {
				gotIn = append(gotIn, fmt.Sprintf("%s:%v", bl.Derivation, bl.Unbuildable))
			}
			if !slices.Equal(sorted(gotIn), sorted(wantIn)) {
				fail("blocking inputs of %s: got %v want %v", id, gotIn, wantIn)
			}
		}
		s.Wake()
		for _, agents := range [][]Agent{modelAgents, modelAgents[:2], modelAgents[2:3]} {
			if got, want := s.Unmatched(agents), m.unmatched(agents); got != want {
				fail("unmatched by %d agents: got %d want %d", len(agents), got, want)
			}
		}
		stats := s.Stats()
		if n := stats.Waiting + stats.Deferred + stats.Ready + stats.Allocated; n != len(m.live) {
			fail("stats: %+v, model has %d live", stats, len(m.live))
		}
	}
}

func joinLines(l []string) string {
	if len(l) > 60 {
		l = l[len(l)-60:]
	}
	out := ""
	for _, s := range l {
		out += "  " + s + "\n"
	}
	return out
}

func TestAgainstModel(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		data := make([]byte, 200+r.IntN(600))
		for i := range data {
			data[i] = byte(r.UintN(256))
		}
		runModel(t, data)
	}
}

func FuzzAgainstModel(f *testing.F) {
	f.Add([]byte{0, 0, 5, 1, 0, 0, 0, 0, 0, 3, 0, 4, 0})
	f.Add([]byte{1, 1, 3, 2, 1, 1, 1, 0, 1, 1, 3, 1, 5, 0})
	f.Fuzz(func(t *testing.T, data []byte) { runModel(t, data) })
}

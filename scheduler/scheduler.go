// Package scheduler keeps the queue of builds waiting for agents: the
// dependency graph between them, per-(system, features, tags) ready heaps, and
// matching of agents to builds. It is pure and single-threaded: the caller
// (the coordinator) serialises calls and owns I/O; time comes from an injected
// clock so deferral can be stepped in tests.
//
// Every event method returns what changed (builds that became runnable, builds
// that failed because of an input), so the caller can push work to agents
// without scanning.
//
// # Costs
//
// n = queued builds, k = inputs of a build, U(x)/D(x) = builds transitively
// waiting on x / that x transitively waits on (only builds still queued or
// allocated count; finished builds drop out of the graph).
//
//   - Add: O(k + |D(x)|) when nothing already waits on the new build (the
//     usual case: submissions go inputs first); otherwise the cheaper of a
//     recount below, O(|U(x)| + Σ_{y∈D(x)} |U(y)|), and a walk below each
//     waiting build, O(Σ_{u∈U(x)} |D(u)| + |U(x)|·|D(x)|).
//   - Allocate: O(matching buckets · log n).
//   - Succeeded: O(dependents of its derivation · log n) in the usual case.
//   - SetPriority: raising propagates only while derived priorities change;
//     lowering recomputes from direct dependents, again only while changing.
//   - Cancel / Failed: for removed builds F, the cheaper of O(Σ_{f∈F} |D(f)|)
//     and a recount of the builds just below F, O(Σ_{y∈D(F)\F} |U(y)|); only
//     the recount when builds outside F still wait on F.
package scheduler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/clock"
)

// Strategy decides whether an input derivation that has no build here blocks
// its dependents.
type Strategy int

const (
	// DerivationOrdered: an input is available only when a build of it
	// succeeded here or MarkAvailable was called for it.
	DerivationOrdered Strategy = iota
	// Permissive: inputs with no live build here are assumed substitutable;
	// inputs with a live build here still block until it succeeds.
	Permissive
)

func (s Strategy) String() string {
	switch s {
	case DerivationOrdered:
		return "derivation-ordered"
	case Permissive:
		return "permissive"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// ParseStrategy reads the --allocation-strategy flag value.
func ParseStrategy(v string) (Strategy, error) {
	switch v {
	case "derivation-ordered":
		return DerivationOrdered, nil
	case "permissive":
		return Permissive, nil
	}
	return 0, fmt.Errorf("allocation strategy %q: want derivation-ordered or permissive", v)
}

// Build is a build as submitted.
type Build struct {
	ID, Derivation, System string
	InputDrvs              []string // .drv paths of its inputs
	Features               []string // requiredSystemFeatures
	Tags                   map[string]string
	Priority               int       // clamped to int32
	CreatedAt              time.Time // zero = now
	DeferUntil             time.Time // zero = not deferred
}

// Agent describes who asks for work. MaxParallel 0 means no limit here (the
// caller tracks slots itself).
type Agent struct {
	ID          string
	Systems     []string
	Features    []string
	RequireTags map[string]string
	MaxParallel int
}

// Dep is a build that became failed-dependency.
type Dep struct {
	ID, Derivation string
	FailedInput    string // derivation of the build that really failed
	FailedBuild    string // its id
}

// State of a build still known to the scheduler (finished builds are
// forgotten).
type State int

const (
	Waiting   State = iota // an input is not available yet
	Deferred               // DeferUntil is in the future
	Ready                  // in a ready queue
	Allocated              // given to an agent
)

func (s State) String() string {
	return [...]string{"waiting", "deferred", "ready", "allocated"}[s]
}

// Stats is a snapshot of the queue.
type Stats struct {
	Waiting, Deferred, Ready, Allocated           int
	Succeeded, Failed, FailedDependency, Canceled uint64
	ReadyBySystem                                 map[string]int
	Derivations                                   int // interned derivation paths
}

type bstate uint8

const (
	stFree bstate = iota
	stQueued
	stAllocated
)

// build is the internal record; int32 indexes keep it near 100 bytes.
type build struct {
	uid      [16]byte // the id when it is a UUID (see ids.go)
	inputs   []int32  // derivation indexes, deduplicated
	created  int64
	drv      int32
	bucket   int32
	prio     int32
	derived  int32 // max prio over itself and everything waiting on it
	count    int32 // builds waiting on it, directly or not
	waiting  int32 // inputs still blocking
	hpos     int32 // index in its bucket's ready heap, -1 if not there
	dpos     int32 // index in the deferral heap, -1 if not there
	agent    int32 // allocated to, -1 if not
	avoid    int32 // agent to avoid after a requeue, -1 if none
	nextSame int32 // next live build of the same derivation, +1 (0 = end)
	gen      uint32
	mark     uint32
	state    bstate
	dying    bool
	oddID    bool // the id is not a UUID: it is in Scheduler.oddIDs
}

// ref names a build slot at one generation, so slots can be reused while
// stale references in dependents lists are skipped and compacted lazily.
type ref struct {
	idx int32
	gen uint32
}

type drvNode struct {
	path       string
	head       int32 // first live build of this derivation, +1 (0 = none)
	dependents []ref // builds listing it as an input; some may be stale
	dead       int32 // stale entries in dependents
	available  bool
}

type bucket struct {
	system   string
	features []string
	tags     map[string]string
	heap     []int32
}

type agentSlot struct {
	id    string
	held  int
	slots map[int32]struct{} // builds allocated to it
}

// Scheduler is not safe for concurrent use.
type Scheduler struct {
	strategy Strategy
	clk      clock.Clock

	builds []build
	free   []int32
	byID   strIndex // build id → slot
	oddIDs map[int32]string

	drvs      []drvNode
	drvByPath strIndex // derivation path → drvs index
	paths     strArena // the bytes of drvs' paths

	buckets         []bucket
	bucketByKey     map[string]int32
	bucketsBySystem map[string][]int32

	agents    []agentSlot
	agentByID map[string]int32

	deferred   []int32         // min-heap by deferUntil
	deferUntil map[int32]int64 // unix ns, only for builds submitted with one
	allocated  int

	epoch uint32
	stack []int32 // scratch for walks
	down  []int32 // scratch result of collectDown

	succeeded, failed, failedDep, canceled uint64

	// path overrides the cost-based choice between two exact updates, so
	// tests check both: 0 chooses by cost, 1 always recounts, 2 never does.
	path uint8
}

// New makes an empty scheduler.
func New(strategy Strategy, clk clock.Clock) *Scheduler {
	return &Scheduler{
		strategy:        strategy,
		clk:             clk,
		byID:            newStrIndex(),
		drvByPath:       newStrIndex(),
		bucketByKey:     make(map[string]int32),
		bucketsBySystem: make(map[string][]int32),
		agentByID:       make(map[string]int32),
		deferUntil:      make(map[int32]int64),
	}
}

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
	bk := s.internBucket(b.System, b.Features, b.Tags)

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
	x := &s.builds[idx]
	x.dying = true
	cause := Dep{FailedBuild: s.idOf(idx), FailedInput: s.drvs[x.drv].path}
	F := []int32{idx}
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
				failedDependency = append(failedDependency, dep)
				if e := y.drv; !gone[e] && !s.drvs[e].available && s.allDying(e) {
					gone[e] = true
					queue = append(queue, e)
				}
			}
		}
	}
	s.failedDep += uint64(len(F) - 1)
	s.detach(F)
	return failedDependency
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
			if len(bk.heap) == 0 || !matches(bk, a) {
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

// Held is how many builds the scheduler has allocated to an agent and not yet
// seen finish or requeued.
func (s *Scheduler) Held(agentID string) int {
	if ai, ok := s.agentByID[agentID]; ok {
		return s.agents[ai].held
	}
	return 0
}

// AllocatedTo lists the builds allocated to an agent, sorted, e.g. to requeue
// them when it goes absent or to tell a reconnecting agent which to continue.
func (s *Scheduler) AllocatedTo(agentID string) []string {
	ai, ok := s.agentByID[agentID]
	if !ok {
		return nil
	}
	out := make([]string, 0, len(s.agents[ai].slots))
	for x := range s.agents[ai].slots {
		out = append(out, s.idOf(x))
	}
	sort.Strings(out)
	return out
}

// StateOf reports where a build is; false once it finished or is unknown.
func (s *Scheduler) StateOf(id string) (State, bool) {
	idx, ok := s.lookupID(id)
	if !ok {
		return 0, false
	}
	b := &s.builds[idx]
	switch {
	case b.state == stAllocated:
		return Allocated, true
	case b.hpos >= 0:
		return Ready, true
	case b.dpos >= 0:
		return Deferred, true
	}
	return Waiting, true
}

// Lookup returns a queued or allocated build as submitted (priority is its own,
// not derived).
func (s *Scheduler) Lookup(id string) (Build, bool) {
	idx, ok := s.lookupID(id)
	if !ok {
		return Build{}, false
	}
	return s.export(idx), true
}

// Order reports the ordering keys of a build: derived priority and the number
// of builds waiting on it.
func (s *Scheduler) Order(id string) (derivedPriority, dependents int, ok bool) {
	idx, ok := s.lookupID(id)
	if !ok {
		return 0, 0, false
	}
	return int(s.builds[idx].derived), int(s.builds[idx].count), true
}

// Stats counts builds by state.
func (s *Scheduler) Stats() Stats {
	st := Stats{
		Deferred:         len(s.deferred),
		Allocated:        s.allocated,
		Succeeded:        s.succeeded,
		Failed:           s.failed,
		FailedDependency: s.failedDep,
		Canceled:         s.canceled,
		ReadyBySystem:    make(map[string]int),
		Derivations:      len(s.drvs),
	}
	for _, bk := range s.buckets {
		st.Ready += len(bk.heap)
		if len(bk.heap) > 0 {
			st.ReadyBySystem[bk.system] += len(bk.heap)
		}
	}
	st.Waiting = s.byID.n - st.Ready - st.Allocated - st.Deferred
	return st
}

// --- internals ---

func clamp32(p int) int32 {
	return int32(max(math.MinInt32, min(math.MaxInt32, p)))
}

func (s *Scheduler) export(idx int32) Build {
	b := &s.builds[idx]
	bk := &s.buckets[b.bucket]
	out := Build{
		ID:         s.idOf(idx),
		Derivation: s.drvs[b.drv].path,
		System:     bk.system,
		Priority:   int(b.prio),
		CreatedAt:  time.Unix(0, b.created),
	}
	if du, ok := s.deferUntil[idx]; ok {
		out.DeferUntil = time.Unix(0, du)
	}
	for _, di := range b.inputs {
		out.InputDrvs = append(out.InputDrvs, s.drvs[di].path)
	}
	if len(bk.features) > 0 {
		out.Features = slices.Clone(bk.features)
	}
	if len(bk.tags) > 0 {
		out.Tags = make(map[string]string, len(bk.tags))
		for k, v := range bk.tags {
			out.Tags[k] = v
		}
	}
	return out
}

func (s *Scheduler) pathOf(i int32) string { return s.drvs[i].path }

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

func (s *Scheduler) internBucket(system string, features []string, tags map[string]string) int32 {
	key := system
	var fs []string
	if len(features) > 0 || len(tags) > 0 {
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
		key = kb.String()
	}
	if bi, ok := s.bucketByKey[key]; ok {
		return bi
	}
	bk := bucket{system: strings.Clone(system), features: fs}
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

func (s *Scheduler) hasLiveDependents(x int32) bool {
	d := &s.drvs[s.builds[x].drv]
	if d.available {
		return false
	}
	for _, r := range d.dependents {
		if s.valid(r) && !s.builds[r.idx].dying {
			return true
		}
	}
	return false
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

// Derivation reports whether a derivation has a queued or allocated build
// here (live) and whether it was marked available (a build of it succeeded
// or MarkAvailable was called), so the caller knows which inputs it still
// has to look up.
func (s *Scheduler) Derivation(path string) (live, available bool) {
	d, ok := s.drvByPath.get(path, s.pathOf)
	if !ok {
		return false, false
	}
	return s.drvs[d].head != 0, s.drvs[d].available
}

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
// scheduler.go holds the types, New and the read-only queries; graph.go the
// changes to the dependency graph (Add, Succeeded, Failed, Cancel, …);
// priority.go derived priority and dependents counts; match.go ready queues,
// deferral and matching agents to builds (Allocate, Requeue, Restore).
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
	"fmt"
	"math"
	"slices"
	"sort"
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
	// ExcludeAgents never get this build, whatever else they could take
	// (the sides of a reproducibility check go to distinct agents).
	// SetExcluded replaces the set while the build is queued.
	ExcludeAgents []string
	// Ready is when the build last entered a ready queue (set by
	// Allocate and Lookup; ignored by Add).
	Ready time.Time
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
	ready    int64 // unix ns it last entered a ready heap
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
	exclude  []int32 // agents that never get its builds, sorted
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

	// orphans holds input derivations that blocked with no live build
	// when last seen (derivation-ordered mode; see blocked.go).
	orphans map[int32]struct{}

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
		Ready:      time.Unix(0, b.ready),
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
	for _, ai := range bk.exclude {
		out.ExcludeAgents = append(out.ExcludeAgents, s.agents[ai].id)
	}
	return out
}

func (s *Scheduler) pathOf(i int32) string { return s.drvs[i].path }

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

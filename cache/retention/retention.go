package retention

import (
	"container/heap"
	"fmt"
	"strings"
	"time"
)

// Path is one published path as the cache records it.
type Path struct {
	// Base is the store path's basename (hash part, dash, name).
	Base string
	// References are basenames, as in the narinfo.
	References []string
	// Deriver is the .drv basename ("" if unknown).
	Deriver   string
	FileSize  int64
	Published time.Time // when its narinfo appeared
}

// Build is what retention needs of a build record.
type Build struct {
	ID         string
	Derivation string // .drv basename
	Active     bool   // queued or running
	CreatedAt  time.Time
	Tags       [][2]string
	Outputs    []string // basenames
}

// Pin keeps a path (basename) and its closure.
type Pin struct {
	Base, Reason string
}

// Policy is what the operator configured.
type Policy struct {
	Rules []Rule
	// KeepDefault keeps the outputs of any build, and any path published,
	// younger than this (0: none).
	KeepDefault time.Duration
	// KeepAccessed keeps paths fetched within this (0: none).
	KeepAccessed time.Duration
	// MaxSize, when > 0, lets unkept paths stay while the cache's files
	// total at most this; over it the least recently used unkept go first.
	// 0: every unkept path is deleted.
	MaxSize int64
}

// Kind says why a path is kept.
type Kind uint8

const (
	NotKept Kind = iota
	Pinned
	KeepRule
	YoungBuild
	ActiveInput
	Accessed
	Recent
	Fenced // published after the collection began
	Closure
	Deriver
	UnderSize
	Cycle
)

var kindNames = [...]string{"not kept", "pinned", "keep-rule", "young-build", "active-build-input", "accessed",
	"recent", "published-during-gc", "closure", "deriver", "under-size-limit", "reference-cycle"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Graph holds the cache's paths; add every path, then Plan.
type Graph struct {
	index   map[string]int32 // hash part → node
	nodes   []node
	details []string
}

type node struct {
	base      string
	refs      []int32
	deriver   int32 // -1: none in the cache
	size      int64
	published int64 // unix ms
	access    int64 // unix ms, 0 never
	kind      Kind
	planned   bool  // in Plan.Delete
	deleted   bool  // gone (MarkDeleted)
	parent    int32 // for Closure and Deriver: the kept path that needs this one
	detail    int32 // index into details, -1 none
}

// NewGraph returns an empty graph sized for n paths.
func NewGraph(n int) *Graph {
	return &Graph{index: make(map[string]int32, n), nodes: make([]node, 0, n)}
}

func hashPart(base string) string {
	if len(base) < 32 {
		return base
	}
	return base[:32]
}

// Add records a path. References are resolved at Plan; a path added
// twice keeps the first.
func (g *Graph) Add(p Path) {
	h := hashPart(p.Base)
	at, ok := g.index[h]
	if ok && g.nodes[at].base != "" {
		return
	}
	if !ok {
		at = int32(len(g.nodes))
		g.index[h] = at
		g.nodes = append(g.nodes, node{})
	}
	n := node{base: p.Base, deriver: -1, size: p.FileSize, published: p.Published.UnixMilli(), parent: -1, detail: -1}
	if p.Deriver != "" && hashPart(p.Deriver) != h {
		// Resolved now, to a placeholder if the .drv comes later (or
		// never: then Plan drops the link).
		n.deriver = g.pending(p.Deriver)
	}
	if len(p.References) > 0 {
		// Stash the references' hash parts until Plan resolves them.
		n.refs = make([]int32, 0, len(p.References))
		for _, r := range p.References {
			if hashPart(r) == h {
				continue
			}
			n.refs = append(n.refs, g.pending(r))
		}
	}
	g.nodes[at] = n
}

// pending returns the node of a reference, creating a placeholder for one
// not added yet (a placeholder left at Plan is a reference the cache does
// not hold).
func (g *Graph) pending(base string) int32 {
	h := hashPart(base)
	if i, ok := g.index[h]; ok {
		return i
	}
	i := int32(len(g.nodes))
	g.index[h] = i
	g.nodes = append(g.nodes, node{base: "", deriver: -1, parent: -1, detail: -1})
	return i
}

// Len is the number of paths in the cache.
func (g *Graph) Len() int {
	n := 0
	for i := range g.nodes {
		if g.nodes[i].base != "" {
			n++
		}
	}
	return n
}

// Plan is the outcome of a collection.
type Plan struct {
	g *Graph
	// Delete lists the basenames to delete, every path after every
	// path that refers to it.
	Delete      []string
	DeleteBytes int64
	Kept        int
	KeptBytes   int64
	// Missing are references held by kept paths that the cache lacks
	// (a closure that was already incomplete).
	Missing int
}

// Inputs are the facts of one collection.
type Inputs struct {
	Now time.Time
	// Fence: paths published at or after it are kept (published while
	// the collection ran); zero: no fence.
	Fence    time.Time
	Pins     []Pin
	Builds   []Build
	Accesses map[string]time.Time // hash part → last access
}

// Plan decides. It may be called once per Graph.
func (g *Graph) Plan(pol Policy, in Inputs) *Plan {
	now := in.Now.UnixMilli()
	for h, t := range in.Accesses {
		if i, ok := g.index[h]; ok && g.nodes[i].base != "" {
			g.nodes[i].access = max(g.nodes[i].access, t.UnixMilli())
		}
	}
	// Resolve derivers.
	// byDrv: a .drv's node → its outputs' nodes; a deriver the cache
	// does not hold is dropped from its outputs (nothing to keep).
	byDrv := map[int32][]int32{}
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.base == "" || n.deriver < 0 {
			continue
		}
		byDrv[n.deriver] = append(byDrv[n.deriver], int32(i))
		if g.nodes[n.deriver].base == "" {
			n.deriver = -1
		}
	}
	var queue []int32
	root := func(base string, k Kind, detail string) {
		i, ok := g.index[hashPart(base)]
		if !ok || g.nodes[i].base == "" || g.nodes[i].kind != NotKept {
			return
		}
		g.nodes[i].kind = k
		if detail != "" {
			g.nodes[i].detail = int32(len(g.details))
			g.details = append(g.details, detail)
		}
		queue = append(queue, i)
	}
	for _, p := range in.Pins {
		d := "pinned"
		if p.Reason != "" {
			d += ": " + p.Reason
		}
		root(p.Base, Pinned, d)
	}
	for _, b := range in.Builds {
		if b.Active {
			continue
		}
		if r, ok := pol.RuleFor(b, in.Now); ok {
			for _, o := range b.Outputs {
				root(o, KeepRule, fmt.Sprintf("output of build %s, kept by rule %s", b.ID, r))
			}
		}
	}
	if pol.KeepDefault > 0 {
		for _, b := range in.Builds {
			if !b.Active && now-b.CreatedAt.UnixMilli() <= pol.KeepDefault.Milliseconds() {
				for _, o := range b.Outputs {
					root(o, YoungBuild, fmt.Sprintf("output of build %s, submitted %s, within --cache-keep-default %s",
						b.ID, b.CreatedAt.UTC().Format(time.RFC3339), FormatDuration(pol.KeepDefault)))
				}
			}
		}
	}
	for _, b := range in.Builds {
		if !b.Active {
			continue
		}
		detail := "input of queued or running build " + b.ID
		root(b.Derivation, ActiveInput, detail)
		for _, o := range b.Outputs {
			root(o, ActiveInput, "output of queued or running build "+b.ID)
		}
		di, ok := g.index[hashPart(b.Derivation)]
		if !ok || g.nodes[di].base == "" {
			continue
		}
		for _, r := range g.nodes[di].refs {
			rb := g.nodes[r].base
			if !strings.HasSuffix(rb, ".drv") {
				continue
			}
			for _, o := range byDrv[r] {
				root(g.nodes[o].base, ActiveInput, detail)
			}
		}
	}
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.base == "" || n.kind != NotKept {
			continue
		}
		switch {
		case !in.Fence.IsZero() && n.published >= in.Fence.UnixMilli():
			root(n.base, Fenced, "")
		case pol.KeepAccessed > 0 && n.access > 0 && now-n.access <= pol.KeepAccessed.Milliseconds():
			root(n.base, Accessed, fmt.Sprintf("fetched %s, within --cache-keep-accessed %s",
				time.UnixMilli(n.access).UTC().Format(time.RFC3339), FormatDuration(pol.KeepAccessed)))
		case pol.KeepDefault > 0 && now-n.published <= pol.KeepDefault.Milliseconds():
			root(n.base, Recent, fmt.Sprintf("published %s, within --cache-keep-default %s",
				time.UnixMilli(n.published).UTC().Format(time.RFC3339), FormatDuration(pol.KeepDefault)))
		}
	}
	p := &Plan{g: g}
	// Closure: references, and the deriver of every kept output (a
	// .drv and its log follow their outputs).
	for len(queue) > 0 {
		i := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		n := &g.nodes[i]
		follow := func(j int32, k Kind) {
			m := &g.nodes[j]
			if m.base == "" {
				if m.kind == NotKept {
					m.kind = Closure // counted once
					p.Missing++
				}
				return
			}
			if m.kind != NotKept {
				return
			}
			m.kind, m.parent = k, i
			queue = append(queue, j)
		}
		for _, r := range n.refs {
			follow(r, Closure)
		}
		if n.deriver >= 0 {
			follow(n.deriver, Deriver)
		}
	}
	g.evict(pol, p)
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.base != "" && n.kind != NotKept {
			p.Kept++
			p.KeptBytes += n.size
		}
	}
	return p
}

// evict orders the unkept paths for deletion: a path becomes deletable
// once every unkept path referring to it is deleted; among deletable
// paths the least recently used (last access, else publication) goes
// first. With a size limit it stops once the cache fits; what stays is
// kept as UnderSize. Paths in a reference cycle never become deletable
// and are kept as Cycle.
func (g *Graph) evict(pol Policy, p *Plan) {
	var total int64
	referrers := make([]int32, len(g.nodes))
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.base == "" {
			continue
		}
		total += n.size
		if n.kind != NotKept {
			continue
		}
		for _, r := range n.refs {
			referrers[r]++
		}
		if n.deriver >= 0 {
			referrers[n.deriver]++ // a .drv goes after its outputs
		}
	}
	h := &lru{g: g}
	for i := range g.nodes {
		if g.nodes[i].base != "" && g.nodes[i].kind == NotKept && referrers[i] == 0 {
			h.items = append(h.items, int32(i))
		}
	}
	heap.Init(h)
	for h.Len() > 0 && (pol.MaxSize <= 0 || total > pol.MaxSize) {
		i := heap.Pop(h).(int32)
		n := &g.nodes[i]
		p.Delete = append(p.Delete, n.base)
		p.DeleteBytes += n.size
		total -= n.size
		n.planned = true
		release := func(j int32) {
			referrers[j]--
			if referrers[j] == 0 && g.nodes[j].base != "" && g.nodes[j].kind == NotKept {
				heap.Push(h, j)
			}
		}
		for _, r := range n.refs {
			release(r)
		}
		if n.deriver >= 0 {
			release(n.deriver)
		}
	}
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.base == "" || n.kind != NotKept || n.planned {
			continue
		}
		if referrers[i] > 0 && pol.MaxSize <= 0 {
			n.kind = Cycle
		} else {
			n.kind = UnderSize
		}
	}
}

type lru struct {
	g     *Graph
	items []int32
}

func (h *lru) last(i int32) int64 {
	n := &h.g.nodes[i]
	return max(n.access, n.published)
}
func (h *lru) Len() int { return len(h.items) }
func (h *lru) Less(a, b int) bool {
	la, lb := h.last(h.items[a]), h.last(h.items[b])
	if la != lb {
		return la < lb
	}
	return h.g.nodes[h.items[a]].base < h.g.nodes[h.items[b]].base
}
func (h *lru) Swap(a, b int) { h.items[a], h.items[b] = h.items[b], h.items[a] }
func (h *lru) Push(x any)    { h.items = append(h.items, x.(int32)) }
func (h *lru) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// Why says why base is kept, following closure and deriver links to the
// root that keeps it; ok is false for a path the cache does not hold.
func (p *Plan) Why(base string) (kept bool, chain []string, ok bool) {
	g := p.g
	i, found := g.index[hashPart(base)]
	if !found || g.nodes[i].base == "" {
		return false, nil, false
	}
	for steps := 0; i >= 0 && steps < 1000; steps++ {
		n := &g.nodes[i]
		switch n.kind {
		case NotKept:
			return false, []string{"not kept: deleted by this collection"}, true
		case Closure:
			chain = append(chain, fmt.Sprintf("%s: referenced by %s", n.base, g.nodes[n.parent].base))
			i = n.parent
			continue
		case Deriver:
			chain = append(chain, fmt.Sprintf("%s: derivation of %s", n.base, g.nodes[n.parent].base))
			i = n.parent
			continue
		}
		line := n.base + ": " + n.kind.String()
		if n.detail >= 0 {
			line += " (" + g.details[n.detail] + ")"
		}
		return true, append(chain, line), true
	}
	return true, chain, true
}

// Kind returns why base is kept (NotKept: deleted or not in the cache).
func (p *Plan) Kind(base string) Kind {
	i, ok := p.g.index[hashPart(base)]
	if !ok || p.g.nodes[i].base == "" {
		return NotKept
	}
	return p.g.nodes[i].kind
}

// Protect keeps, as published during the collection, the paths with
// these hash parts and their closures, unless already deleted; the
// caller then skips them in Delete. It returns how many paths it newly
// kept and how many touched paths were already deleted.
func (p *Plan) Protect(hashParts []string) (kept, gone int) {
	g := p.g
	var queue []int32
	for _, h := range hashParts {
		if i, ok := g.index[h]; ok && g.nodes[i].base != "" {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		i := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		n := &g.nodes[i]
		if n.deleted {
			gone++
			continue
		}
		if n.kind != NotKept && n.kind != UnderSize && n.kind != Cycle {
			continue
		}
		if n.kind == NotKept {
			kept++
		}
		n.kind = Fenced
		for _, r := range n.refs {
			if g.nodes[r].base != "" {
				queue = append(queue, r)
			}
		}
		if n.deriver >= 0 {
			queue = append(queue, n.deriver)
		}
	}
	return kept, gone
}

// MarkDeleted records that base is gone (the caller deleted it), so a
// later Protect reports it instead of keeping it.
func (p *Plan) MarkDeleted(base string) {
	if i, ok := p.g.index[hashPart(base)]; ok {
		p.g.nodes[i].deleted = true
	}
}

// Has reports whether base was in the cache when the plan was made.
func (p *Plan) Has(base string) bool {
	i, ok := p.g.index[hashPart(base)]
	return ok && p.g.nodes[i].base != ""
}

// RuleFor returns the first rule that keeps b's outputs at now.
func (pol Policy) RuleFor(b Build, now time.Time) (Rule, bool) {
	for _, r := range pol.Rules {
		if r.Keep != Forever && now.Sub(b.CreatedAt) > r.Keep {
			continue
		}
		for _, t := range b.Tags {
			if r.matches(t[0], t[1]) {
				return r, true
			}
		}
	}
	return Rule{}, false
}

// KeepsBuild says why the policy keeps b's outputs, "" if it does not:
// a rule, or --cache-keep-default.
func (pol Policy) KeepsBuild(b Build, now time.Time) string {
	if r, ok := pol.RuleFor(b, now); ok {
		return "kept by rule " + r.String()
	}
	if pol.KeepDefault > 0 && now.Sub(b.CreatedAt) <= pol.KeepDefault {
		return "younger than --cache-keep-default " + FormatDuration(pol.KeepDefault)
	}
	return ""
}

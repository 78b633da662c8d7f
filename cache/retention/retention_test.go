package retention

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func days(n int) time.Time { return now.Add(-time.Duration(n) * 24 * time.Hour) }

// base makes a basename with a distinct 32-character hash part.
func base(name string) string {
	h := strings.Repeat("0", 32-len(name)) + name
	return h[:32] + "-" + name
}

type fixture struct {
	g      *Graph
	builds []Build
}

func (f *fixture) path(name string, age int, size int64, deriver string, refs ...string) {
	p := Path{Base: base(name), FileSize: size, Published: days(age)}
	for _, r := range refs {
		p.References = append(p.References, base(r))
	}
	p.References = append(p.References, base(name)) // a self-reference is ignored
	if deriver != "" {
		p.Deriver = base(deriver)
	}
	f.g.Add(p)
}

func (f *fixture) build(id, drv string, age int, active bool, tags string, outs ...string) {
	b := Build{ID: id, Derivation: base(drv), Active: active, CreatedAt: days(age)}
	for _, kv := range strings.Fields(tags) {
		k, v, _ := strings.Cut(kv, "=")
		b.Tags = append(b.Tags, [2]string{k, v})
	}
	for _, o := range outs {
		b.Outputs = append(b.Outputs, base(o))
	}
	f.builds = append(f.builds, b)
}

func names(bases []string) []string {
	out := make([]string, len(bases))
	for i, b := range bases {
		out[i] = b[33:]
	}
	return out
}

// farm: a master build kept for ever with its closure (lib, its .drv and
// the .drv's source), a feature branch build past its 30 days, a pin, a
// recently fetched path, a queued build whose input's output must stay.
func farm() *fixture {
	f := &fixture{g: NewGraph(0)}
	f.path("src", 100, 10, "")
	f.path("lib.drv", 100, 1, "", "src")
	f.path("lib", 100, 100, "lib.drv")
	f.path("app.drv", 100, 1, "", "lib.drv", "src")
	f.path("app", 100, 100, "app.drv", "lib")
	f.build("b-app", "app.drv", 100, false, "branch=master", "app")
	f.build("b-lib", "lib.drv", 100, false, "branch=feature", "lib")

	f.path("feat.drv", 60, 1, "", "src")
	f.path("feat", 60, 100, "feat.drv", "old-dep")
	f.path("old-dep", 60, 50, "")
	f.build("b-feat", "feat.drv", 60, false, "branch=feature", "feat")

	f.path("pinned", 300, 7, "")
	f.path("pin-dep", 300, 3, "")
	f.path("pinned2", 300, 7, "", "pin-dep")
	f.path("fetched", 300, 5, "")

	f.path("in.drv", 200, 1, "")
	f.path("in", 200, 20, "in.drv")
	f.path("queued.drv", 200, 1, "", "in.drv")
	f.build("b-queued", "queued.drv", 200, true, "", "queued")
	return f
}

var policy = Policy{
	Rules:        []Rule{{Key: "branch", Value: "master", Keep: Forever}, {Key: "branch", Value: "*", Keep: 30 * 24 * time.Hour}},
	KeepDefault:  7 * 24 * time.Hour,
	KeepAccessed: 14 * 24 * time.Hour,
}

func TestPlanKeepsRootsAndClosures(t *testing.T) {
	f := farm()
	p := f.g.Plan(policy, Inputs{Now: now, Builds: f.builds,
		Pins:     []Pin{{Base: base("pinned"), Reason: "release 1.0"}, {Base: base("pinned2")}},
		Accesses: map[string]time.Time{hashPart(base("fetched")): days(3), hashPart(base("old-dep")): days(40)}})
	want := map[string]Kind{
		"app": KeepRule, "app.drv": Deriver, "lib": Closure, "lib.drv": Closure, "src": Closure,
		"pinned": Pinned, "pinned2": Pinned, "pin-dep": Closure, "fetched": Accessed,
		"queued.drv": ActiveInput, "in": ActiveInput, "in.drv": Deriver,
		"feat": NotKept, "feat.drv": NotKept, "old-dep": NotKept,
	}
	for n, k := range want {
		if got := p.Kind(base(n)); got != k {
			t.Errorf("%s: kept as %v, want %v", n, got, k)
		}
	}
	if got := names(p.Delete); !slices.Equal(got, []string{"feat", "feat.drv", "old-dep"}) && !slices.Equal(got, []string{"feat", "old-dep", "feat.drv"}) {
		t.Errorf("delete %v", got)
	}
	if p.DeleteBytes != 151 || p.Kept != 12 || p.KeptBytes != 100+100+1+1+10+7+7+3+5+1+20+1 {
		t.Errorf("plan: delete %d bytes, kept %d paths %d bytes", p.DeleteBytes, p.Kept, p.KeptBytes)
	}
	kept, chain, ok := p.Why(base("src"))
	if !ok || !kept || len(chain) != 3 || !strings.Contains(chain[2], "kept by rule branch=master:forever") {
		t.Errorf("why src: %v %q", kept, chain)
	}
	if kept, chain, _ := p.Why(base("pinned")); !kept || !strings.Contains(chain[0], "pinned: release 1.0") {
		t.Errorf("why pinned: %q", chain)
	}
	if kept, _, ok := p.Why(base("feat")); kept || !ok {
		t.Errorf("why feat: kept %v ok %v", kept, ok)
	}
	if _, _, ok := p.Why(base("never")); ok {
		t.Errorf("why of a path not in the cache")
	}
}

// TestDeleteOrder: every path is deleted after every path referring to
// it, and a .drv after its outputs, over a random-ish graph.
func TestDeleteOrder(t *testing.T) {
	g := NewGraph(0)
	const n = 300
	for i := range n {
		var refs []string
		for _, j := range []int{i * 7 % (i + 1), i / 2, i / 3} {
			if j < i {
				refs = append(refs, base(fmt.Sprint(j)))
			}
		}
		g.Add(Path{Base: base(fmt.Sprint(i)), References: refs, Published: days(50 + i%13), FileSize: 1})
	}
	p := g.Plan(Policy{}, Inputs{Now: now})
	if len(p.Delete) != n {
		t.Fatalf("deleted %d of %d", len(p.Delete), n)
	}
	pos := map[string]int{}
	for i, b := range p.Delete {
		pos[b] = i
	}
	for i := range n {
		for _, j := range []int{i * 7 % (i + 1), i / 2, i / 3} {
			if j < i && pos[base(fmt.Sprint(i))] > pos[base(fmt.Sprint(j))] {
				t.Fatalf("%d deleted after its reference %d", i, j)
			}
		}
	}
}

// TestMaxSize: over the limit the least recently used unkept paths go
// first, a reference only after its referrers, and no further than needed.
func TestMaxSize(t *testing.T) {
	g := NewGraph(0)
	g.Add(Path{Base: base("a"), FileSize: 10, Published: days(10)})
	g.Add(Path{Base: base("b"), FileSize: 10, Published: days(20)})
	g.Add(Path{Base: base("c"), FileSize: 10, Published: days(30), References: []string{base("d")}})
	g.Add(Path{Base: base("d"), FileSize: 10, Published: days(40)}) // oldest, but c needs it
	g.Add(Path{Base: base("e"), FileSize: 10, Published: days(50)})
	acc := map[string]time.Time{hashPart(base("e")): days(1)}
	p := g.Plan(Policy{MaxSize: 25}, Inputs{Now: now, Accesses: acc})
	if got := names(p.Delete); !slices.Equal(got, []string{"c", "d", "b"}) {
		t.Errorf("deleted %v, want c (then d it alone needed), then b", got)
	}
	if p.Kind(base("a")) != UnderSize || p.Kind(base("e")) != UnderSize {
		t.Errorf("a, e: %v %v", p.Kind(base("a")), p.Kind(base("e")))
	}
	p = NewGraphFrom(t, 3).Plan(Policy{MaxSize: 1 << 30}, Inputs{Now: now})
	if len(p.Delete) != 0 {
		t.Errorf("under the limit, deleted %v", p.Delete)
	}
}

func NewGraphFrom(t *testing.T, n int) *Graph {
	t.Helper()
	g := NewGraph(n)
	for i := range n {
		g.Add(Path{Base: base(fmt.Sprint(i)), FileSize: 1, Published: days(100)})
	}
	return g
}

// TestFenceAndProtect: a path published after the fence is kept; a path
// touched during the collection (Protect) keeps its closure, and a
// touched path already deleted is reported, not resurrected.
func TestFenceAndProtect(t *testing.T) {
	g := NewGraph(0)
	g.Add(Path{Base: base("new"), Published: now.Add(time.Second), References: []string{base("old")}})
	g.Add(Path{Base: base("old"), Published: days(100)})
	g.Add(Path{Base: base("x"), Published: days(100), References: []string{base("y")}})
	g.Add(Path{Base: base("y"), Published: days(100), References: []string{base("z")}})
	g.Add(Path{Base: base("z"), Published: days(100)})
	g.Add(Path{Base: base("w"), Published: days(100)})
	p := g.Plan(Policy{}, Inputs{Now: now, Fence: now})
	if p.Kind(base("new")) != Fenced || p.Kind(base("old")) != Closure {
		t.Errorf("fence: new %v old %v", p.Kind(base("new")), p.Kind(base("old")))
	}
	if len(p.Delete) != 4 {
		t.Fatalf("delete %v", names(p.Delete))
	}
	p.MarkDeleted(base("w"))
	kept, gone := p.Protect([]string{hashPart(base("y")), hashPart(base("w"))})
	if kept != 2 || gone != 1 || p.Kind(base("z")) != Fenced || p.Kind(base("x")) != NotKept {
		t.Errorf("protect: kept %d gone %d, z %v x %v", kept, gone, p.Kind(base("z")), p.Kind(base("x")))
	}
}

func TestCycleNeverDeleted(t *testing.T) {
	g := NewGraph(0)
	g.Add(Path{Base: base("p"), Published: days(100), References: []string{base("q")}})
	g.Add(Path{Base: base("q"), Published: days(100), References: []string{base("p")}})
	g.Add(Path{Base: base("r"), Published: days(100)})
	p := g.Plan(Policy{}, Inputs{Now: now})
	if got := names(p.Delete); !slices.Equal(got, []string{"r"}) || p.Kind(base("p")) != Cycle {
		t.Errorf("delete %v, p %v", got, p.Kind(base("p")))
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Rule{
		"branch=master:forever": {"branch", "master", Forever},
		"branch=*:30d":          {"branch", "*", 30 * 24 * time.Hour},
		"a=b:c:12h":             {"a", "b:c", 12 * time.Hour},
		"jobset=x:2w":           {"jobset", "x", 14 * 24 * time.Hour},
	} {
		got, err := ParseRule(in)
		if err != nil || got != want {
			t.Errorf("ParseRule(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "branch", "branch=master", "=x:1d", "k=:1d", "k=v:", "k=v:-1h", "k=v:99999999999d"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) accepted", bad)
		}
	}
	for in, want := range map[string]int64{"0": 0, "512": 512, "10G": 10 << 30, "1GiB": 1 << 30, "2MB": 2 << 20, "3k": 3 << 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "G", "-1", "1X", "99999999999T"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const x86 = "x86_64-linux"

var oneSlot = Agent{ID: "agent-1", Systems: []string{x86}, MaxParallel: 1}

func drv(name string) string { return "/nix/store/" + strings.Repeat("a", 32) + "-" + name + ".drv" }

// b makes a build whose derivation is named like its id, depending on the
// derivations of the listed ids.
func b(id string, prio int, inputs ...string) Build {
	in := make([]string, len(inputs))
	for i, n := range inputs {
		in[i] = drv(n)
	}
	return Build{ID: id, Derivation: drv(id), System: x86, InputDrvs: in, Priority: prio}
}

func newSched(t *testing.T, st Strategy, builds ...Build) (*Scheduler, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	s := New(st, clk)
	for _, bd := range builds {
		if err := s.Add(bd); err != nil {
			t.Fatal(err)
		}
	}
	return s, clk
}

// drain runs everything on one agent, each build succeeding, and returns the
// order in which they were handed out.
func drain(t *testing.T, s *Scheduler, a Agent) []string {
	t.Helper()
	var order []string
	for range 10000 {
		got, ok := s.Allocate(a)
		if !ok {
			return order
		}
		order = append(order, got.ID)
		s.Succeeded(got.ID)
	}
	t.Fatal("drain did not finish")
	return nil
}

func wantOrder(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestPriorityOrderOnOneSlotAgent(t *testing.T) {
	s, clk := newSched(t, DerivationOrdered)
	for i, p := range []int{0, 5, 1, 5, -3} {
		bd := b(fmt.Sprintf("p%d", i), p)
		bd.CreatedAt = clk.Now().Add(time.Duration(i) * time.Second)
		if err := s.Add(bd); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := s.Allocate(oneSlot)
	if _, ok := s.Allocate(oneSlot); ok {
		t.Fatal("one-slot agent got a second build")
	}
	order := append([]string{first.ID}, func() []string { s.Succeeded(first.ID); return drain(t, s, oneSlot) }()...)
	// Equal priority: older first.
	wantOrder(t, order, "p1", "p3", "p2", "p0", "p4")
}

func TestChainAndDiamond(t *testing.T) {
	for _, st := range []Strategy{DerivationOrdered, Permissive} {
		t.Run(st.String(), func(t *testing.T) {
			// Added top first, so the scheduler must not rely on insertion order.
			s, _ := newSched(t, st,
				b("c3", 9, "c2"), b("c2", 0, "c1"), b("c1", 0),
			)
			wantOrder(t, drain(t, s, oneSlot), "c1", "c2", "c3")

			s, _ = newSched(t, st,
				b("top", 0, "left", "right"), b("left", 0, "base"), b("right", 1, "base"), b("base", 0),
			)
			if got, _ := s.StateOf("top"); got != Waiting {
				t.Fatalf("top is %v before its inputs", got)
			}
			wantOrder(t, drain(t, s, oneSlot), "base", "right", "left", "top")
		})
	}
}

func TestSucceededReportsNowRunnable(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("base", 0), b("l", 0, "base"), b("r", 0, "base"), b("top", 0, "l", "r"))
	a, _ := s.Allocate(oneSlot)
	if got := s.Succeeded(a.ID); !slices.Equal(sorted(got), []string{"l", "r"}) {
		t.Fatalf("after base: runnable %v", got)
	}
	s.Allocate(Agent{ID: "x", Systems: []string{x86}})
	s.Allocate(Agent{ID: "y", Systems: []string{x86}})
	if got := s.Succeeded("l"); len(got) != 0 {
		t.Fatalf("top runnable with r still running: %v", got)
	}
	if got := s.Succeeded("r"); !slices.Equal(got, []string{"top"}) {
		t.Fatalf("after r: runnable %v", got)
	}
}

// A package-set shape: many leaves on a few core builds; the core goes first
// because everything depends on it, then the most depended-on libraries.
func TestFanInPackageSet(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered)
	add := func(bd Build) {
		if err := s.Add(bd); err != nil {
			t.Fatal(err)
		}
	}
	add(b("stdenv", 0))
	add(b("libA", 0, "stdenv"))
	add(b("libB", 0, "stdenv"))
	for i := range 20 {
		ins := []string{"stdenv", "libA"}
		if i%4 == 0 {
			ins = append(ins, "libB")
		}
		add(b(fmt.Sprintf("app%02d", i), 0, ins...))
	}
	if d, c, _ := s.Order("stdenv"); c != 22 || d != 0 {
		t.Fatalf("stdenv dependents %d, derived %d", c, d)
	}
	order := drain(t, s, oneSlot)
	wantOrder(t, order[:3], "stdenv", "libA", "libB")
	if len(order) != 23 {
		t.Fatalf("ran %d builds", len(order))
	}
}

func TestSetPriorityReordersInputs(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered,
		b("x", 0), b("y", 0), b("xtop", 0, "x"), b("ytop", 0, "y"),
	)
	// Without priorities x and y tie and x wins on ID.
	s.SetPriority("ytop", 7)
	if d, _, _ := s.Order("y"); d != 7 {
		t.Fatalf("y derived %d after raising ytop", d)
	}
	got, _ := s.Allocate(oneSlot)
	if got.ID != "y" {
		t.Fatalf("allocated %s, want y (ytop waits on it with priority 7)", got.ID)
	}
	s.Requeue("y", "")
	s.SetPriority("ytop", 0)
	if d, _, _ := s.Order("y"); d != 0 {
		t.Fatalf("y derived %d after lowering ytop", d)
	}
	got, _ = s.Allocate(oneSlot)
	if got.ID != "x" {
		t.Fatalf("allocated %s after lowering, want x", got.ID)
	}
}

func TestDependentsCountOrdering(t *testing.T) {
	s, clk := newSched(t, DerivationOrdered)
	// "few" is older, but "many" has more builds waiting on it (indirectly).
	add := func(bd Build) {
		bd.CreatedAt = clk.Now()
		clk.Advance(time.Second)
		if err := s.Add(bd); err != nil {
			t.Fatal(err)
		}
	}
	add(b("few", 0))
	add(b("many", 0))
	add(b("f1", 0, "few"))
	add(b("m1", 0, "many"))
	add(b("m2", 0, "m1"))
	add(b("m3", 0, "m2", "m1"))
	if _, c, _ := s.Order("many"); c != 3 {
		t.Fatalf("many has %d dependents, want 3", c)
	}
	got, _ := s.Allocate(oneSlot)
	if got.ID != "many" {
		t.Fatalf("allocated %s, want many", got.ID)
	}
}

func TestDeferral(t *testing.T) {
	s, clk := newSched(t, DerivationOrdered)
	late := b("late", 10)
	late.DeferUntil = t0.Add(time.Hour)
	if err := s.Add(late); err != nil {
		t.Fatal(err)
	}
	s.Add(b("now", 0))
	if w, ok := s.NextWakeup(); !ok || !w.Equal(t0.Add(time.Hour)) {
		t.Fatalf("next wakeup %v %v", w, ok)
	}
	if st, _ := s.StateOf("late"); st != Deferred {
		t.Fatalf("late is %v", st)
	}
	got, _ := s.Allocate(oneSlot)
	if got.ID != "now" {
		t.Fatalf("allocated %s before the deferral passed", got.ID)
	}
	if _, ok := s.Allocate(Agent{ID: "other", Systems: []string{x86}}); ok {
		t.Fatal("deferred build allocated early")
	}
	clk.Advance(59 * time.Minute)
	if got := s.Wake(); len(got) != 0 {
		t.Fatalf("woke %v early", got)
	}
	clk.Advance(time.Minute)
	if got := s.Wake(); !slices.Equal(got, []string{"late"}) {
		t.Fatalf("woke %v", got)
	}
	if _, ok := s.NextWakeup(); ok {
		t.Fatal("wakeup pending after release")
	}
	if got, ok := s.Allocate(Agent{ID: "other", Systems: []string{x86}}); !ok || got.ID != "late" {
		t.Fatalf("after deferral: %v %v", got.ID, ok)
	}
}

func TestMatching(t *testing.T) {
	arm := b("arm", 0)
	arm.System = "aarch64-linux"
	kvm := b("kvm", 0)
	kvm.Features = []string{"kvm", "big-parallel"}
	tagged := b("tagged", 0)
	tagged.Tags = map[string]string{"team": "web", "x": "y"}
	tests := []struct {
		agent Agent
		want  []string
	}{
		{Agent{ID: "plain", Systems: []string{x86}}, []string{"tagged"}},
		{Agent{ID: "kvm-only", Systems: []string{x86}, Features: []string{"kvm"}}, []string{"tagged"}},
		{Agent{ID: "arm", Systems: []string{"aarch64-linux"}, Features: []string{"kvm", "big-parallel"}}, []string{"arm"}},
		{Agent{ID: "web", Systems: []string{x86}, Features: []string{"big-parallel", "kvm", "nixos-test"},
			RequireTags: map[string]string{"team": "web"}}, []string{"tagged"}},
		{Agent{ID: "dbteam", Systems: []string{x86}, Features: []string{"big-parallel", "kvm"},
			RequireTags: map[string]string{"team": "db"}}, nil},
		{Agent{ID: "full", Systems: []string{x86, "aarch64-linux"}, Features: []string{"big-parallel", "kvm"}},
			[]string{"arm", "kvm", "tagged"}},
	}
	for _, tc := range tests {
		s, _ := newSched(t, DerivationOrdered, arm, kvm, tagged)
		var got []string
		for range 5 {
			bd, ok := s.Allocate(tc.agent)
			if !ok {
				break
			}
			got = append(got, bd.ID)
		}
		if !slices.Equal(sorted(got), tc.want) {
			t.Errorf("%s got %v, want %v", tc.agent.ID, sorted(got), tc.want)
		}
	}
	s, _ := newSched(t, DerivationOrdered, arm, kvm, tagged)
	// The allocated build carries what was submitted.
	bd, _ := s.Allocate(Agent{ID: "full", Systems: []string{x86}, Features: []string{"big-parallel", "kvm"}})
	if bd.ID != "kvm" || !slices.Equal(bd.Features, []string{"big-parallel", "kvm"}) || bd.Derivation != drv("kvm") {
		t.Fatalf("allocated %+v", bd)
	}
}

func TestMaxParallel(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("a", 0), b("b", 0), b("c", 0))
	two := Agent{ID: "two", Systems: []string{x86}, MaxParallel: 2}
	for i := range 2 {
		if _, ok := s.Allocate(two); !ok {
			t.Fatalf("slot %d refused", i)
		}
	}
	if _, ok := s.Allocate(two); ok {
		t.Fatal("third build on a two-slot agent")
	}
	if s.Held("two") != 2 {
		t.Fatalf("held %d", s.Held("two"))
	}
	s.Failed("a")
	if got, ok := s.Allocate(two); !ok || got.ID != "c" {
		t.Fatalf("after a freed slot: %v %v", got.ID, ok)
	}
	s.Cancel("b")
	s.Requeue("c", "")
	if s.Held("two") != 0 {
		t.Fatalf("held %d after cancel and requeue", s.Held("two"))
	}
}

func TestFailedDependencyPropagation(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered,
		b("lib", 0), b("other", 0),
		b("app", 0, "lib", "other"), b("bundle", 0, "app"), b("unrelated", 0, "other"),
	)
	got, _ := s.Allocate(oneSlot)
	if got.ID != "other" && got.ID != "lib" {
		t.Fatalf("allocated %s", got.ID)
	}
	if got.ID == "other" {
		s.Succeeded("other")
		got, _ = s.Allocate(oneSlot)
	}
	if got.ID != "lib" {
		t.Fatalf("allocated %s, want lib", got.ID)
	}
	deps := s.Failed("lib")
	sortDeps(deps)
	want := []Dep{
		{ID: "app", Derivation: drv("app"), FailedInput: drv("lib"), FailedBuild: "lib"},
		{ID: "bundle", Derivation: drv("bundle"), FailedInput: drv("lib"), FailedBuild: "lib"},
	}
	if !slices.Equal(deps, want) {
		t.Fatalf("failed dependency %+v\nwant %+v", deps, want)
	}
	for _, id := range []string{"lib", "app", "bundle"} {
		if _, ok := s.StateOf(id); ok {
			t.Errorf("%s still queued", id)
		}
	}
	if st := s.Stats(); st.Failed != 1 || st.FailedDependency != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := s.StateOf("unrelated"); !ok {
		t.Fatal("unrelated build was failed")
	}
}

func TestFailedWithRebuildPendingDoesNotPropagate(t *testing.T) {
	lib2 := b("lib", 0)
	lib2.ID = "lib-retry"
	s, _ := newSched(t, DerivationOrdered, b("lib", 0), lib2, b("app", 0, "lib"))
	if deps := s.Failed("lib"); len(deps) != 0 {
		t.Fatalf("failed %v though another build of lib is queued", deps)
	}
	if got := s.Succeeded("lib-retry"); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("runnable %v", got)
	}
}

func TestRequeueAvoidsAgent(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("hi", 5), b("lo", 0))
	a1 := Agent{ID: "a1", Systems: []string{x86}}
	got, _ := s.Allocate(a1)
	if got.ID != "hi" {
		t.Fatalf("allocated %s", got.ID)
	}
	s.Requeue("hi", "a1")
	if st, _ := s.StateOf("hi"); st != Ready {
		t.Fatalf("requeued build is %v", st)
	}
	if got, _ := s.Allocate(a1); got.ID != "lo" {
		t.Fatalf("a1 got %s, want lo (it should avoid hi)", got.ID)
	}
	// Nothing else left: a1 may take it after all.
	if got, ok := s.Allocate(a1); !ok || got.ID != "hi" {
		t.Fatalf("a1 got %v %v, want hi as a last resort", got.ID, ok)
	}
	s.Requeue("hi", "a1")
	if got, _ := s.Allocate(Agent{ID: "a2", Systems: []string{x86}}); got.ID != "hi" {
		t.Fatalf("a2 got %s, want hi", got.ID)
	}
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		st       Strategy
		runnable []string
	}{
		{DerivationOrdered, nil},      // app keeps waiting for lib's outputs
		{Permissive, []string{"app"}}, // no build of lib here any more: assumed substitutable
	} {
		t.Run(tc.st.String(), func(t *testing.T) {
			s, _ := newSched(t, tc.st, b("lib", 0), b("app", 0, "lib"), b("solo", 0))
			s.Allocate(oneSlot) // lib (one dependent)
			if got := s.Cancel("lib"); !slices.Equal(got, tc.runnable) {
				t.Fatalf("cancel lib: runnable %v, want %v", got, tc.runnable)
			}
			if s.Held(oneSlot.ID) != 0 {
				t.Fatal("slot not released")
			}
			s.Cancel("solo")
			if _, ok := s.StateOf("solo"); ok {
				t.Fatal("canceled build still known")
			}
			if st := s.Stats(); st.Canceled != 2 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSharedDerivation(t *testing.T) {
	first := b("lib", 0)
	again := b("lib", 0)
	again.ID = "lib-again"
	s, _ := newSched(t, DerivationOrdered, first, again, b("app", 0, "lib"))
	if _, c, _ := s.Order("lib-again"); c != 1 {
		t.Fatalf("rebuild has %d dependents", c)
	}
	s.Allocate(oneSlot)
	if got := s.Succeeded("lib"); !slices.Equal(got, []string{"app"}) {
		t.Fatalf("runnable %v", got)
	}
	// The rebuild is still queued (a real rebuild), but nothing waits on it.
	if _, c, ok := s.Order("lib-again"); !ok || c != 0 {
		t.Fatalf("rebuild after success: count %d known %v", c, ok)
	}
}

func TestStrategies(t *testing.T) {
	// "app" needs glibc, which has no build here.
	for _, tc := range []struct {
		st   Strategy
		want State
	}{{DerivationOrdered, Waiting}, {Permissive, Ready}} {
		t.Run(tc.st.String(), func(t *testing.T) {
			s, _ := newSched(t, tc.st, b("app", 0, "glibc"))
			if got, _ := s.StateOf("app"); got != tc.want {
				t.Fatalf("app is %v, want %v", got, tc.want)
			}
			// A build of glibc added later blocks app in both strategies.
			s.Add(b("glibc", 0))
			if got, _ := s.StateOf("app"); got != Waiting {
				t.Fatalf("with a glibc build queued, app is %v", got)
			}
			if got := s.MarkAvailable(drv("glibc")); !slices.Equal(got, []string{"app"}) {
				t.Fatalf("mark available: runnable %v", got)
			}
		})
	}
	s, _ := newSched(t, DerivationOrdered, b("app", 0, "glibc"))
	s.MarkAvailable(drv("glibc"))
	if got, _ := s.StateOf("app"); got != Ready {
		t.Fatalf("after cache hit app is %v", got)
	}
	if _, err := ParseStrategy("permissive"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStrategy("eager"); err == nil {
		t.Fatal("bad strategy accepted")
	}
}

func TestAddErrors(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("a", 0))
	for _, bd := range []Build{
		b("a", 0),
		{Derivation: drv("x"), System: x86},
		{ID: "n", System: x86},
		{ID: "n", Derivation: drv("n")},
		b("self", 0, "self"),
	} {
		if err := s.Add(bd); err == nil {
			t.Errorf("Add(%+v) accepted", bd)
		}
	}
}

func TestStats(t *testing.T) {
	arm := b("arm", 0)
	arm.System = "aarch64-linux"
	late := b("late", 0)
	late.DeferUntil = t0.Add(time.Minute)
	s, _ := newSched(t, DerivationOrdered, b("lib", 0), b("app", 0, "lib"), arm, late)
	s.Allocate(oneSlot)
	st := s.Stats()
	if st.Ready != 1 || st.Allocated != 1 || st.Waiting != 1 || st.Deferred != 1 ||
		st.ReadyBySystem["aarch64-linux"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A failed core build in a large package set: every build fails at once, in
// well under a second (the recount path, not a walk below each dependent).
func TestFailedCoreOfLargeGraph(t *testing.T) {
	const n = 30000
	s, _ := newSched(t, DerivationOrdered, b("p0", 0))
	for i := 1; i < n; i++ {
		ins := []string{"p0", fmt.Sprintf("p%d", i/2), fmt.Sprintf("p%d", i*7/10)}
		if err := s.Add(b(fmt.Sprintf("p%d", i), i%3, ins...)); err != nil {
			t.Fatal(err)
		}
	}
	if _, c, _ := s.Order("p0"); c != n-1 {
		t.Fatalf("core has %d dependents", c)
	}
	start := time.Now()
	deps := s.Failed("p0")
	if len(deps) != n-1 {
		t.Fatalf("%d failed-dependency, want %d", len(deps), n-1)
	}
	d := time.Since(start)
	t.Logf("Failed(core) with %d dependents: %v", n-1, d)
	if d > 2*time.Second {
		t.Errorf("failing the core took %v", d)
	}
	if st := s.Stats(); st.Waiting+st.Ready+st.Allocated+st.Deferred != 0 {
		t.Fatalf("left %+v", st)
	}
}

func TestAddRejectsCycle(t *testing.T) {
	// y's derivation needs x's and x's needs y's: impossible for real
	// derivations, so refuse rather than let both wait forever.
	s, _ := newSched(t, DerivationOrdered, b("y", 0, "x"))
	if err := s.Add(b("x", 0, "y")); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle accepted: %v", err)
	}
	if _, ok := s.StateOf("x"); ok {
		t.Fatal("rejected build was queued")
	}
	if st := s.Stats(); st.Waiting != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAddBatchAnyOrder(t *testing.T) {
	var bs []Build
	bs = append(bs, b("core", 0))
	for i := range 200 {
		ins := []string{"core"}
		if i > 0 {
			ins = append(ins, fmt.Sprintf("n%d", i/2), fmt.Sprintf("n%d", i*2/3))
		}
		bs = append(bs, b(fmt.Sprintf("n%d", i), i%4, ins...))
	}
	rebuild := b("n7", 0, "core")
	rebuild.ID = "n7-again"
	bs = append(bs, rebuild)
	ref, _ := newSched(t, DerivationOrdered, bs...)
	for _, order := range []string{"reversed", "rotated"} {
		in := slices.Clone(bs)
		if order == "reversed" {
			slices.Reverse(in)
		} else {
			in = append(in[100:], in[:100]...)
		}
		s, _ := newSched(t, DerivationOrdered)
		if err := s.AddBatch(in); err != nil {
			t.Fatal(err)
		}
		for _, bd := range bs {
			wd, wc, _ := ref.Order(bd.ID)
			gd, gc, ok := s.Order(bd.ID)
			if !ok || gd != wd || gc != wc {
				t.Fatalf("%s: %s derived %d count %d, want %d %d", order, bd.ID, gd, gc, wd, wc)
			}
		}
	}
	s, _ := newSched(t, DerivationOrdered)
	err := s.AddBatch([]Build{b("x", 0, "y"), b("y", 0, "x"), b("z", 0)})
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cyclic batch: %v", err)
	}
	if _, ok := s.StateOf("z"); !ok {
		t.Fatal("acyclic part of the batch not added")
	}
}

// The sides of a check: the same derivation, each excluded from the
// agents that hold or built another side. An excluded agent takes
// anything else, however deep in the heap, and never the excluded build.
func TestExcludeAgents(t *testing.T) {
	a1 := Agent{ID: "a1", Systems: []string{x86}}
	a2 := Agent{ID: "a2", Systems: []string{x86}}
	s, _ := newSched(t, DerivationOrdered)
	// 300 high-priority builds, all excluding a1, above one a1 may take.
	for i := 0; i < 300; i++ {
		bd := b(fmt.Sprintf("x%03d", i), 10)
		bd.ExcludeAgents = []string{"a1"}
		if err := s.Add(bd); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add(b("free", 0)); err != nil {
		t.Fatal(err)
	}
	got, ok := s.Allocate(a1)
	if !ok || got.ID != "free" {
		t.Fatalf("a1 got %q, %v; want the one build it is not excluded from", got.ID, ok)
	}
	if _, ok := s.Allocate(a1); ok {
		t.Fatal("a1 got a build it is excluded from")
	}
	if n := s.Unmatched([]Agent{a1}); n != 300 {
		t.Fatalf("unmatched by a1 alone: %d, want 300", n)
	}
	if n := s.Unmatched([]Agent{a1, a2}); n != 0 {
		t.Fatalf("unmatched by a1 and a2: %d, want 0", n)
	}
	got, ok = s.Allocate(a2)
	if !ok || got.ID != "x000" || !slices.Equal(got.ExcludeAgents, []string{"a1"}) {
		t.Fatalf("a2 got %+v, %v", got, ok)
	}
	// Lifting the exclusion lets a1 take the next one.
	s.SetExcluded("x001", nil)
	if got, ok := s.Allocate(a1); !ok || got.ID != "x001" {
		t.Fatalf("a1 after SetExcluded(nil) got %q, %v", got.ID, ok)
	}
	// An exclusion beats an avoidance: a build a2 should avoid still goes
	// to a2 if nothing else is there, an excluded one never.
	s2, _ := newSched(t, DerivationOrdered, b("c1", 0))
	if _, ok := s2.Allocate(a2); !ok {
		t.Fatal("a2 got nothing")
	}
	s2.Requeue("c1", "a2")
	if got, ok := s2.Allocate(a2); !ok || got.ID != "c1" {
		t.Fatalf("avoided build not given to the only agent: %q %v", got.ID, ok)
	}
	s2.Requeue("c1", "a2")
	s2.SetExcluded("c1", []string{"a2"})
	if got, ok := s2.Allocate(a2); ok {
		t.Fatalf("excluded agent got %q", got.ID)
	}
}

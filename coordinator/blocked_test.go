package coordinator

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// Cancelling an input leaves nothing scheduled forever: its dependents
// become failed-dependency naming it, transitively.
func TestCancelInputFailsDependents(t *testing.T) {
	h := newHarness(t)
	base := h.drv("base", "x86_64-linux")
	mid := h.drv("mid", "x86_64-linux", withInput(base))
	top := h.drv("top", "x86_64-linux", withInput(mid))
	ids := h.submit(0, base, mid, top)
	if err := h.c.Cancel(context.Background(), ids[0]); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[1:] {
		got, err := h.c.Wait(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want := "dependency failed: input " + base + " (build " + ids[0] + ") was canceled"
		if got.State != db.StateFailedDependency || got.FailureReason != want {
			t.Fatalf("dependent %s: %s %q, want failed-dependency %q", id, got.State, got.FailureReason, want)
		}
	}
	if st := h.c.Status(); st.Blocked != 0 || st.Stuck != 0 {
		t.Fatalf("queue not empty: %+v", st)
	}
}

func TestCancelWithDependents(t *testing.T) {
	h := newHarness(t)
	base := h.drv("base", "x86_64-linux")
	mid := h.drv("mid", "x86_64-linux", withInput(base))
	top := h.drv("top", "x86_64-linux", withInput(mid))
	other := h.drv("other", "x86_64-linux")
	ids := h.submit(0, base, mid, top, other)
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 1})
	held := a.next() // base or other, both ready
	deps, err := h.c.CancelWithDependents(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(deps)
	want := []string{ids[1], ids[2]}
	slices.Sort(want)
	if !slices.Equal(deps, want) {
		t.Fatalf("canceled dependents %v, want %v", deps, want)
	}
	for _, id := range ids[:3] {
		if st := h.build(id).State; st != db.StateCanceled {
			t.Fatalf("build %s is %s, want canceled", id, st)
		}
	}
	if held.Build == ids[0] {
		if m, ok := a.nextMsg().(*protocol.Cancel); !ok || m.Build != ids[0] {
			t.Fatalf("agent got %T %+v, want cancel of base", m, m)
		}
		if b := a.next(); b.Build != ids[3] {
			t.Fatalf("freed slot got %s, want other", b.Build)
		}
	}
	if h.build(ids[3]).State.Terminal() {
		t.Fatal("unrelated build ended")
	}
}

func TestCancelAndPriorityMessages(t *testing.T) {
	h := newHarness(t)
	err := h.c.Cancel(context.Background(), "nonsense")
	if !errors.Is(err, db.ErrNotFound) || err.Error() != `no build "nonsense" ('builds' lists the build ids)` {
		t.Fatalf("cancel unknown: %v", err)
	}
	id := h.submit(0, h.drv("c", "x86_64-linux"))[0]
	if err := h.c.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	err = h.c.SetPriority(context.Background(), id, 5)
	want := "build " + id + " has already ended (canceled); only queued or running builds have a priority to change"
	if !errors.Is(err, db.ErrConflict) || err.Error() != want {
		t.Fatalf("priority of a canceled build: %v\nwant %s", err, want)
	}
	err = h.c.Cancel(context.Background(), id)
	if !errors.Is(err, db.ErrConflict) || strings.Count(err.Error(), id) != 1 || !strings.Contains(err.Error(), "nothing to cancel") {
		t.Fatalf("cancel twice: %v", err)
	}
}

// A build whose input has no build here and no cached output waits for
// ever under derivation-ordered allocation: Blockage and Status say so.
func TestBlockageNamesUnbuildableInputs(t *testing.T) {
	h := newHarness(t)
	glibc := h.drv("glibc", "x86_64-linux")
	gcc := h.drv("gcc", "x86_64-linux", withInput(glibc))
	hello := h.drv("hello", "x86_64-linux", withInput(gcc))
	ids := h.submit(0, hello, gcc)
	bl, ok := h.c.Blockage(ids[0])
	if !ok || !bl.Stuck() || !slices.Equal(bl.Unbuildable, []string{glibc}) {
		t.Fatalf("hello: %+v, want stuck on glibc", bl)
	}
	if len(bl.Inputs) != 1 || bl.Inputs[0].Derivation != gcc || !slices.Equal(bl.Inputs[0].Builds, []string{ids[1]}) || !bl.Inputs[0].Unbuildable {
		t.Fatalf("hello's blocking inputs %+v, want gcc (build %s), unbuildable", bl.Inputs, ids[1])
	}
	if na := bl.NoAgent; na == nil || na.Kind != NoAgentSeen || na.Message != "no agent has connected since the coordinator started" {
		t.Fatalf("no agent: %+v", na)
	}
	if st := h.c.Status(); st.Stuck != 2 {
		t.Fatalf("status stuck %d, want 2", st.Stuck)
	}
	h.submit(0, glibc)
	if bl, _ := h.c.Blockage(ids[0]); bl.Stuck() {
		t.Fatalf("still stuck after glibc was submitted: %+v", bl)
	}
	if st := h.c.Status(); st.Stuck != 0 {
		t.Fatalf("status stuck %d after glibc was submitted", st.Stuck)
	}
}

func TestBlockageNoAgentCanTake(t *testing.T) {
	h := newHarness(t)
	arm := h.submit(0, h.drv("arm", "aarch64-linux"))[0]
	kvm := h.submit(0, h.drv("kvm", "x86_64-linux", withFeatures("kvm")))[0]
	h.agent("a", protocol.Hello{Systems: []string{"x86_64-linux"}})
	for _, tc := range []struct {
		id   string
		want NoAgent
	}{
		{arm, NoAgent{Kind: NoAgentForSystem, System: "aarch64-linux", Systems: []string{"x86_64-linux"},
			Message: "no agent builds system aarch64-linux (the agents build x86_64-linux)"}},
		{kvm, NoAgent{Kind: NoAgentWithFeatures, System: "x86_64-linux", Features: []string{"kvm"},
			Message: "no agent for x86_64-linux has every required feature (kvm)"}},
	} {
		bl, ok := h.c.Blockage(tc.id)
		if !ok || bl.NoAgent == nil || !reflect.DeepEqual(*bl.NoAgent, tc.want) {
			t.Errorf("no agent: %+v, want %+v", bl.NoAgent, tc.want)
		}
	}
	if st := h.c.Status(); st.Unmatched != 2 {
		t.Fatalf("status unmatched %d, want 2", st.Unmatched)
	}
}

func TestBlockageAgentsRequireTags(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("plain", "x86_64-linux"))[0]
	h.agent("web-only", protocol.Hello{RequireTags: []string{"team=web"}})
	bl, _ := h.c.Blockage(id)
	want := "every agent for x86_64-linux takes only builds with tags this one lacks (web-only requires team=web); resubmit with --tag K=V"
	if na := bl.NoAgent; na == nil || na.Kind != NoAgentForTags || na.Message != want ||
		len(na.Agents) != 1 || na.Agents[0].Name != "web-only" || !slices.Equal(na.Agents[0].RequireTags, []string{"team=web"}) {
		t.Fatalf("no agent: %+v\nwant %q", na, want)
	}
}

// TestNoAgentFullAbsentDeactivated: a runnable build whose only matching
// agent is busy, then gone, then deactivated says so, as data; a free
// agent for it means no reason at all.
func TestNoAgentFullAbsentDeactivated(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.agent("busy", protocol.Hello{Systems: []string{"aarch64-linux"}})
	first := h.submit(0, h.drv("first", "aarch64-linux"))[0]
	a.next()
	second := h.submit(0, h.drv("second", "aarch64-linux"))[0]
	kind := func(id string) (NoAgentKind, *NoAgent) {
		t.Helper()
		bl, ok := h.c.Blockage(id)
		if !ok {
			t.Fatalf("build %s is not queued", id)
		}
		if bl.NoAgent == nil {
			return "", nil
		}
		return bl.NoAgent.Kind, bl.NoAgent
	}
	if k, na := kind(second); k != NoAgentFree || len(na.Agents) != 1 || na.Agents[0].ID != a.id || na.Agents[0].Running != 1 ||
		na.Agents[0].MaxParallel != 1 || !na.Agents[0].Connected || !k.Passing() {
		t.Fatalf("behind a busy agent: %+v", na)
	}
	if _, ok := h.c.Blockage(first); ok {
		t.Fatalf("the running build has a blockage")
	}
	// A build still waiting for an input is not held back by full agents.
	dep := h.submit(0, h.drv("dep", "aarch64-linux", withInput(h.build(second).Derivation)))[0]
	if k, na := kind(dep); k != "" {
		t.Fatalf("waiting build: %+v", na)
	}

	a.s.Close()
	if k, na := kind(second); k != NoAgentConnected || len(na.Agents) != 1 || na.Agents[0].Connected || na.Agents[0].Name != "busy" || k.Passing() {
		t.Fatalf("with the agent gone: %+v", na)
	}
	if err := h.c.SetAgentActive(ctx, a.id, false); err != nil {
		t.Fatal(err)
	}
	if k, na := kind(second); k != NoAgentActive || na.Agents[0].Active {
		t.Fatalf("with the agent deactivated: %+v", na)
	}
	if err := h.c.SetAgentActive(ctx, a.id, true); err != nil {
		t.Fatal(err)
	}
	if k, na := kind(second); k != NoAgentConnected {
		t.Fatalf("activated again, still away: %+v", na)
	}
	// Archived: retired for good, so no agent it could wait for is left.
	if err := h.c.ArchiveAgent(ctx, a.id); err != nil {
		t.Fatal(err)
	}
	if k, na := kind(second); k != NoAgentSeen {
		t.Fatalf("with the agent archived: %+v", na)
	}
	// Another agent for the system, free: nothing holds the build back
	// but dispatch, which gives it the build at once.
	b := h.agent("free", protocol.Hello{Systems: []string{"aarch64-linux"}})
	if got := b.next(); got.Build != second {
		t.Fatalf("free agent got %s, want %s", got.Build, second)
	}
	if k, na := kind(dep); k != "" {
		t.Fatalf("dep: %+v", na)
	}
}

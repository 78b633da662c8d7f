package coordinator

import (
	"context"
	"errors"
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
	if bl.NoAgent != "no agent is connected" {
		t.Fatalf("no agent: %q", bl.NoAgent)
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
	for _, tc := range []struct{ id, want string }{
		{arm, "no connected agent builds system aarch64-linux (the connected agents build x86_64-linux)"},
		{kvm, "no connected agent for x86_64-linux has every required feature (kvm)"},
	} {
		bl, ok := h.c.Blockage(tc.id)
		if !ok || bl.NoAgent != tc.want {
			t.Errorf("no agent: %q, want %q", bl.NoAgent, tc.want)
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
	want := "every connected agent for x86_64-linux takes only builds with tags this one lacks (web-only requires team=web); resubmit with --tag K=V"
	if bl.NoAgent != want {
		t.Fatalf("no agent: %q\nwant %q", bl.NoAgent, want)
	}
}

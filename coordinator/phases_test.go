package coordinator

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

func phaseNames(ps []db.PhaseTime) []db.Phase {
	var out []db.Phase
	for _, p := range ps {
		out = append(out, p.Phase)
	}
	return out
}

func TestAttemptPhases(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := h.submit(0, h.drv("phased", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	other := h.agent("other", protocol.Hello{})
	b := a.next()
	t0 := h.clk.Now()
	step := func() { h.clk.Advance(time.Second) }

	phase := func(fa *fakeAgent, p string) error {
		return fa.s.Phase(ctx, &protocol.Phase{Build: b.Build, Phase: p})
	}
	if err := phase(a, protocol.PhasePreparing); err != nil {
		t.Fatal(err)
	}
	if err := phase(other, protocol.PhasePreparing); !errors.Is(err, ErrNotYourBuild) {
		t.Fatalf("another agent's phase report: %v, want ErrNotYourBuild", err)
	}
	for _, p := range []string{"verifying", "publishing", "building", "compiling", ""} {
		if err := phase(a, p); err == nil {
			t.Errorf("agent reported phase %q: accepted", p)
		}
	}
	if got := h.c.RunningPhases(); got[db.PhasePreparing] != 1 {
		t.Errorf("running phases %v, want one preparing", got)
	}
	step()
	if err := a.s.Started(ctx, &protocol.Started{Build: b.Build}); err != nil {
		t.Fatal(err)
	}
	if err := phase(a, protocol.PhasePreparing); !errors.Is(err, errPhaseBackward) {
		t.Fatalf("preparing after building: %v, want refused", err)
	}
	step()
	if err := phase(a, protocol.PhaseUploading); err != nil {
		t.Fatal(err)
	}
	if err := phase(a, protocol.PhaseUploading); err != nil {
		t.Fatalf("repeated uploading (a resend): %v", err)
	}
	step()
	out := a.upload(b, "phases")
	if err := a.s.Succeeded(ctx, &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}}); err != nil {
		t.Fatal(err)
	}
	want := []db.Phase{db.PhasePreparing, db.PhaseBuilding, db.PhaseUploading, db.PhaseVerifying, db.PhasePublishing}
	got, err := h.c.Build(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got db.Build) {
		t.Helper()
		if len(got.Attempts) != 1 {
			t.Fatalf("%s: attempts %+v", what, got.Attempts)
		}
		at := got.Attempts[0]
		if names := phaseNames(at.Phases); !slices.Equal(names, want) {
			t.Fatalf("%s: phases %v, want %v", what, names, want)
		}
		sp := at.Spans()
		for i, w := range []time.Time{t0, t0.Add(time.Second), t0.Add(2 * time.Second), t0.Add(3 * time.Second), t0.Add(3 * time.Second)} {
			if !sp[i].Started.Equal(w) {
				t.Errorf("%s: %s started %v, want %v", what, sp[i].Phase, sp[i].Started, w)
			}
			if sp[i].Ended.IsZero() {
				t.Errorf("%s: %s has no end", what, sp[i].Phase)
			}
		}
		if !sp[4].Ended.Equal(at.EndedAt) {
			t.Errorf("%s: publishing ended %v, attempt %v", what, sp[4].Ended, at.EndedAt)
		}
	}
	check("coordinator", got)
	if got := h.c.RunningPhases(); len(got) != 0 {
		t.Errorf("running phases after the end: %v", got)
	}
	// Every mark reaches the store by Close at the latest.
	h.c.Close()
	check("store", h.build(id))
	h.start()
}

// TestPhasesAfterRestart: a build an agent held across a coordinator
// restart keeps its attempt and phase, so reports go on from there.
func TestPhasesAfterRestart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.submit(0, h.drv("long", "x86_64-linux"))
	a := h.agent("a", protocol.Hello{})
	b := a.next()
	if err := a.s.Phase(ctx, &protocol.Phase{Build: b.Build, Phase: protocol.PhasePreparing}); err != nil {
		t.Fatal(err)
	}
	if err := a.s.Started(ctx, &protocol.Started{Build: b.Build}); err != nil {
		t.Fatal(err)
	}
	h.c.Close()
	h.start()
	if got := h.c.RunningPhases(); got[db.PhaseBuilding] != 1 {
		t.Fatalf("restored running phases %v, want one building", got)
	}
	a2, w := h.connect(a.id, protocol.Hello{Running: []string{b.Build}})
	if len(w.Continue) != 1 {
		t.Fatalf("welcome %+v", w)
	}
	if err := a2.s.Phase(ctx, &protocol.Phase{Build: b.Build, Phase: protocol.PhasePreparing}); !errors.Is(err, errPhaseBackward) {
		t.Fatalf("preparing after a restored building: %v", err)
	}
	if err := a2.s.Phase(ctx, &protocol.Phase{Build: b.Build, Phase: protocol.PhaseUploading}); err != nil {
		t.Fatal(err)
	}
	got, err := h.c.Build(ctx, b.Build)
	if err != nil {
		t.Fatal(err)
	}
	if names := phaseNames(got.Attempts[0].Phases); !slices.Equal(names, []db.Phase{db.PhasePreparing, db.PhaseBuilding, db.PhaseUploading}) {
		t.Fatalf("phases %v", names)
	}
}

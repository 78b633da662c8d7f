package scheduler

import (
	"slices"
	"testing"
)

// hello waits on gcc (queued), which waits on glibc, which nothing here
// builds: hello and gcc are stuck, and both name glibc as the reason.
func TestStuckOnInputWithNoBuild(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("gcc", 0, "glibc"), b("hello", 0, "gcc", "zlib"), b("zlib", 0))
	if got := s.Stuck(); got != 2 {
		t.Fatalf("stuck %d, want 2 (gcc, hello)", got)
	}
	inputs, unb, total, ok := s.Blockers("hello", 10)
	if !ok || total != 1 || !slices.Equal(unb, []string{drv("glibc")}) {
		t.Fatalf("hello unbuildable %v (%d, %v), want glibc", unb, total, ok)
	}
	want := map[string]bool{drv("gcc"): true, drv("zlib"): false}
	if len(inputs) != 2 {
		t.Fatalf("hello blocking inputs %+v, want gcc and zlib", inputs)
	}
	for _, in := range inputs {
		if u, ok := want[in.Derivation]; !ok || u != in.Unbuildable || len(in.Builds) != 1 {
			t.Fatalf("blocking input %+v, want unbuildable=%v with one build", in, u)
		}
	}
	if _, unb, _, _ := s.Blockers("zlib", 10); len(unb) != 0 {
		t.Fatalf("zlib unbuildable %v, want none", unb)
	}

	// A build of glibc submitted later: nothing is stuck any more.
	if err := s.Add(b("glibc", 0)); err != nil {
		t.Fatal(err)
	}
	if got := s.Stuck(); got != 0 {
		t.Fatalf("stuck %d after glibc was submitted, want 0", got)
	}
	if _, unb, _, _ := s.Blockers("hello", 10); len(unb) != 0 {
		t.Fatalf("hello unbuildable %v after glibc was submitted", unb)
	}
	// Its outputs turning up (cache) does the same from the other side.
	s2, _ := newSched(t, DerivationOrdered, b("gcc", 0, "glibc"))
	s2.MarkAvailable(drv("glibc"))
	if got := s2.Stuck(); got != 0 {
		t.Fatalf("stuck %d after glibc became available, want 0", got)
	}
}

func TestNothingStuckInPermissiveMode(t *testing.T) {
	s, _ := newSched(t, Permissive, b("hello", 0, "glibc"))
	if got := s.Stuck(); got != 0 {
		t.Fatalf("stuck %d, want 0: permissive mode assumes glibc substitutable", got)
	}
	if _, unb, _, _ := s.Blockers("hello", 10); len(unb) != 0 {
		t.Fatalf("unbuildable %v", unb)
	}
}

// A rebuild of gcc that is not stuck keeps hello going.
func TestStuckNeedsEveryBuildOfTheInputStuck(t *testing.T) {
	again := b("gcc", 0)
	again.ID = "gcc-again"
	s, _ := newSched(t, DerivationOrdered, b("gcc", 0, "glibc"), again, b("hello", 0, "gcc"))
	if got := s.Stuck(); got != 1 {
		t.Fatalf("stuck %d, want 1 (the first gcc only)", got)
	}
	if _, unb, _, _ := s.Blockers("hello", 10); len(unb) != 0 {
		t.Fatalf("hello unbuildable %v, want none: gcc-again can build gcc", unb)
	}
}

func TestCancelInputStrandsNothing(t *testing.T) {
	s, _ := newSched(t, DerivationOrdered, b("lib", 0), b("app", 0, "lib"), b("tool", 0, "app"), b("solo", 0))
	stranded, runnable := s.CancelInput("lib")
	if len(runnable) != 0 {
		t.Fatalf("runnable %v", runnable)
	}
	got := map[string]string{}
	for _, d := range stranded {
		got[d.ID] = d.FailedBuild + " " + d.FailedInput
	}
	want := "lib " + drv("lib")
	if len(got) != 2 || got["app"] != want || got["tool"] != want {
		t.Fatalf("stranded %+v, want app and tool naming lib", stranded)
	}
	for _, id := range []string{"lib", "app", "tool"} {
		if _, ok := s.StateOf(id); ok {
			t.Fatalf("%s still queued", id)
		}
	}
	if st := s.Stats(); st.Canceled != 1 || st.FailedDependency != 2 || st.Waiting+st.Ready != 1 {
		t.Fatalf("stats %+v", st)
	}
	if s.Stuck() != 0 {
		t.Fatal("something stuck after CancelInput")
	}

	// With another build of lib queued, app waits for that one.
	again := b("lib", 0)
	again.ID = "lib-again"
	s, _ = newSched(t, DerivationOrdered, b("lib", 0), again, b("app", 0, "lib"))
	if stranded, _ := s.CancelInput("lib"); len(stranded) != 0 {
		t.Fatalf("stranded %+v although lib-again builds lib", stranded)
	}
	if st, _ := s.StateOf("app"); st != Waiting {
		t.Fatalf("app is %v, want waiting for lib-again", st)
	}

	// Permissive: app is assumed substitutable and runs.
	s, _ = newSched(t, Permissive, b("lib", 0), b("app", 0, "lib"))
	stranded, runnable = s.CancelInput("lib")
	if len(stranded) != 0 || !slices.Equal(runnable, []string{"app"}) {
		t.Fatalf("permissive: stranded %+v runnable %v, want app runnable", stranded, runnable)
	}
}

func TestDependents(t *testing.T) {
	s, _ := newSched(t, Permissive, b("lib", 0), b("app", 0, "lib"), b("tool", 0, "app"), b("solo", 0))
	s.Allocate(oneSlot)
	ids, n := s.Dependents("lib", 10)
	slices.Sort(ids)
	if n != 2 || !slices.Equal(ids, []string{"app", "tool"}) {
		t.Fatalf("dependents of lib %v (%d), want app and tool", ids, n)
	}
	if ids, n := s.Dependents("lib", 1); n != 2 || len(ids) != 1 {
		t.Fatalf("limit 1: %v (%d)", ids, n)
	}
	if ids, n := s.Dependents("solo", 10); n != 0 || len(ids) != 0 {
		t.Fatalf("dependents of solo %v", ids)
	}
}

func TestUnmatched(t *testing.T) {
	arm := b("arm", 0)
	arm.System = "aarch64-linux"
	kvm := b("kvm", 0)
	kvm.Features = []string{"kvm"}
	tagged := b("tagged", 0)
	tagged.Tags = map[string]string{"team": "web"}
	s, _ := newSched(t, DerivationOrdered, arm, kvm, tagged, b("plain", 0), b("waits", 0, "plain"))
	for _, tc := range []struct {
		agents []Agent
		want   int
	}{
		{nil, 4}, // waits is not ready, so not counted
		{[]Agent{{ID: "p", Systems: []string{x86}}}, 2},
		{[]Agent{{ID: "web", Systems: []string{x86}, RequireTags: map[string]string{"team": "web"}}}, 3},
		{[]Agent{{ID: "p", Systems: []string{x86}, Features: []string{"kvm"}}, {ID: "a", Systems: []string{"aarch64-linux"}}}, 0},
	} {
		if got := s.Unmatched(tc.agents); got != tc.want {
			t.Errorf("agents %+v: unmatched %d, want %d", tc.agents, got, tc.want)
		}
	}
}

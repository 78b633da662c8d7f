package scheduler

import (
	"slices"
	"testing"
	"time"
)

// TestRestartRestore steps through a coordinator restart: the queue is
// rebuilt with AddBatch (dependents first in the input), builds an agent held
// are put back with Restore, the agent reconnects, finishes one build, goes
// absent with the other, and the requeued build runs elsewhere.
func TestRestartRestore(t *testing.T) {
	for _, st := range []Strategy{DerivationOrdered, Permissive} {
		t.Run(st.String(), func(t *testing.T) {
			s, clk := newSched(t, st)
			// base was built before the restart: available.
			s.MarkAvailable(drv("base"))
			batch := []Build{
				b("top", 0, "mid", "side"),
				b("mid", 0, "base"),
				b("side", 3, "base"),
				b("later", 1),
			}
			late := b("deferred", 9)
			late.DeferUntil = t0.Add(time.Minute)
			batch = append(batch, late)
			if err := s.AddBatch(batch); err != nil {
				t.Fatal(err)
			}
			// Held by agents when the coordinator stopped.
			if err := s.Restore("mid", "a1"); err != nil {
				t.Fatal(err)
			}
			if err := s.Restore("side", "a2"); err != nil {
				t.Fatal(err)
			}
			if err := s.Restore("side", "a2"); err != nil {
				t.Fatalf("restore twice on the same agent: %v", err)
			}
			if err := s.Restore("side", "a1"); err == nil {
				t.Fatal("restore on another agent accepted")
			}
			if err := s.Restore("nope", "a1"); err == nil {
				t.Fatal("restore of an unknown build accepted")
			}
			if got := s.AllocatedTo("a1"); !slices.Equal(got, []string{"mid"}) {
				t.Fatalf("a1 holds %v", got)
			}
			if st := s.Stats(); st.Allocated != 2 || st.Ready != 1 || st.Deferred != 1 || st.Waiting != 1 {
				t.Fatalf("stats after restore: %+v", st)
			}
			// Derived order survives: top waits on both held builds.
			if p, n, _ := s.Order("mid"); p != 0 || n != 1 {
				t.Fatalf("mid order (%d, %d)", p, n)
			}
			a3 := Agent{ID: "a3", Systems: []string{x86}, MaxParallel: 1}
			if got, ok := s.Allocate(a3); !ok || got.ID != "later" {
				t.Fatalf("a3 got %v %v, want later (top waits, deferred not due)", got.ID, ok)
			}
			// a1 reconnects and finishes mid; top still waits on side.
			if got := s.Succeeded("mid"); len(got) != 0 {
				t.Fatalf("runnable after mid: %v", got)
			}
			// a2 is absent: its build goes back, avoiding nobody.
			for _, id := range s.AllocatedTo("a2") {
				s.Requeue(id, "")
			}
			if st, _ := s.StateOf("side"); st != Ready {
				t.Fatalf("side after requeue: %v", st)
			}
			clk.Advance(2 * time.Minute)
			a4 := Agent{ID: "a4", Systems: []string{x86}}
			if got, _ := s.Allocate(a4); got.ID != "deferred" {
				t.Fatalf("a4 got %s, want the now-due deferred build (priority 9)", got.ID)
			}
			if got, _ := s.Allocate(a4); got.ID != "side" {
				t.Fatalf("a4 got %s, want side", got.ID)
			}
			if got := s.Succeeded("side"); !slices.Equal(got, []string{"top"}) {
				t.Fatalf("runnable after side: %v", got)
			}
			if live, avail := s.Derivation(drv("base")); live || !avail {
				t.Fatalf("base: live %v available %v", live, avail)
			}
			if live, avail := s.Derivation(drv("top")); !live || avail {
				t.Fatalf("top: live %v available %v", live, avail)
			}
		})
	}
}

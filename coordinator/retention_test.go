package coordinator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
)

// TestEventRetentionRuns: the pruner prunes once at start and again
// when the (fake) clock reaches the next interval; events a configured
// hook has not finished stay, whatever their age.
func TestEventRetentionRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "gbc.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	const keep = 30 * 24 * time.Hour
	appendAt := func(typ db.EventType, at time.Time) int64 {
		t.Helper()
		id, err := st.AppendEvent(ctx, db.Event{Type: typ, At: at, Agent: "a"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ids := func() []int64 {
		t.Helper()
		es, err := st.Events(ctx, db.EventFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range es {
			out = append(out, e.ID)
		}
		return out
	}
	// waitFor polls the store (the pruner runs in its own goroutine); it
	// does not step the clock, so a pass happens only when the test says.
	waitFor := func(what string, cond func([]int64) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(ids()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never happened; events %v", what, ids())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	var old []int64
	for i := range 5 {
		old = append(old, appendAt(db.EventAgentConnected, start.Add(-keep-time.Duration(5-i)*time.Hour)))
	}
	// Soon old: becomes due 90 minutes into the run.
	soon := appendAt(db.EventAgentConnected, start.Add(-keep+90*time.Minute))
	pending := appendAt(db.EventMissingInputs, start.Add(-keep+100*time.Minute))
	newest := appendAt(db.EventAgentAbsent, start)
	// The hook finished everything up to old[4]; pending is its next.
	if err := st.MarkHookDone(ctx, "builtin:submit-missing-inputs", 0, old[4]); err != nil {
		t.Fatal(err)
	}
	r := EventRetention{Store: st, Keep: keep, Batch: 2, Clock: clk,
		Hooks: []db.HookFilter{{Name: "builtin:submit-missing-inputs", Types: []db.EventType{db.EventMissingInputs}}}}
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()

	// The pass at start, in batches of 2.
	waitFor("prune at start", func(got []int64) bool { return len(got) == 3 && got[0] == soon })
	// The next pass was armed before the first one ran; one step fires
	// it (one step, not two: a second could come before the next pass
	// arms its timer). Two hours on, soon is due, but the hook's pending
	// event and the newest stay.
	clk.Advance(2 * time.Hour)
	waitFor("prune at the next interval", func(got []int64) bool { return len(got) == 2 })
	if got := ids(); got[0] != pending || got[1] != newest {
		t.Fatalf("left %v, want the hook's pending %d and the newest %d", got, pending, newest)
	}
	cancel()
	<-done

	// A direct pass reports the hook that holds old events back.
	clk.Advance(24 * time.Hour)
	s, err := r.Prune(t.Context())
	if err != nil || s.Deleted != 0 || s.HeldBy != "builtin:submit-missing-inputs" || s.HeldAt != pending {
		t.Fatalf("pass held by the hook: %+v %v", s, err)
	}
	if err := st.MarkHookDone(t.Context(), "builtin:submit-missing-inputs", pending, pending); err != nil {
		t.Fatal(err)
	}
	if s, err := r.Prune(t.Context()); err != nil || s.Deleted != 1 || s.PrunedThrough != pending || s.Batches != 1 {
		t.Fatalf("pass after the hook finished: %+v %v", s, err)
	}
}

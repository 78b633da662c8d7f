package dbtest

import (
	"context"
	"testing"

	"github.com/gbc-farm/gbc/db"
)

// appendAt appends one event of type typ at second sec and returns its id.
func appendAt(t *testing.T, s db.Store, typ db.EventType, sec int) int64 {
	t.Helper()
	id, err := s.AppendEvent(ctxFor(t), db.Event{Type: typ, At: at(sec), Agent: "a"})
	must(t, "AppendEvent", err)
	return id
}

func eventIDs(t *testing.T, s db.Store) []int64 {
	t.Helper()
	es, err := s.Events(ctxFor(t), db.EventFilter{})
	must(t, "Events", err)
	ids := make([]int64, 0, len(es))
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	return ids
}

func prune(t *testing.T, p db.Store, before int, hooks []db.HookFilter, limit int) db.PruneResult {
	t.Helper()
	r, err := p.PruneEvents(ctxFor(t), at(before), hooks, limit)
	must(t, "PruneEvents", err)
	return r
}

// testEventRetention: old events go from the start of the log, in
// batches of at most the limit; the newest and young ones stay; ids keep
// rising; EventsPruned reports how far the log was pruned.
func testEventRetention(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	if r := prune(t, s, 1000, nil, 10); r != (db.PruneResult{}) {
		t.Fatalf("prune of an empty log: %+v", r)
	}
	if _, err := s.PruneEvents(ctx, at(1000), nil, 0); err == nil {
		t.Error("PruneEvents with limit 0 succeeded")
	}
	var old []int64
	for i := range 25 {
		old = append(old, appendAt(t, s, db.EventAgentConnected, i))
	}
	// A late-stamped young event in the middle ends the prefix there.
	young := appendAt(t, s, db.EventAgentConnected, 500)
	after := appendAt(t, s, db.EventAgentConnected, 30)

	// Batches: 10, 10, 5; the young event stops the last one.
	for i, want := range []db.PruneResult{
		{Deleted: 10, PrunedThrough: old[9], More: true},
		{Deleted: 10, PrunedThrough: old[19], More: true},
		{Deleted: 5, PrunedThrough: old[24]},
		{Deleted: 0, PrunedThrough: old[24]},
	} {
		if r := prune(t, s, 100, nil, 10); r != want {
			t.Fatalf("batch %d: %+v, want %+v", i, r, want)
		}
	}
	if got := eventIDs(t, s); len(got) != 2 || got[0] != young || got[1] != after {
		t.Fatalf("left after pruning: %v, want [%d %d]", got, young, after)
	}
	es, pruned, err := s.EventsPruned(ctx, db.EventFilter{AfterID: old[3]})
	must(t, "EventsPruned", err)
	if pruned != old[24] || len(es) != 2 || es[0].ID != young {
		t.Errorf("EventsPruned after %d: pruned through %d, %d events; want %d, 2", old[3], pruned, len(es), old[24])
	}
	// Once everything is old, all but the newest event go: MAX(id) stays,
	// so the sequence survives even a copy that resets it to MAX(id).
	if r := prune(t, s, 1000, nil, 10); r.Deleted != 1 || r.PrunedThrough != young {
		t.Fatalf("prune with all old: %+v", r)
	}
	if got := eventIDs(t, s); len(got) != 1 || got[0] != after {
		t.Fatalf("left: %v, want only the newest %d", got, after)
	}
	if r := prune(t, s, 1000, nil, 10); r.Deleted != 0 {
		t.Fatalf("the newest event was pruned: %+v", r)
	}
	next := appendAt(t, s, db.EventAgentAbsent, 1001)
	if next <= after {
		t.Errorf("id after pruning %d, not above %d", next, after)
	}
	es, pruned, err = s.EventsPruned(ctx, db.EventFilter{})
	must(t, "EventsPruned", err)
	if pruned != young || len(es) != 2 || es[1].ID != next {
		t.Errorf("EventsPruned: pruned through %d, %d events", pruned, len(es))
	}
}

// testEventRetentionHooks: an event a configured hook has not finished
// stays whatever its age, and so does everything after it; finished,
// non-matching, unregistered and unconfigured hooks hold nothing back.
func testEventRetentionHooks(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	e := make([]int64, 8)
	types := []db.EventType{db.EventAgentConnected, db.EventHookFailed, db.EventAgentConnected, db.EventHookFailed,
		db.EventAgentConnected, db.EventHookFailed, db.EventAgentConnected, db.EventAgentAbsent}
	for i, typ := range types {
		e[i] = appendAt(t, s, typ, i)
	}
	must(t, "register h", s.MarkHookDone(ctx, "h", 0, e[0]))
	// A hook configured in an earlier run, far behind: not configured now.
	must(t, "register gone", s.MarkHookDone(ctx, "gone", 0, 0))
	// A rare type with no events since its cursor: holds nothing.
	must(t, "register rare", s.MarkHookDone(ctx, "rare", 0, 0))
	hooks := []db.HookFilter{
		{Name: "h", Types: []db.EventType{db.EventHookFailed}},
		{Name: "rare", Types: []db.EventType{db.EventMissingInputs, db.EventCanceled}},
		{Name: "never-registered", Types: []db.EventType{db.EventAgentConnected}},
	}
	// h's next event is e[1].
	r := prune(t, s, 100, hooks, 100)
	if r.Deleted != 1 || r.PrunedThrough != e[0] || r.HeldBy != "h" || r.HeldAt != e[1] || r.More {
		t.Fatalf("prune with e1 pending for h: %+v", r)
	}
	// Finished out of order beyond the cursor: e[1] is still pending.
	must(t, "h done e3", s.MarkHookDone(ctx, "h", e[3], e[0]))
	if r := prune(t, s, 100, hooks, 100); r.Deleted != 0 || r.HeldAt != e[1] {
		t.Fatalf("prune with e1 still pending: %+v", r)
	}
	// e[1] done: the cursor moves to e[3]; e[5] is next for h.
	must(t, "h done e1", s.MarkHookDone(ctx, "h", e[1], e[3]))
	if r := prune(t, s, 100, hooks, 100); r.Deleted != 4 || r.PrunedThrough != e[4] || r.HeldAt != e[5] {
		t.Fatalf("prune with e5 pending: %+v", r)
	}
	// Young events stop the prefix first: no hook is named.
	if r := prune(t, s, 5, hooks, 100); r.Deleted != 0 || r.HeldBy != "" {
		t.Fatalf("prune of young events: %+v", r)
	}
	// A pending event beyond done marks: e[5] done beyond the cursor, the
	// mark is dropped with its event, progress still reads.
	must(t, "h done e5", s.MarkHookDone(ctx, "h", e[5], e[3]))
	if r := prune(t, s, 100, hooks, 100); r.Deleted != 2 || r.PrunedThrough != e[6] {
		t.Fatalf("prune with nothing pending: %+v", r)
	}
	if got := eventIDs(t, s); len(got) != 1 || got[0] != e[7] {
		t.Fatalf("left: %v, want only the newest", got)
	}
	if hp, err := s.HookProgress(ctx, "h"); err != nil || hp.Cursor != e[3] || len(hp.Done) != 0 {
		t.Errorf("h progress after pruning its marked events: %+v %v", hp, err)
	}
	// The runner's view: reading from the cursor finds only kept events.
	es, err := s.Events(context.WithoutCancel(ctx), db.EventFilter{AfterID: e[3], Types: hooks[0].Types})
	if err != nil || len(es) != 0 {
		t.Errorf("events for h after pruning: %v %v", es, err)
	}
}

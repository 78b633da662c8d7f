package coordinator

import (
	"context"
	"testing"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// firstAttempt is the build's first attempt.
func (h *harness) firstAttempt(id string) db.Attempt {
	h.t.Helper()
	b := h.build(id)
	if len(b.Attempts) == 0 {
		h.t.Fatalf("build %s has no attempts", id)
	}
	return b.Attempts[0]
}

// A restarted agent whose hello lists nothing gets its lost build back
// at once: no grace period (the fake clock never moves here).
func TestRestartedAgentLosesBuildsAtOnce(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("lost", "x86_64-linux"))[0]
	agentID := h.newAgentID("a")
	a, _ := h.connect(agentID, protocol.Hello{})
	if a.next().Build != id {
		t.Fatal("wrong build")
	}
	a.s.Close()
	a2, w := h.connect(agentID, protocol.Hello{})
	if len(w.Continue) != 0 || len(w.Abort) != 0 {
		t.Fatalf("welcome continue %v abort %v", w.Continue, w.Abort)
	}
	if last := h.firstAttempt(id); last.Outcome != "requeued" || last.Reason != "agent reconnected without the build" {
		t.Fatalf("first attempt %+v", last)
	}
	// Requeued, not failed: the free slot takes it again at once.
	if b := a2.next(); b.Build != id {
		t.Fatalf("pushed %s, want %s", b.Build, id)
	}
	if b := h.build(id); b.State != db.StateAllocated || len(b.Attempts) != 2 {
		t.Fatalf("state %s, %d attempts", b.State, len(b.Attempts))
	}
}

// A build whose result the agent is about to resend stays with it.
func TestReconnectKeepsBuildWithPendingResult(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("pending", "x86_64-linux"))[0]
	agentID := h.newAgentID("a")
	a, _ := h.connect(agentID, protocol.Hello{})
	b := a.next()
	out := a.upload(b, "result")
	a.s.Close()
	a2, w := h.connect(agentID, protocol.Hello{Results: []string{id}})
	if len(w.Continue) != 0 || len(w.Abort) != 0 {
		t.Fatalf("welcome continue %v abort %v", w.Continue, w.Abort)
	}
	if st := h.build(id).State; st != db.StateAllocated {
		t.Fatalf("state %s, want allocated (result pending)", st)
	}
	if err := a2.succeed(b, out); err != nil {
		t.Fatal(err)
	}
	if b := h.build(id); b.State != db.StateSucceeded || len(b.Attempts) != 1 {
		t.Fatalf("state %s, %d attempts", b.State, len(b.Attempts))
	}
}

// Heartbeats settle what the coordinator and the agent disagree on: a
// build the agent lost (it acked the push, then dropped it) is requeued
// within that heartbeat, one it runs without holding it is canceled; a
// build pushed after what the heartbeat says was handled is left alone.
func TestHeartbeatReconciles(t *testing.T) {
	h := newHarness(t)
	ids := h.submit(0, h.drv("hb1", "x86_64-linux"), h.drv("hb2", "x86_64-linux"))
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	first, second := a.next(), a.next()
	ctx := context.Background()

	// Listed before the agent read either push: nothing happens.
	a.s.Heartbeat(ctx, &protocol.Heartbeat{Handled: 0})
	a.idle()
	for _, id := range ids {
		if st := h.build(id).State; st != db.StateAllocated {
			t.Fatalf("build %s is %s after an early heartbeat", id, st)
		}
	}

	// The agent handled both, runs the first and lists a stray build.
	stray := "11111111-1111-1111-1111-111111111111"
	a.s.Heartbeat(ctx, &protocol.Heartbeat{Handled: second.ID, Running: []string{first.Build, stray}})
	if last := h.firstAttempt(second.Build); last.Outcome != "requeued" || last.Reason != "agent does not hold the build" {
		t.Fatalf("lost build's attempt %+v", last)
	}
	if st := h.build(first.Build).State; st != db.StateAllocated {
		t.Fatalf("running build is %s", st)
	}
	// The requeued build comes straight back (a free slot), the stray one
	// is canceled; the order of the two pushes is not fixed.
	var again *protocol.Build
	var cancel *protocol.Cancel
	for range 2 {
		switch m := a.nextMsg().(type) {
		case *protocol.Build:
			again = m
		case *protocol.Cancel:
			cancel = m
		default:
			t.Fatalf("pushed %T", m)
		}
	}
	if again == nil || again.Build != second.Build || cancel == nil || cancel.Build != stray {
		t.Fatalf("pushed build %+v and cancel %+v", again, cancel)
	}
	if b := h.build(second.Build); b.State != db.StateAllocated || len(b.Attempts) != 2 {
		t.Fatalf("lost build: state %s, %d attempts", b.State, len(b.Attempts))
	}

	// A heartbeat from before the agent read the cancel does not cancel
	// again, nor does it lose the build pushed again after it.
	a.s.Heartbeat(ctx, &protocol.Heartbeat{Handled: second.ID, Running: []string{first.Build, stray}})
	a.idle()
	// Once handled, the cancel is done with; a build listed as a result
	// counts as held.
	a.s.Heartbeat(ctx, &protocol.Heartbeat{Handled: max(again.ID, cancel.ID), Running: []string{first.Build}, Results: []string{again.Build}})
	a.idle()
	if b := h.build(second.Build); b.State != db.StateAllocated || len(b.Attempts) != 2 {
		t.Fatalf("build listed as a result: state %s, %d attempts", b.State, len(b.Attempts))
	}
}

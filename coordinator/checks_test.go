package coordinator

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

func (h *harness) check(drv string, agents int) string {
	h.t.Helper()
	ids, err := h.c.SubmitChecks(context.Background(), CheckRequest{Derivations: []string{drv}, Agents: agents, Priority: DefaultCheckPriority})
	if err != nil {
		h.t.Fatal(err)
	}
	return ids[0]
}

func (h *harness) waitVerdict(id string) db.Check {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.c.WaitCheck(ctx, id, nil)
	if err != nil {
		h.t.Fatalf("wait for check %s: %v", id, err)
	}
	return c
}

// The sides of a check never share an agent: not while one runs, not
// after it went back to the queue with its agent gone (that agent may take
// a side again, the other side's agent may not), and not after a restart.
func TestCheckSidesOnDistinctAgents(t *testing.T) {
	h := newHarness(t)
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	id := h.check(h.drv("c", "x86_64-linux"), 2)
	first := a.next()
	a.idle() // a free slot, but the other side is not for a
	// a goes away past the grace: its side is queued again, and the
	// exclusion it imposed on the other side is lifted.
	a.s.Close()
	h.eventually(grace, func() bool { return h.build(first.Build).State == db.StateScheduled })
	b := h.agent("b", protocol.Hello{MaxParallelBuilds: 2})
	x := b.next()
	b.idle()
	c := h.agent("c", protocol.Hello{})
	y := c.next()
	if x.Build == y.Build {
		t.Fatal("one side given twice")
	}
	for _, run := range []struct {
		ag *fakeAgent
		b  *protocol.Build
	}{{b, x}, {c, y}} {
		if err := run.ag.succeed(run.b, run.ag.upload(run.b, "same bytes")); err != nil {
			t.Fatal(err)
		}
	}
	ck := h.waitVerdict(id)
	if ck.State != db.CheckReproducible {
		t.Fatalf("check %+v, want reproducible", ck)
	}
	ck, _ = h.store.Check(context.Background(), id)
	for _, sd := range ck.Sides {
		if len(sd.Outputs) != 1 {
			t.Fatalf("side %+v: want one kept output", sd)
		}
		if _, err := os.Stat(filepath.Join(h.dir, "state", sd.Outputs[0].File)); err != nil {
			t.Fatalf("kept NAR of side %d: %v", sd.Side, err)
		}
	}
	if sd := ck.Sides; sd[0].AgentID == sd[1].AgentID {
		t.Fatalf("both sides on %s", sd[0].AgentID)
	}

	// After a restart the agent that built one side still may not build
	// the other; a new agent does, differently: unreproducible.
	c.s.Close()
	id2 := h.check(h.drv("d", "x86_64-linux"), 2)
	one := b.next()
	b.idle()
	if err := b.succeed(one, b.upload(one, "one way")); err != nil {
		t.Fatal(err)
	}
	b.s.Close()
	h.c.Close()
	h.start()
	b2, _ := h.connect(b.id, protocol.Hello{MaxParallelBuilds: 2})
	b2.idle()
	d := h.agent("d", protocol.Hello{})
	other := d.next()
	if other.Build == one.Build {
		t.Fatal("the built side was given again")
	}
	if err := d.succeed(other, d.upload(other, "another way")); err != nil {
		t.Fatal(err)
	}
	ck = h.waitVerdict(id2)
	if ck.State != db.CheckUnreproducible || len(ck.Unreproducible) != 1 || ck.Unreproducible[0] != "out" {
		t.Fatalf("check after restart %+v, want unreproducible (out)", ck)
	}
	r, err := h.c.ShowCheck(context.Background(), id2, true)
	if err != nil {
		t.Fatal(err)
	}
	if o := r.Outputs[0]; o.Verdict != "unreproducible" || len(o.Differences) != 1 || o.Differences[0].Report == nil ||
		len(o.Differences[0].Report.Differences) != 1 {
		t.Fatalf("report %+v", r.Outputs)
	}
}

// A side that fails to build makes the check failed once the other ended.
func TestCheckFailedSide(t *testing.T) {
	h := newHarness(t)
	a := h.agent("a", protocol.Hello{})
	b := h.agent("b", protocol.Hello{})
	id := h.check(h.drv("f", "x86_64-linux"), 2)
	x, y := a.next(), b.next()
	a.fail(x.Build)
	if err := b.succeed(y, b.upload(y, "fine")); err != nil {
		t.Fatal(err)
	}
	if ck := h.waitVerdict(id); ck.State != db.CheckFailed {
		t.Fatalf("check %+v, want failed", ck)
	}
}

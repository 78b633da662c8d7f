package coordinator

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// Close cancels the coordinator's lifetime and waits for its background
// work: with every kind of it under way — the periodic loops, a session's
// heartbeat watch, a grace-period reconcile not yet due (the fake clock
// never reaches it), dependents of a failed build being marked, a
// finished build's log being compressed — no goroutine of the
// coordinator's is left once Close returns, and a second Close is a
// no-op.
func TestCloseStopsBackgroundWork(t *testing.T) {
	h := newHarness(t)
	held := h.submit(0, h.drv("held", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 4})
	if got := a.next().Build; got != held {
		t.Fatalf("got %s, want %s", got, held)
	}
	// What runs now besides the coordinator (the store's, the test's)
	// is not the coordinator's; this Close is checked by the one below.
	h.c.Close()
	others := goleak.IgnoreCurrent()

	// Restarted with a build held by an absent agent: its reconcile
	// waits for the grace period. Another agent does the rest.
	h.start()
	ctx := context.Background()
	a = h.agent("b", protocol.Hello{MaxParallelBuilds: 4})
	in := h.drv("in", "x86_64-linux")
	dep := h.drv("dep", "x86_64-linux", withInput(in))
	ids := h.submit(0, in, dep)
	ok := h.submit(0, h.drv("ok", "x86_64-linux"))[0]
	got := map[string]*protocol.Build{}
	for range 2 {
		b := a.next()
		got[b.Build] = b
	}
	if got[ids[0]] == nil || got[ok] == nil {
		t.Fatalf("dispatched %v, want %s and %s", got, ids[0], ok)
	}
	if err := a.s.Started(ctx, &protocol.Started{Build: ids[0]}); err != nil {
		t.Fatal(err)
	}
	a.fail(ids[0]) // marks dep failed-dependency in the background
	if err := a.succeed(got[ok], a.upload(got[ok], "ok")); err != nil {
		t.Fatal(err) // compresses ok's log in the background
	}
	h.c.Close()
	goleak.VerifyNone(t, others)
	h.c.Close()

	if b := h.build(ok); b.State != db.StateSucceeded {
		t.Fatalf("build ok is %s, want succeeded", b.State)
	}
}

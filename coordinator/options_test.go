package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// poll reports the next pushed build without waiting for one.
func (a *fakeAgent) poll() *protocol.Build {
	a.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	m, err := a.s.Next(ctx)
	if err != nil {
		return nil
	}
	b, ok := m.(*protocol.Build)
	if !ok {
		a.h.t.Fatalf("agent %s: got %T, want build", a.id, m)
	}
	return b
}

func TestDeferUntil(t *testing.T) {
	h := newHarness(t)
	a := h.agent("a", protocol.Hello{})
	start := h.clk.Now()
	ids, err := h.c.Submit(context.Background(), Submission{
		Derivations: []string{h.drv("later", "x86_64-linux")}, DeferUntil: start.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	now := h.submit(0, h.drv("now", "x86_64-linux"))[0]
	if got := a.next(); got.Build != now {
		t.Fatalf("got %s, want the build that is not deferred", got.Build)
	}
	a.fail(now)
	h.clk.Advance(9 * time.Minute)
	a.idle()
	if st := h.c.Status(); st.Deferred != 1 {
		t.Fatalf("status deferred = %d, want 1", st.Deferred)
	}
	// The 1 s timer releases it once due; no other event is needed.
	var got *protocol.Build
	h.eventually(time.Second, func() bool { got = a.poll(); return got != nil })
	if got.Build != ids[0] {
		t.Fatalf("got %s, want the deferred build", got.Build)
	}
	if h.clk.Now().Before(start.Add(10 * time.Minute)) {
		t.Fatalf("released at %v, before its time", h.clk.Now().Sub(start))
	}
}

func TestIgnoreIfBuildForOutputsExists(t *testing.T) {
	for _, tc := range []struct {
		name  string
		end   func(h *harness, a *fakeAgent, b *protocol.Build) // how the first build ends (nil: still queued/running)
		reuse bool
	}{
		{"queued or running", nil, true},
		{"succeeded", func(h *harness, a *fakeAgent, b *protocol.Build) {
			if err := a.succeed(b, a.upload(b, "ok")); err != nil {
				h.t.Fatal(err)
			}
		}, true},
		{"failed", func(h *harness, a *fakeAgent, b *protocol.Build) { a.fail(b.Build) }, false},
		{"canceled", func(h *harness, a *fakeAgent, b *protocol.Build) {
			if err := h.c.Cancel(context.Background(), b.Build); err != nil {
				h.t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			drv := h.drv("x", "x86_64-linux")
			first := h.submit(0, drv)[0]
			if tc.end != nil {
				a := h.agent("a", protocol.Hello{})
				tc.end(h, a, a.next())
			}
			ids, err := h.c.Submit(context.Background(), Submission{Derivations: []string{drv, drv}, IgnoreIfExists: true})
			if err != nil {
				t.Fatal(err)
			}
			if ids[0] != ids[1] {
				t.Fatalf("the same derivation twice in one submission got two builds: %v", ids)
			}
			if reused := ids[0] == first; reused != tc.reuse {
				t.Fatalf("reused the first build = %v, want %v", reused, tc.reuse)
			}
			bs, err := h.store.Builds(context.Background(), db.BuildFilter{})
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if !tc.reuse {
				want = 2
			}
			if len(bs) != want {
				t.Fatalf("%d builds recorded, want %d", len(bs), want)
			}
		})
	}
}

func TestEnsureInputsSubmitsMissingClosure(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	// base ← lib ← app, plus done ← app: done already succeeded here,
	// queued ← app has a build queued; neither gets another.
	base := h.drv("base", "x86_64-linux")
	lib := h.drv("lib", "x86_64-linux", withInput(base))
	done := h.drv("done", "x86_64-linux")
	queued := h.drv("queued", "x86_64-linux")
	app := h.drv("app", "x86_64-linux", withInput(lib), withInput(done), withInput(queued))

	a := h.agent("a", protocol.Hello{})
	h.submit(0, done)
	b := a.next()
	if err := a.succeed(b, a.upload(b, "done")); err != nil {
		t.Fatal(err)
	}
	h.submit(0, queued)
	if err := h.c.SetAgentActive(ctx, a.id, false); err != nil {
		t.Fatal(err)
	}
	ids, err := h.c.Submit(ctx, Submission{Derivations: []string{app}, EnsureInputs: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 {
		t.Fatalf("got %d ids, want only the submitted derivation's", len(ids))
	}
	bs, err := h.store.Builds(ctx, db.BuildFilter{})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, b := range bs {
		per[b.Derivation]++
	}
	for drv, want := range map[string]int{base: 1, lib: 1, app: 1, done: 1, queued: 1} {
		if per[drv] != want {
			t.Errorf("%s: %d builds, want %d", drv[strings.LastIndex(drv, "-")+1:], per[drv], want)
		}
	}
	// The added inputs run first: base, then queued (older) or lib.
	if err := h.c.SetAgentActive(ctx, a.id, true); err != nil {
		t.Fatal(err)
	}
	a, _ = h.connect(a.id, protocol.Hello{}) // deactivation ended its session
	order := []string{}
	for range 4 {
		b := a.next()
		order = append(order, b.Derivation)
		if err := a.succeed(b, a.upload(b, b.Derivation)); err != nil {
			t.Fatal(err)
		}
	}
	if order[3] != app {
		t.Fatalf("app ran before its inputs: %v", order)
	}
	if pos := map[string]int{order[0]: 0, order[1]: 1, order[2]: 2}; pos[base] > pos[lib] {
		t.Fatalf("lib ran before base: %v", order)
	}
}

// TestDeactivatedAgentIsRevoked: deactivating ends the agent's session,
// refuses its result in flight (nothing is signed), closes its keys'
// connections, requeues what it held without charging the build, and
// keeps it out until it is activated again.
func TestDeactivatedAgentIsRevoked(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	fp := "SHA256:deactivated-agent-key"
	if err := h.store.PutKey(ctx, db.Key{Fingerprint: fp, AuthorizedKey: "ssh-ed25519 AAAA", Role: db.RoleAgent, AgentID: a.id}); err != nil {
		t.Fatal(err)
	}
	var revoked []Revocation
	h.c.OnRevocation(func(r Revocation) { revoked = append(revoked, r) })
	held := h.submit(0, h.drv("held", "x86_64-linux"))[0]
	b := a.next()
	if b.Build != held {
		t.Fatal("first build not pushed")
	}
	out := a.upload(b, "in flight")
	if err := h.c.SetAgentActive(ctx, a.id, false); err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 1 || len(revoked[0].Fingerprints) != 1 || revoked[0].Fingerprints[0] != fp {
		t.Fatalf("revocations announced: %+v, want one for %s", revoked, fp)
	}
	if _, err := a.s.Next(ctx); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("session after deactivation: %v, want it closed", err)
	}
	if err := a.succeed(b, out); !errors.Is(err, ErrRevoked) {
		t.Fatalf("result after deactivation: %v, want ErrRevoked", err)
	}
	if err := a.s.Succeeded(ctx, &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("success after deactivation: %v, want ErrRevoked", err)
	}
	got := h.build(held)
	if got.State != db.StateScheduled {
		t.Fatalf("held build after deactivation: state %s, want scheduled", got.State)
	}
	if _, err := os.Stat(filepath.Join(h.c.UploadDir(a.id, held), out.Upload)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused upload is still there: %v", err)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].Outcome != "requeued" {
		t.Fatalf("attempts: %+v, want one requeued", got.Attempts)
	}
	if _, _, err := h.c.Connect(ctx, a.id, &protocol.Hello{ProtocolVersion: protocol.Version, Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1}); err == nil {
		t.Fatal("a deactivated agent connected again")
	}
	waiting := h.submit(0, h.drv("waiting", "x86_64-linux"))[0]
	if err := h.c.SetAgentActive(ctx, a.id, true); err != nil {
		t.Fatal(err)
	}
	a2, _ := h.connect(a.id, protocol.Hello{MaxParallelBuilds: 2})
	pushed := map[string]bool{a2.next().Build: true, a2.next().Build: true}
	if !pushed[held] || !pushed[waiting] {
		t.Fatalf("after activate got %v, want %s and %s", pushed, held, waiting)
	}
}

// TestRemovedAgentKeyRevokesSession: removing an agent's key ends its
// session and refuses its result in flight; the build stays with the
// agent for the disconnect grace, so a reconnect with another key
// continues it.
func TestRemovedAgentKeyRevokesSession(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.agent("a", protocol.Hello{})
	fp := "SHA256:removed-agent-key"
	if err := h.store.PutKey(ctx, db.Key{Fingerprint: fp, AuthorizedKey: "ssh-ed25519 AAAA", Role: db.RoleAgent, AgentID: a.id}); err != nil {
		t.Fatal(err)
	}
	var revoked []Revocation
	h.c.OnRevocation(func(r Revocation) { revoked = append(revoked, r) })
	id := h.submit(0, h.drv("r", "x86_64-linux"))[0]
	b := a.next()
	out := a.upload(b, "in flight")
	if err := h.c.RemoveKey(ctx, fp); err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 1 || len(revoked[0].Fingerprints) != 1 || revoked[0].Fingerprints[0] != fp {
		t.Fatalf("revocations announced: %+v", revoked)
	}
	if _, err := h.store.Key(ctx, fp); !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("key after removal: %v", err)
	}
	if err := a.s.Succeeded(ctx, &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("success after key removal: %v, want ErrRevoked", err)
	}
	if got := h.build(id); got.State != db.StateAllocated || got.AgentID != a.id {
		t.Fatalf("build after key removal: %s on %q, want still allocated to the agent", got.State, got.AgentID)
	}
	a2, w := h.connect(a.id, protocol.Hello{Running: []string{id}})
	if len(w.Continue) != 1 || w.Continue[0] != id {
		t.Fatalf("welcome after reconnect: %+v, want to continue %s", w, id)
	}
	if err := a2.succeed(b, out); err != nil {
		t.Fatalf("result resent on the new session: %v", err)
	}
	if err := h.c.RemoveKey(ctx, fp); !errors.Is(err, db.ErrNotFound) {
		t.Fatalf("removing it twice: %v, want not found", err)
	}
}

func TestSetupFailureLimit(t *testing.T) {
	for _, limit := range []int{1, 2, 4} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) { c.MaxSetupFailures = limit })
			id := h.submit(0, h.drv("s", "x86_64-linux"))[0]
			a := h.agent("a", protocol.Hello{})
			for i := 1; i <= limit; i++ {
				if got := a.next(); got.Build != id {
					t.Fatalf("attempt %d: got %s", i, got.Build)
				}
				if err := a.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: id, Reason: "no kvm"}); err != nil {
					t.Fatal(err)
				}
				b := h.build(id)
				// Requeued, and given back to the only agent at once.
				if i < limit && b.State != db.StateAllocated {
					t.Fatalf("after %d of %d setup failures: %s, want requeued and allocated again", i, limit, b.State)
				}
				if i == limit && (b.State != db.StateFailed || !strings.Contains(b.FailureReason, "no kvm")) {
					t.Fatalf("after %d setup failures: %s %q, want failed with the reason", i, b.State, b.FailureReason)
				}
			}
			a.idle()
		})
	}
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/hooks"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
)

func missingHarness(t *testing.T, strategy scheduler.Strategy) (*harness, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h := newHarnessWith(t, func(c *Config) {
		c.Strategy = strategy
		c.SubmitMissingInputs = true
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	return h, logs
}

// buildsOf returns the builds of a derivation, newest first.
func (h *harness) buildsOf(drv string) []db.Build {
	h.t.Helper()
	bs, err := h.store.Builds(context.Background(), db.BuildFilter{Derivation: drv})
	if err != nil {
		h.t.Fatal(err)
	}
	return bs
}

func (h *harness) queueState(id string) string {
	h.t.Helper()
	st, _, _, ok := h.c.QueueOrder(id)
	if !ok {
		h.t.Fatalf("build %s is not in the queue", id)
	}
	return st
}

// waitAllocated waits until the build is allocated and returns its agent.
func (h *harness) waitAllocated(id string) string {
	h.t.Helper()
	for range 500 {
		if b := h.build(id); b.State == db.StateAllocated {
			return b.AgentID
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("build %s never allocated", id)
	return ""
}

func hasTag(b db.Build, k, v string) bool {
	for _, t := range b.Tags {
		if t.Key == k && t.Value == v {
			return true
		}
	}
	return false
}

// In permissive mode a build whose inputs have no build here is dispatched
// at once; when the agent cannot get them, the coordinator submits them and
// the build waits for them, however often that happens: B needs three
// inputs, the agent discovers one missing at a time, and B still ends
// succeeded although each discovery was a setup failure and the limit is 3.
func TestSetupFailureSubmitsMissingInputsAndWaits(t *testing.T) {
	h, logs := missingHarness(t, scheduler.Permissive)
	var inputs []string
	var opts []drvOpt
	for _, n := range []string{"a1", "a2", "a3"} {
		d := h.drv(n, "x86_64-linux")
		inputs = append(inputs, d)
		opts = append(opts, withInput(d))
	}
	top := h.drv("b", "x86_64-linux", opts...)
	bID := h.submit(7, top)[0]

	x := h.agent("x", protocol.Hello{MaxParallelBuilds: 2})
	y := h.agent("y", protocol.Hello{MaxParallelBuilds: 2})
	agents := map[string]*fakeAgent{x.id: x, y.id: y}
	ctx := context.Background()

	for round, in := range inputs {
		holder := agents[h.waitAllocated(bID)]
		if got := holder.next(); got.Build != bID {
			t.Fatalf("round %d: agent got %s, want B %s", round, got.Build, bID)
		}
		if err := holder.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID,
			Reason: "derivation or inputs not available on this agent", Missing: []string{in}}); err != nil {
			t.Fatalf("round %d: setup failure: %v", round, err)
		}
		bs := h.buildsOf(in)
		if len(bs) != 1 {
			t.Fatalf("round %d: %d builds of the missing input, want 1", round, len(bs))
		}
		aID := bs[0].ID
		if !hasTag(bs[0], db.TagNeededBy, bID) || bs[0].Priority != 7 {
			t.Fatalf("round %d: input build tags %v priority %d, want needed-by=%s priority 7", round, bs[0].Tags, bs[0].Priority, bID)
		}
		if b := h.build(bID); b.State != db.StateScheduled {
			t.Fatalf("round %d: B is %s, want scheduled", round, b.State)
		}
		if st := h.queueState(bID); st != "waiting" {
			t.Fatalf("round %d: B is %s in the queue, want waiting", round, st)
		}
		// Both agents have free slots: the input goes to one of them, and
		// B to neither while the input has not succeeded.
		builder := agents[h.waitAllocated(aID)]
		ab := builder.next()
		if ab.Build != aID {
			t.Fatalf("round %d: agent got %s, want the input build %s", round, ab.Build, aID)
		}
		x.idle()
		y.idle()
		if err := builder.s.Started(ctx, &protocol.Started{Build: aID}); err != nil {
			t.Fatal(err)
		}
		x.idle()
		y.idle()
		if st := h.queueState(bID); st != "waiting" {
			t.Fatalf("round %d: B is %s while its input runs, want waiting", round, st)
		}
		if err := builder.succeed(ab, builder.upload(ab, "input "+in)); err != nil {
			t.Fatalf("round %d: input: %v", round, err)
		}
	}
	holder := agents[h.waitAllocated(bID)]
	b := holder.next()
	if b.Build != bID {
		t.Fatalf("after the inputs: got %s, want B", b.Build)
	}
	if err := holder.succeed(b, holder.upload(b, "b")); err != nil {
		t.Fatal(err)
	}
	got := h.build(bID)
	if got.State != db.StateSucceeded {
		t.Fatalf("B is %s (%q), want succeeded", got.State, got.FailureReason)
	}
	if len(got.Attempts) != 4 {
		t.Fatalf("B has %d attempts, want 3 setup failures and the success", len(got.Attempts))
	}
	for _, a := range got.Attempts[:3] {
		if a.Outcome != "requeued" || a.Kind != db.KindWaitingForInputs || !strings.HasPrefix(a.Reason, "waiting for inputs: setup-failure: ") {
			t.Fatalf("attempt %d: %s %q, want requeued waiting for inputs", a.Number, a.Outcome, a.Reason)
		}
	}
	if !strings.Contains(logs.String(), "build requeued to wait for its inputs") {
		t.Fatalf("no requeue-to-wait log line:\n%s", logs.String())
	}
	// The missing-inputs events are still written, for the hook (which
	// then finds the builds and does nothing).
	es, err := h.store.Events(ctx, db.EventFilter{Build: bID, Types: []db.EventType{db.EventMissingInputs}})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("%d missing-inputs events, want 3", len(es))
	}
}

// A missing .drv the coordinator cannot read is not submitted; the build is
// requeued as without the submission (and counts toward the limit), with a
// log line naming the derivation. A readable one reported with it is still
// submitted and waited for.
func TestSetupFailureUnreadableMissingInput(t *testing.T) {
	h, logs := missingHarness(t, scheduler.Permissive)
	gone := h.storePath("gone.drv") // never written
	readable := h.drv("readable", "x86_64-linux")
	top := h.drv("b", "x86_64-linux", withInput(gone), withInput(readable))
	bID := h.submit(0, top)[0]
	a := h.agent("a", protocol.Hello{})
	ctx := context.Background()

	if a.next().Build != bID {
		t.Fatal("B not dispatched")
	}
	if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID, Reason: "no inputs", Missing: []string{gone}}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.buildsOf(gone)); n != 0 {
		t.Fatalf("%d builds of an unreadable derivation", n)
	}
	if !strings.Contains(logs.String(), "missing input not submitted; the build is requeued without waiting for it") ||
		!strings.Contains(logs.String(), gone) {
		t.Fatalf("no log line naming %s:\n%s", gone, logs.String())
	}
	// Requeued as before: dispatched again (only agent), and it counted.
	if a.next().Build != bID {
		t.Fatal("B not requeued")
	}
	if a := h.build(bID).Attempts[0]; a.Kind != db.KindSetup || !strings.HasPrefix(a.Reason, "setup-failure: ") {
		t.Fatalf("attempt %s %q, want a counted setup failure", a.Kind, a.Reason)
	}

	// Both missing: the readable one is submitted, B waits for it (this
	// failure does not count), the unreadable one is logged.
	if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID, Reason: "no inputs", Missing: []string{gone, readable}}); err != nil {
		t.Fatal(err)
	}
	bs := h.buildsOf(readable)
	if len(bs) != 1 || !hasTag(bs[0], db.TagNeededBy, bID) {
		t.Fatalf("builds of the readable input: %+v", bs)
	}
	if st := h.queueState(bID); st != "waiting" {
		t.Fatalf("B is %s, want waiting", st)
	}
	in := a.next()
	if in.Build != bs[0].ID {
		t.Fatalf("got %s, want the readable input", in.Build)
	}
	if err := a.succeed(in, a.upload(in, "readable")); err != nil {
		t.Fatal(err)
	}
	// The unreadable input stays missing: two more counted failures (3 in
	// all) fail B as today.
	for i := range 2 {
		if a.next().Build != bID {
			t.Fatalf("failure %d: B not dispatched", i)
		}
		if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID, Reason: "no inputs", Missing: []string{gone}}); err != nil {
			t.Fatal(err)
		}
	}
	got := h.build(bID)
	if got.State != db.StateFailed || !strings.HasPrefix(got.FailureReason, "infrastructure: setup-failure") ||
		!strings.Contains(got.FailureReason, "(3 attempts)") {
		t.Fatalf("B is %s %q, want failed after 3 counted setup failures", got.State, got.FailureReason)
	}
	if len(got.Attempts) != 4 {
		t.Fatalf("%d attempts, want 4 (one waited for an input)", len(got.Attempts))
	}
}

// In derivation-ordered mode the inputs block already: B is dispatched only
// after A succeeded. A setup failure then names an input with a succeeded
// build: nothing is submitted and the failure counts as before.
func TestSetupFailureDerivationOrdered(t *testing.T) {
	h, _ := missingHarness(t, scheduler.DerivationOrdered)
	in := h.drv("a", "x86_64-linux")
	top := h.drv("b", "x86_64-linux", withInput(in))
	bID := h.submit(0, top)[0]
	ag := h.agent("x", protocol.Hello{MaxParallelBuilds: 2})
	ag.idle()
	if st := h.queueState(bID); st != "waiting" {
		t.Fatalf("B is %s without a build of its input, want waiting", st)
	}
	aID := h.submit(0, in)[0]
	ab := ag.next()
	if ab.Build != aID {
		t.Fatalf("got %s, want A", ab.Build)
	}
	ag.idle()
	if err := ag.succeed(ab, ag.upload(ab, "a")); err != nil {
		t.Fatal(err)
	}
	if ag.next().Build != bID {
		t.Fatal("B not dispatched after A")
	}
	if err := ag.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: bID, Reason: "no inputs", Missing: []string{in}}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.buildsOf(in)); n != 1 {
		t.Fatalf("%d builds of A, want 1 (a succeeded one is not resubmitted)", n)
	}
	if ag.next().Build != bID {
		t.Fatal("B not requeued")
	}
	if a := h.build(bID).Attempts[0]; a.Kind != db.KindSetup || !strings.HasPrefix(a.Reason, "setup-failure: ") {
		t.Fatalf("attempt %s %q, want a counted setup failure", a.Kind, a.Reason)
	}
}

// An agent that substitutes through the coordinator's cache reports the
// input paths it could not get, not their derivations: the coordinator
// finds the input derivation declaring a missing output in the build's own
// derivation, submits it, and names it in the missing-inputs event too (so
// the hook, which only takes .drv paths, sees it). A missing source path
// that no input declares is left alone.
func TestSetupFailureMissingOutputPath(t *testing.T) {
	h, _ := missingHarness(t, scheduler.Permissive)
	in := h.drv("a", "x86_64-linux")
	out := h.output(in)
	source := h.storePath("source.sh")
	top := h.drv("b", "x86_64-linux", withInput(in))
	bID := h.submit(0, top)[0]
	ag := h.agent("x", protocol.Hello{MaxParallelBuilds: 2})
	if ag.next().Build != bID {
		t.Fatal("B not dispatched")
	}
	ctx := context.Background()
	if err := ag.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID,
		Reason: "inputs could not be substituted", Missing: []string{out, source}}); err != nil {
		t.Fatal(err)
	}
	bs := h.buildsOf(in)
	if len(bs) != 1 || !hasTag(bs[0], db.TagNeededBy, bID) {
		t.Fatalf("builds of the input: %+v", bs)
	}
	if st := h.queueState(bID); st != "waiting" {
		t.Fatalf("B is %s, want waiting", st)
	}
	es, err := h.store.Events(ctx, db.EventFilter{Build: bID, Types: []db.EventType{db.EventMissingInputs}})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || strings.Join(es[0].Missing, " ") != strings.Join([]string{out, source, in}, " ") {
		t.Fatalf("missing-inputs events %+v, want missing %s %s %s", es, out, source, in)
	}
	ab := ag.next()
	if ab.Build != bs[0].ID {
		t.Fatalf("got %s, want the input", ab.Build)
	}
	ag.idle()
	if err := ag.succeed(ab, ag.upload(ab, "a")); err != nil {
		t.Fatal(err)
	}
	if ag.next().Build != bID {
		t.Fatal("B not dispatched after its input")
	}
}

// The agent misses an output of an input's input (substituting the direct
// input needs its references): that derivation is submitted, and so is the
// direct input it was reached through, so that C waits for B and B for A
// with the waits permissive mode already has; they are then built in
// order. B's output was never reported, only reached.
func TestSetupFailureMissingTransitiveOutput(t *testing.T) {
	h, _ := missingHarness(t, scheduler.Permissive)
	a := h.drv("a", "x86_64-linux")
	b := h.drv("b", "x86_64-linux", withInput(a))
	top := h.drv("c", "x86_64-linux", withInput(b))
	cID := h.submit(0, top)[0]
	ag := h.agent("x", protocol.Hello{MaxParallelBuilds: 3})
	if ag.next().Build != cID {
		t.Fatal("C not dispatched")
	}
	ctx := context.Background()
	if err := ag.s.SetupFailure(ctx, &protocol.SetupFailure{Build: cID,
		Reason: "inputs could not be substituted", Missing: []string{h.output(a)}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{a, b} {
		bs := h.buildsOf(d)
		if len(bs) != 1 || !hasTag(bs[0], db.TagNeededBy, cID) {
			t.Fatalf("builds of %s: %+v", d, bs)
		}
	}
	if st := h.queueState(cID); st != "waiting" {
		t.Fatalf("C is %s, want waiting", st)
	}
	for _, want := range []struct{ drv, name string }{{a, "a"}, {b, "b"}, {top, "c"}} {
		got := ag.next()
		if got.Derivation != want.drv {
			t.Fatalf("got %s, want %s's build", got.Derivation, want.name)
		}
		ag.idle()
		if err := ag.succeed(got, ag.upload(got, want.name)); err != nil {
			t.Fatal(err)
		}
	}
}

// output is the first output path of the derivation drv in h's store.
func (h *harness) output(drv string) string {
	h.t.Helper()
	d, err := derivation.ReadFile(drv)
	if err != nil {
		h.t.Fatal(err)
	}
	return d.Outputs[0].Path
}

// The setup failure and the built-in submit-missing-inputs hook apply one
// rule (submitMissing): for the same missing paths they submit builds of
// the same derivations, with B's priority and needed-by=B, and a replay
// of the event submits nothing more. Of the paths, only .drv files other
// than B's own with no live or succeeded build are submitted (an input
// whose build was canceled is built again); an unreadable one is refused,
// as an error that retrying cannot help.
func TestSubmitMissingInputsOneRule(t *testing.T) {
	type result struct {
		submitted []string // "drv priority", sorted
		hookErr   error    // the hook's first run
		gone      string   // the unreadable input
	}
	run := func(t *testing.T, viaHook bool) result {
		logs := &syncBuffer{}
		h := newHarnessWith(t, func(c *Config) {
			c.Strategy = scheduler.Permissive
			c.SubmitMissingInputs = !viaHook
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		})
		ctx := context.Background()
		names := map[string]string{}
		for _, n := range []string{"done", "fresh", "canceled", "live"} {
			names[n] = h.drv(n, "x86_64-linux")
		}
		names["gone"] = h.storePath("gone.drv") // never written
		names["source"] = h.storePath("source.sh")
		var opts []drvOpt
		for _, n := range []string{"done", "fresh", "canceled", "live", "gone"} {
			opts = append(opts, withInput(names[n]))
		}
		names["top"] = h.drv("top", "x86_64-linux", opts...)

		a := h.agent("a", protocol.Hello{})
		doneID := h.submit(0, names["done"])[0]
		dm := a.next()
		if dm.Build != doneID {
			t.Fatalf("got %s, want the done input's build", dm.Build)
		}
		if err := a.succeed(dm, a.upload(dm, "done")); err != nil {
			t.Fatal(err)
		}
		bID := h.submit(5, names["top"])[0]
		if got := a.next().Build; got != bID {
			t.Fatalf("got %s, want B %s", got, bID)
		}
		h.submit(0, names["live"])
		if err := h.c.Cancel(ctx, h.submit(0, names["canceled"])[0]); err != nil {
			t.Fatal(err)
		}
		missing := []string{names["fresh"], names["canceled"], names["live"], names["done"], names["gone"], names["top"], names["source"], names["fresh"]}
		if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: bID, Reason: "inputs not available", Missing: missing}); err != nil {
			t.Fatal(err)
		}
		es, err := h.store.Events(ctx, db.EventFilter{Build: bID, Types: []db.EventType{db.EventMissingInputs}})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 {
			t.Fatalf("%d missing-inputs events, want 1", len(es))
		}
		hook := hooks.SubmitMissingInputs(func(ctx context.Context, build string, missing []string) error {
			_, err := h.c.SubmitMissingInputs(ctx, build, missing)
			return err
		}, func(err error) bool { return errors.Is(err, ErrBadSubmission) })
		res := result{hookErr: hook(ctx, es[0]), gone: names["gone"]}
		if err := hook(ctx, es[0]); err == nil {
			t.Fatal("the replayed hook submitted the unreadable derivation")
		}
		if !viaHook && !strings.Contains(logs.String(), "missing input not submitted; the build is requeued without waiting for it") {
			t.Fatalf("no log line for the unreadable input:\n%s", logs.String())
		}
		all, err := h.store.Builds(ctx, db.BuildFilter{})
		if err != nil {
			t.Fatal(err)
		}
		label := map[string]string{}
		for n, p := range names {
			label[p] = n
		}
		for _, b := range all {
			if hasTag(b, db.TagNeededBy, bID) {
				res.submitted = append(res.submitted, fmt.Sprintf("%s %d", label[b.Derivation], b.Priority))
			}
		}
		slices.Sort(res.submitted)
		return res
	}
	setup := run(t, false)
	hook := run(t, true)
	want := []string{"canceled 5", "fresh 5"}
	if !slices.Equal(setup.submitted, want) {
		t.Errorf("the setup failure submitted %q, want %q", setup.submitted, want)
	}
	if !slices.Equal(hook.submitted, want) {
		t.Errorf("the hook submitted %q, want %q", hook.submitted, want)
	}
	// After the setup failure the hook finds the builds and tries only the
	// unreadable input again; on its own it refuses the same one.
	for name, r := range map[string]result{"after the setup failure": setup, "alone": hook} {
		if !errors.Is(r.hookErr, ErrBadSubmission) || !strings.Contains(r.hookErr.Error(), r.gone) {
			t.Errorf("hook %s: %v, want a refused submission of the unreadable input", name, r.hookErr)
		}
	}
}

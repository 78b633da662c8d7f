package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/derivation"
	"github.com/gbc-farm/gbc/internal/testagent"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/protocol"
)

const grace = time.Minute

type harness struct {
	t        *testing.T
	dir      string
	storeDir string
	store    *sqlite.Store
	clk      *clock.Fake
	c        *Coordinator
	seq      atomic.Int64
	// mod adjusts the Config before each start.
	mod func(*Config)
}

func newHarness(t *testing.T) *harness { t.Helper(); return newHarnessWith(t, nil) }

// newHarnessWith is newHarness with mod applied to the Config at each start.
func newHarnessWith(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, storeDir: filepath.Join(dir, "store"), store: st, clk: clock.NewFake(time.Unix(1_700_000_000, 0)), mod: mod}
	if err := os.MkdirAll(h.storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.start()
	t.Cleanup(func() {
		h.c.Close()
		st.Close()
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	cfg := Config{
		StateDir:        filepath.Join(h.dir, "state"),
		Store:           h.store,
		Clock:           h.clk,
		StoreDirs:       []string{h.storeDir},
		DisconnectGrace: grace,
		Heartbeat:       time.Hour, // the fake clock moves in minutes; keep the watchdog out of the way
	}
	if h.mod != nil {
		h.mod(&cfg)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.c = c
}

// storePath makes a unique valid store path in the test store.
func (h *harness) storePath(name string) string {
	n := h.seq.Add(1)
	sum := sha256.Sum256([]byte(fmt.Sprint(name, n)))
	return h.storeDir + "/" + nixhash.Base32(sum[:20]) + "-" + name
}

type drvOpt func(*derivation.Derivation)

func withFeatures(f ...string) drvOpt {
	return func(d *derivation.Derivation) {
		d.Env = append(d.Env, derivation.EnvVar{Key: "requiredSystemFeatures", Value: strings.Join(f, " ")})
	}
}

func withInput(drv string) drvOpt {
	return func(d *derivation.Derivation) {
		d.InputDrvs = append(d.InputDrvs, derivation.InputDrv{Path: drv, Outputs: []string{"out"}})
	}
}

// drv writes a derivation file and returns its path.
func (h *harness) drv(name, system string, opts ...drvOpt) string {
	h.t.Helper()
	out := h.storePath(name)
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out", Path: out}},
		System:  system,
		Builder: "/bin/sh",
		Args:    []string{"-c", "echo hi > $out"},
		Env:     []derivation.EnvVar{{Key: "out", Value: out}},
	}
	for _, o := range opts {
		o(d)
	}
	p := h.storePath(name + ".drv")
	if err := os.WriteFile(p, d.Bytes(), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) submit(prio int, drvs ...string) []string {
	h.t.Helper()
	ids, err := h.c.Submit(context.Background(), Submission{Derivations: drvs, Priority: prio})
	if err != nil {
		h.t.Fatal(err)
	}
	return ids
}

func (h *harness) build(id string) db.Build {
	h.t.Helper()
	b, err := h.store.Build(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

type fakeAgent struct {
	h  *harness
	id string
	s  *Session
}

func (h *harness) newAgentID(name string) string {
	h.t.Helper()
	id := fmt.Sprintf("00000000-0000-0000-0000-%012d", h.seq.Add(1))
	if err := h.store.CreateAgent(context.Background(), db.Agent{ID: id, Name: name, Active: true, CreatedAt: h.clk.Now()}); err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) connect(id string, hello protocol.Hello) (*fakeAgent, protocol.Welcome) {
	h.t.Helper()
	hello.ProtocolVersion = protocol.Version
	if hello.MaxParallelBuilds == 0 {
		hello.MaxParallelBuilds = 1
	}
	if len(hello.Systems) == 0 {
		hello.Systems = []string{"x86_64-linux"}
	}
	s, w, err := h.c.Connect(context.Background(), id, &hello)
	if err != nil {
		h.t.Fatal(err)
	}
	return &fakeAgent{h: h, id: id, s: s}, w
}

func (h *harness) agent(name string, hello protocol.Hello) *fakeAgent {
	a, _ := h.connect(h.newAgentID(name), hello)
	return a
}

// next returns the next pushed build (failing on anything else).
func (a *fakeAgent) next() *protocol.Build {
	a.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.s.Next(ctx)
	if err != nil {
		a.h.t.Fatalf("agent %s: no message: %v", a.id, err)
	}
	b, ok := m.(*protocol.Build)
	if !ok {
		a.h.t.Fatalf("agent %s: got %T, want build", a.id, m)
	}
	return b
}

func (a *fakeAgent) nextMsg() protocol.Message {
	a.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.s.Next(ctx)
	if err != nil {
		a.h.t.Fatalf("agent %s: no message: %v", a.id, err)
	}
	return m
}

func (a *fakeAgent) idle() {
	a.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if m, err := a.s.Next(ctx); err == nil {
		a.h.t.Fatalf("agent %s: unexpected %T %+v", a.id, m, m)
	}
}

func (a *fakeAgent) fail(id string) {
	a.h.t.Helper()
	if err := a.s.Failed(context.Background(), &protocol.Failed{Build: id, Reason: protocol.ReasonBuild, ExitCode: 1}); err != nil {
		a.h.t.Fatal(err)
	}
}

// upload writes a real compressed NAR (the shared test agent's,
// testagent.Output) into the agent's upload area and returns the
// matching report.
func (a *fakeAgent) upload(b *protocol.Build, content string) protocol.OutputResult {
	a.h.t.Helper()
	file, out, err := testagent.Output(b.Outputs[0], content)
	if err != nil {
		a.h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.h.c.UploadDir(a.id, b.Build), out.Upload), file, 0o644); err != nil {
		a.h.t.Fatal(err)
	}
	return out
}

func (a *fakeAgent) succeed(b *protocol.Build, out protocol.OutputResult) error {
	if err := a.s.Started(context.Background(), &protocol.Started{Build: b.Build}); err != nil {
		return err
	}
	// A resent start (after a reconnect) is acknowledged again.
	if err := a.s.Started(context.Background(), &protocol.Started{Build: b.Build}); err != nil {
		return fmt.Errorf("resent start: %w", err)
	}
	return a.s.Succeeded(context.Background(), &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}})
}

// eventually advances the fake clock until cond holds: background timers
// register asynchronously, so one Advance may come too early.
func (h *harness) eventually(d time.Duration, cond func() bool) {
	h.t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		h.clk.Advance(d)
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatal("condition never held")
}

func TestPriorityThenAge(t *testing.T) {
	h := newHarness(t)
	low := h.submit(1, h.drv("low", "x86_64-linux"))[0]
	h.clk.Advance(time.Second)
	high := h.submit(5, h.drv("high", "x86_64-linux"))[0]
	h.clk.Advance(time.Second)
	mid := h.submit(3, h.drv("mid", "x86_64-linux"))[0]
	h.clk.Advance(time.Second)
	mid2 := h.submit(3, h.drv("mid2", "x86_64-linux"))[0]

	a := h.agent("a", protocol.Hello{})
	for _, want := range []string{high, mid, mid2, low} {
		b := a.next()
		if b.Build != want {
			t.Fatalf("got build %s, want %s", b.Build, want)
		}
		a.idle() // max parallel 1: nothing more until this one ends
		a.fail(b.Build)
	}
}

func TestSystemAndFeatureMatching(t *testing.T) {
	h := newHarness(t)
	arm := h.submit(0, h.drv("arm", "aarch64-linux"))[0]
	kvm := h.submit(0, h.drv("kvm", "x86_64-linux", withFeatures("kvm", "big-parallel")))[0]
	plain := h.submit(0, h.drv("plain", "x86_64-linux"))[0]

	x86 := h.agent("x86", protocol.Hello{MaxParallelBuilds: 4, Features: []string{"kvm"}})
	if b := x86.next(); b.Build != plain {
		t.Fatalf("x86 without big-parallel got %s, want only %s", b.Build, plain)
	}
	x86.idle()

	big := h.agent("big", protocol.Hello{MaxParallelBuilds: 4, Systems: []string{"i686-linux", "x86_64-linux"}, Features: []string{"kvm", "big-parallel", "nixos-test"}})
	if b := big.next(); b.Build != kvm {
		t.Fatalf("big got %s, want %s", b.Build, kvm)
	}
	big.idle()
	if st := h.build(arm).State; st != db.StateScheduled {
		t.Fatalf("aarch64 build is %s with no aarch64 agent", st)
	}
	armAgent := h.agent("arm", protocol.Hello{Systems: []string{"aarch64-linux"}})
	if b := armAgent.next(); b.Build != arm {
		t.Fatalf("arm got %s", b.Build)
	}
}

func TestMaxParallel(t *testing.T) {
	h := newHarness(t)
	var drvs []string
	for i := range 5 {
		drvs = append(drvs, h.drv(fmt.Sprint("p", i), "x86_64-linux"))
	}
	h.submit(0, drvs...)
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	b1, b2 := a.next(), a.next()
	a.idle()
	a.fail(b1.Build)
	a.next()
	a.idle()
	a.fail(b2.Build)
	a.next()
	a.idle()
	if got := len(h.c.Status().Connected[0].Running); got != 2 {
		t.Fatalf("status shows %d running, want 2", got)
	}
}

func TestDisconnectRequeuesAfterGrace(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("d", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	if a.next().Build != id {
		t.Fatal("wrong build")
	}
	a.s.Close()
	if st := h.build(id).State; st != db.StateAllocated {
		t.Fatalf("right after disconnect: %s, want allocated (grace)", st)
	}
	h.eventually(grace, func() bool { return h.build(id).State == db.StateScheduled })
	b := h.build(id)
	if last := b.Attempts[len(b.Attempts)-1]; last.Outcome != "requeued" || last.Kind != db.KindInfrastructure || last.Reason != "agent disconnected" {
		t.Fatalf("attempt %+v", last)
	}
	other := h.agent("b", protocol.Hello{})
	if other.next().Build != id {
		t.Fatal("requeued build not given to the other agent")
	}
}

func TestReconnectContinuesOrAborts(t *testing.T) {
	h := newHarness(t)
	ids := h.submit(0, h.drv("r1", "x86_64-linux"), h.drv("r2", "x86_64-linux"))
	agentID := h.newAgentID("a")
	a, _ := h.connect(agentID, protocol.Hello{MaxParallelBuilds: 2})
	a.next()
	a.next()
	if err := a.s.Started(context.Background(), &protocol.Started{Build: ids[0]}); err != nil {
		t.Fatal(err)
	}
	a.s.Close()
	// Reconnect within the grace period, still running ids[0] and a build
	// the coordinator never gave it.
	bogus := "11111111-1111-1111-1111-111111111111"
	a2, w := h.connect(agentID, protocol.Hello{MaxParallelBuilds: 2, Running: []string{ids[0], bogus}})
	if len(w.Continue) != 1 || w.Continue[0] != ids[0] || len(w.Abort) != 1 || w.Abort[0] != bogus {
		t.Fatalf("welcome continue %v abort %v", w.Continue, w.Abort)
	}
	// ids[1] was lost by the agent: it is requeued at once (no grace:
	// the hello says the agent holds nothing else) and, since a slot is
	// free, pushed again.
	if n := len(h.build(ids[1]).Attempts); n != 2 {
		t.Fatalf("lost build has %d attempts, want 2", n)
	}
	if b := a2.next(); b.Build != ids[1] {
		t.Fatalf("got %s", b.Build)
	}
	if st := h.build(ids[0]).State; st != db.StateStarted {
		t.Fatalf("continued build is %s", st)
	}
}

func TestWrongAgentCannotReport(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("w", "x86_64-linux"))[0]
	owner := h.agent("owner", protocol.Hello{})
	b := owner.next()
	thief := h.agent("thief", protocol.Hello{})
	ctx := context.Background()
	checks := map[string]error{
		"started":       thief.s.Started(ctx, &protocol.Started{Build: id}),
		"failed":        thief.s.Failed(ctx, &protocol.Failed{Build: id, Reason: protocol.ReasonBuild}),
		"setup-failure": thief.s.SetupFailure(ctx, &protocol.SetupFailure{Build: id, Reason: "x"}),
		"succeeded":     thief.s.Succeeded(ctx, &protocol.Succeeded{Build: id}),
		"log":           thief.s.Log(ctx, &protocol.Log{Build: id, Data: []byte("x")}),
		"unknown build": thief.s.Started(ctx, &protocol.Started{Build: "nope"}),
	}
	for name, err := range checks {
		if !errors.Is(err, ErrNotYourBuild) {
			t.Errorf("%s by another agent: %v, want ErrNotYourBuild", name, err)
		}
	}
	if got := h.build(id); got.State != db.StateAllocated || got.AgentID != owner.id {
		t.Fatalf("build changed: %s on %s", got.State, got.AgentID)
	}
	if err := owner.succeed(b, owner.upload(b, "hello")); err != nil {
		t.Fatalf("owner: %v", err)
	}
}

func TestSuccessMovesIntoCacheAndWakesWaiters(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("ok", "x86_64-linux"))[0]
	done := make(chan db.Build, 1)
	go func() {
		b, err := h.c.Wait(context.Background(), id)
		if err != nil {
			t.Error(err)
		}
		done <- b
	}()
	a := h.agent("a", protocol.Hello{})
	b := a.next()
	out := a.upload(b, "hello world")
	if err := a.succeed(b, out); err != nil {
		t.Fatal(err)
	}
	// A result resent after a lost ack is acknowledged again.
	if err := a.s.Succeeded(context.Background(), &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}}); err != nil {
		t.Fatalf("resent result: %v", err)
	}
	select {
	case got := <-done:
		if got.State != db.StateSucceeded || got.AgentID != a.id {
			t.Fatalf("wait returned %s on %s", got.State, got.AgentID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return")
	}
	r := h.build(id).Results
	if len(r) != 1 || r[0].NarHash != out.NarHash || r[0].FileHash != out.FileHash {
		t.Fatalf("results %+v", r)
	}
	fh, _ := nixhash.Parse(out.FileHash)
	want := filepath.Join("cache", "nar", nixhash.Base32(fh.Digest)+".nar.zst")
	if r[0].File != want {
		t.Fatalf("file %s, want %s", r[0].File, want)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "state", want)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.c.UploadDir(a.id, id)); !os.IsNotExist(err) {
		t.Fatalf("upload dir left behind: %v", err)
	}
}

func TestVerificationMismatch(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("v", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	tamper := []struct {
		name string
		f    func(*protocol.OutputResult)
	}{
		{"nar hash", func(o *protocol.OutputResult) { o.NarHash = nixhash.NewSHA256(sha256.Sum256([]byte("x"))).String() }},
		{"nar size", func(o *protocol.OutputResult) { o.NarSize++ }},
		{"file hash", func(o *protocol.OutputResult) { o.FileHash = nixhash.NewSHA256(sha256.Sum256([]byte("y"))).String() }},
	}
	for i, tt := range tamper {
		b := a.next()
		out := a.upload(b, "content")
		tt.f(&out)
		err := a.succeed(b, out)
		if !errors.Is(err, ErrVerification) {
			t.Fatalf("%s: %v, want ErrVerification", tt.name, err)
		}
		got := h.build(id)
		if len(got.Results) != 0 {
			t.Fatalf("%s: results recorded", tt.name)
		}
		if _, err := os.Stat(filepath.Join(h.c.UploadDir(a.id, id), "out.nar.zst")); !os.IsNotExist(err) {
			t.Fatalf("%s: bad upload not discarded", tt.name)
		}
		if i < 2 {
			if got.State != db.StateScheduled && got.State != db.StateAllocated {
				t.Fatalf("%s: state %s, want requeued", tt.name, got.State)
			}
			continue
		}
		if got.State != db.StateFailed || !strings.HasPrefix(got.FailureReason, "infrastructure: verification") {
			t.Fatalf("after 3 bad uploads: %s %q", got.State, got.FailureReason)
		}
		for _, at := range got.Attempts {
			if at.Kind != db.KindVerification {
				t.Errorf("attempt %d: kind %q, want verification", at.Number, at.Kind)
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(h.dir, "state", "cache", "nar"))
	for _, e := range entries {
		if !e.IsDir() { // the cache's spool directories
			t.Fatalf("cache has %s after only bad uploads", e.Name())
		}
	}
}

func TestSetupFailurePrefersAnotherAgent(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("s", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	a.next()
	b := h.agent("b", protocol.Hello{})
	if err := a.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: id, Reason: "no input", Missing: []string{"/nix/store/x"}}); err != nil {
		t.Fatal(err)
	}
	a.idle()
	if got := b.next(); got.Build != id {
		t.Fatal("build not moved to the other agent")
	}
	if err := b.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: id, Reason: "no input"}); err != nil {
		t.Fatal(err)
	}
	// Both failed; a takes it again since no one else can.
	if got := a.next(); got.Build != id {
		t.Fatal("build not retried")
	}
	if err := a.s.SetupFailure(context.Background(), &protocol.SetupFailure{Build: id, Reason: "no input"}); err != nil {
		t.Fatal(err)
	}
	if got := h.build(id); got.State != db.StateFailed || !strings.Contains(got.FailureReason, "setup-failure") {
		t.Fatalf("after 3 setup failures: %s %q", got.State, got.FailureReason)
	}
}

func TestBadSubmissionRecordsNothing(t *testing.T) {
	h := newHarness(t)
	good := h.drv("good", "x86_64-linux")
	garbage := h.storePath("garbage.drv")
	os.WriteFile(garbage, []byte("Derive(nonsense"), 0o644)
	for name, p := range map[string]string{
		"missing":      h.storePath("missing.drv"),
		"unparsable":   garbage,
		"not a drv":    h.storePath("plain"),
		"outside":      "/etc/passwd",
		"relative":     "store/x.drv",
		"parent trick": h.storeDir + "/../store/" + filepath.Base(good),
	} {
		_, err := h.c.Submit(context.Background(), Submission{Derivations: []string{good, p}})
		if !errors.Is(err, ErrBadSubmission) {
			t.Errorf("%s: %v, want ErrBadSubmission", name, err)
		}
	}
	bs, err := h.store.Builds(context.Background(), db.BuildFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 0 {
		t.Fatalf("%d builds recorded after failed submissions", len(bs))
	}
}

func TestDependenciesWait(t *testing.T) {
	h := newHarness(t)
	base := h.drv("base", "x86_64-linux")
	top := h.drv("top", "x86_64-linux", withInput(base))
	ids := h.submit(0, top, base)
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	b := a.next()
	if b.Build != ids[1] {
		t.Fatal("dependent dispatched before its input")
	}
	a.idle()
	if err := a.succeed(b, a.upload(b, "base")); err != nil {
		t.Fatal(err)
	}
	if a.next().Build != ids[0] {
		t.Fatal("dependent not released after its input succeeded")
	}
}

func TestCancelTellsAgent(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("c", "x86_64-linux"))[0]
	h.clk.Advance(time.Second)
	queued := h.submit(0, h.drv("c2", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	a.next()
	if err := h.c.Cancel(context.Background(), queued); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if m, ok := a.nextMsg().(*protocol.Cancel); !ok || m.Build != id {
		t.Fatalf("agent got %T %+v, want cancel of %s", m, m, id)
	}
	a.idle() // the canceled queued build is never pushed
	if err := a.s.Started(context.Background(), &protocol.Started{Build: id}); !errors.Is(err, ErrNotYourBuild) {
		t.Fatalf("report on a canceled build: %v", err)
	}
}

func TestRestartRebuildsQueue(t *testing.T) {
	h := newHarness(t)
	ids := h.submit(0, h.drv("q1", "x86_64-linux"), h.drv("q2", "x86_64-linux"))
	h.c.Close()
	h.start()
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 2})
	got := map[string]bool{a.next().Build: true, a.next().Build: true}
	if !got[ids[0]] || !got[ids[1]] {
		t.Fatalf("after restart got %v", got)
	}
}

func TestFailedInputFailsDependents(t *testing.T) {
	h := newHarness(t)
	base := h.drv("base", "x86_64-linux")
	mid := h.drv("mid", "x86_64-linux", withInput(base))
	top := h.drv("top", "x86_64-linux", withInput(mid))
	ids := h.submit(0, base, mid, top)
	a := h.agent("a", protocol.Hello{MaxParallelBuilds: 3})
	b := a.next()
	if b.Build != ids[0] {
		t.Fatal("input not dispatched first")
	}
	a.fail(b.Build)
	for _, id := range ids[1:] {
		got, err := h.c.Wait(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != db.StateFailedDependency || !strings.Contains(got.FailureReason, "failed") {
			t.Fatalf("dependent %s: %s %q", id, got.State, got.FailureReason)
		}
	}
	a.idle()
	if st := h.c.Status(); st.Blocked != 0 || len(st.Queued) != 0 {
		t.Fatalf("queue not empty: %+v", st)
	}
}

func TestMissedHeartbeatsEndSession(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("hb", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	a.next()
	closed := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_, err := a.s.Next(ctx)
		return errors.Is(err, ErrSessionClosed)
	}
	// The harness heartbeat is an hour; three silent hours end the session,
	// and the grace period after that requeues the build.
	h.eventually(time.Hour, closed)
	if h.c.Connected(a.id) {
		t.Fatal("agent still listed as connected")
	}
	h.eventually(grace, func() bool { return h.build(id).State == db.StateScheduled })
}

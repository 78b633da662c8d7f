// Package dbtest is the behavioural suite every db.Store implementation
// must pass. Backends call Run from their own tests with a constructor that
// returns a fresh, empty store.
package dbtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// Run runs the suite; open must return a new empty store for each call and
// arrange for it to be closed (t.Cleanup) — Run does not close it.
func Run(t *testing.T, open func(t *testing.T) db.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s db.Store)
	}{
		{"Keys", testKeys},
		{"KeyValidation", testKeyValidation},
		{"Agents", testAgents},
		{"AgentKeysAtomic", testAgentKeysAtomic},
		{"CreateBuildsRoundTrip", testCreateBuildsRoundTrip},
		{"CreateBuildsAllOrNone", testCreateBuildsAllOrNone},
		{"Lifecycle", testLifecycle},
		{"IllegalTransitions", testIllegalTransitions},
		{"WrongAgent", testWrongAgent},
		{"NotFound", testNotFound},
		{"RequeueAndAttempts", testRequeueAndAttempts},
		{"Cancel", testCancel},
		{"FailBuild", testFailBuild},
		{"ResultsRoundTrip", testResultsRoundTrip},
		{"Filters", testFilters},
		{"BuildsPage", testBuildsPage},
		{"AgentAttemptCounts", testAgentAttemptCounts},
		{"RunnableAndOnAgent", testRunnableAndOnAgent},
		{"ConcurrentTransitions", testConcurrentTransitions},
		{"FailDependency", testFailDependency},
		{"FailDependencies", testFailDependencies},
		{"Scheduling", testScheduling},
		{"AllocateBuildFor", testAllocateBuildFor},
		{"InputDerivations", testInputDerivations},
		{"ScheduledBuildsPage", testScheduledBuildsPage},
		{"ConcurrentReadsAndWrites", testConcurrentReadsAndWrites},
		{"Events", testEvents},
		{"SucceedImpliesStart", testSucceedImpliesStart},
		{"SetupFailBuild", testSetupFailBuild},
		{"AttemptHardware", testAttemptHardware},
		{"AttemptPhases", testAttemptPhases},
		{"HookProgress", testHookProgress},
		{"EventRetention", testEventRetention},
		{"EventRetentionHooks", testEventRetentionHooks},
		{"Pins", testPins},
		{"CacheAccess", testCacheAccess},
		{"BuildRootsAndDelete", testBuildRootsAndDelete},
		{"ArchiveAndDeleteAgent", testArchiveAndDeleteAgent},
		{"Checks", testChecks},
		{"ChecksSummary", testChecksSummary},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// t0 is a fixed instant with millisecond precision, the finest that
// backends must keep.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func ctxFor(t *testing.T) context.Context { return t.Context() }

func mustErrIs(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
	if !got.IsZero() && got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", what, got.Location())
	}
}

func adminKey(n int) db.Key {
	return db.Key{
		Fingerprint:   fmt.Sprintf("SHA256:admin%03d", n),
		AuthorizedKey: fmt.Sprintf("ssh-ed25519 AAAAadmin%03d", n),
		Role:          db.RoleAdmin,
		Comment:       fmt.Sprintf("admin %d", n),
		CreatedAt:     at(n),
	}
}

func agentKey(agent string, n int) db.Key {
	return db.Key{
		Fingerprint:   fmt.Sprintf("SHA256:%s-%d", agent, n),
		AuthorizedKey: fmt.Sprintf("ssh-ed25519 AAAA%s%d", agent, n),
		Role:          db.RoleAgent,
		AgentID:       agent,
		CreatedAt:     at(n),
	}
}

func newAgent(t *testing.T, s db.Store, id string) {
	t.Helper()
	must(t, "CreateAgent "+id, s.CreateAgent(ctxFor(t), db.Agent{ID: id, Name: "name-" + id, Active: true, CreatedAt: t0}))
}

func newBuild(id string, sec int) db.NewBuild {
	return db.NewBuild{
		ID:               id,
		Derivation:       "/nix/store/" + id + "-x.drv",
		System:           "x86_64-linux",
		Priority:         0,
		Tags:             []db.Tag{{Key: "jobset", Value: "main"}, {Key: "job", Value: id}},
		RequiredFeatures: []string{"kvm", "big-parallel"},
		Outputs: []db.DerivationOutput{
			{Name: "out", Path: "/nix/store/" + id + "-out"},
			{Name: "dev", Path: "/nix/store/" + id + "-dev"},
		},
		CreatedAt: at(sec),
	}
}

func createBuilds(t *testing.T, s db.Store, bs ...db.NewBuild) {
	t.Helper()
	must(t, "CreateBuilds", s.CreateBuilds(ctxFor(t), bs))
}

func state(t *testing.T, s db.Store, id string) db.BuildState {
	t.Helper()
	b, err := s.Build(ctxFor(t), id)
	must(t, "Build "+id, err)
	return b.State
}

func testKeys(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	ks, err := s.Keys(ctx)
	must(t, "Keys on empty store", err)
	if len(ks) != 0 {
		t.Fatalf("Keys on empty store: %v", ks)
	}
	for i := 3; i >= 1; i-- {
		must(t, "PutKey", s.PutKey(ctx, adminKey(i)))
	}
	reader := db.Key{Fingerprint: "SHA256:reader", AuthorizedKey: "ssh-ed25519 AAAAr", Role: db.RoleReader, CreatedAt: at(10)}
	must(t, "PutKey reader", s.PutKey(ctx, reader))

	got, err := s.Key(ctx, adminKey(2).Fingerprint)
	must(t, "Key", err)
	sameTime(t, "CreatedAt", got.CreatedAt, adminKey(2).CreatedAt)
	got.CreatedAt = adminKey(2).CreatedAt
	if !reflect.DeepEqual(got, adminKey(2)) {
		t.Errorf("Key round trip: got %+v, want %+v", got, adminKey(2))
	}

	dup := adminKey(1)
	dup.Role = db.RoleReader
	mustErrIs(t, "PutKey duplicate", s.PutKey(ctx, dup), db.ErrExists)
	if got, _ := s.Key(ctx, dup.Fingerprint); got.Role != db.RoleAdmin {
		t.Errorf("duplicate PutKey changed the key: role %s", got.Role)
	}

	ks, err = s.Keys(ctx)
	must(t, "Keys", err)
	if len(ks) != 4 {
		t.Fatalf("Keys: got %d, want 4", len(ks))
	}

	must(t, "DeleteKey", s.DeleteKey(ctx, adminKey(2).Fingerprint))
	_, err = s.Key(ctx, adminKey(2).Fingerprint)
	mustErrIs(t, "Key after delete", err, db.ErrNotFound)
	mustErrIs(t, "DeleteKey again", s.DeleteKey(ctx, adminKey(2).Fingerprint), db.ErrNotFound)
	_, err = s.Key(ctx, "SHA256:nope")
	mustErrIs(t, "Key unknown", err, db.ErrNotFound)
	// A deleted fingerprint may be recorded again.
	must(t, "PutKey after delete", s.PutKey(ctx, adminKey(2)))
}

func testKeyValidation(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	bad := []struct {
		name string
		key  db.Key
	}{
		{"no fingerprint", db.Key{AuthorizedKey: "x", Role: db.RoleAdmin}},
		{"unknown role", db.Key{Fingerprint: "SHA256:a", Role: "root"}},
		{"agent role without agent", db.Key{Fingerprint: "SHA256:b", Role: db.RoleAgent}},
		{"admin bound to agent", db.Key{Fingerprint: "SHA256:c", Role: db.RoleAdmin, AgentID: "a1"}},
	}
	for _, tc := range bad {
		if err := s.PutKey(ctx, tc.key); err == nil {
			t.Errorf("PutKey %s: accepted", tc.name)
		}
	}
	mustErrIs(t, "PutKey for unknown agent", s.PutKey(ctx, agentKey("ghost", 1)), db.ErrNotFound)
	ks, err := s.Keys(ctx)
	must(t, "Keys", err)
	if len(ks) != 0 {
		t.Errorf("invalid keys were recorded: %v", ks)
	}
}

func testAgents(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	a := db.Agent{ID: "a1", Name: "builder-1", Active: true, CreatedAt: at(1)}
	must(t, "CreateAgent", s.CreateAgent(ctx, a, agentKey("a1", 1), agentKey("a1", 2)))
	mustErrIs(t, "CreateAgent duplicate", s.CreateAgent(ctx, a), db.ErrExists)

	got, err := s.Agent(ctx, "a1")
	must(t, "Agent", err)
	if got.ID != a.ID || got.Name != a.Name || !got.Active || !got.LastSeenAt.IsZero() {
		t.Errorf("Agent: got %+v, want %+v", got, a)
	}
	sameTime(t, "Agent.CreatedAt", got.CreatedAt, a.CreatedAt)

	k, err := s.Key(ctx, agentKey("a1", 2).Fingerprint)
	must(t, "agent key", err)
	if k.Role != db.RoleAgent || k.AgentID != "a1" {
		t.Errorf("agent key: %+v", k)
	}

	must(t, "SetAgentActive", s.SetAgentActive(ctx, "a1", false))
	must(t, "TouchAgent", s.TouchAgent(ctx, "a1", at(50)))
	got, err = s.Agent(ctx, "a1")
	must(t, "Agent", err)
	if got.Active {
		t.Errorf("Active after SetAgentActive(false)")
	}
	sameTime(t, "LastSeenAt", got.LastSeenAt, at(50))

	// An agent key with an empty AgentID is bound to the new agent.
	k3 := agentKey("a2", 1)
	k3.AgentID = ""
	must(t, "CreateAgent a2", s.CreateAgent(ctx, db.Agent{ID: "a2", Name: "builder-2", CreatedAt: at(2)}, k3))
	if k, err := s.Key(ctx, k3.Fingerprint); err != nil || k.AgentID != "a2" {
		t.Errorf("key bound to a2: %+v, %v", k, err)
	}

	as, err := s.Agents(ctx)
	must(t, "Agents", err)
	if len(as) != 2 || as[0].ID != "a1" || as[1].ID != "a2" {
		t.Errorf("Agents: %+v", as)
	}

	_, err = s.Agent(ctx, "nope")
	mustErrIs(t, "Agent unknown", err, db.ErrNotFound)
	mustErrIs(t, "SetAgentActive unknown", s.SetAgentActive(ctx, "nope", true), db.ErrNotFound)
	mustErrIs(t, "TouchAgent unknown", s.TouchAgent(ctx, "nope", at(1)), db.ErrNotFound)
}

func testAgentKeysAtomic(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	must(t, "PutKey", s.PutKey(ctx, adminKey(1)))
	// The second key collides with an existing fingerprint: neither the
	// agent nor its first key may be recorded.
	k2 := agentKey("a1", 2)
	k2.Fingerprint = adminKey(1).Fingerprint
	err := s.CreateAgent(ctx, db.Agent{ID: "a1", Name: "x", CreatedAt: t0}, agentKey("a1", 1), k2)
	mustErrIs(t, "CreateAgent with taken key", err, db.ErrExists)
	_, err = s.Agent(ctx, "a1")
	mustErrIs(t, "agent after failed CreateAgent", err, db.ErrNotFound)
	_, err = s.Key(ctx, agentKey("a1", 1).Fingerprint)
	mustErrIs(t, "first key after failed CreateAgent", err, db.ErrNotFound)

	// A key for another agent is refused before anything is written.
	if err := s.CreateAgent(ctx, db.Agent{ID: "a2", Name: "y", CreatedAt: t0}, agentKey("other", 1)); err == nil {
		t.Errorf("CreateAgent accepted a key bound to another agent")
	}
	if _, err := s.Agent(ctx, "a2"); !errors.Is(err, db.ErrNotFound) {
		t.Errorf("agent a2 recorded despite a bad key: %v", err)
	}
}

func testCreateBuildsRoundTrip(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	full := newBuild("b1", 1)
	full.Priority = 7
	bare := db.NewBuild{ID: "b2", Derivation: "/nix/store/b2.drv", System: "aarch64-linux", CreatedAt: at(2)}
	createBuilds(t, s, full, bare)
	must(t, "CreateBuilds empty batch", s.CreateBuilds(ctx, nil))

	got, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if !reflect.DeepEqual(got.NewBuild, full) {
		t.Errorf("Build b1:\n got  %+v\n want %+v", got.NewBuild, full)
	}
	sameTime(t, "CreatedAt", got.CreatedAt, full.CreatedAt)
	if got.State != db.StateScheduled || got.AgentID != "" || !got.StartedAt.IsZero() || !got.EndedAt.IsZero() ||
		got.FailureReason != "" || len(got.Attempts) != 0 || len(got.Results) != 0 {
		t.Errorf("new build: %+v", got)
	}
	got, err = s.Build(ctx, "b2")
	must(t, "Build", err)
	if got.ID != "b2" || got.System != "aarch64-linux" || len(got.Tags)+len(got.RequiredFeatures)+len(got.Outputs) != 0 {
		t.Errorf("Build b2: %+v", got)
	}
	// Invalid builds are refused: no id, repeated output name.
	bad := newBuild("", 3)
	if err := s.CreateBuilds(ctx, []db.NewBuild{bad}); err == nil {
		t.Errorf("CreateBuilds accepted an empty id")
	}
	bad = newBuild("b3", 3)
	bad.Outputs = append(bad.Outputs, db.DerivationOutput{Name: "out", Path: "/nix/store/other"})
	if err := s.CreateBuilds(ctx, []db.NewBuild{bad}); err == nil {
		t.Errorf("CreateBuilds accepted a repeated output name")
	}
	_, err = s.Build(ctx, "b3")
	mustErrIs(t, "invalid build recorded", err, db.ErrNotFound)
}

func testCreateBuildsAllOrNone(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	createBuilds(t, s, newBuild("old", 0))
	cases := []struct {
		name  string
		batch []db.NewBuild
	}{
		{"duplicate within batch", []db.NewBuild{newBuild("n1", 1), newBuild("n2", 2), newBuild("n1", 3)}},
		{"duplicate of recorded build", []db.NewBuild{newBuild("n1", 1), newBuild("n2", 2), newBuild("old", 3)}},
	}
	for _, tc := range cases {
		err := s.CreateBuilds(ctx, tc.batch)
		mustErrIs(t, tc.name, err, db.ErrExists)
		for _, id := range []string{"n1", "n2"} {
			if _, err := s.Build(ctx, id); !errors.Is(err, db.ErrNotFound) {
				t.Errorf("%s: build %s recorded (err %v)", tc.name, id, err)
			}
		}
	}
	bs, err := s.Builds(ctx, db.BuildFilter{})
	must(t, "Builds", err)
	if len(bs) != 1 {
		t.Errorf("Builds after failed batches: %d, want 1", len(bs))
	}
	// The old build kept its original fields.
	if b, _ := s.Build(ctx, "old"); !b.CreatedAt.Equal(at(0)) {
		t.Errorf("old build changed: %+v", b)
	}
}

func testLifecycle(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("b1", 0))

	must(t, "AllocateBuild", allocateBuild(ctx, s, "b1", "a1", at(10)))
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if b.State != db.StateAllocated || b.AgentID != "a1" || len(b.Attempts) != 1 {
		t.Fatalf("after allocate: %+v", b)
	}
	a := b.Attempts[0]
	if a.Number != 1 || a.AgentID != "a1" || a.Outcome != "" || !a.StartedAt.IsZero() {
		t.Errorf("attempt after allocate: %+v", a)
	}
	sameTime(t, "AllocatedAt", a.AllocatedAt, at(10))

	must(t, "StartBuild", startBuild(ctx, s, "b1", "a1", at(11)))
	b, _ = s.Build(ctx, "b1")
	if b.State != db.StateStarted {
		t.Fatalf("after start: %s", b.State)
	}
	sameTime(t, "Build.StartedAt", b.StartedAt, at(11))
	sameTime(t, "Attempt.StartedAt", b.Attempts[0].StartedAt, at(11))

	res := []db.OutputResult{{Name: "out", Path: "/nix/store/b1-out", NarHash: "sha256:abc", NarSize: 10,
		FileHash: "sha256:def", FileSize: 5, Compression: "zstd", File: "nar/def.nar.zst"}}
	must(t, "SucceedBuild", s.SucceedBuild(ctx, "b1", "a1", at(20), res))
	b, _ = s.Build(ctx, "b1")
	if b.State != db.StateSucceeded || b.FailureReason != "" || len(b.Results) != 1 {
		t.Fatalf("after succeed: %+v", b)
	}
	sameTime(t, "Build.EndedAt", b.EndedAt, at(20))
	if a := b.Attempts[0]; a.Outcome != "succeeded" || !a.EndedAt.Equal(at(20)) {
		t.Errorf("attempt after succeed: %+v", a)
	}
	if !b.State.Terminal() {
		t.Errorf("succeeded is not terminal")
	}
}

func testIllegalTransitions(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	res := []db.OutputResult{{Name: "out", Path: "/nix/store/x"}}
	// Each case drives a fresh build to a state, then tries an illegal step.
	setups := map[db.BuildState]func(id string){
		db.StateScheduled: func(id string) {},
		db.StateAllocated: func(id string) { must(t, "allocate", allocateBuild(ctx, s, id, "a1", at(1))) },
		db.StateStarted: func(id string) {
			must(t, "allocate", allocateBuild(ctx, s, id, "a1", at(1)))
			must(t, "start", startBuild(ctx, s, id, "a1", at(2)))
		},
		db.StateSucceeded: func(id string) {
			must(t, "allocate", allocateBuild(ctx, s, id, "a1", at(1)))
			must(t, "start", startBuild(ctx, s, id, "a1", at(2)))
			must(t, "succeed", s.SucceedBuild(ctx, id, "a1", at(3), res))
		},
		db.StateFailed: func(id string) {
			must(t, "allocate", allocateBuild(ctx, s, id, "a1", at(1)))
			must(t, "fail", s.FailBuild(ctx, id, "a1", at(3), db.KindBuild, "build", 1))
		},
		db.StateCanceled: func(id string) { must(t, "cancel", s.CancelBuild(ctx, id, at(1))) },
	}
	ops := map[string]func(id string) error{
		"allocate": func(id string) error { return allocateBuild(ctx, s, id, "a1", at(9)) },
		"start":    func(id string) error { return startBuild(ctx, s, id, "a1", at(9)) },
		"succeed":  func(id string) error { return s.SucceedBuild(ctx, id, "a1", at(9), res) },
		"fail":     func(id string) error { return s.FailBuild(ctx, id, "a1", at(9), db.KindBuild, "x", 1) },
		"requeue":  func(id string) error { return s.RequeueBuild(ctx, id, "a1", at(9), db.KindInfrastructure, "x") },
		"cancel":   func(id string) error { return s.CancelBuild(ctx, id, at(9)) },
	}
	legal := map[db.BuildState]map[string]bool{
		db.StateScheduled: {"allocate": true, "cancel": true},
		db.StateAllocated: {"start": true, "succeed": true, "fail": true, "requeue": true, "cancel": true},
		db.StateStarted:   {"succeed": true, "fail": true, "requeue": true, "cancel": true},
	}
	n := 0
	for from, setup := range setups {
		for op, do := range ops {
			n++
			id := fmt.Sprintf("b%d-%s-%s", n, from, op)
			createBuilds(t, s, newBuild(id, n))
			setup(id)
			err := do(id)
			if legal[from][op] {
				if err != nil {
					t.Errorf("%s from %s: %v", op, from, err)
				}
				continue
			}
			if !errors.Is(err, db.ErrConflict) {
				t.Errorf("%s from %s: got %v, want ErrConflict", op, from, err)
			}
			if got := state(t, s, id); got != from {
				t.Errorf("%s from %s: state changed to %s", op, from, got)
			}
		}
	}
}

func testWrongAgent(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("b1", 0))
	must(t, "allocate", allocateBuild(ctx, s, "b1", "a1", at(1)))
	mustErrIs(t, "start by a2", startBuild(ctx, s, "b1", "a2", at(2)), db.ErrConflict)
	mustErrIs(t, "start by nobody", startBuild(ctx, s, "b1", "", at(2)), db.ErrConflict)
	mustErrIs(t, "fail by a2", s.FailBuild(ctx, "b1", "a2", at(2), db.KindBuild, "x", 1), db.ErrConflict)
	mustErrIs(t, "requeue by a2", s.RequeueBuild(ctx, "b1", "a2", at(2), db.KindInfrastructure, "x"), db.ErrConflict)
	must(t, "start by a1", startBuild(ctx, s, "b1", "a1", at(2)))
	mustErrIs(t, "succeed by a2", s.SucceedBuild(ctx, "b1", "a2", at(3), nil), db.ErrConflict)
	mustErrIs(t, "fail by a2", s.FailBuild(ctx, "b1", "a2", at(3), db.KindBuild, "x", 1), db.ErrConflict)
	mustErrIs(t, "requeue by a2", s.RequeueBuild(ctx, "b1", "a2", at(3), db.KindInfrastructure, "x"), db.ErrConflict)
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if b.State != db.StateStarted || b.AgentID != "a1" || len(b.Attempts) != 1 || b.Attempts[0].Outcome != "" {
		t.Errorf("after wrong-agent attempts: %+v", b)
	}
	// After a requeue, the previous holder no longer holds the build.
	must(t, "requeue by a1", s.RequeueBuild(ctx, "b1", "a1", at(4), db.KindInfrastructure, "lost"))
	mustErrIs(t, "fail by old holder", s.FailBuild(ctx, "b1", "a1", at(5), db.KindBuild, "x", 1), db.ErrConflict)
	must(t, "allocate to a2", allocateBuild(ctx, s, "b1", "a2", at(6)))
	mustErrIs(t, "start by old holder", startBuild(ctx, s, "b1", "a1", at(7)), db.ErrConflict)
}

func testNotFound(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("b1", 0))
	_, err := s.Build(ctx, "nope")
	mustErrIs(t, "Build", err, db.ErrNotFound)
	mustErrIs(t, "AllocateBuild", allocateBuild(ctx, s, "nope", "a1", at(1)), db.ErrNotFound)
	mustErrIs(t, "StartBuild", startBuild(ctx, s, "nope", "a1", at(1)), db.ErrNotFound)
	mustErrIs(t, "SucceedBuild", s.SucceedBuild(ctx, "nope", "a1", at(1), nil), db.ErrNotFound)
	mustErrIs(t, "FailBuild", s.FailBuild(ctx, "nope", "a1", at(1), db.KindBuild, "x", 1), db.ErrNotFound)
	mustErrIs(t, "RequeueBuild", s.RequeueBuild(ctx, "nope", "a1", at(1), db.KindInfrastructure, "x"), db.ErrNotFound)
	mustErrIs(t, "CancelBuild", s.CancelBuild(ctx, "nope", at(1)), db.ErrNotFound)
	mustErrIs(t, "AllocateBuild to unknown agent", allocateBuild(ctx, s, "b1", "ghost", at(1)), db.ErrNotFound)
	if got := state(t, s, "b1"); got != db.StateScheduled {
		t.Errorf("allocation to unknown agent changed state to %s", got)
	}
}

func testRequeueAndAttempts(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("b1", 0))

	must(t, "allocate 1", allocateBuild(ctx, s, "b1", "a1", at(1)))
	must(t, "requeue 1", s.RequeueBuild(ctx, "b1", "a1", at(2), db.KindSetup, "setup-failure: missing input"))
	must(t, "allocate 2", allocateBuild(ctx, s, "b1", "a2", at(3)))
	must(t, "start 2", startBuild(ctx, s, "b1", "a2", at(4)))
	must(t, "requeue 2", s.RequeueBuild(ctx, "b1", "a2", at(5), db.KindInfrastructure, "agent absent"))
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if b.State != db.StateScheduled || !b.StartedAt.IsZero() || !b.EndedAt.IsZero() {
		t.Errorf("after requeue: %+v", b)
	}
	must(t, "allocate 3", allocateBuild(ctx, s, "b1", "a1", at(6)))
	must(t, "start 3", startBuild(ctx, s, "b1", "a1", at(7)))
	must(t, "succeed 3", s.SucceedBuild(ctx, "b1", "a1", at(8), nil))

	b, err = s.Build(ctx, "b1")
	must(t, "Build", err)
	want := []db.Attempt{
		{Number: 1, AgentID: "a1", AllocatedAt: at(1), EndedAt: at(2), Outcome: db.OutcomeRequeued, Kind: db.KindSetup, Reason: "setup-failure: missing input"},
		{Number: 2, AgentID: "a2", AllocatedAt: at(3), StartedAt: at(4), EndedAt: at(5), Outcome: db.OutcomeRequeued, Kind: db.KindInfrastructure, Reason: "agent absent"},
		{Number: 3, AgentID: "a1", AllocatedAt: at(6), StartedAt: at(7), EndedAt: at(8), Outcome: "succeeded"},
	}
	if len(b.Attempts) != len(want) {
		t.Fatalf("attempts: got %d, want %d: %+v", len(b.Attempts), len(want), b.Attempts)
	}
	for i, w := range want {
		g := b.Attempts[i]
		if g.Number != w.Number || g.AgentID != w.AgentID || g.Outcome != w.Outcome || g.Kind != w.Kind || g.Reason != w.Reason || g.ExitCode != 0 {
			t.Errorf("attempt %d: got %+v, want %+v", i+1, g, w)
		}
		sameTime(t, fmt.Sprintf("attempt %d AllocatedAt", i+1), g.AllocatedAt, w.AllocatedAt)
		sameTime(t, fmt.Sprintf("attempt %d StartedAt", i+1), g.StartedAt, w.StartedAt)
		sameTime(t, fmt.Sprintf("attempt %d EndedAt", i+1), g.EndedAt, w.EndedAt)
	}
	if b.State != db.StateSucceeded || b.AgentID != "a1" {
		t.Errorf("final: %s on %s", b.State, b.AgentID)
	}
	sameTime(t, "StartedAt is the last attempt's", b.StartedAt, at(7))
}

func testCancel(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("sched", 0), newBuild("alloc", 1), newBuild("start", 2))
	must(t, "allocate", allocateBuild(ctx, s, "alloc", "a1", at(3)))
	must(t, "allocate", allocateBuild(ctx, s, "start", "a1", at(3)))
	must(t, "start", startBuild(ctx, s, "start", "a1", at(4)))
	for _, id := range []string{"sched", "alloc", "start"} {
		must(t, "cancel "+id, s.CancelBuild(ctx, id, at(10)))
		b, err := s.Build(ctx, id)
		must(t, "Build", err)
		if b.State != db.StateCanceled {
			t.Errorf("%s: state %s", id, b.State)
		}
		sameTime(t, id+" EndedAt", b.EndedAt, at(10))
		if id == "sched" {
			if len(b.Attempts) != 0 {
				t.Errorf("cancel of scheduled build opened an attempt: %+v", b.Attempts)
			}
			continue
		}
		if len(b.Attempts) != 1 || b.Attempts[0].Outcome != "canceled" || !b.Attempts[0].EndedAt.Equal(at(10)) {
			t.Errorf("%s attempts: %+v", id, b.Attempts)
		}
	}
	// Finishing a canceled build is a conflict: the agent's late report
	// must not resurrect it.
	mustErrIs(t, "succeed canceled", s.SucceedBuild(ctx, "start", "a1", at(11), nil), db.ErrConflict)
	mustErrIs(t, "fail canceled", s.FailBuild(ctx, "start", "a1", at(11), db.KindBuild, "x", 1), db.ErrConflict)
	mustErrIs(t, "requeue canceled", s.RequeueBuild(ctx, "alloc", "a1", at(11), db.KindInfrastructure, "x"), db.ErrConflict)
	mustErrIs(t, "cancel canceled", s.CancelBuild(ctx, "sched", at(11)), db.ErrConflict)
	mustErrIs(t, "allocate canceled", allocateBuild(ctx, s, "sched", "a1", at(11)), db.ErrConflict)
}

func testFailBuild(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("b1", 0))
	must(t, "allocate", allocateBuild(ctx, s, "b1", "a1", at(1)))
	must(t, "start", startBuild(ctx, s, "b1", "a1", at(2)))
	must(t, "fail", s.FailBuild(ctx, "b1", "a1", at(3), db.KindBuild, "timeout", 137))
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if b.State != db.StateFailed || b.FailureReason != "timeout" || !b.State.Terminal() {
		t.Errorf("failed build: %+v", b)
	}
	sameTime(t, "EndedAt", b.EndedAt, at(3))
	if a := b.Attempts[0]; a.Outcome != "failed" || a.Kind != db.KindBuild || a.Reason != "timeout" || a.ExitCode != 137 {
		t.Errorf("attempt: %+v", a)
	}
	mustErrIs(t, "fail twice", s.FailBuild(ctx, "b1", "a1", at(4), db.KindBuild, "x", 1), db.ErrConflict)
	// A kind that is not db's is refused before anything is written.
	createBuilds(t, s, newBuild("b2", 0))
	must(t, "allocate b2", allocateBuild(ctx, s, "b2", "a1", at(5)))
	for name, err := range map[string]error{
		"fail":       s.FailBuild(ctx, "b2", "a1", at(6), db.AttemptKind("nonsense"), "x", 1),
		"requeue":    s.RequeueBuild(ctx, "b2", "a1", at(6), db.KindNone, "x"),
		"setup fail": s.SetupFailBuild(ctx, "b2", "a1", at(6), db.AttemptKind("nonsense"), "x", nil, false),
	} {
		if err == nil {
			t.Errorf("%s with an invalid kind: no error", name)
		}
	}
	if got := state(t, s, "b2"); got != db.StateAllocated {
		t.Errorf("b2 after refused transitions: %s, want allocated", got)
	}
}

func testResultsRoundTrip(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("b1", 0))
	must(t, "allocate", allocateBuild(ctx, s, "b1", "a1", at(1)))
	must(t, "start", startBuild(ctx, s, "b1", "a1", at(2)))
	res := []db.OutputResult{
		{Name: "out", Path: "/nix/store/b1-out", NarHash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
			NarSize: 1 << 40, FileHash: "sha256:0000", FileSize: 123456, Compression: "zstd", File: "nar/0000.nar.zst",
			References: []string{"/nix/store/zzz-glibc", "/nix/store/aaa-dep", "/nix/store/b1-out"}},
		{Name: "dev", Path: "/nix/store/b1-dev", NarHash: "sha256:2222", NarSize: 1, FileHash: "sha256:3333",
			FileSize: 1, Compression: "none", File: "nar/3333.nar"},
	}
	must(t, "succeed", s.SucceedBuild(ctx, "b1", "a1", at(3), res))
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if !reflect.DeepEqual(b.Results, res) {
		t.Errorf("results:\n got  %+v\n want %+v", b.Results, res)
	}

	createBuilds(t, s, newBuild("b2", 1))
	must(t, "allocate", allocateBuild(ctx, s, "b2", "a1", at(1)))
	must(t, "start", startBuild(ctx, s, "b2", "a1", at(2)))
	dup := []db.OutputResult{{Name: "out", Path: "/a"}, {Name: "out", Path: "/b"}}
	if err := s.SucceedBuild(ctx, "b2", "a1", at(3), dup); err == nil {
		t.Errorf("SucceedBuild accepted a repeated output name")
	}
	if b, _ := s.Build(ctx, "b2"); b.State != db.StateStarted || len(b.Results) != 0 {
		t.Errorf("rejected results changed the build: %+v", b)
	}
}

func ids(bs []db.Build) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

func testFilters(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	// b4 and b5 share a creation time: submission order breaks the tie.
	createBuilds(t, s, newBuild("b1", 1), newBuild("b2", 2), newBuild("b3", 3))
	createBuilds(t, s, newBuild("b4", 4), newBuild("b5", 4))
	must(t, "allocate", allocateBuild(ctx, s, "b2", "a1", at(5)))
	must(t, "allocate", allocateBuild(ctx, s, "b3", "a2", at(5)))
	must(t, "allocate", allocateBuild(ctx, s, "b4", "a1", at(5)))
	must(t, "start", startBuild(ctx, s, "b4", "a1", at(6)))

	cases := []struct {
		f    db.BuildFilter
		want []string
	}{
		{db.BuildFilter{}, []string{"b5", "b4", "b3", "b2", "b1"}},
		{db.BuildFilter{Limit: 2}, []string{"b5", "b4"}},
		{db.BuildFilter{State: db.StateScheduled}, []string{"b5", "b1"}},
		{db.BuildFilter{State: db.StateAllocated}, []string{"b3", "b2"}},
		{db.BuildFilter{AgentID: "a1"}, []string{"b4", "b2"}},
		{db.BuildFilter{AgentID: "a1", State: db.StateAllocated}, []string{"b2"}},
		{db.BuildFilter{AgentID: "a1", Limit: 1}, []string{"b4"}},
		{db.BuildFilter{State: db.StateFailed}, []string{}},
		{db.BuildFilter{AgentID: "ghost"}, []string{}},
	}
	for _, tc := range cases {
		bs, err := s.Builds(ctx, tc.f)
		must(t, fmt.Sprintf("Builds(%+v)", tc.f), err)
		if got := ids(bs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Builds(%+v) = %v, want %v", tc.f, got, tc.want)
		}
		for _, b := range bs {
			if len(b.Tags) != 2 || len(b.RequiredFeatures) != 2 || len(b.Outputs) != 2 || b.Tags[1].Value != b.ID {
				t.Errorf("Builds(%+v): %s lacks its tags/features/outputs: %+v", tc.f, b.ID, b)
			}
		}
	}
}

func testRunnableAndOnAgent(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	page, _, err := s.ScheduledBuildsPage(ctx, 0, 100)
	must(t, "ScheduledBuildsPage empty", err)
	if len(page) != 0 {
		t.Errorf("ScheduledBuildsPage on empty store: %v", page)
	}
	mk := func(id string, sec, prio int) db.NewBuild {
		b := newBuild(id, sec)
		b.Priority = prio
		return b
	}
	createBuilds(t, s, mk("low-old", 1, 0), mk("high-new", 5, 10), mk("high-old", 2, 10), mk("low-new", 6, 0),
		mk("alloc", 3, 99), mk("started", 4, 99), mk("done", 0, 99), mk("canceled", 0, 99), mk("requeued", 7, 0))
	must(t, "allocate", allocateBuild(ctx, s, "alloc", "a1", at(10)))
	must(t, "allocate", allocateBuild(ctx, s, "started", "a1", at(10)))
	must(t, "start", startBuild(ctx, s, "started", "a1", at(11)))
	must(t, "allocate", allocateBuild(ctx, s, "done", "a1", at(10)))
	must(t, "fail", s.FailBuild(ctx, "done", "a1", at(11), db.KindBuild, "x", 1))
	must(t, "cancel", s.CancelBuild(ctx, "canceled", at(10)))
	must(t, "allocate", allocateBuild(ctx, s, "requeued", "a1", at(10)))
	must(t, "requeue", s.RequeueBuild(ctx, "requeued", "a1", at(11), db.KindInfrastructure, "x"))

	// The scheduled builds, requeued included, in recording order (the
	// in-memory queue orders them).
	page, _, err = s.ScheduledBuildsPage(ctx, 0, 100)
	must(t, "ScheduledBuildsPage", err)
	var got []string
	for _, b := range page {
		got = append(got, b.ID)
		if len(b.Tags) != 2 || len(b.RequiredFeatures) != 2 {
			t.Errorf("ScheduledBuildsPage: %s incomplete: %+v", b.ID, b)
		}
	}
	if want := []string{"low-old", "high-new", "high-old", "low-new", "requeued"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ScheduledBuildsPage = %v, want %v", got, want)
	}

	bs, err := s.BuildsOnAgent(ctx, "a1")
	must(t, "BuildsOnAgent", err)
	if got := ids(bs); !reflect.DeepEqual(got, []string{"alloc", "started"}) {
		t.Errorf("BuildsOnAgent(a1) = %v", got)
	}
	for _, b := range bs {
		if len(b.Outputs) != 2 || b.AgentID != "a1" {
			t.Errorf("BuildsOnAgent: %s incomplete: %+v", b.ID, b)
		}
	}
	for _, agent := range []string{"a2", "ghost"} {
		bs, err = s.BuildsOnAgent(ctx, agent)
		must(t, "BuildsOnAgent "+agent, err)
		if len(bs) != 0 {
			t.Errorf("BuildsOnAgent(%s) = %v", agent, ids(bs))
		}
	}
}

// testConcurrentTransitions races many goroutines on the same builds:
// exactly one allocation and one terminal transition may win.
func testConcurrentTransitions(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	const agents = 16
	for i := range agents {
		newAgent(t, s, fmt.Sprintf("a%d", i))
	}
	createBuilds(t, s, newBuild("b1", 0))

	race := func(what string, do func(i int) error) (winner int) {
		t.Helper()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
			start   = make(chan struct{})
		)
		for i := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := do(i)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, i)
				case !errors.Is(err, db.ErrConflict):
					t.Errorf("%s by %d: %v, want nil or ErrConflict", what, i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%s: %d winners %v, want exactly 1", what, len(winners), winners)
		}
		return winners[0]
	}

	w := race("allocate", func(i int) error { return allocateBuild(ctx, s, "b1", fmt.Sprintf("a%d", i), at(1)) })
	holder := fmt.Sprintf("a%d", w)
	// Every agent tries to start it; only the holder can, once.
	race("start", func(i int) error { return startBuild(ctx, s, "b1", fmt.Sprintf("a%d", i), at(2)) })
	// The holder's success races with cancels and failures.
	race("finish", func(i int) error {
		switch i % 3 {
		case 0:
			return s.CancelBuild(ctx, "b1", at(3))
		case 1:
			return s.SucceedBuild(ctx, "b1", holder, at(3), nil)
		default:
			return s.FailBuild(ctx, "b1", holder, at(3), db.KindBuild, "x", 1)
		}
	})
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if !b.State.Terminal() || len(b.Attempts) != 1 || b.AgentID != holder {
		t.Errorf("after races: %+v", b)
	}
}

// testFailDependency: a scheduled build moves to failed-dependency with
// its failed input recorded; other states and unknown builds are refused.
func testFailDependency(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("dep", 0), newBuild("alloc", 1))
	cause := db.DependencyFailure{ID: "dep", FailedInput: "/nix/store/b0-x.drv", FailedBuild: "b0"}
	must(t, "FailDependency", s.FailDependency(ctx, at(5), cause))
	b, err := s.Build(ctx, "dep")
	must(t, "Build", err)
	if b.State != db.StateFailedDependency || b.FailureReason != "dependency failed: input /nix/store/b0-x.drv (build b0)" || !b.State.Terminal() {
		t.Errorf("after FailDependency: %+v", b)
	}
	if b.FailedInput != cause.FailedInput || b.FailedBuild != cause.FailedBuild {
		t.Errorf("after FailDependency: failed input %q build %q, want %q %q", b.FailedInput, b.FailedBuild, cause.FailedInput, cause.FailedBuild)
	}
	sameTime(t, "EndedAt", b.EndedAt, at(5))
	mustErrIs(t, "FailDependency twice", s.FailDependency(ctx, at(6), db.DependencyFailure{ID: "dep", FailedInput: "x"}), db.ErrConflict)
	mustErrIs(t, "allocate failed-dependency", allocateBuild(ctx, s, "dep", "a1", at(6)), db.ErrConflict)
	mustErrIs(t, "cancel failed-dependency", s.CancelBuild(ctx, "dep", at(6)), db.ErrConflict)
	must(t, "allocate", allocateBuild(ctx, s, "alloc", "a1", at(6)))
	mustErrIs(t, "FailDependency of allocated", s.FailDependency(ctx, at(7), db.DependencyFailure{ID: "alloc", FailedInput: "x"}), db.ErrConflict)
	mustErrIs(t, "FailDependency unknown", s.FailDependency(ctx, at(7), db.DependencyFailure{ID: "nope", FailedInput: "x"}), db.ErrNotFound)
	bs, err := s.Builds(ctx, db.BuildFilter{State: db.StateFailedDependency})
	must(t, "Builds", err)
	if got := ids(bs); !reflect.DeepEqual(got, []string{"dep"}) {
		t.Errorf("Builds(failed-dependency) = %v", got)
	}
}

// testFailDependencies: one batch moves every scheduled build, skips (and
// reports) the allocated and unknown ones without failing the rest, and
// writes one failed-dependency event per moved build with its cause.
func testFailDependencies(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("d1", 0), newBuild("d2", 1), newBuild("d3", 2), newBuild("held", 3))
	must(t, "allocate", allocateBuild(ctx, s, "held", "a1", at(4)))
	skipped, err := s.FailDependencies(ctx, at(5), []db.DependencyFailure{
		{ID: "d1", FailedInput: "x", FailedBuild: "b0"},
		{ID: "held", FailedInput: "c"},
		{ID: "d2", FailedInput: "y", FailedBuild: "b0"},
		{ID: "nope", FailedInput: "c"},
		{ID: "d3", FailedInput: "z", FailedBuild: "b0"},
	})
	must(t, "FailDependencies", err)
	if len(skipped) != 2 {
		t.Errorf("skipped = %v, want held and nope", skipped)
	}
	mustErrIs(t, "skipped held", skipped["held"], db.ErrConflict)
	mustErrIs(t, "skipped nope", skipped["nope"], db.ErrNotFound)
	for id, input := range map[string]string{"d1": "x", "d2": "y", "d3": "z"} {
		cause := "dependency failed: input " + input + " (build b0)"
		b, err := s.Build(ctx, id)
		must(t, "Build", err)
		if b.State != db.StateFailedDependency || b.FailureReason != cause {
			t.Errorf("%s after FailDependencies: state %s, reason %q", id, b.State, b.FailureReason)
		}
		if b.FailedInput != input || b.FailedBuild != "b0" {
			t.Errorf("%s after FailDependencies: failed input %q build %q, want %q b0", id, b.FailedInput, b.FailedBuild, input)
		}
		sameTime(t, "EndedAt", b.EndedAt, at(5))
		es, err := s.Events(ctx, db.EventFilter{Build: id, Types: []db.EventType{db.EventFailedDependency}})
		must(t, "Events", err)
		if len(es) != 1 || es[0].Reason != cause || es[0].Derivation != "/nix/store/"+id+"-x.drv" || len(es[0].Tags) != 2 {
			t.Errorf("%s failed-dependency events: %+v", id, es)
		}
	}
	if got := state(t, s, "held"); got != db.StateAllocated {
		t.Errorf("held is %s, want allocated", got)
	}
	// A second batch over the same builds changes nothing and says why.
	skipped, err = s.FailDependencies(ctx, at(6), []db.DependencyFailure{{ID: "d1", FailedInput: "again"}})
	must(t, "FailDependencies again", err)
	mustErrIs(t, "again d1", skipped["d1"], db.ErrConflict)
	if skipped, err := s.FailDependencies(ctx, at(6), nil); err != nil || len(skipped) != 0 {
		t.Errorf("empty batch: %v, %v", skipped, err)
	}

	// More dependents than one statement binds, in an order that is not
	// the id order: every one moves, and the events follow deps' order.
	const many = 1100
	var (
		bs    []db.NewBuild
		batch []db.DependencyFailure
	)
	for i := range many {
		id := fmt.Sprintf("m%04d", i)
		bs = append(bs, newBuild(id, 10))
		// Every third input was canceled rather than failed: a cause of its own.
		batch = append(batch, db.DependencyFailure{ID: id, FailedInput: fmt.Sprintf("input %d", i%2), InputCanceled: i%3 == 0})
	}
	createBuilds(t, s, bs...)
	// Two were tried and requeued: their events name the agent and the
	// attempt, the others neither (a batch mixes NULL and set columns).
	for _, id := range []string{"m0000", "m0001"} {
		must(t, "allocate "+id, allocateBuild(ctx, s, id, "a1", at(10)))
		must(t, "requeue "+id, s.SetupFailBuild(ctx, id, "a1", at(10), db.KindSetup, "setup-failure: x", nil, false))
	}
	slices.Reverse(batch)
	skipped, err = s.FailDependencies(ctx, at(11), batch)
	must(t, "FailDependencies many", err)
	if len(skipped) != 0 {
		t.Errorf("many: skipped %d", len(skipped))
	}
	es, err := s.Events(ctx, db.EventFilter{Types: []db.EventType{db.EventFailedDependency}})
	must(t, "Events", err)
	var got []string
	for _, e := range es {
		if !strings.HasPrefix(e.Build, "m") {
			continue
		}
		got = append(got, e.Build+" "+e.Reason)
		wantAgent, wantAttempt := "", 0
		if e.Build == "m0000" || e.Build == "m0001" {
			wantAgent, wantAttempt = "a1", 1
		}
		if e.Agent != wantAgent || e.Attempt != wantAttempt || !e.At.Equal(at(11)) ||
			e.Derivation != "/nix/store/"+e.Build+"-x.drv" || e.System == "" || len(e.Tags) != 2 {
			t.Errorf("many: event of %s: %+v, want agent %q attempt %d", e.Build, e, wantAgent, wantAttempt)
		}
	}
	var want []string
	for _, d := range batch {
		want = append(want, d.ID+" "+d.Reason())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("many: %d events, want %d in deps order", len(got), len(want))
	}
	fd1, err := s.Builds(ctx, db.BuildFilter{State: db.StateFailedDependency})
	must(t, "Builds", err)
	if len(fd1) != many+3 {
		t.Errorf("many: %d failed-dependency builds, want %d", len(fd1), many+3)
	}
}

// testConcurrentReadsAndWrites mixes submissions, allocations and
// listings from many goroutines: nothing may fail (no "database is
// locked"), and every build ends allocated exactly once.
func testConcurrentReadsAndWrites(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	const writers, batches, perBatch = 4, 5, 20
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range batches {
				batch := make([]db.NewBuild, perBatch)
				for i := range batch {
					batch[i] = newBuild(fmt.Sprintf("w%d-%d-%d", w, n, i), n)
				}
				if err := s.CreateBuilds(ctx, batch); err != nil {
					errs <- err
					return
				}
				for _, b := range batch {
					if err := allocateBuild(ctx, s, b.ID, "a1", at(n)); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Builds(ctx, db.BuildFilter{Limit: 10}); err != nil {
					errs <- err
					return
				}
				if _, err := s.BuildsOnAgent(ctx, "a1"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	bs, err := s.BuildsOnAgent(ctx, "a1")
	must(t, "BuildsOnAgent", err)
	if len(bs) != writers*batches*perBatch {
		t.Errorf("allocated builds: %d, want %d", len(bs), writers*batches*perBatch)
	}
}

// testAllocateBuildFor: the allocation returns what the agent needs (as
// Build would read it afterwards), opens the attempt and records the
// event; unknown builds are not found.
func testAllocateBuildFor(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	nb := newBuild("b1", 0)
	nb.Priority, nb.TimeoutSeconds, nb.MaxSilentSeconds = 7, 3600, 300
	createBuilds(t, s, nb, newBuild("b2", 1))
	a, err := s.AllocateBuildFor(ctx, "b1", "a1", at(5))
	must(t, "AllocateBuildFor", err)
	want := db.Allocation{ID: "b1", Derivation: nb.Derivation, System: nb.System, Priority: 7, Attempt: 1,
		Outputs: nb.Outputs, TimeoutSeconds: 3600, MaxSilentSeconds: 300}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("AllocateBuildFor = %+v, want %+v", a, want)
	}
	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if b.State != db.StateAllocated || b.AgentID != "a1" || len(b.Attempts) != 1 {
		t.Errorf("after AllocateBuildFor: %+v", b)
	}
	es, err := s.Events(ctx, db.EventFilter{Build: "b1", Types: []db.EventType{db.EventAllocated}})
	must(t, "Events", err)
	if len(es) != 1 || es[0].Agent != "a1" || es[0].Attempt != 1 {
		t.Errorf("allocated events: %+v", es)
	}
	a2, err := s.AllocateBuildFor(ctx, "b2", "a1", at(6))
	must(t, "AllocateBuildFor b2", err)
	if a2.TimeoutSeconds != 0 || a2.MaxSilentSeconds != 0 || a2.Priority != 0 || len(a2.Outputs) != 2 {
		t.Errorf("AllocateBuildFor b2 = %+v", a2)
	}
	_, err = s.AllocateBuildFor(ctx, "b1", "a1", at(7))
	mustErrIs(t, "AllocateBuildFor twice", err, db.ErrConflict)
	_, err = s.AllocateBuildFor(ctx, "nope", "a1", at(7))
	mustErrIs(t, "AllocateBuildFor unknown build", err, db.ErrNotFound)
}

// testScheduling: build options round-trip, priorities change until a
// build ends, and builds are found by derivation.
func testScheduling(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	opt := newBuild("opt", 0)
	opt.DeferUntil = at(60)
	opt.TimeoutSeconds = 3600
	opt.MaxSilentSeconds = 300
	again := newBuild("again", 1)
	again.Derivation = opt.Derivation
	createBuilds(t, s, opt, again, newBuild("other", 2))
	b, err := s.Build(ctx, "opt")
	must(t, "Build", err)
	sameTime(t, "DeferUntil", b.DeferUntil, at(60))
	if b.TimeoutSeconds != 3600 || b.MaxSilentSeconds != 300 {
		t.Errorf("timeouts: %d %d", b.TimeoutSeconds, b.MaxSilentSeconds)
	}
	rs, _, err := s.ScheduledBuildsPage(ctx, 0, 100)
	must(t, "ScheduledBuildsPage", err)
	for _, r := range rs {
		if r.ID == "opt" {
			sameTime(t, "ScheduledBuildsPage DeferUntil", r.DeferUntil, at(60))
		}
		if r.ID == "other" && !r.DeferUntil.IsZero() {
			t.Errorf("other: DeferUntil %v, want zero", r.DeferUntil)
		}
	}

	must(t, "SetBuildPriority", s.SetBuildPriority(ctx, "opt", 7))
	must(t, "allocate", allocateBuild(ctx, s, "other", "a1", at(3)))
	must(t, "SetBuildPriority allocated", s.SetBuildPriority(ctx, "other", -2))
	if b, _ := s.Build(ctx, "opt"); b.Priority != 7 {
		t.Errorf("priority %d, want 7", b.Priority)
	}
	if b, _ := s.Build(ctx, "other"); b.Priority != -2 {
		t.Errorf("priority %d, want -2", b.Priority)
	}
	must(t, "cancel", s.CancelBuild(ctx, "again", at(4)))
	mustErrIs(t, "SetBuildPriority canceled", s.SetBuildPriority(ctx, "again", 1), db.ErrConflict)
	mustErrIs(t, "SetBuildPriority unknown", s.SetBuildPriority(ctx, "nope", 1), db.ErrNotFound)

	bs, err := s.BuildsForDerivations(ctx, []string{opt.Derivation, "/nix/store/none.drv"})
	must(t, "BuildsForDerivations", err)
	if got := ids(bs); !reflect.DeepEqual(got, []string{"again", "opt"}) {
		t.Errorf("BuildsForDerivations = %v, want [again opt]", got)
	}
	if bs[0].State != db.StateCanceled || bs[1].State != db.StateScheduled {
		t.Errorf("states %s %s", bs[0].State, bs[1].State)
	}
	bs, err = s.BuildsForDerivations(ctx, nil)
	must(t, "BuildsForDerivations(nil)", err)
	if len(bs) != 0 {
		t.Errorf("BuildsForDerivations(nil) = %v", ids(bs))
	}
}

// allocateBuild allocates a build where a test needs only the transition.
func allocateBuild(ctx context.Context, s db.Store, id, agentID string, at time.Time) error {
	_, err := s.AllocateBuildFor(ctx, id, agentID, at)
	return err
}

// startBuild starts a build with no hardware report.
func startBuild(ctx context.Context, s db.Store, id, agentID string, at time.Time) error {
	return s.StartBuildWith(ctx, id, agentID, at, db.Hardware{})
}

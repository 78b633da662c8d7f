package dbtest

import (
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/gbc-farm/gbc/db"
)

func eventTypes(es []db.Event) []db.EventType {
	out := make([]db.EventType, 0, len(es))
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}

// testEvents: every transition appends its event in order, with the
// build's details; filters and resumption by id work.
func testEvents(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	if last, err := s.LastEventID(ctx); err != nil || last != 0 {
		t.Errorf("LastEventID of an empty log: %d, %v; want 0", last, err)
	}
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("e1", 0), newBuild("e2", 1))
	must(t, "AllocateBuild", allocateBuild(ctx, s, "e1", "a1", at(10)))
	must(t, "StartBuild", startBuild(ctx, s, "e1", "a1", at(11)))
	res := []db.OutputResult{
		{Name: "out", Path: "/nix/store/e1-out", NarHash: "sha256:abc", NarSize: 10, FileHash: "sha256:def", FileSize: 5, Compression: "zstd", File: "f1"},
		{Name: "dev", Path: "/nix/store/e1-dev", NarHash: "sha256:abd", NarSize: 11, FileHash: "sha256:deg", FileSize: 6, Compression: "zstd", File: "f2"},
	}
	must(t, "SucceedBuild", s.SucceedBuild(ctx, "e1", "a1", at(20), res))
	must(t, "AllocateBuild e2", allocateBuild(ctx, s, "e2", "a1", at(21)))
	must(t, "RequeueBuild e2", s.RequeueBuild(ctx, "e2", "a1", at(22), db.KindInfrastructure, "agent disconnected"))
	must(t, "AllocateBuild e2 again", allocateBuild(ctx, s, "e2", "a1", at(23)))
	must(t, "FailBuild e2", s.FailBuild(ctx, "e2", "a1", at(24), db.KindBuild, "build: exit 1", 1))
	id, err := s.AppendEvent(ctx, db.Event{Type: db.EventAgentAbsent, At: at(25), Agent: "a1", Reason: "gone"})
	must(t, "AppendEvent", err)
	if _, err := s.AppendEvent(ctx, db.Event{Type: "bogus", At: at(25)}); err == nil {
		t.Errorf("AppendEvent of an unknown type succeeded")
	}
	// A refused transition records nothing.
	if err := startBuild(ctx, s, "e2", "a1", at(26)); !errors.Is(err, db.ErrConflict) {
		t.Fatalf("StartBuild of a failed build: %v", err)
	}

	all, err := s.Events(ctx, db.EventFilter{})
	must(t, "Events", err)
	if len(all) > 0 {
		last, err := s.LastEventID(ctx)
		must(t, "LastEventID", err)
		if last != all[len(all)-1].ID {
			t.Errorf("LastEventID %d, newest listed %d", last, all[len(all)-1].ID)
		}
	}
	want := []db.EventType{db.EventSubmitted, db.EventSubmitted, db.EventAllocated, db.EventStarted, db.EventSucceeded,
		db.EventAllocated, db.EventRequeued, db.EventAllocated, db.EventFailed, db.EventAgentAbsent}
	if got := eventTypes(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("event types %v, want %v", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("ids not increasing: %d then %d", all[i-1].ID, all[i].ID)
		}
	}
	if all[len(all)-1].ID != id {
		t.Errorf("AppendEvent returned id %d, listed as %d", id, all[len(all)-1].ID)
	}
	sub := all[0]
	if sub.Build != "e1" || sub.Derivation != "/nix/store/e1-x.drv" || sub.System != "x86_64-linux" || len(sub.Outputs) != 2 ||
		!reflect.DeepEqual(sub.Tags, []db.Tag{{Key: "jobset", Value: "main"}, {Key: "job", Value: "e1"}}) {
		t.Errorf("submitted event: %+v", sub)
	}
	sameTime(t, "submitted At", sub.At, at(0))
	succ := all[4]
	if succ.Build != "e1" || succ.Agent != "a1" || succ.Attempt != 1 || succ.Derivation != "/nix/store/e1-x.drv" ||
		!reflect.DeepEqual(succ.Outputs, []db.EventOutput{{Name: "out", Path: "/nix/store/e1-out", NarHash: "sha256:abc", NarSize: 10},
			{Name: "dev", Path: "/nix/store/e1-dev", NarHash: "sha256:abd", NarSize: 11}}) || len(succ.Tags) != 2 {
		t.Errorf("succeeded event: %+v", succ)
	}
	sameTime(t, "succeeded At", succ.At, at(20))
	if f := all[8]; f.Build != "e2" || f.Attempt != 2 || f.Reason != "build: exit 1" || f.ExitCode != 1 || f.Agent != "a1" {
		t.Errorf("failed event: %+v", f)
	}
	if r := all[6]; r.Reason != "agent disconnected" || r.Attempt != 1 {
		t.Errorf("requeued event: %+v", r)
	}
	if a := all[9]; a.Agent != "a1" || a.Build != "" || a.Reason != "gone" {
		t.Errorf("agent event: %+v", a)
	}

	after, err := s.Events(ctx, db.EventFilter{AfterID: all[4].ID})
	must(t, "Events after", err)
	if !reflect.DeepEqual(after, all[5:]) {
		t.Errorf("Events after %d: %v, want %v", all[4].ID, eventTypes(after), eventTypes(all[5:]))
	}
	typed, err := s.Events(ctx, db.EventFilter{Types: []db.EventType{db.EventFailed, db.EventSucceeded}})
	must(t, "Events by type", err)
	if got := eventTypes(typed); !reflect.DeepEqual(got, []db.EventType{db.EventSucceeded, db.EventFailed}) {
		t.Errorf("Events by type: %v", got)
	}
	byBuild, err := s.Events(ctx, db.EventFilter{Build: "e2", Limit: 2})
	must(t, "Events by build", err)
	if got := eventTypes(byBuild); !reflect.DeepEqual(got, []db.EventType{db.EventSubmitted, db.EventAllocated}) {
		t.Errorf("Events by build with limit: %v", got)
	}
}

// testSetupFailBuild: requeue with setup-failure and missing-inputs
// events, or a final failure.
func testSetupFailBuild(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("s1", 0))
	must(t, "AllocateBuild", allocateBuild(ctx, s, "s1", "a1", at(1)))
	mustErrIs(t, "SetupFailBuild by another agent", s.SetupFailBuild(ctx, "s1", "a2", at(2), db.KindSetup, "x", nil, false), db.ErrConflict)
	missing := []string{"/nix/store/in1.drv", "/nix/store/in2.drv"}
	must(t, "SetupFailBuild", s.SetupFailBuild(ctx, "s1", "a1", at(2), db.KindSetup, "setup-failure: no inputs", missing, false))
	b, err := s.Build(ctx, "s1")
	must(t, "Build", err)
	if b.State != db.StateScheduled || b.Attempts[0].Outcome != "requeued" || b.Attempts[0].Kind != db.KindSetup || b.Attempts[0].Reason != "setup-failure: no inputs" {
		t.Fatalf("after setup failure: %+v", b)
	}
	must(t, "AllocateBuild again", allocateBuild(ctx, s, "s1", "a2", at(3)))
	must(t, "StartBuild", startBuild(ctx, s, "s1", "a2", at(4)))
	must(t, "SetupFailBuild final", s.SetupFailBuild(ctx, "s1", "a2", at(5), db.KindSetup, "setup-failure: again", nil, true))
	b, err = s.Build(ctx, "s1")
	must(t, "Build", err)
	if b.State != db.StateFailed || b.FailureReason != "setup-failure: again" || b.Attempts[1].Outcome != "failed" || b.Attempts[1].Kind != db.KindSetup {
		t.Fatalf("after final setup failure: %+v", b)
	}
	sameTime(t, "EndedAt", b.EndedAt, at(5))
	es, err := s.Events(ctx, db.EventFilter{Build: "s1"})
	must(t, "Events", err)
	want := []db.EventType{db.EventSubmitted, db.EventAllocated, db.EventSetupFailure, db.EventMissingInputs,
		db.EventAllocated, db.EventStarted, db.EventSetupFailure, db.EventFailed}
	if got := eventTypes(es); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if m := es[3]; !reflect.DeepEqual(m.Missing, missing) || m.Agent != "a1" || m.Attempt != 1 || m.Derivation != "/nix/store/s1-x.drv" {
		t.Errorf("missing-inputs event: %+v", m)
	}
	if f := es[7]; f.Agent != "a2" || f.Attempt != 2 || f.Reason != "setup-failure: again" {
		t.Errorf("failed event: %+v", f)
	}
}

// testAttemptHardware: hardware lands on the holder's latest attempt.
func testAttemptHardware(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("h1", 0))
	hw := db.Hardware{Cores: 8, MemoryBytes: 16 << 30, FreeDiskBytes: 100 << 30, Load1: 0.5, Backend: "nix", BackendVersion: "2.8.1"}
	mustErrIs(t, "StartBuildWith before allocation", s.StartBuildWith(ctx, "h1", "a1", at(1), hw), db.ErrConflict)
	must(t, "AllocateBuild", allocateBuild(ctx, s, "h1", "a1", at(1)))
	must(t, "RequeueBuild", s.RequeueBuild(ctx, "h1", "a1", at(2), db.KindInfrastructure, "x"))
	must(t, "AllocateBuild", allocateBuild(ctx, s, "h1", "a2", at(3)))
	mustErrIs(t, "StartBuildWith by a non-holder", s.StartBuildWith(ctx, "h1", "a1", at(3), hw), db.ErrConflict)
	must(t, "StartBuildWith", s.StartBuildWith(ctx, "h1", "a2", at(3), hw))
	b, err := s.Build(ctx, "h1")
	must(t, "Build", err)
	if !b.Attempts[0].Hardware.IsZero() || b.Attempts[1].Hardware != hw {
		t.Fatalf("attempt hardware: %+v / %+v", b.Attempts[0].Hardware, b.Attempts[1].Hardware)
	}
	{ // a start with its report in one transition
		createBuilds(t, s, newBuild("h2", 1))
		mustErrIs(t, "StartBuildWith before allocation", s.StartBuildWith(ctx, "h2", "a1", at(4), hw), db.ErrConflict)
		must(t, "AllocateBuild h2", allocateBuild(ctx, s, "h2", "a1", at(5)))
		mustErrIs(t, "StartBuildWith by a non-holder", s.StartBuildWith(ctx, "h2", "a2", at(6), hw), db.ErrConflict)
		must(t, "StartBuildWith", s.StartBuildWith(ctx, "h2", "a1", at(6), hw))
		mustErrIs(t, "StartBuildWith again", s.StartBuildWith(ctx, "h2", "a1", at(7), hw), db.ErrConflict)
		b, err := s.Build(ctx, "h2")
		must(t, "Build h2", err)
		if b.State != db.StateStarted || !b.StartedAt.Equal(at(6)) || len(b.Attempts) != 1 ||
			b.Attempts[0].Hardware != hw || !b.Attempts[0].StartedAt.Equal(at(6)) {
			t.Errorf("after StartBuildWith: state %s, started %v, attempts %+v", b.State, b.StartedAt, b.Attempts)
		}
		es, err := s.Events(ctx, db.EventFilter{Build: "h2"})
		must(t, "Events h2", err)
		if got := eventTypes(es); !reflect.DeepEqual(got, []db.EventType{db.EventSubmitted, db.EventAllocated, db.EventStarted}) {
			t.Errorf("events of h2: %v", got)
		}
	}
	bs, err := s.Builds(ctx, db.BuildFilter{Derivation: "/nix/store/h1-x.drv"})
	must(t, "Builds by derivation", err)
	if len(bs) != 1 || bs[0].ID != "h1" {
		t.Errorf("Builds by derivation: %v", ids(bs))
	}
	if bs, _ := s.Builds(ctx, db.BuildFilter{Derivation: "/nix/store/none.drv"}); len(bs) != 0 {
		t.Errorf("Builds by unknown derivation: %v", ids(bs))
	}
}

// testHookProgress: done ids and the cursor survive, the cursor never
// moves back, concurrent marks do not lose any.
func testHookProgress(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	p, err := s.HookProgress(ctx, "h")
	must(t, "HookProgress of a new hook", err)
	if p.Cursor != 0 || len(p.Done) != 0 || p.Registered {
		t.Fatalf("new hook progress: %+v", p)
	}
	must(t, "MarkHookDone 0 (registration)", s.MarkHookDone(ctx, "h", 0, 0))
	if p, _ = s.HookProgress(ctx, "h"); !p.Registered || p.Cursor != 0 || len(p.Done) != 0 {
		t.Fatalf("registered hook progress: %+v", p)
	}
	must(t, "MarkHookDone 5", s.MarkHookDone(ctx, "h", 5, 0))
	must(t, "MarkHookDone 3", s.MarkHookDone(ctx, "h", 3, 0))
	p, _ = s.HookProgress(ctx, "h")
	if p.Cursor != 0 || !reflect.DeepEqual(p.Done, []int64{3, 5}) {
		t.Fatalf("progress: %+v", p)
	}
	must(t, "MarkHookDone 1", s.MarkHookDone(ctx, "h", 1, 3))
	p, _ = s.HookProgress(ctx, "h")
	if p.Cursor != 3 || !reflect.DeepEqual(p.Done, []int64{5}) {
		t.Fatalf("progress after cursor 3: %+v", p)
	}
	must(t, "MarkHookDone with an older cursor", s.MarkHookDone(ctx, "h", 7, 1))
	p, _ = s.HookProgress(ctx, "h")
	if p.Cursor != 3 || !reflect.DeepEqual(p.Done, []int64{5, 7}) {
		t.Fatalf("cursor moved back or done lost: %+v", p)
	}
	if q, _ := s.HookProgress(ctx, "other"); q.Cursor != 0 || len(q.Done) != 0 {
		t.Errorf("hooks share progress: %+v", q)
	}
	var wg sync.WaitGroup
	for i := int64(100); i < 120; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.MarkHookDone(ctx, "c", i, 0); err != nil {
				t.Errorf("MarkHookDone %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if q, _ := s.HookProgress(ctx, "c"); len(q.Done) != 20 {
		t.Errorf("concurrent marks: %d done, want 20", len(q.Done))
	}
}

// testSucceedImpliesStart: a success reported for a build still allocated
// records the start too, in one transaction: started_at on the build and
// its attempt, and a started event before the succeeded one.
func testSucceedImpliesStart(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	createBuilds(t, s, newBuild("s1", 0))
	must(t, "AllocateBuild", allocateBuild(ctx, s, "s1", "a1", at(10)))
	res := []db.OutputResult{{Name: "out", Path: "/nix/store/s1-out", NarHash: "sha256:abc", NarSize: 10, FileHash: "sha256:def", FileSize: 5, Compression: "zstd", File: "f1"}}
	must(t, "SucceedBuild from allocated", s.SucceedBuild(ctx, "s1", "a1", at(20), res))
	b, err := s.Build(ctx, "s1")
	must(t, "Build", err)
	if b.State != db.StateSucceeded || !b.StartedAt.Equal(at(20)) || !b.EndedAt.Equal(at(20)) {
		t.Errorf("build: state %s, started %v, ended %v; want succeeded, both %v", b.State, b.StartedAt, b.EndedAt, at(20))
	}
	if len(b.Attempts) != 1 || !b.Attempts[0].StartedAt.Equal(at(20)) || b.Attempts[0].Outcome != "succeeded" {
		t.Errorf("attempts: %+v", b.Attempts)
	}
	if len(b.Results) != 1 || b.Results[0].Path != "/nix/store/s1-out" {
		t.Errorf("results: %+v", b.Results)
	}
	es, err := s.Events(ctx, db.EventFilter{Build: "s1"})
	must(t, "Events", err)
	want := []db.EventType{db.EventSubmitted, db.EventAllocated, db.EventStarted, db.EventSucceeded}
	if got := eventTypes(es); !reflect.DeepEqual(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	// Another agent can neither start nor succeed it, and a refused
	// success records nothing.
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("s2", 1))
	must(t, "AllocateBuild s2", allocateBuild(ctx, s, "s2", "a1", at(30)))
	mustErrIs(t, "SucceedBuild by a2", s.SucceedBuild(ctx, "s2", "a2", at(31), res), db.ErrConflict)
	b, err = s.Build(ctx, "s2")
	must(t, "Build s2", err)
	if b.State != db.StateAllocated || !b.StartedAt.IsZero() {
		t.Errorf("after a refused success: state %s, started %v", b.State, b.StartedAt)
	}
	es, err = s.Events(ctx, db.EventFilter{Build: "s2"})
	must(t, "Events s2", err)
	if got := eventTypes(es); !reflect.DeepEqual(got, []db.EventType{db.EventSubmitted, db.EventAllocated}) {
		t.Errorf("events after a refused success: %v", got)
	}
}

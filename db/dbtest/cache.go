package dbtest

import (
	"reflect"
	"slices"
	"testing"

	"github.com/gbc-farm/gbc/db"
)

// testPins: pins round-trip, pinning again replaces the reason, unpin
// counts what it removed.
func testPins(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	must(t, "PinPaths", s.PinPaths(ctx, []db.Pin{
		{Path: "/nix/store/bbb-b", Reason: "release 1", CreatedAt: at(1), By: "SHA256:op"},
		{Path: "/nix/store/aaa-a", CreatedAt: at(2), By: "SHA256:op"},
	}))
	must(t, "PinPaths again", s.PinPaths(ctx, []db.Pin{{Path: "/nix/store/bbb-b", Reason: "release 2", CreatedAt: at(3)}}))
	ps, err := s.Pins(ctx)
	must(t, "Pins", err)
	if len(ps) != 2 || ps[0].Path != "/nix/store/aaa-a" || ps[1].Path != "/nix/store/bbb-b" || ps[1].Reason != "release 2" || ps[1].By != "SHA256:op" {
		t.Fatalf("Pins: %+v", ps)
	}
	sameTime(t, "pin CreatedAt kept", ps[1].CreatedAt, at(1))
	if err := s.PinPaths(ctx, []db.Pin{{Path: "/nix/store/x\nSHA256:forged"}}); err == nil {
		t.Errorf("PinPaths accepted a path with a newline")
	}
	n, err := s.UnpinPaths(ctx, []string{"/nix/store/aaa-a", "/nix/store/never"})
	must(t, "UnpinPaths", err)
	if n != 1 {
		t.Errorf("UnpinPaths removed %d, want 1", n)
	}
	ps, _ = s.Pins(ctx)
	if len(ps) != 1 || ps[0].Path != "/nix/store/bbb-b" {
		t.Errorf("Pins after unpin: %+v", ps)
	}
}

// testCacheAccess: the later of two accesses wins, whatever the order
// they are recorded in; forgotten rows are gone.
func testCacheAccess(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	must(t, "record", s.RecordCacheAccess(ctx, []db.CacheAccess{{HashPart: "h1", At: at(10)}, {HashPart: "h2", At: at(5)}}))
	must(t, "record older", s.RecordCacheAccess(ctx, []db.CacheAccess{{HashPart: "h1", At: at(3)}, {HashPart: "h2", At: at(7)}, {HashPart: "h3", At: at(1)}}))
	as, err := s.CacheAccesses(ctx)
	must(t, "CacheAccesses", err)
	got := map[string]int64{}
	for _, a := range as {
		got[a.HashPart] = a.At.UnixMilli()
	}
	want := map[string]int64{"h1": at(10).UnixMilli(), "h2": at(7).UnixMilli(), "h3": at(1).UnixMilli()}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("accesses: got %v, want %v", got, want)
	}
	must(t, "forget", s.ForgetCacheAccess(ctx, []string{"h1", "h3", "none"}))
	as, _ = s.CacheAccesses(ctx)
	if len(as) != 1 || as[0].HashPart != "h2" {
		t.Errorf("after forget: %+v", as)
	}
}

// testBuildRootsAndDelete: build roots page in recording order with tags
// and outputs; DeleteBuilds removes only finished builds, with their
// attempts and results, and EndedBefore selects them.
func testBuildRootsAndDelete(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	var all []string
	for i := range 5 {
		id := string(rune('a'+i)) + "-build"
		createBuilds(t, s, newBuild(id, i))
		all = append(all, id)
	}
	var got []db.BuildRoot
	var after int64
	for range 10 {
		page, last, err := s.BuildRootsPage(ctx, after, 2)
		must(t, "BuildRootsPage", err)
		if len(page) == 0 {
			if last != after {
				t.Errorf("empty page moved the position %d → %d", after, last)
			}
			break
		}
		got = append(got, page...)
		after = last
	}
	if len(got) != 5 {
		t.Fatalf("roots: %d, want 5", len(got))
	}
	for i, r := range got {
		if r.ID != all[i] || r.State != db.StateScheduled || len(r.Tags) != 2 || r.Tags[1].Value != all[i] ||
			!slices.Equal(r.Outputs, []string{"/nix/store/" + all[i] + "-out", "/nix/store/" + all[i] + "-dev"}) {
			t.Errorf("root %d: %+v", i, r)
		}
		sameTime(t, "root CreatedAt", r.CreatedAt, at(i))
	}

	// a-build succeeds at 10, b-build fails at 20, c-build is canceled at 30.
	must(t, "allocate", allocateBuild(ctx, s, all[0], "a1", at(5)))
	must(t, "succeed", s.SucceedBuild(ctx, all[0], "a1", at(10), []db.OutputResult{{Name: "out", Path: "/nix/store/a-build-out",
		NarHash: "sha256:1111", NarSize: 1, FileHash: "sha256:2222", FileSize: 1, Compression: "zstd", File: "nar/x",
		References: []string{"/nix/store/zzz-dep"}}}))
	must(t, "allocate", allocateBuild(ctx, s, all[1], "a1", at(15)))
	must(t, "fail", s.FailBuild(ctx, all[1], "a1", at(20), db.KindBuild, "exit 1", 1))
	must(t, "cancel", s.CancelBuild(ctx, all[2], at(30)))

	old, err := s.Builds(ctx, db.BuildFilter{EndedBefore: at(25)})
	must(t, "Builds EndedBefore", err)
	if !slices.Equal(ids(old), []string{all[1], all[0]}) {
		t.Errorf("ended before 25: %v", ids(old))
	}
	n, err := s.DeleteBuilds(ctx, []string{all[0], all[1], all[3], "unknown"})
	must(t, "DeleteBuilds", err)
	if n != 2 {
		t.Errorf("DeleteBuilds removed %d, want 2 (the scheduled one stays)", n)
	}
	for _, id := range all[:2] {
		_, err := s.Build(ctx, id)
		mustErrIs(t, "deleted build "+id, err, db.ErrNotFound)
	}
	if state(t, s, all[3]) != db.StateScheduled {
		t.Errorf("scheduled build touched")
	}
	left, err := s.Builds(ctx, db.BuildFilter{})
	must(t, "Builds", err)
	if len(left) != 3 {
		t.Errorf("left: %v", ids(left))
	}
	// The agent's attempts went with the builds: it can be deleted now
	// that the builds naming it are gone … except none remain.
	if _, err := s.DeleteAgent(ctx, "a1"); err != nil {
		t.Errorf("DeleteAgent after its builds were deleted: %v", err)
	}
}

// testArchiveAndDeleteAgent: archiving keeps the agent and its builds,
// deactivates it and removes its keys; delete refuses an agent with
// history and removes one without.
func testArchiveAndDeleteAgent(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	must(t, "CreateAgent", s.CreateAgent(ctx, db.Agent{ID: "a1", Name: "one", Active: true, CreatedAt: at(0)}, agentKey("a1", 1), agentKey("a1", 2)))
	must(t, "CreateAgent", s.CreateAgent(ctx, db.Agent{ID: "a2", Name: "two", Active: true, CreatedAt: at(1)}, agentKey("a2", 1)))
	createBuilds(t, s, newBuild("b1", 0))
	must(t, "allocate", allocateBuild(ctx, s, "b1", "a1", at(2)))
	must(t, "cancel", s.CancelBuild(ctx, "b1", at(3)))

	_, err := s.DeleteAgent(ctx, "a1")
	mustErrIs(t, "DeleteAgent with history", err, db.ErrConflict)
	fps, err := s.ArchiveAgent(ctx, "a1", at(9))
	must(t, "ArchiveAgent", err)
	if !slices.Equal(fps, []string{agentKey("a1", 1).Fingerprint, agentKey("a1", 2).Fingerprint}) {
		t.Errorf("ArchiveAgent removed %v", fps)
	}
	a, err := s.Agent(ctx, "a1")
	must(t, "Agent", err)
	if a.Active {
		t.Errorf("archived agent still active")
	}
	sameTime(t, "ArchivedAt", a.ArchivedAt, at(9))
	_, err = s.Key(ctx, agentKey("a1", 1).Fingerprint)
	mustErrIs(t, "archived agent's key", err, db.ErrNotFound)
	if b, err := s.Build(ctx, "b1"); err != nil || b.AgentID != "a1" || len(b.Attempts) != 1 {
		t.Errorf("archived agent's build: %+v, %v", b, err)
	}

	fps, err = s.DeleteAgent(ctx, "a2")
	must(t, "DeleteAgent", err)
	if len(fps) != 1 {
		t.Errorf("DeleteAgent removed keys %v", fps)
	}
	_, err = s.Agent(ctx, "a2")
	mustErrIs(t, "deleted agent", err, db.ErrNotFound)
	_, err = s.DeleteAgent(ctx, "a2")
	mustErrIs(t, "DeleteAgent again", err, db.ErrNotFound)
	_, err = s.ArchiveAgent(ctx, "nope", at(1))
	mustErrIs(t, "ArchiveAgent unknown", err, db.ErrNotFound)
}

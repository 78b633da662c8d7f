package dbtest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/gbc-farm/gbc/db"
)

func newCheck(id, drv string, sec int, builds ...string) db.NewCheck {
	c := db.NewCheck{ID: id, Derivation: drv, System: "x86_64-linux", Agents: len(builds), Priority: -10, CreatedAt: at(sec)}
	for i, b := range builds {
		c.Sides = append(c.Sides, db.CheckSide{Side: i + 1, BuildID: b})
	}
	return c
}

func testChecks(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	b1, b2 := newBuild("c1", 1), newBuild("c2", 1)
	b2.Derivation = b1.Derivation
	c := newCheck("k1", b1.Derivation, 1, "c1", "c2")
	c.AgainstCache = true
	cacheOut := db.CheckOutput{Name: "out", Path: "/nix/store/c1-out", NarHash: "sha256:aaa", NarSize: 120, File: "checks/k1/0/x.nar.zst", Compression: "zstd"}
	c.Sides = append([]db.CheckSide{{Side: db.CheckSideCache, AgentID: "a1", Outputs: []db.CheckOutput{cacheOut}}}, c.Sides...)
	must(t, "CreateCheck", s.CreateCheck(ctx, c, []db.NewBuild{b1, b2}))
	mustErrIs(t, "CreateCheck again", s.CreateCheck(ctx, c, nil), db.ErrExists)
	// The builds were recorded with the check, with their events.
	if st := state(t, s, "c2"); st != db.StateScheduled {
		t.Fatalf("check build c2 is %s", st)
	}
	// A check whose builds cannot be recorded is not recorded either.
	dup := newCheck("k2", b1.Derivation, 2, "c1")
	if err := s.CreateCheck(ctx, dup, []db.NewBuild{b1}); !errors.Is(err, db.ErrExists) {
		t.Fatalf("CreateCheck with a recorded build: %v", err)
	}
	mustErrIs(t, "Check k2", func() error { _, err := s.Check(ctx, "k2"); return err }(), db.ErrNotFound)
	if err := s.CreateCheck(ctx, db.NewCheck{ID: "bad", Derivation: "/d", Agents: 1, Sides: []db.CheckSide{{Side: 1}}}, nil); err == nil {
		t.Fatal("a build side without a build was accepted")
	}

	got, err := s.Check(ctx, "k1")
	must(t, "Check", err)
	if got.State != db.CheckPending || !got.AgainstCache || got.Agents != 2 || got.Priority != -10 || len(got.Sides) != 3 {
		t.Fatalf("check %+v", got)
	}
	sameTime(t, "created", got.CreatedAt, at(1))
	if sd := got.Sides[0]; sd.Side != 0 || sd.AgentID != "a1" || len(sd.Outputs) != 1 || sd.Outputs[0] != cacheOut {
		t.Fatalf("cache side %+v", sd)
	}
	if sd := got.Sides[2]; sd.BuildID != "c2" || sd.AgentID != "" || len(sd.Outputs) != 0 {
		t.Fatalf("side 2 %+v", sd)
	}

	out1 := db.CheckOutput{Name: "out", Path: "/nix/store/c1-out", NarHash: "sha256:bbb", NarSize: 121, File: "checks/k1/1/y.nar.xz", Compression: "xz"}
	must(t, "RecordCheckSide", s.RecordCheckSide(ctx, "k1", 1, "a1", []db.CheckOutput{out1}))
	must(t, "RecordCheckSide again", s.RecordCheckSide(ctx, "k1", 1, "a1", []db.CheckOutput{out1}))
	mustErrIs(t, "RecordCheckSide unknown", s.RecordCheckSide(ctx, "k1", 7, "a1", nil), db.ErrNotFound)
	got, _ = s.Check(ctx, "k1")
	if sd := got.Sides[1]; sd.AgentID != "a1" || len(sd.Outputs) != 1 || sd.Outputs[0] != out1 {
		t.Fatalf("side 1 after record %+v", sd)
	}

	last, err := s.LastEventID(ctx)
	must(t, "LastEventID", err)
	must(t, "FinishCheck", s.FinishCheck(ctx, "k1", at(9), db.CheckUnreproducible, []string{"out"}))
	mustErrIs(t, "FinishCheck twice", s.FinishCheck(ctx, "k1", at(10), db.CheckReproducible, nil), db.ErrConflict)
	mustErrIs(t, "FinishCheck unknown", s.FinishCheck(ctx, "nope", at(10), db.CheckReproducible, nil), db.ErrNotFound)
	if err := s.FinishCheck(ctx, "k1", at(10), db.CheckPending, nil); err == nil {
		t.Fatal("finishing as pending was accepted")
	}
	got, _ = s.Check(ctx, "k1")
	if got.State != db.CheckUnreproducible || !slices.Equal(got.Unreproducible, []string{"out"}) {
		t.Fatalf("finished check %+v", got)
	}
	sameTime(t, "ended", got.EndedAt, at(9))
	evs, err := s.Events(ctx, db.EventFilter{AfterID: last, Types: []db.EventType{db.EventCheckFinished}})
	must(t, "Events", err)
	if len(evs) != 1 || evs[0].Check != "k1" || evs[0].Verdict != db.CheckUnreproducible || evs[0].Derivation != b1.Derivation ||
		len(evs[0].Outputs) != 1 || evs[0].Outputs[0].Name != "out" {
		t.Fatalf("check-finished events %+v", evs)
	}

	must(t, "CreateCheck k3", s.CreateCheck(ctx, newCheck("k3", "/nix/store/o-x.drv", 5, "c3"), []db.NewBuild{newBuild("c3", 5)}))
	all, err := s.Checks(ctx, db.CheckFilter{})
	must(t, "Checks", err)
	if len(all) != 2 || all[0].ID != "k3" || all[1].ID != "k1" || len(all[1].Sides) != 3 || all[1].Sides[0].Outputs != nil {
		t.Fatalf("Checks %+v", all)
	}
	pending, err := s.Checks(ctx, db.CheckFilter{State: db.CheckPending})
	must(t, "Checks pending", err)
	if len(pending) != 1 || pending[0].ID != "k3" {
		t.Fatalf("pending checks %+v", pending)
	}
	byDrv, err := s.Checks(ctx, db.CheckFilter{Derivation: b1.Derivation, Limit: 1})
	must(t, "Checks by derivation", err)
	if len(byDrv) != 1 || byDrv[0].ID != "k1" {
		t.Fatalf("checks of %s: %+v", b1.Derivation, byDrv)
	}
}

func testChecksSummary(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	n := 0
	check := func(drv, system string, sec int, verdict db.CheckState) {
		t.Helper()
		n++
		id := fmt.Sprintf("k%02d", n)
		c := newCheck(id, drv, sec, "b-"+id)
		c.System = system
		b := newBuild("b-"+id, sec)
		b.Derivation, b.System = drv, system
		must(t, "CreateCheck", s.CreateCheck(ctx, c, []db.NewBuild{b}))
		if verdict != db.CheckPending {
			var unrep []string
			if verdict == db.CheckUnreproducible {
				unrep = []string{"out"}
			}
			must(t, "FinishCheck", s.FinishCheck(ctx, id, at(sec+1), verdict, unrep))
		}
	}
	// Only the latest check of each derivation counts.
	check("/nix/store/a.drv", "x86_64-linux", 1, db.CheckUnreproducible)
	check("/nix/store/a.drv", "x86_64-linux", 2, db.CheckReproducible)
	check("/nix/store/b.drv", "x86_64-linux", 1, db.CheckReproducible)
	check("/nix/store/b.drv", "x86_64-linux", 3, db.CheckUnreproducible)
	check("/nix/store/c.drv", "x86_64-linux", 1, db.CheckFailed)
	check("/nix/store/d.drv", "aarch64-linux", 1, db.CheckPending)
	check("/nix/store/e.drv", "aarch64-linux", 1, db.CheckUnreproducible)
	counts, unrep, err := s.ChecksSummary(ctx)
	must(t, "ChecksSummary", err)
	got := fmt.Sprint(counts)
	want := fmt.Sprint([]db.CheckCount{
		{System: "aarch64-linux", State: db.CheckPending, Count: 1},
		{System: "aarch64-linux", State: db.CheckUnreproducible, Count: 1},
		{System: "x86_64-linux", State: db.CheckFailed, Count: 1},
		{System: "x86_64-linux", State: db.CheckReproducible, Count: 1},
		{System: "x86_64-linux", State: db.CheckUnreproducible, Count: 1},
	})
	if got != want {
		t.Fatalf("counts\n%s\nwant\n%s", got, want)
	}
	var drvs []string
	for _, c := range unrep {
		drvs = append(drvs, c.Derivation)
	}
	if !slices.Equal(drvs, []string{"/nix/store/e.drv", "/nix/store/b.drv"}) {
		t.Fatalf("unreproducible %v", drvs)
	}
}

package dbtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// testAttemptPhases: marks land on their attempt, in phase order with
// building from the start, keep their first time, skip attempts that do
// not exist, and the spans end where the next phase or the attempt does.
func testAttemptPhases(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("b1", 0))
	ms := func(sec, milli int) time.Time { return at(sec).Add(time.Duration(milli) * time.Millisecond) }

	// Attempt 1 is prepared, started and requeued.
	must(t, "allocate 1", allocateBuild(ctx, s, "b1", "a1", at(1)))
	must(t, "preparing 1", s.RecordPhases(ctx, []db.PhaseMark{{Build: "b1", Attempt: 1, Phase: db.PhasePreparing, At: ms(1, 5)}}))
	must(t, "start 1", startBuild(ctx, s, "b1", "a1", at(2)))
	must(t, "requeue 1", s.RequeueBuild(ctx, "b1", "a1", at(3), db.KindInfrastructure, "agent absent"))

	// Attempt 2 goes through every phase; marks come in one batch, out of
	// order, with a repeat (its later time is ignored) and marks for
	// attempts and builds that do not exist (skipped).
	must(t, "allocate 2", allocateBuild(ctx, s, "b1", "a2", at(4)))
	must(t, "start 2", startBuild(ctx, s, "b1", "a2", at(6)))
	must(t, "marks 2", s.RecordPhases(ctx, []db.PhaseMark{
		{Build: "b1", Attempt: 2, Phase: db.PhaseUploading, At: ms(7, 250)},
		{Build: "b1", Attempt: 2, Phase: db.PhasePreparing, At: ms(4, 100)},
		{Build: "b1", Attempt: 2, Phase: db.PhaseVerifying, At: ms(8, 0)},
		{Build: "b1", Attempt: 2, Phase: db.PhaseUploading, At: ms(7, 900)},
		{Build: "b1", Attempt: 9, Phase: db.PhaseUploading, At: ms(7, 0)},
		{Build: "nope", Attempt: 1, Phase: db.PhaseUploading, At: ms(7, 0)},
	}))
	must(t, "publishing 2", s.RecordPhases(ctx, []db.PhaseMark{{Build: "b1", Attempt: 2, Phase: db.PhasePublishing, At: ms(8, 400)}}))
	must(t, "succeed 2", s.SucceedBuild(ctx, "b1", "a2", ms(8, 700), nil))

	b, err := s.Build(ctx, "b1")
	must(t, "Build", err)
	if len(b.Attempts) != 2 {
		t.Fatalf("attempts: %+v", b.Attempts)
	}
	type span struct {
		phase          db.Phase
		started, ended time.Time
	}
	for i, want := range [][]span{
		{{db.PhasePreparing, ms(1, 5), at(2)}, {db.PhaseBuilding, at(2), at(3)}},
		{{db.PhasePreparing, ms(4, 100), at(6)}, {db.PhaseBuilding, at(6), ms(7, 250)}, {db.PhaseUploading, ms(7, 250), ms(8, 0)},
			{db.PhaseVerifying, ms(8, 0), ms(8, 400)}, {db.PhasePublishing, ms(8, 400), ms(8, 700)}},
	} {
		got := b.Attempts[i].Spans()
		if len(got) != len(want) {
			t.Errorf("attempt %d spans: got %+v, want %+v", i+1, got, want)
			continue
		}
		for j, w := range want {
			what := fmt.Sprintf("attempt %d %s", i+1, w.phase)
			if got[j].Phase != w.phase {
				t.Errorf("%s: got phase %s", what, got[j].Phase)
			}
			sameTime(t, what+" started", got[j].Started, w.started)
			sameTime(t, what+" ended", got[j].Ended, w.ended)
		}
	}

	// A running attempt's last phase has no end yet.
	createBuilds(t, s, newBuild("b2", 10))
	must(t, "allocate b2", allocateBuild(ctx, s, "b2", "a1", at(11)))
	must(t, "preparing b2", s.RecordPhases(ctx, []db.PhaseMark{{Build: "b2", Attempt: 1, Phase: db.PhasePreparing, At: at(12)}}))
	b, err = s.Build(ctx, "b2")
	must(t, "Build b2", err)
	if sp := b.Attempts[0].Spans(); len(sp) != 1 || sp[0].Phase != db.PhasePreparing || !sp[0].Ended.IsZero() {
		t.Errorf("running attempt spans: %+v", sp)
	}

	// Building is the start, not a mark; nonsense is refused before any
	// write, so the good mark in the same batch is not recorded either.
	for _, bad := range []db.PhaseMark{
		{Build: "b2", Attempt: 1, Phase: db.PhaseBuilding, At: at(13)},
		{Build: "b2", Attempt: 1, Phase: "compiling", At: at(13)},
		{Build: "", Attempt: 1, Phase: db.PhaseUploading, At: at(13)},
		{Build: "b2", Attempt: 0, Phase: db.PhaseUploading, At: at(13)},
	} {
		good := db.PhaseMark{Build: "b2", Attempt: 1, Phase: db.PhaseUploading, At: at(13)}
		if err := s.RecordPhases(ctx, []db.PhaseMark{good, bad}); err == nil {
			t.Errorf("RecordPhases(%+v) accepted", bad)
		}
	}
	b, err = s.Build(ctx, "b2")
	must(t, "Build b2", err)
	if len(b.Attempts[0].Phases) != 1 {
		t.Errorf("refused batches wrote phases: %+v", b.Attempts[0].Phases)
	}
	must(t, "no marks", s.RecordPhases(ctx, nil))
}

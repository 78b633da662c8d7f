package dbtest

import (
	"fmt"
	"reflect"
	"testing"
	"unsafe"

	"github.com/gbc-farm/gbc/db"
)

// testInputDerivations: recorded input derivations round-trip, nil (not
// recorded) stays distinct from none, and malformed paths are refused.
func testInputDerivations(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	with := newBuild("with", 1)
	with.InputDerivations = []string{
		"/nix/store/aaa-lib.drv",
		"/gnu/store/bbb-elsewhere.drv", // another store directory: kept whole
		"/nix/store/sub/ccc-nested.drv",
		"/nix/store/aaa-lib.drv", // repeated as given
	}
	none := newBuild("none", 2)
	none.InputDerivations = []string{}
	unknown := newBuild("unknown", 3)
	bare := db.NewBuild{ID: "bare", Derivation: "nodir.drv", System: "x86_64-linux",
		InputDerivations: []string{"/nix/store/ddd-x.drv"}, CreatedAt: at(4)}
	createBuilds(t, s, with, none, unknown, bare)
	for _, want := range []db.NewBuild{with, none, unknown, bare} {
		got, err := s.Build(ctx, want.ID)
		must(t, "Build "+want.ID, err)
		if !reflect.DeepEqual(got.InputDerivations, want.InputDerivations) {
			t.Errorf("Build %s: inputs %#v, want %#v", want.ID, got.InputDerivations, want.InputDerivations)
		}
	}
	bs, err := s.Builds(ctx, db.BuildFilter{State: db.StateScheduled})
	must(t, "Builds", err)
	for _, b := range bs {
		if b.ID == "with" && !reflect.DeepEqual(b.InputDerivations, with.InputDerivations) {
			t.Errorf("Builds: inputs of with %#v", b.InputDerivations)
		}
		if b.ID == "unknown" && b.InputDerivations != nil {
			t.Errorf("Builds: inputs of unknown %#v, want nil", b.InputDerivations)
		}
	}
	for name, in := range map[string][]string{
		"empty":    {""},
		"relative": {"nix/store/aaa-lib.drv"},
		"newline":  {"/nix/store/aaa\n-lib.drv"},
	} {
		b := newBuild("bad-"+name, 5)
		b.InputDerivations = in
		if err := s.CreateBuilds(ctx, []db.NewBuild{b}); err == nil {
			t.Errorf("CreateBuilds accepted input derivations %q", in)
		}
	}
}

// testScheduledBuildsPage walks the scheduled builds a page at a time:
// recording order, only scheduled builds, every field the queue needs, a
// walk that neither skips nor repeats when builds change state behind it
// (keyset, not offset), and input strings shared within a page.
func testScheduledBuildsPage(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")

	page, last, err := s.ScheduledBuildsPage(ctx, 0, 10)
	must(t, "ScheduledBuildsPage empty", err)
	if len(page) != 0 || last != 0 {
		t.Errorf("empty store: %d builds, last %d", len(page), last)
	}
	if _, _, err := s.ScheduledBuildsPage(ctx, 0, 0); err == nil {
		t.Error("ScheduledBuildsPage accepted limit 0")
	}

	// b0 … b9 in that order; b3 allocated and b5 canceled before the walk.
	var all []db.NewBuild
	for i := range 10 {
		b := newBuild(fmt.Sprintf("b%d", i), 10-i) // CreatedAt descending: order is recording, not age
		b.Priority = i % 3
		b.InputDerivations = []string{}
		if i > 0 {
			b.InputDerivations = []string{all[0].Derivation, "/nix/store/ext-input.drv"}
		}
		if i%2 == 1 {
			b.Tags, b.RequiredFeatures = nil, nil
		}
		if i == 4 {
			b.DeferUntil = at(100)
		}
		if i == 6 {
			b.InputDerivations = nil // recorded before inputs were
		}
		all = append(all, b)
	}
	createBuilds(t, s, all[:5]...)
	createBuilds(t, s, all[5:]...)
	must(t, "allocate b3", allocateBuild(ctx, s, "b3", "a1", at(20)))
	must(t, "cancel b5", s.CancelBuild(ctx, "b5", at(20)))

	var got []db.QueuedBuild
	page, last, err = s.ScheduledBuildsPage(ctx, 0, 3)
	must(t, "page 1", err)
	got = append(got, page...)
	if ids := queuedIDs(page); !reflect.DeepEqual(ids, []string{"b0", "b1", "b2"}) {
		t.Fatalf("page 1 = %v", ids)
	}
	// Page 1 shares strings: b1's and b2's first input is b0's derivation.
	if unsafe.StringData(page[1].InputDerivations[0]) != unsafe.StringData(page[0].Derivation) ||
		unsafe.StringData(page[2].InputDerivations[1]) != unsafe.StringData(page[1].InputDerivations[1]) {
		t.Error("page 1: input paths are copies, not the page's shared strings")
	}
	// Behind the cursor and ahead of it: with an offset these would shift
	// the next page.
	must(t, "cancel b1", s.CancelBuild(ctx, "b1", at(21)))
	must(t, "allocate b4", allocateBuild(ctx, s, "b4", "a1", at(21)))
	must(t, "requeue b3", s.RequeueBuild(ctx, "b3", "a1", at(21), db.KindInfrastructure, "x")) // scheduled again, ahead of the cursor
	late := newBuild("late", 0)
	createBuilds(t, s, late)
	for {
		page, next, err := s.ScheduledBuildsPage(ctx, last, 3)
		must(t, fmt.Sprintf("page after %d", last), err)
		if len(page) == 0 {
			if next != last {
				t.Errorf("empty page moved the position from %d to %d", last, next)
			}
			break
		}
		if next <= last {
			t.Fatalf("position did not advance: %d after %d", next, last)
		}
		got, last = append(got, page...), next
	}
	want := []string{"b0", "b1", "b2", "b3", "b6", "b7", "b8", "b9", "late"}
	if ids := queuedIDs(got); !reflect.DeepEqual(ids, want) {
		t.Fatalf("walk = %v, want %v", ids, want)
	}
	byID := map[string]db.NewBuild{"late": late}
	for _, b := range all {
		byID[b.ID] = b
	}
	for _, q := range got {
		nb := byID[q.ID]
		if q.Derivation != nb.Derivation || q.System != nb.System || q.Priority != nb.Priority {
			t.Errorf("%s: %+v, recorded %+v", q.ID, q, nb)
		}
		if !reflect.DeepEqual(q.Tags, nb.Tags) || !reflect.DeepEqual(q.RequiredFeatures, nb.RequiredFeatures) {
			t.Errorf("%s: tags %v features %v, recorded %v %v", q.ID, q.Tags, q.RequiredFeatures, nb.Tags, nb.RequiredFeatures)
		}
		if !reflect.DeepEqual(q.InputDerivations, nb.InputDerivations) {
			t.Errorf("%s: inputs %#v, recorded %#v", q.ID, q.InputDerivations, nb.InputDerivations)
		}
		sameTime(t, q.ID+" CreatedAt", q.CreatedAt, nb.CreatedAt)
		sameTime(t, q.ID+" DeferUntil", q.DeferUntil, nb.DeferUntil)
	}

	// A page bigger than what is left, and one past the end.
	page, next, err := s.ScheduledBuildsPage(ctx, 0, 1000)
	must(t, "one page", err)
	if ids := queuedIDs(page); !reflect.DeepEqual(ids, []string{"b0", "b2", "b3", "b6", "b7", "b8", "b9", "late"}) {
		t.Errorf("one page = %v", ids)
	}
	if next != last {
		t.Errorf("one page ends at %d, the walk at %d", next, last)
	}
}

func queuedIDs(bs []db.QueuedBuild) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

package dbtest

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/db"
)

// pageBuild is a build whose derivation has a real store path shape, so
// its name can be derived: /nix/store/<32 chars>-<name>.drv.
func pageBuild(id, name, system string, sec int, tags ...db.Tag) db.NewBuild {
	b := newBuild(id, sec)
	b.Derivation = "/nix/store/" + strings.Repeat(id[len(id)-1:], 32) + "-" + name + ".drv"
	b.System = system
	b.Tags = tags
	return b
}

func testBuildsPage(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	main := db.Tag{Key: "jobset", Value: "main"}
	other := db.Tag{Key: "jobset", Value: "other"}
	createBuilds(t, s,
		pageBuild("p1", "hello-2.12", "x86_64-linux", 1, main),
		pageBuild("p2", "hello-2.12", "aarch64-linux", 2, other),
		pageBuild("p3", "zlib-1.3", "x86_64-linux", 3, main, db.Tag{Key: "job", Value: "zlib"}),
		pageBuild("p4", "hello-2.12", "x86_64-linux", 4),
		pageBuild("p5", "zlib-1.3-dev", "x86_64-linux", 5, main))
	must(t, "allocate", allocateBuild(ctx, s, "p2", "a1", at(6)))
	must(t, "allocate", allocateBuild(ctx, s, "p4", "a1", at(6)))

	cases := []struct {
		q    db.BuildQuery
		want []string
	}{
		{db.BuildQuery{}, []string{"p5", "p4", "p3", "p2", "p1"}},
		{db.BuildQuery{Name: "hello-2.12"}, []string{"p4", "p2", "p1"}},
		{db.BuildQuery{Name: "zlib-1.3"}, []string{"p3"}}, // the whole name, not a prefix
		{db.BuildQuery{Name: "hello"}, []string{}},
		{db.BuildQuery{System: "x86_64-linux"}, []string{"p5", "p4", "p3", "p1"}},
		{db.BuildQuery{State: db.StateAllocated}, []string{"p4", "p2"}},
		{db.BuildQuery{AgentID: "a1"}, []string{"p4", "p2"}},
		{db.BuildQuery{Tag: main}, []string{"p5", "p3", "p1"}},
		{db.BuildQuery{Tag: db.Tag{Key: "job", Value: "zlib"}}, []string{"p3"}},
		{db.BuildQuery{Tag: main, System: "x86_64-linux", State: db.StateScheduled}, []string{"p5", "p3", "p1"}},
		{db.BuildQuery{Name: "hello-2.12", State: db.StateScheduled}, []string{"p1"}},
		{db.BuildQuery{System: "riscv64-linux"}, []string{}},
		{db.BuildQuery{Name: "hello-2.12", Tag: other}, []string{"p2"}},
		{db.BuildQuery{Name: "zlib-1.3-dev", System: "x86_64-linux", Tag: main}, []string{"p5"}},
		{db.BuildQuery{AgentID: "a1", System: "x86_64-linux"}, []string{"p4"}},
		{db.BuildQuery{Tag: main, State: db.StateAllocated}, []string{}},
	}
	for _, tc := range cases {
		p, err := s.BuildsPage(ctx, tc.q)
		must(t, fmt.Sprintf("BuildsPage(%+v)", tc.q), err)
		if got := ids(p.Builds); !reflect.DeepEqual(got, tc.want) || p.Next != 0 {
			t.Errorf("BuildsPage(%+v) = %v next %d, want %v next 0", tc.q, got, p.Next, tc.want)
		}
	}
	// Pages of two walk everything once, in order, and say where they end.
	var walked []string
	q := db.BuildQuery{Limit: 2}
	for range 10 {
		p, err := s.BuildsPage(ctx, q)
		must(t, "BuildsPage", err)
		walked = append(walked, ids(p.Builds)...)
		for _, b := range p.Builds {
			if len(b.Outputs) != 2 || len(b.RequiredFeatures) != 2 {
				t.Errorf("page: %s lacks its outputs or features: %+v", b.ID, b)
			}
		}
		if p.Next == 0 {
			break
		}
		q.Before = p.Next
	}
	if want := []string{"p5", "p4", "p3", "p2", "p1"}; !reflect.DeepEqual(walked, want) {
		t.Errorf("pages of 2 walked %v, want %v", walked, want)
	}
	// A tag's builds page through their own index the same way.
	walked = nil
	q = db.BuildQuery{Tag: main, Limit: 1}
	for range 10 {
		p, err := s.BuildsPage(ctx, q)
		must(t, "BuildsPage", err)
		walked = append(walked, ids(p.Builds)...)
		if p.Next == 0 {
			break
		}
		q.Before = p.Next
	}
	if want := []string{"p5", "p3", "p1"}; !reflect.DeepEqual(walked, want) {
		t.Errorf("pages of 1 with tag %v walked %v, want %v", main, walked, want)
	}
	// The same with a filter, and a page exactly as long as what is left.
	p, err := s.BuildsPage(ctx, db.BuildQuery{Name: "hello-2.12", Limit: 2})
	must(t, "BuildsPage", err)
	if got := ids(p.Builds); !reflect.DeepEqual(got, []string{"p4", "p2"}) || p.Next == 0 {
		t.Fatalf("first page of hello: %v next %d", got, p.Next)
	}
	p, err = s.BuildsPage(ctx, db.BuildQuery{Name: "hello-2.12", Limit: 1, Before: p.Next})
	must(t, "BuildsPage", err)
	if got := ids(p.Builds); !reflect.DeepEqual(got, []string{"p1"}) || p.Next != 0 {
		t.Fatalf("last page of hello: %v next %d", got, p.Next)
	}
}

func testAgentAttemptCounts(t *testing.T, s db.Store) {
	ctx := ctxFor(t)
	newAgent(t, s, "a1")
	newAgent(t, s, "a2")
	createBuilds(t, s, newBuild("c1", 1), newBuild("c2", 2), newBuild("c3", 3), newBuild("c4", 4))
	must(t, "allocate", allocateBuild(ctx, s, "c1", "a1", at(5)))
	must(t, "requeue", s.RequeueBuild(ctx, "c1", "a1", at(6), db.KindInfrastructure, "agent went away"))
	must(t, "allocate", allocateBuild(ctx, s, "c1", "a1", at(7)))
	must(t, "fail", s.FailBuild(ctx, "c1", "a1", at(8), db.KindBuild, "builder failed", 1))
	must(t, "allocate", allocateBuild(ctx, s, "c2", "a1", at(9)))
	must(t, "fail", s.FailBuild(ctx, "c2", "a1", at(10), db.KindBuild, "builder failed", 1))
	must(t, "allocate", allocateBuild(ctx, s, "c3", "a1", at(11)))
	must(t, "allocate", allocateBuild(ctx, s, "c4", "a2", at(11)))
	got, err := s.AgentAttemptCounts(ctx, "a1")
	must(t, "AgentAttemptCounts", err)
	want := []db.AttemptCount{
		{Outcome: db.OutcomeOpen, Kind: db.KindNone, Count: 1},
		{Outcome: db.OutcomeFailed, Kind: db.KindBuild, Count: 2},
		{Outcome: db.OutcomeRequeued, Kind: db.KindInfrastructure, Count: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AgentAttemptCounts(a1) = %+v, want %+v", got, want)
	}
	if got, err := s.AgentAttemptCounts(ctx, "ghost"); err != nil || len(got) != 0 {
		t.Errorf("AgentAttemptCounts(ghost) = %+v, %v; want nothing", got, err)
	}
}

package sshd

import (
	"context"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

func TestBuildsCancelFilters(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	agentID, key := e.newAgent()
	a, running := e.allocate(key) // one build allocated to the agent
	ids, err := e.coord.Submit(ctx, coordinator.Submission{Derivations: []string{e.drv("q1"), e.drv("q2"), e.drv("q3")}})
	if err != nil {
		t.Fatal(err)
	}
	state := func(id string) db.BuildState {
		b, err := e.store.Build(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return b.State
	}
	lines := func(s string) []string { return strings.Fields(s) }

	for _, tc := range []struct {
		cmd  string
		code int
		want []string // canceled ids printed
		err  string
	}{
		{"builds cancel --state succeeded", 2, nil, "already ended"},
		{"builds cancel --state nonsense", 2, nil, "not a build state"},
		{"builds cancel --state scheduled --limit 1", 0, []string{ids[2]}, "canceled 1 build"}, // newest first
		{"builds cancel --state scheduled", 0, []string{ids[1], ids[0]}, "canceled 2 build"},
		{"builds cancel --state scheduled", 0, nil, "canceled 0 build"},
		{"builds cancel --agent " + agentID, 0, []string{running.Build}, "canceled 1 build"},
	} {
		r := e.run(e.operator, tc.cmd)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.err) {
			t.Fatalf("%s: exit %d stderr %q, want %d and %q", tc.cmd, r.code, r.stderr, tc.code, tc.err)
		}
		if got := lines(r.stdout); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Fatalf("%s: printed %v, want %v", tc.cmd, got, tc.want)
		}
		for _, id := range tc.want {
			if st := state(id); st != db.StateCanceled {
				t.Fatalf("%s: build %s is %s", tc.cmd, id, st)
			}
		}
	}
	// The running build was stopped on its agent.
	if m, ok := a.read().(*protocol.Cancel); !ok || m.Build != running.Build {
		t.Fatalf("agent got %T %+v, want cancel of %s", m, m, running.Build)
	}
	if r := e.run(e.reader, "builds cancel"); r.code != 1 {
		t.Fatalf("reader may not cancel: exit %d", r.code)
	}
}

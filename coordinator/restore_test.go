package coordinator

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/gbc-farm/gbc/protocol"
)

// TestRestartUsesRecordedInputs: submission records each build's input
// derivations, and the queue rebuilt at start (a page per build here,
// dependents recorded before their inputs) keeps every dependency without
// reading a .drv: they are deleted before the restart. An input whose
// build succeeded before the restart is available; one with no build here
// blocks.
func TestRestartUsesRecordedInputs(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.restorePage = 1 })
	// Another system, so that this agent takes nothing else.
	done := h.drv("done", "riscv64-linux")
	doneID := h.submit(0, done)[0]
	a := h.agent("a", protocol.Hello{Systems: []string{"riscv64-linux"}})
	b := a.next()
	if b.Build != doneID {
		t.Fatalf("got %s, want %s", b.Build, doneID)
	}
	if err := a.succeed(b, a.upload(b, "done")); err != nil {
		t.Fatal(err)
	}

	base := h.drv("base", "x86_64-linux")
	mid := h.drv("mid", "x86_64-linux", withInput(base))
	top := h.drv("top", "x86_64-linux", withInput(mid), withInput(done))
	ext := h.drv("ext", "x86_64-linux")
	blocked := h.drv("blocked", "x86_64-linux", withInput(ext))
	ids := h.submit(0, top, mid, base, blocked)

	got := h.build(ids[0]).InputDerivations
	slices.Sort(got)
	want := []string{mid, done}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("recorded inputs of top: %q, want %q", got, want)
	}
	if in := h.build(ids[2]).InputDerivations; in == nil || len(in) != 0 {
		t.Errorf("recorded inputs of base: %#v, want none (recorded)", in)
	}

	h.c.Close()
	for _, p := range []string{top, mid, base, blocked} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	h.start()
	a = h.agent("b", protocol.Hello{MaxParallelBuilds: 4})
	for i, name := range []string{"base", "mid", "top"} {
		b := a.next()
		if b.Build != ids[2-i] {
			t.Fatalf("build %d after restart: %s, want %s (%s)", i, b.Build, ids[2-i], name)
		}
		a.idle() // its dependent waits, and blocked waits for ext
		if err := a.succeed(b, a.upload(b, name)); err != nil {
			t.Fatal(err)
		}
	}
	a.idle() // blocked still waits for ext, which has no build here
	if st, _, _, ok := h.c.QueueOrder(ids[3]); !ok || st != "waiting" {
		t.Errorf("blocked: %q %v, want waiting", st, ok)
	}
}

// TestRestartRereadsUnrecordedInputs: builds recorded without their inputs
// (before migration 0004) still get their dependencies at start, from the
// .drv files.
func TestRestartRereadsUnrecordedInputs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		setup func(t *testing.T, h *harness)
	}{
		{"inputs not recorded", func(c *Config) { c.restorePage = 1 }, func(t *testing.T, h *harness) {
			if _, err := h.store.DB().ExecContext(context.Background(), `UPDATE builds SET input_drvs = NULL`); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, tc.mod)
			base := h.drv("base", "x86_64-linux")
			mid := h.drv("mid", "x86_64-linux", withInput(base))
			top := h.drv("top", "x86_64-linux", withInput(mid))
			ids := h.submit(0, top, mid, base)
			h.c.Close()
			if tc.setup != nil {
				tc.setup(t, h)
			}
			h.start()
			a := h.agent("a", protocol.Hello{MaxParallelBuilds: 3})
			for i, name := range []string{"base", "mid", "top"} {
				b := a.next()
				if b.Build != ids[2-i] {
					t.Fatalf("build %d after restart: %s, want %s (%s)", i, b.Build, ids[2-i], name)
				}
				a.idle() // its dependent waits
				if err := a.succeed(b, a.upload(b, name)); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

package scheduler_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/scheduler/synth"
)

// Larger figures (1,000,000 builds, latency percentiles, heap per build) come
// from bench/scheduler.sh; these keep the hot paths visible to `go test -bench`.

const benchQueue = 300_000

func newFanIn(b *testing.B, n int) *scheduler.Scheduler {
	b.Helper()
	s := scheduler.New(scheduler.DerivationOrdered, clock.NewFake(time.Unix(0, 0)))
	g := synth.NewFanIn(n, 1)
	for {
		bd, ok := g.Next()
		if !ok {
			return s
		}
		if err := s.Add(bd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddFanIn: one op is one Add into a growing package-set graph.
func BenchmarkAddFanIn(b *testing.B) {
	s := scheduler.New(scheduler.DerivationOrdered, clock.NewFake(time.Unix(0, 0)))
	g := synth.NewFanIn(1<<30, 1) // generated lazily; b.Loop decides how many
	b.ReportAllocs()
	for b.Loop() {
		bd, _ := g.Next()
		if err := s.Add(bd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocate: one op is Allocate, Succeeded and the Add of a fresh
// build, so benchQueue ready builds stay queued across 50 agents.
func BenchmarkAllocate(b *testing.B) {
	s := scheduler.New(scheduler.DerivationOrdered, clock.NewFake(time.Unix(0, 0)))
	var fresh []scheduler.Build
	synth.Independent(2*benchQueue, 2, func(bd scheduler.Build) { fresh = append(fresh, bd) })
	for _, bd := range fresh[:benchQueue] {
		if err := s.Add(bd); err != nil {
			b.Fatal(err)
		}
	}
	fresh = fresh[benchQueue:]
	agents := synth.Agents(50)
	i := 0
	for b.Loop() {
		got, ok := s.Allocate(agents[i%len(agents)])
		if ok {
			s.Succeeded(got.ID)
			nb := fresh[i%len(fresh)]
			nb.ID = fmt.Sprintf("%s-%d", nb.ID, i)
			if err := s.Add(nb); err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
}

// BenchmarkSucceededAllocate: one op is a completion in a fan-in graph and the
// Allocate that refills the freed slot.
func BenchmarkSucceededAllocate(b *testing.B) {
	agents := synth.Agents(50)
	var s *scheduler.Scheduler
	var running []string
	var owner map[string]int
	setup := func() {
		s = newFanIn(b, benchQueue)
		running, owner = nil, map[string]int{}
		for ai, a := range agents {
			if bd, ok := s.Allocate(a); ok {
				running = append(running, bd.ID)
				owner[bd.ID] = ai
			}
		}
	}
	setup()
	b.ResetTimer()
	for b.Loop() {
		if len(running) == 0 {
			b.StopTimer()
			setup()
			b.StartTimer()
		}
		id := running[0]
		running = running[1:]
		ai := owner[id]
		s.Succeeded(id)
		if bd, ok := s.Allocate(agents[ai]); ok {
			running = append(running, bd.ID)
			owner[bd.ID] = ai
		}
		if len(running) < len(agents)/2 {
			for aj, a := range agents {
				if s.Held(a.ID) == 0 {
					if bd, ok := s.Allocate(a); ok {
						running = append(running, bd.ID)
						owner[bd.ID] = aj
					}
				}
			}
		}
	}
}

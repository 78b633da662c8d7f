// Package synth generates synthetic build graphs for scheduler benchmarks.
package synth

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gbc-farm/gbc/scheduler"
)

// Systems the generated builds use, most of them x86_64-linux as on a real farm.
var Systems = []string{"x86_64-linux", "aarch64-linux", "i686-linux", "x86_64-darwin"}

// DrvPath is a realistic-length .drv store path for build i.
func DrvPath(i int) string {
	h := uint64(i)*0x9E3779B97F4A7C15 ^ 0xD1B54A32D192ED03
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var hash [32]byte
	for j := range hash {
		h ^= h >> 29
		h *= 0xBF58476D1CE4E5B9
		hash[j] = alphabet[h>>59]
	}
	return fmt.Sprintf("/nix/store/%s-pkg-%d-1.0.drv", hash[:], i)
}

// ID is a UUID-shaped build id for build i.
func ID(i int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, uint64(i)*2654435761)
}

// FanIn yields n builds shaped like a package set, inputs first: build i
// depends on 1–5 earlier builds, chosen with a strong bias toward the first
// ones (the "stdenv" core everything depends on), so a few builds have
// hundreds of thousands of dependents and a typical closure has hundreds.
type FanIn struct {
	r     *rand.Rand
	n, i  int
	start time.Time
	in    []string
}

func NewFanIn(n int, seed uint64) *FanIn {
	return &FanIn{r: rand.New(rand.NewPCG(seed, 1)), n: n, start: time.Unix(1_700_000_000, 0)}
}

// Next returns the next build; the InputDrvs slice is reused between calls.
func (g *FanIn) Next() (scheduler.Build, bool) {
	if g.i >= g.n {
		return scheduler.Build{}, false
	}
	i := g.i
	g.i++
	g.in = g.in[:0]
	if i > 0 {
		k := 1 + g.r.IntN(5)
		for range k {
			u := g.r.Float64()
			g.in = append(g.in, DrvPath(int(float64(i)*u*u*u)))
		}
	}
	b := scheduler.Build{
		ID:         ID(i),
		Derivation: DrvPath(i),
		System:     system(g.r),
		InputDrvs:  g.in,
		Priority:   0,
		CreatedAt:  g.start.Add(time.Duration(i) * time.Millisecond),
	}
	if g.r.IntN(50) == 0 {
		b.Features = []string{"big-parallel"}
	}
	if g.r.IntN(100) == 0 {
		b.Priority = 1 + g.r.IntN(10)
	}
	return b, true
}

func system(r *rand.Rand) string {
	switch x := r.IntN(100); {
	case x < 85:
		return Systems[0]
	case x < 95:
		return Systems[1]
	case x < 98:
		return Systems[2]
	default:
		return Systems[3]
	}
}

// Independent yields n builds with no inputs (all runnable at once), random
// priorities, spread over systems and feature buckets.
func Independent(n int, seed uint64, yield func(scheduler.Build)) {
	r := rand.New(rand.NewPCG(seed, 2))
	start := time.Unix(1_700_000_000, 0)
	for i := range n {
		b := scheduler.Build{
			ID:         ID(i),
			Derivation: DrvPath(i),
			System:     system(r),
			Priority:   r.IntN(100),
			CreatedAt:  start.Add(time.Duration(i) * time.Millisecond),
		}
		if r.IntN(50) == 0 {
			b.Features = []string{"big-parallel"}
		}
		yield(b)
	}
}

// Agents returns n agents covering the systems, a few with big-parallel.
func Agents(n int) []scheduler.Agent {
	out := make([]scheduler.Agent, n)
	for i := range out {
		a := scheduler.Agent{ID: fmt.Sprintf("agent-%02d", i), MaxParallel: 1}
		switch i % 10 {
		case 0, 1, 2, 3, 4, 5:
			a.Systems = []string{"x86_64-linux", "i686-linux"}
		case 6, 7:
			a.Systems = []string{"aarch64-linux"}
		case 8:
			a.Systems = []string{"x86_64-linux", "i686-linux"}
			a.Features = []string{"big-parallel", "kvm"}
		case 9:
			a.Systems = []string{"x86_64-darwin"}
		}
		out[i] = a
	}
	return out
}

// Command scheduler measures the scheduler package on synthetic farm-sized
// queues and prints a table. Run it through bench/scheduler.sh.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/scheduler"
	"github.com/gbc-farm/gbc/scheduler/synth"
)

func main() {
	n := flag.Int("n", 1_000_000, "queued builds")
	nAgents := flag.Int("agents", 50, "agents")
	events := flag.Int("events", 200_000, "allocations / completions to sample")
	orderN := flag.Int("order-n", 50_000, "builds for the submission-order comparison")
	flag.Parse()
	if err := run(*n, *nAgents, *events, *orderN); err != nil {
		fmt.Fprintln(os.Stderr, "bench scheduler:", err)
		os.Exit(1)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// cpuTime is user+system time of the process: on a shared machine it shows
// the work done, where wall time also counts waiting for a CPU.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type row struct{ what, value, note string }

// orders submits the same fan-in graph inputs first, dependents first and
// shuffled: the scheduler keeps counts exact in every order, at different cost.
func orders(n int, clk clock.Clock) ([]row, error) {
	var all []scheduler.Build
	g := synth.NewFanIn(n, 3)
	for {
		b, ok := g.Next()
		if !ok {
			break
		}
		b.InputDrvs = slices.Clone(b.InputDrvs)
		all = append(all, b)
	}
	rev := slices.Clone(all)
	slices.Reverse(rev)
	shuffled := slices.Clone(all)
	r := rand.New(rand.NewPCG(3, 3))
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	var rows []row
	for _, o := range []struct {
		name string
		bs   []scheduler.Build
	}{{"inputs first", all}, {"dependents first", rev}, {"random order", shuffled}} {
		s := scheduler.New(scheduler.DerivationOrdered, clk)
		start, cpu0 := time.Now(), cpuTime()
		for _, b := range o.bs {
			if err := s.Add(b); err != nil {
				return nil, err
			}
		}
		wall, cpu := time.Since(start), cpuTime()-cpu0
		rows = append(rows, row{"add rate, " + o.name, fmt.Sprintf("%.0f builds/s", float64(n)/wall.Seconds()),
			fmt.Sprintf("%d-build fan-in graph; %.0f builds/CPU-s", n, float64(n)/cpu.Seconds())})
	}
	s := scheduler.New(scheduler.DerivationOrdered, clk)
	start, cpu0 := time.Now(), cpuTime()
	if err := s.AddBatch(shuffled); err != nil {
		return nil, err
	}
	wall, cpu := time.Since(start), cpuTime()-cpu0
	rows = append(rows, row{"add rate, random order, AddBatch", fmt.Sprintf("%.0f builds/s", float64(n)/wall.Seconds()),
		fmt.Sprintf("sorted inputs first, then added; %.0f builds/CPU-s", float64(n)/cpu.Seconds())})
	return rows, nil
}

func run(n, nAgents, events, orderN int) error {
	var rows []row
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	if orderN > 0 {
		r, err := orders(orderN, clk)
		if err != nil {
			return err
		}
		rows = append(rows, r...)
	}
	agents := synth.Agents(nAgents)

	// 1. Submission of a fan-in graph, inputs first.
	base := heapAlloc()
	s := scheduler.New(scheduler.DerivationOrdered, clk)
	g := synth.NewFanIn(n, 1)
	start, cpu0 := time.Now(), cpuTime()
	for {
		b, ok := g.Next()
		if !ok {
			break
		}
		if err := s.Add(b); err != nil {
			return err
		}
	}
	addDur, addCPU := time.Since(start), cpuTime()-cpu0
	mem := heapAlloc() - base
	st := s.Stats()
	rows = append(rows,
		row{"add rate, fan-in graph", fmt.Sprintf("%.0f builds/s", float64(n)/addDur.Seconds()),
			fmt.Sprintf("%d builds in %v wall, %v CPU (%.0f builds/CPU-s), derivation-ordered, inputs first",
				n, addDur.Round(time.Millisecond), addCPU.Round(time.Millisecond), float64(n)/addCPU.Seconds())},
		row{"heap per queued build, fan-in", fmt.Sprintf("%d B", mem/uint64(n)),
			fmt.Sprintf("%.0f MB for %d builds, %d derivations (runtime.MemStats.HeapAlloc after GC)", float64(mem)/1e6, n, st.Derivations)},
	)
	var sumDeps int
	for i := 0; i < n; i += max(1, n/10000) {
		_, c, _ := s.Order(synth.ID(i))
		sumDeps += c
	}
	_, coreDeps, _ := s.Order(synth.ID(0))
	rows = append(rows, row{"graph shape", fmt.Sprintf("%d ready", st.Ready),
		fmt.Sprintf("mean transitive dependents %.0f (sampled), core build %d", float64(sumDeps)/float64((n+max(1, n/10000)-1)/max(1, n/10000)), coreDeps)})

	// 2. Completion → newly runnable → allocation, on the same graph with the
	// agents kept busy: each sample is Succeeded plus the Allocate that fills
	// the slot it freed.
	running := make([]string, 0, nAgents) // FIFO of running builds
	owner := map[string]int{}
	for ai, a := range agents {
		if b, ok := s.Allocate(a); ok {
			running = append(running, b.ID)
			owner[b.ID] = ai
		}
	}
	var lat []time.Duration
	var unlocked int
	for len(lat) < events && len(running) > 0 {
		id := running[0]
		running = running[1:]
		ai := owner[id]
		delete(owner, id)
		t := time.Now()
		nr := s.Succeeded(id)
		b, ok := s.Allocate(agents[ai])
		lat = append(lat, time.Since(t))
		unlocked += len(nr)
		if ok {
			running = append(running, b.ID)
			owner[b.ID] = ai
		}
		// Agents idle for lack of matching work retry when anything finishes.
		if len(running) < nAgents {
			for aj, a := range agents {
				if s.Held(a.ID) == 0 {
					if b, ok := s.Allocate(a); ok {
						running = append(running, b.ID)
						owner[b.ID] = aj
					}
				}
			}
		}
	}
	rows = append(rows,
		row{"succeeded→allocate p50", pct(lat, 0.50).String(), fmt.Sprintf("%d completions, %d builds unlocked, %d queued", len(lat), unlocked, n)},
		row{"succeeded→allocate p99", pct(lat, 0.99).String(), ""},
		row{"succeeded→allocate p99.9", pct(lat, 0.999).String(), ""},
		row{"succeeded→allocate max", pct(lat, 1).String(), "includes completions that unlock many dependents"},
	)
	s = nil
	running, owner = nil, nil

	// 3. Allocate from a million ready builds.
	base = heapAlloc()
	s2 := scheduler.New(scheduler.DerivationOrdered, clk)
	start, cpu0 = time.Now(), cpuTime()
	var addErr error
	synth.Independent(n, 2, func(b scheduler.Build) {
		if err := s2.Add(b); err != nil && addErr == nil {
			addErr = err
		}
	})
	if addErr != nil {
		return addErr
	}
	addDur, addCPU = time.Since(start), cpuTime()-cpu0
	mem = heapAlloc() - base
	rows = append(rows,
		row{"add rate, independent", fmt.Sprintf("%.0f builds/s", float64(n)/addDur.Seconds()),
			fmt.Sprintf("all runnable at once; %.0f builds/CPU-s", float64(n)/addCPU.Seconds())},
		row{"heap per ready build", fmt.Sprintf("%d B", mem/uint64(n)), ""},
	)
	lat = lat[:0]
	for i := 0; len(lat) < events; i++ {
		a := agents[i%nAgents]
		t := time.Now()
		b, ok := s2.Allocate(a)
		lat = append(lat, time.Since(t))
		if ok {
			s2.Succeeded(b.ID)
		}
	}
	rows = append(rows,
		row{"allocate p50", pct(lat, 0.50).String(), fmt.Sprintf("%d ready builds, %d agents, %d allocations", n, nAgents, len(lat))},
		row{"allocate p99", pct(lat, 0.99).String(), ""},
		row{"allocate p99.9", pct(lat, 0.999).String(), ""},
		row{"allocate max", pct(lat, 1).String(), "on a loaded machine, mostly time off-CPU (see loadavg)"},
	)
	runtime.KeepAlive(s2)

	fmt.Printf("%-32s %-18s %s\n", "measure", "value", "notes")
	for _, r := range rows {
		fmt.Printf("%-32s %-18s %s\n", r.what, r.value, r.note)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\n%s %s/%s, GOMAXPROCS=%d, %d CPUs, loadavg %s", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(), load)
	return nil
}

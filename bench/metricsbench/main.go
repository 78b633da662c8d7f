// Command metricsbench measures a Prometheus scrape of the coordinator's
// /metrics with a large queue against an empty coordinator, in the same
// run: builds are recorded with Store.CreateBuilds (as submissions do), a
// coordinator rebuilds its queue from them as after a restart, and the
// /metrics handler (the process's registry: the coordinator's, the
// database's, the cache's, Go runtime and process collectors) is served
// in process, -rounds times. bench/metrics.sh runs it.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/cache"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/metrics"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/signing"
)

type config struct {
	big, small, rounds, systems, agents int
}

func main() {
	var cfg config
	flag.IntVar(&cfg.big, "n", 1000000, "queued builds of the large coordinator")
	flag.IntVar(&cfg.small, "small", 0, "queued builds of the baseline coordinator")
	flag.IntVar(&cfg.rounds, "rounds", 50, "scrapes per coordinator")
	flag.IntVar(&cfg.systems, "systems", 4, "systems the builds are spread over")
	flag.IntVar(&cfg.agents, "agents", 50, "registered agents (not connected: each has its series)")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "metricsbench:", err)
		os.Exit(1)
	}
}

func system(i int) string {
	return []string{"x86_64-linux", "aarch64-linux", "i686-linux", "riscv64-linux", "armv7l-linux", "powerpc64le-linux"}[i%6]
}

type result struct {
	p50, p95, max time.Duration
	bytes, lines  int
	rss           string
}

func run(cfg config) error {
	ctx := context.Background()
	fmt.Printf("metricsbench: %d vs %d queued builds (%d systems, %d agents), %d scrapes each, %s, %d CPUs\n\n",
		cfg.big, cfg.small, cfg.systems, cfg.agents, cfg.rounds, runtime.Version(), runtime.NumCPU())
	res := map[int]result{}
	for _, n := range []int{cfg.small, cfg.big} {
		r, err := measure(ctx, cfg, n)
		if err != nil {
			return fmt.Errorf("%d queued: %w", n, err)
		}
		res[n] = r
	}
	a, b := res[cfg.small], res[cfg.big]
	fmt.Printf("| coordinator | scrape p50 | p95 | max | body | series lines | RSS |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range []int{cfg.small, cfg.big} {
		r := res[n]
		fmt.Printf("| %d queued | %s | %s | %s | %d B | %d | %s |\n", n, ms(r.p50), ms(r.p95), ms(r.max), r.bytes, r.lines, r.rss)
	}
	fmt.Printf("| ratio | %.2f× | %.2f× | %.2f× | | | |\n",
		float64(b.p50)/float64(max(a.p50, 1)), float64(b.p95)/float64(max(a.p95, 1)), float64(b.max)/float64(max(a.max, 1)))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func measure(ctx context.Context, cfg config, n int) (result, error) {
	dir, err := os.MkdirTemp("", "metricsbench")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	dbm := metrics.NewStore()
	st, err := sqlite.OpenWith(ctx, filepath.Join(dir, "gbc.db"), nil, sqlite.Options{Observer: dbm})
	if err != nil {
		return result{}, err
	}
	defer st.Close()
	fmt.Fprintf(os.Stderr, "recording %d builds\n", n)
	start := time.Now()
	now := time.Now()
	const batch = 10000
	for i := 0; i < n; i += batch {
		nbs := make([]db.NewBuild, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			sum := sha256.Sum256(fmt.Appendf(nil, "metricsbench %d %d", n, j))
			hash := nixhash.Base32(sum[:20])
			nbs = append(nbs, db.NewBuild{ID: fmt.Sprintf("%08x-0000-7000-8000-%012x", n, j), Derivation: "/nix/store/" + hash + "-p.drv",
				System:    system(j % cfg.systems),
				Outputs:   []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + hash[:31] + "x-p"}},
				CreatedAt: now.Add(time.Duration(j) * time.Millisecond), InputDerivations: []string{}})
		}
		if err := st.CreateBuilds(ctx, nbs); err != nil {
			return result{}, err
		}
	}
	for i := range cfg.agents {
		if err := st.CreateAgent(ctx, db.Agent{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), Name: fmt.Sprintf("builder-%d", i), Active: i%10 != 9, CreatedAt: now}); err != nil {
			return result{}, err
		}
	}
	fmt.Fprintf(os.Stderr, "recorded in %v; starting the coordinator\n", time.Since(start).Round(time.Millisecond))
	key, err := signing.GenerateNixKey("bench-1")
	if err != nil {
		return result{}, err
	}
	bc, err := cache.Open(ctx, filepath.Join(dir, "cache"), cache.Options{NixKey: key})
	if err != nil {
		return result{}, err
	}
	if err := bc.Count(ctx); err != nil {
		return result{}, err
	}
	c, err := coordinator.New(ctx, coordinator.Config{StateDir: dir, Store: st, Cache: bc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	if got := c.Status(); sum(got.Queued) != n {
		return result{}, fmt.Errorf("coordinator has %d runnable builds, want %d", sum(got.Queued), n)
	}
	debug.FreeOSMemory()
	reg, err := metrics.NewRegistry(c.Collector(), dbm, bc.Collector())
	if err != nil {
		return result{}, err
	}
	h := metrics.Handler(reg, slog.New(slog.DiscardHandler))
	var ds []time.Duration
	var r result
	for i := 0; i < cfg.rounds+1; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, metrics.Path, nil)
		start := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != http.StatusOK {
			return result{}, fmt.Errorf("GET /metrics: %d %s", rec.Code, strings.TrimSpace(rec.Body.String()))
		}
		body := rec.Body.String()
		// The text format writes values as strconv's shortest 'g' form.
		if want := "gbc_builds{state=\"runnable\"} " + strconv.FormatFloat(float64(n), 'g', -1, 64) + "\n"; !strings.Contains(body, want) {
			return result{}, fmt.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
		if i == 0 { // the first scrape warms the caches
			continue
		}
		ds = append(ds, d)
		r.bytes = len(body)
		r.lines = 0
		for _, l := range strings.Split(body, "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				r.lines++
			}
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	r.p50, r.p95, r.max = ds[len(ds)/2], ds[len(ds)*95/100], ds[len(ds)-1]
	r.rss = rss()
	return r, nil
}

func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}

func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

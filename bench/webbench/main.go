// Command webbench measures the web interface's page render times on a
// farm with a large queue against a small farm, in the same run: builds
// are recorded with Store.CreateBuilds (as submissions do), a coordinator
// rebuilds its queue from them as after a restart, and each page is served
// by the web handler in process (no network), -rounds times. bench/web.sh
// runs it.
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
	"strings"
	"time"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/nixhash"
	"github.com/gbc-farm/gbc/web"
)

type config struct {
	big, small, rounds int
	builds, systems    int
}

func main() {
	var cfg config
	flag.IntVar(&cfg.big, "n", 1000000, "queued builds of the large farm")
	flag.IntVar(&cfg.small, "small", 1000, "queued builds of the baseline farm")
	flag.IntVar(&cfg.rounds, "rounds", 30, "requests per page")
	flag.IntVar(&cfg.builds, "per-name", 1000, "builds per derivation name (at least 50, so that both farms' name pages are full)")
	flag.IntVar(&cfg.systems, "systems", 4, "systems the builds are spread over")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "webbench:", err)
		os.Exit(1)
	}
}

// page is one measured request; the path may name a build of the farm.
type page struct {
	name string
	path func(f *farm) string
}

var pages = []page{
	{"/ (overview)", func(*farm) string { return "/" }},
	{"/builds (newest 50)", func(*farm) string { return "/builds" }},
	{"/builds, a page in the middle", func(f *farm) string { return fmt.Sprintf("/builds?before=%d", f.n/2) }},
	{"/builds?state=scheduled", func(*farm) string { return "/builds?state=scheduled" }},
	{"/builds?system=", func(*farm) string { return "/builds?system=" + system(1) }},
	{"/builds?name=", func(*farm) string { return "/builds?name=" + name(0) }},
	{"/builds?tag=", func(*farm) string { return "/builds?tag=jobset%3D" + jobset(3) }},
	{"/builds?system=&name= (both)", func(*farm) string { return "/builds?system=" + system(0) + "&name=" + name(0) }},
	{"/builds/<id>", func(f *farm) string { return "/builds/" + f.someID }},
	{"/events (newest 100)", func(*farm) string { return "/events" }},
	{"/agents", func(*farm) string { return "/agents" }},
}

func system(i int) string {
	return []string{"x86_64-linux", "aarch64-linux", "i686-linux", "riscv64-linux"}[i%4]
}
func name(i int) string   { return fmt.Sprintf("pkg-%d-1.0", i) }
func jobset(i int) string { return fmt.Sprintf("js%d", i) }

type farm struct {
	n      int
	dir    string
	store  db.Store
	coord  *coordinator.Coordinator
	web    http.Handler
	someID string
	rss    string
}

func run(cfg config) error {
	ctx := context.Background()
	fmt.Printf("webbench: %d vs %d queued builds (%d builds per name, %d systems), %d requests per page, %s, %d CPUs\n\n",
		cfg.big, cfg.small, cfg.builds, cfg.systems, cfg.rounds, runtime.Version(), runtime.NumCPU())
	results := map[int]map[string]stats{}
	for _, n := range []int{cfg.small, cfg.big} {
		f, err := newFarm(ctx, cfg, n)
		if err != nil {
			return err
		}
		results[n] = map[string]stats{}
		for _, p := range pages {
			s, err := measure(f, p.path(f), cfg.rounds)
			if err != nil {
				f.close()
				return fmt.Errorf("%d builds, %s: %w", n, p.name, err)
			}
			results[n][p.name] = s
		}
		fmt.Fprintf(os.Stderr, "farm of %d: coordinator RSS %s\n", n, f.rss)
		f.close()
	}
	fmt.Printf("| page | %d queued: p50 | p95 | %d queued: p50 | p95 | p50 ratio |\n|---|---:|---:|---:|---:|---:|\n", cfg.small, cfg.big)
	for _, p := range pages {
		a, b := results[cfg.small][p.name], results[cfg.big][p.name]
		fmt.Printf("| %s | %s | %s | %s | %s | %.1f× |\n", p.name, ms(a.p50), ms(a.p95), ms(b.p50), ms(b.p95), float64(b.p50)/float64(max(a.p50, 1)))
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

type stats struct{ p50, p95 time.Duration }

func measure(f *farm, path string, rounds int) (stats, error) {
	var ds []time.Duration
	for i := 0; i < rounds+1; i++ {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		start := time.Now()
		f.web.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != http.StatusOK {
			return stats{}, fmt.Errorf("GET %s: %d %s", path, rec.Code, strings.TrimSpace(rec.Body.String()))
		}
		if i > 0 { // the first request warms the caches
			ds = append(ds, d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return stats{ds[len(ds)/2], ds[len(ds)*95/100]}, nil
}

func newFarm(ctx context.Context, cfg config, n int) (*farm, error) {
	dir, err := os.MkdirTemp("", "webbench")
	if err != nil {
		return nil, err
	}
	f := &farm{n: n, dir: dir}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "gbc.db"), nil)
	if err != nil {
		return nil, err
	}
	f.store = st
	fmt.Fprintf(os.Stderr, "recording %d builds\n", n)
	start := time.Now()
	now := time.Now()
	const batch = 10000
	for i := 0; i < n; i += batch {
		nbs := make([]db.NewBuild, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			sum := sha256.Sum256(fmt.Appendf(nil, "webbench %d %d", n, j))
			hash := nixhash.Base32(sum[:20])
			nm := name(j % max(n/cfg.builds, 1))
			nb := db.NewBuild{ID: fmt.Sprintf("%08x-0000-7000-8000-%012x", n, j), Derivation: "/nix/store/" + hash + "-" + nm + ".drv",
				System: system(j % cfg.systems), Tags: []db.Tag{{Key: "jobset", Value: jobset(j % 10)}},
				Outputs:   []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + hash[:31] + "x-" + nm}},
				CreatedAt: now.Add(time.Duration(j) * time.Millisecond), InputDerivations: []string{}}
			nbs = append(nbs, nb)
		}
		if err := st.CreateBuilds(ctx, nbs); err != nil {
			return nil, err
		}
	}
	f.someID = fmt.Sprintf("%08x-0000-7000-8000-%012x", n, n/3)
	fmt.Fprintf(os.Stderr, "recorded in %v; starting the coordinator\n", time.Since(start).Round(time.Millisecond))
	if err := st.CreateAgent(ctx, db.Agent{ID: "00000000-0000-0000-0000-000000000001", Name: "builder-1", Active: true, CreatedAt: now}); err != nil {
		return nil, err
	}
	c, err := coordinator.New(ctx, coordinator.Config{StateDir: dir, Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	f.coord = c
	debug.FreeOSMemory()
	f.rss = rss()
	h, err := web.New(web.Config{Coordinator: c, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return nil, err
	}
	f.web = h
	return f, nil
}

func (f *farm) close() {
	f.coord.Close()
	f.store.Close()
	os.RemoveAll(f.dir)
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

// Command dbstore measures the two db.Store backends side by side at farm
// scale and prints a table: CreateBuilds rate (batches as the coordinator
// submits them), allocation (AllocateBuildFor) rate and latency with the
// table full, the queue rebuild at start (ScheduledBuildsPage), the
// database size, and event pruning (--event-retention): rows/s, how long
// each batch holds the writer, and allocation latency while a prune runs.
//
//	go run ./bench/dbstore -n 1000000 -pg postgres://user:pass@127.0.0.1/db
//
// Without -pg (or GBC_TEST_POSTGRES) only SQLite is measured. PostgreSQL
// runs in a fresh schema that is dropped afterwards (-keep to keep it).
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/sqlite"
)

type figures struct {
	backend            string
	createRate         float64 // builds/s
	createDur          time.Duration
	allocRate          float64 // allocations/s
	allocP50, allocP99 time.Duration
	pagedDur           time.Duration
	paged              int
	failed             int           // builds failed-dependency
	failPer            time.Duration // mean per dependent
	failP50, failP99   time.Duration // per transaction of up to 32
	bytes              int64

	pruned                                      int
	pruneDur                                    time.Duration
	batchP50, batchMax                          time.Duration
	pruneAllocs                                 int
	pruneAllocP50, pruneAllocP99, pruneAllocMax time.Duration
}

func main() {
	n := flag.Int("n", 1_000_000, "builds to create")
	batch := flag.Int("batch", 1000, "builds per CreateBuilds call")
	allocs := flag.Int("allocs", 20_000, "allocations to time (sequential, as the coordinator makes them under its lock)")
	pg := flag.String("pg", os.Getenv("GBC_TEST_POSTGRES"), "PostgreSQL URL (a role that may create schemas); empty: SQLite only")
	keep := flag.Bool("keep", false, "keep the SQLite file and PostgreSQL schema")
	inputs := flag.Int("inputs", 0, "input derivations recorded per build (the previous builds' .drv paths)")
	pruneBatch := flag.Int("prune-batch", 10_000, "events deleted per PruneEvents transaction (0: do not measure pruning)")
	prunePause := flag.Bool("prune-pause", true, "rest as long as each batch took before the next, as the coordinator's pruner does")
	failProfile := flag.String("fail-cpuprofile", "", "write a CPU profile of the failed-dependency phase (SQLite) to `FILE`")
	flag.Parse()
	ctx := context.Background()
	var all []figures

	dir, err := os.MkdirTemp("", "gbc-dbbench")
	if err != nil {
		log.Fatal(err)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	path := filepath.Join(dir, "gbc.db")
	ls, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		log.Fatal(err)
	}
	f := measure(ctx, "sqlite", ls, *n, *batch, *allocs, *inputs, *failProfile)
	f.bytes = sqliteSize(ctx, ls, path)
	measurePrune(ctx, &f, ls, *n, *allocs, *pruneBatch, *prunePause)
	ls.Close()
	all = append(all, f)

	if *pg != "" {
		schema := fmt.Sprintf("gbcbench_%d", time.Now().Unix())
		admin, err := sql.Open("pgx", *pg)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
			log.Fatal(err)
		}
		if !*keep {
			defer admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`)
		}
		u, err := url.Parse(*pg)
		if err != nil {
			log.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		ps, err := postgres.Open(ctx, u.String(), nil)
		if err != nil {
			log.Fatal(err)
		}
		f := measure(ctx, "postgres", ps, *n, *batch, *allocs, *inputs, "")
		if _, err := ps.DB().ExecContext(ctx, `VACUUM ANALYZE`); err != nil {
			log.Printf("vacuum: %v", err)
		}
		if err := ps.DB().QueryRowContext(ctx, `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')`).Scan(&f.bytes); err != nil {
			log.Fatal(err)
		}
		measurePrune(ctx, &f, ps, *n, *allocs, *pruneBatch, *prunePause)
		ps.Close()
		all = append(all, f)
	} else {
		fmt.Fprintln(os.Stderr, "dbstore: no -pg / GBC_TEST_POSTGRES: PostgreSQL not measured")
	}

	fmt.Printf("\n%d builds (batches of %d, each with 2 tags, 1 feature, 2 outputs, %d input derivations and a submitted event); %d sequential allocations\n\n", *n, *batch, *inputs, *allocs)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\tCreateBuilds builds/s\tcreate total\tallocations /s\talloc p50\talloc p99\tfailed-dependency\tper build\ttx of 32 p50\tp99\tpaged, 10,000 a page\t(rows)\tdatabase size\t")
	for _, f := range all {
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%.0f\t%v\t%v\t%d\t%v\t%v\t%v\t%v\t%d\t%.1f MiB\t\n", f.backend, f.createRate, f.createDur.Round(time.Millisecond),
			f.allocRate, f.allocP50.Round(time.Microsecond), f.allocP99.Round(time.Microsecond),
			f.failed, f.failPer.Round(time.Microsecond), f.failP50.Round(time.Microsecond), f.failP99.Round(time.Microsecond),
			f.pagedDur.Round(time.Millisecond), f.paged, float64(f.bytes)/(1<<20))
	}
	tw.Flush()
	if *pruneBatch > 0 {
		fmt.Printf("\nPruning every event but the newest, %d per transaction (pause between batches: %v), while one client allocates sequentially\n\n", *pruneBatch, *prunePause)
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "backend\tevents pruned\ttotal\trows/s\tbatch p50\tbatch max\tallocs meanwhile\talloc p50\talloc p99\talloc max\t")
		for _, f := range all {
			fmt.Fprintf(tw, "%s\t%d\t%v\t%.0f\t%v\t%v\t%d\t%v\t%v\t%v\t\n", f.backend, f.pruned, f.pruneDur.Round(time.Millisecond),
				float64(f.pruned)/f.pruneDur.Seconds(), f.batchP50.Round(time.Microsecond), f.batchMax.Round(time.Microsecond),
				f.pruneAllocs, f.pruneAllocP50.Round(time.Microsecond), f.pruneAllocP99.Round(time.Microsecond), f.pruneAllocMax.Round(time.Microsecond))
		}
		tw.Flush()
	}
}

// measurePrune deletes every event but the newest through PruneEvents in
// batches, timing each batch (the time it holds the writer), while one
// client allocates builds the allocation phase left alone, to see what a
// prune costs the dispatch path.
func measurePrune(ctx context.Context, f *figures, s db.Store, n, allocs, batch int, pause bool) {
	if batch <= 0 {
		return
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stop := make(chan struct{})
	lat := make(chan []time.Duration)
	go func() {
		var ls []time.Duration
		step := max(1, n/max(1, allocs))
		for k := 0; k*step+step/2 < n; k++ {
			select {
			case <-stop:
				lat <- ls
				return
			default:
			}
			id := newBuild(k*step+step/2, base, 0).ID
			t := time.Now()
			if _, err := s.AllocateBuildFor(ctx, id, "bench-agent", base); err != nil {
				log.Fatalf("%s: AllocateBuildFor %s during prune: %v", f.backend, id, err)
			}
			ls = append(ls, time.Since(t))
		}
		<-stop
		lat <- ls
	}()
	var batches []time.Duration
	start := time.Now()
	for {
		t := time.Now()
		r, err := s.PruneEvents(ctx, base.Add(1000*24*time.Hour), nil, batch)
		if err != nil {
			log.Fatalf("%s: PruneEvents: %v", f.backend, err)
		}
		d := time.Since(t)
		batches = append(batches, d)
		f.pruned += r.Deleted
		if !r.More {
			break
		}
		if pause {
			time.Sleep(d) // as coordinator.EventRetention rests between batches
		}
	}
	f.pruneDur = time.Since(start)
	close(stop)
	ls := <-lat
	slices.Sort(batches)
	f.batchP50, f.batchMax = batches[len(batches)/2], batches[len(batches)-1]
	slices.Sort(ls)
	if f.pruneAllocs = len(ls); len(ls) > 0 {
		f.pruneAllocP50, f.pruneAllocP99, f.pruneAllocMax = ls[len(ls)/2], ls[len(ls)*99/100], ls[len(ls)-1]
	}
	fmt.Fprintf(os.Stderr, "%s: pruned %d events in %d batches, %v\n", f.backend, f.pruned, len(batches), f.pruneDur.Round(time.Millisecond))
}

func drvPath(i int) string { return fmt.Sprintf("/nix/store/%032d-pkg-%d.drv", i, i) }

func newBuild(i int, at time.Time, inputs int) db.NewBuild {
	id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
	drv := drvPath(i)
	var in []string
	if inputs > 0 {
		in = make([]string, 0, inputs)
		for k := 1; k <= inputs && k <= i; k++ {
			in = append(in, drvPath(i-k))
		}
	}
	return db.NewBuild{
		InputDerivations: in,
		ID:               id, Derivation: drv, System: "x86_64-linux", Priority: i % 5,
		Tags:             []db.Tag{{Key: "jobset", Value: "main"}, {Key: "job", Value: fmt.Sprintf("pkg-%d", i)}},
		RequiredFeatures: []string{"big-parallel"},
		Outputs: []db.DerivationOutput{
			{Name: "out", Path: fmt.Sprintf("/nix/store/%032d-pkg-%d", i, i)},
			{Name: "dev", Path: fmt.Sprintf("/nix/store/%032d-pkg-%d-dev", i, i)},
		},
		CreatedAt: at,
	}
}

func measure(ctx context.Context, name string, s db.Store, n, batch, allocs, inputs int, failProfile string) figures {
	f := figures{backend: name}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	for i := 0; i < n; i += batch {
		bs := make([]db.NewBuild, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			bs = append(bs, newBuild(j, base.Add(time.Duration(j)*time.Millisecond), inputs))
		}
		if err := s.CreateBuilds(ctx, bs); err != nil {
			log.Fatalf("%s: CreateBuilds at %d: %v", name, i, err)
		}
		if (i/batch)%100 == 0 {
			fmt.Fprintf(os.Stderr, "\r%s: %d/%d builds created", name, i+len(bs), n)
		}
	}
	f.createDur = time.Since(start)
	f.createRate = float64(n) / f.createDur.Seconds()
	fmt.Fprintf(os.Stderr, "\r%s: %d builds created in %v\n", name, n, f.createDur.Round(time.Millisecond))

	if err := s.CreateAgent(ctx, db.Agent{ID: "bench-agent", Name: "bench", Active: true, CreatedAt: base}); err != nil {
		log.Fatal(err)
	}
	lat := make([]time.Duration, 0, allocs)
	start = time.Now()
	// Spread over the table (not just its first rows).
	step := max(1, n/max(1, allocs))
	for k := 0; k < allocs && k*step < n; k++ {
		id := newBuild(k*step, base, 0).ID
		t := time.Now()
		if _, err := s.AllocateBuildFor(ctx, id, "bench-agent", base); err != nil {
			log.Fatalf("%s: AllocateBuildFor %s: %v", name, id, err)
		}
		lat = append(lat, time.Since(t))
	}
	total := time.Since(start)
	f.allocRate = float64(len(lat)) / total.Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		f.allocP50 = lat[len(lat)/2]
		f.allocP99 = lat[len(lat)*99/100]
	}
	fmt.Fprintf(os.Stderr, "%s: %d allocations in %v\n", name, len(lat), total.Round(time.Millisecond))

	// A failed build's dependents, as the coordinator writes them: up to
	// 32 per FailDependencies transaction (coordinator.failChunk), 99
	// dependents per failure, builds between those allocated above.
	{
		var txs []time.Duration
		if failProfile != "" {
			pf, err := os.Create(failProfile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(pf)
			defer func() { pprof.StopCPUProfile(); pf.Close() }()
		}
		start = time.Now()
		groups := max(1, allocs/10)
		spacing := n / groups
		for k := 0; k < groups; k++ {
			var deps []db.DependencyFailure
			for i := k * spacing; i < n && len(deps) < 99; i++ {
				if i%step != 0 { // not allocated above
					deps = append(deps, db.DependencyFailure{ID: newBuild(i, base, 0).ID, FailedInput: "bench-input", FailedBuild: "bench-build"})
				}
			}
			for chunk := range slices.Chunk(deps, 32) {
				t := time.Now()
				skipped, err := s.FailDependencies(ctx, base, chunk)
				if err != nil {
					log.Fatalf("%s: FailDependencies: %v", name, err)
				}
				txs = append(txs, time.Since(t))
				f.failed += len(chunk) - len(skipped)
			}
		}
		total = time.Since(start)
		if f.failed > 0 {
			f.failPer = total / time.Duration(f.failed)
			slices.Sort(txs)
			f.failP50, f.failP99 = txs[len(txs)/2], txs[len(txs)*99/100]
		}
		fmt.Fprintf(os.Stderr, "%s: %d builds failed-dependency in %v\n", name, f.failed, total.Round(time.Millisecond))
	}

	// The coordinator's start-up read: pages of 10,000 (keyset).
	start = time.Now()
	for after := int64(0); ; {
		page, last, err := s.ScheduledBuildsPage(ctx, after, 10000)
		if err != nil {
			log.Fatalf("%s: ScheduledBuildsPage after %d: %v", name, after, err)
		}
		if len(page) == 0 {
			break
		}
		f.paged += len(page)
		after = last
	}
	f.pagedDur = time.Since(start)
	fmt.Fprintf(os.Stderr, "%s: ScheduledBuildsPage %d rows in %v\n", name, f.paged, f.pagedDur.Round(time.Millisecond))
	return f
}

// sqliteSize checkpoints the WAL into the main file and returns its size.
func sqliteSize(ctx context.Context, s *sqlite.Store, path string) int64 {
	if _, err := s.DB().ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		log.Printf("checkpoint: %v", err)
	}
	var total int64
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if st, err := os.Stat(path + suffix); err == nil && !strings.HasSuffix(suffix, "shm") {
			total += st.Size()
		}
	}
	return total
}

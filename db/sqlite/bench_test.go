package sqlite_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
)

const benchBuilds = 100_000

// benchBuild is a typical submission: two tags, one feature, two outputs.
func benchBuild(i int, at time.Time) db.NewBuild {
	id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
	return db.NewBuild{
		ID:               id,
		Derivation:       "/nix/store/" + id + "-pkg.drv",
		System:           "x86_64-linux",
		Priority:         i % 7,
		Tags:             []db.Tag{{Key: "jobset", Value: "main"}, {Key: "job", Value: id}},
		RequiredFeatures: []string{"big-parallel"},
		Outputs: []db.DerivationOutput{
			{Name: "out", Path: "/nix/store/" + id + "-pkg"},
			{Name: "dev", Path: "/nix/store/" + id + "-pkg-dev"},
		},
		CreatedAt: at,
	}
}

// openWithAgent opens a benchmark database filled with benchBuilds
// scheduled builds and one active agent "a1"; it is closed at the end.
func openWithAgent(b *testing.B) *sqlite.Store {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	b.Cleanup(func() { s.Close() })
	if err := s.CreateAgent(b.Context(), db.Agent{ID: "a1", Name: "a1", Active: true}); err != nil {
		b.Fatal(err)
	}
	fill(b, s, 10000)
	return s
}

func fill(b *testing.B, s *sqlite.Store, batch int) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bs := make([]db.NewBuild, 0, batch)
	for i := range benchBuilds {
		bs = append(bs, benchBuild(i, at.Add(time.Duration(i)*time.Millisecond)))
		if len(bs) == batch || i == benchBuilds-1 {
			if err := s.CreateBuilds(b.Context(), bs); err != nil {
				b.Fatal(err)
			}
			bs = bs[:0]
		}
	}
}

// BenchmarkCreateBuilds submits 100k builds into an empty database per
// iteration, in batches of the given size, and reports builds/s.
func BenchmarkCreateBuilds(b *testing.B) {
	for _, batch := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var total time.Duration
			n := 0
			for b.Loop() {
				b.StopTimer()
				s := open(b, filepath.Join(b.TempDir(), fmt.Sprintf("bench%d.db", n)))
				b.StartTimer()
				start := time.Now()
				fill(b, s, batch)
				total += time.Since(start)
				n++
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n*benchBuilds)/total.Seconds(), "builds/s")
		})
	}
}

// queue hands out the scheduled builds of a benchmark database in order.
// When all benchBuilds are taken it opens a fresh database with the timer
// stopped, so every iteration works on a queue of at most benchBuilds and
// the benchmark runs b.N iterations whatever b.N is. Call it from the
// benchmark's goroutine only (it stops and starts the timer).
type queue struct {
	b    *testing.B
	s    *sqlite.Store
	next int
}

// take returns the store and the ids of the next n builds (n <= benchBuilds).
func (q *queue) take(n int, at time.Time) (*sqlite.Store, []string) {
	if q.s == nil || q.next+n > benchBuilds {
		q.b.StopTimer()
		q.s = openWithAgent(q.b)
		q.next = 0
		q.b.StartTimer()
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = benchBuild(q.next, at).ID
		q.next++
	}
	return q.s, ids
}

// BenchmarkAllocateBuild allocates builds one by one out of a 100k queue,
// serially and from many goroutines (which queue for the one writer).
func BenchmarkAllocateBuild(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		b.Run(fmt.Sprintf("parallel=%v", parallel), func(b *testing.B) {
			ctx := b.Context()
			at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
			workers := 1
			if parallel {
				workers = 4 * runtime.GOMAXPROCS(0)
			}
			q := &queue{b: b}
			q.take(0, at) // the first database is set up before the timer starts
			b.ResetTimer()
			// Each chunk allocates what is left of the current database,
			// the workers taking ids in turn.
			for done := 0; done < b.N; {
				left := benchBuilds - q.next
				if left == 0 {
					left = benchBuilds // take opens a fresh database
				}
				s, ids := q.take(min(b.N-done, left), at)
				var next atomic.Int64
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(len(ids)) {
								return
							}
							if _, err := s.AllocateBuildFor(ctx, ids[i], "a1", at); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				if b.Failed() {
					return
				}
				done += len(ids)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
		})
	}
}

// BenchmarkTransitions measures the write path of a dispatch round on a
// 100k-build database: failed-dependency in chunks of 32 (what a failure
// with many dependents costs the writer) and allocate+start+succeed of
// one build.
func BenchmarkTransitions(b *testing.B) {
	ctx := b.Context()
	at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	b.Run("fail-dependencies-32", func(b *testing.B) {
		q := &queue{b: b}
		q.take(0, at)
		b.ResetTimer()
		for range b.N {
			s, ids := q.take(32, at)
			deps := make([]db.DependencyFailure, 0, len(ids))
			for _, id := range ids {
				deps = append(deps, db.DependencyFailure{ID: id, FailedInput: "/nix/store/x.drv", FailedBuild: "y"})
			}
			if _, err := s.FailDependencies(ctx, at, deps); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "builds/s")
	})
	b.Run("allocate-start-succeed", func(b *testing.B) {
		q := &queue{b: b}
		q.take(0, at)
		hw := db.Hardware{Cores: 8, Backend: "nix"}
		b.ResetTimer()
		for range b.N {
			s, ids := q.take(1, at)
			id := ids[0]
			if _, err := s.AllocateBuildFor(ctx, id, "a1", at); err != nil {
				b.Fatal(err)
			}
			if err := s.StartBuildWith(ctx, id, "a1", at, hw); err != nil {
				b.Fatal(err)
			}
			res := []db.OutputResult{{Name: "out", Path: "/nix/store/" + id + "-pkg", NarHash: "sha256:x", NarSize: 1, FileHash: "sha256:y", FileSize: 1, Compression: "zstd", File: "f"},
				{Name: "dev", Path: "/nix/store/" + id + "-pkg-dev", NarHash: "sha256:x", NarSize: 1, FileHash: "sha256:y", FileSize: 1, Compression: "zstd", File: "f"}}
			if err := s.SucceedBuild(ctx, id, "a1", at, res); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rounds/s")
	})
}

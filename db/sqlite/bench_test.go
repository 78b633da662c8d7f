package sqlite_test

import (
	"fmt"
	"path/filepath"
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

// BenchmarkAllocateBuild allocates builds one by one out of a 100k queue,
// serially and from many goroutines (which queue for the one writer).
func BenchmarkAllocateBuild(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		b.Run(fmt.Sprintf("parallel=%v", parallel), func(b *testing.B) {
			ctx := b.Context()
			s := openWithAgent(b)
			at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
			// Each iteration allocates a distinct build; past 100k the
			// benchmark would measure conflicts, so cap it.
			if b.N > benchBuilds {
				b.N = benchBuilds
			}
			next := make(chan int, b.N)
			for i := range b.N {
				next <- i
			}
			close(next)
			b.ResetTimer()
			start := time.Now()
			alloc := func() {
				i := <-next
				if err := s.AllocateBuild(ctx, benchBuild(i, at).ID, "a1", at); err != nil {
					b.Error(err)
				}
			}
			if parallel {
				b.SetParallelism(4)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						alloc()
					}
				})
			} else {
				for range b.N {
					alloc()
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
		})
	}
}

// BenchmarkRunnableBuilds measures the queue rebuild at start with 100k
// scheduled builds.
func BenchmarkRunnableBuilds(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	defer s.Close()
	fill(b, s, 10000)
	b.ResetTimer()
	for b.Loop() {
		bs, err := s.RunnableBuilds(b.Context())
		if err != nil || len(bs) != benchBuilds {
			b.Fatalf("RunnableBuilds: %d builds, %v", len(bs), err)
		}
	}
}

// BenchmarkTransitions measures the write path of a dispatch round on a
// 100k-build database: failed-dependency in chunks of 32 (what a failure
// with many dependents costs the writer) and allocate+start+succeed of
// one build.
func BenchmarkTransitions(b *testing.B) {
	ctx := b.Context()
	s := openWithAgent(b)
	at := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	next := 0
	take := func(n int) []string {
		if next+n > benchBuilds {
			b.Skip("out of builds")
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = benchBuild(next, at).ID
			next++
		}
		return ids
	}
	b.Run("fail-dependencies-32", func(b *testing.B) {
		if b.N*32 > benchBuilds/2 {
			b.N = benchBuilds / 64
		}
		start := time.Now()
		for range b.N {
			var deps []db.DependencyFailure
			for _, id := range take(32) {
				deps = append(deps, db.DependencyFailure{ID: id, Cause: "dependency failed: input /nix/store/x.drv (build y)"})
			}
			if _, err := s.FailDependencies(ctx, at, deps); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*32)/time.Since(start).Seconds(), "builds/s")
	})
	b.Run("allocate-start-succeed", func(b *testing.B) {
		if b.N > benchBuilds/4 {
			b.N = benchBuilds / 4
		}
		hw := db.Hardware{Cores: 8, Backend: "nix"}
		start := time.Now()
		for range b.N {
			id := take(1)[0]
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
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "rounds/s")
	})
}

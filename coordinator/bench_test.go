package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/nixhash"
)

// TestSubmitRate is a measurement, not a check: GBC_BENCH_SUBMIT=N submits a
// synthetic fan-in graph of N derivations (every 100th is a "library" that the
// next 99 depend on) in batches of MaxSubmit through Coordinator.Submit (no
// SSH) and prints builds/s. Skipped unless set.
func TestSubmitRate(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GBC_BENCH_SUBMIT"))
	if n <= 0 {
		t.Skip("set GBC_BENCH_SUBMIT=N to measure")
	}
	submitRate(t, newHarness(t), n, "sqlite")
}

// TestSubmitRatePostgres is TestSubmitRate on the PostgreSQL store
// (GBC_TEST_POSTGRES), for the backend comparison in bench/db.sh.
func TestSubmitRatePostgres(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GBC_BENCH_SUBMIT"))
	if n <= 0 {
		t.Skip("set GBC_BENCH_SUBMIT=N to measure")
	}
	dsn := pgtest.Schema(t)
	h := newHarness(t)
	h.c.Close()
	ps, err := postgres.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	c, err := New(context.Background(), Config{
		StateDir: h.dir + "/state", Store: ps, Clock: h.clk, StoreDirs: []string{h.storeDir},
		DisconnectGrace: grace, Heartbeat: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	submitRate(t, h, n, "postgres")
}

func submitRate(t *testing.T, h *harness, n int, backend string) {
	drvs := make([]string, 0, n)
	var lib string
	for i := range n {
		if i%100 == 0 {
			lib = h.drv(fmt.Sprint("lib", i), "x86_64-linux")
			drvs = append(drvs, lib)
			continue
		}
		drvs = append(drvs, h.drv(fmt.Sprint("pkg", i), "x86_64-linux", withInput(lib)))
	}
	start := time.Now()
	for i := 0; i < len(drvs); i += MaxSubmit {
		if _, err := h.c.Submit(context.Background(), Submission{Derivations: drvs[i:min(i+MaxSubmit, len(drvs))]}); err != nil {
			t.Fatal(err)
		}
	}
	d := time.Since(start)
	st := h.c.Status()
	fmt.Printf("| submit (in-process, %s, batches of %d) | %d builds | %v | %.0f builds/s | ready %d waiting %d |\n",
		backend, MaxSubmit, n, d.Round(time.Millisecond), float64(n)/d.Seconds(), st.Queued["x86_64-linux"], st.Blocked)
}

// TestRestoreMemory is a measurement, not a check: GBC_BENCH_RESTORE=N
// records N queued builds (the fan-in graph of TestSubmitRate, /nix/store
// paths, input derivations recorded) with Store.CreateBuilds, then times
// New rebuilding the queue from them and prints the heap it keeps (after a
// GC), the highest HeapAlloc sampled during the rebuild and the process's
// VmRSS/VmHWM. GBC_BENCH_RESTORE_DB=PATH keeps the database there and
// reuses it when it exists (recording a million builds takes minutes);
// GBC_BENCH_RESTORE_PROFILE=FILE writes a heap profile after the rebuild.
func TestRestoreMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GBC_BENCH_RESTORE"))
	if n <= 0 {
		t.Skip("set GBC_BENCH_RESTORE=N to measure")
	}
	ctx := context.Background()
	path := os.Getenv("GBC_BENCH_RESTORE_DB")
	if path == "" {
		path = filepath.Join(t.TempDir(), "gbc.db")
	}
	_, err := os.Stat(path)
	fresh := errors.Is(err, fs.ErrNotExist)
	st, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if fresh {
		drv := func(name string, i int) string {
			sum := sha256.Sum256([]byte(fmt.Sprint(name, i)))
			return "/nix/store/" + nixhash.Base32(sum[:20]) + "-" + fmt.Sprint(name, "-", i) + ".drv"
		}
		now := time.Now()
		var lib string
		for i := 0; i < n; i += MaxSubmit {
			batch := make([]db.NewBuild, 0, MaxSubmit)
			for j := i; j < min(n, i+MaxSubmit); j++ {
				nb := db.NewBuild{ID: uuid.NewString(), System: "x86_64-linux", CreatedAt: now.Add(time.Duration(j) * time.Millisecond),
					InputDerivations: []string{}}
				if j%100 == 0 {
					nb.Derivation = drv("lib", j)
					lib = nb.Derivation
				} else {
					nb.Derivation = drv("pkg", j)
					nb.InputDerivations = []string{lib}
				}
				nb.Outputs = []db.DerivationOutput{{Name: "out", Path: strings.TrimSuffix(nb.Derivation, ".drv")}}
				batch = append(batch, nb)
			}
			if err := st.CreateBuilds(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	c, err := New(ctx, Config{StateDir: t.TempDir(), Store: st, StoreDirs: []string{"/nix/store"},
		DisconnectGrace: grace, Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	close(stop)
	<-sampled
	defer c.Close()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if p := os.Getenv("GBC_BENCH_RESTORE_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	status, _ := os.ReadFile("/proc/self/status")
	var rss, hwm string
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			if f[0] == "VmRSS:" {
				rss = f[1] + " kB"
			} else {
				hwm = f[1] + " kB"
			}
		}
	}
	stats := c.sched.Stats()
	fmt.Printf("| restore %d queued (fresh db %v) | %v | heap kept %.0f MB (%d B/build) | peak HeapAlloc %.0f MB | VmRSS %s VmHWM %s | ready %d waiting %d |\n",
		n, fresh, d.Round(time.Millisecond), float64(m.HeapAlloc)/1e6, m.HeapAlloc/uint64(n), float64(peak.Load())/1e6, rss, hwm,
		stats.Ready, stats.Waiting)
}

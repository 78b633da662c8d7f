package coordinator

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
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

package coordinator

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
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
	h := newHarness(t)
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
	fmt.Printf("| submit (in-process, batches of %d) | %d builds | %v | %.0f builds/s | ready %d waiting %d |\n",
		MaxSubmit, n, d.Round(time.Millisecond), float64(n)/d.Seconds(), st.Queued["x86_64-linux"], st.Blocked)
}

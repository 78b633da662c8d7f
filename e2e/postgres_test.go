package e2e

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/gbc-farm/gbc/db/postgres/pgtest"
)

// newFarmOn is newFarm with a coordinator on the database dsn.
func newFarmOn(t *testing.T, dsn string) *farm {
	t.Helper()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	f.startCoordinator("--database", dsn)
	return f
}

// countRows reads how many rows table has in the test schema, proving the
// farm's state really is in PostgreSQL.
func countRows(t *testing.T, dsn, query string) int {
	t.Helper()
	d, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var n int
	for try := 0; ; try++ {
		err = d.QueryRow(query).Scan(&n)
		if err == nil || try == 20 {
			break
		}
		time.Sleep(500 * time.Millisecond) // the restart test may just have bounced the server
	}
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestBuildGraphOnPostgres: the walking skeleton with
// `--database postgres://…`: real ssh, agents and nix-store; every build,
// attempt, result and event lands in PostgreSQL.
func TestBuildGraphOnPostgres(t *testing.T) {
	dsn := pgtest.Schema(t)
	f := newFarmOn(t, dsn)
	if !strings.Contains(f.coord.log.String(), "database=postgres://") {
		t.Errorf("coordinator log does not name the PostgreSQL database:\n%s", f.coord.log.String())
	}
	f.addAgent("pg-agent", "--max-parallel-builds", "2")
	nonce := fmt.Sprint(time.Now().UnixNano())
	var drvs []string
	for _, attr := range []string{"base", "left", "right", "top"} {
		drvs = append(drvs, instantiate(t, nonce, attr))
	}
	r := f.ssh(f.admin, "build --wait "+strings.Join(drvs, " "))
	if r.Code != 0 {
		t.Fatalf("build --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	ids := lines(r.Stdout)[:len(drvs)]
	for _, id := range ids {
		if b := f.show(id); b.State != "succeeded" || len(b.Outputs) == 0 || b.Outputs[0].NarHash == "" {
			t.Errorf("build %s: state %s, outputs %+v", id, b.State, b.Outputs)
		}
	}
	if n := countRows(t, dsn, `SELECT COUNT(*) FROM builds WHERE state = 'succeeded'`); n != len(drvs) {
		t.Errorf("%d succeeded builds in PostgreSQL, want %d", n, len(drvs))
	}
	if n := countRows(t, dsn, `SELECT COUNT(*) FROM results`); n < len(drvs) {
		t.Errorf("%d results in PostgreSQL, want at least %d", n, len(drvs))
	}
	if n := countRows(t, dsn, `SELECT COUNT(*) FROM events WHERE type = 'succeeded'`); n != len(drvs) {
		t.Errorf("%d succeeded events in PostgreSQL, want %d", n, len(drvs))
	}
}

// TestPostgresRestartMidRun bounces the PostgreSQL cluster
// (pg_ctlcluster … restart) while builds are running and their results are
// arriving: every build still ends succeeded with its results recorded.
// Results that could not be committed were not acknowledged, so the agent
// resent them; the store's own retries cover most of the outage.
func TestPostgresRestartMidRun(t *testing.T) {
	cluster := strings.Fields(os.Getenv("GBC_TEST_PG_CLUSTER"))
	if len(cluster) == 0 {
		cluster = []string{"15", "main"}
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("restart test needs root and pg_ctlcluster in CI: %v", err)
		}
		t.Skipf("skipping: restarting PostgreSQL needs root and pg_ctlcluster (%v)", err)
	}
	dsn := pgtest.ExclusiveSchema(t) // no other PostgreSQL test runs meanwhile
	f := newFarmOn(t, dsn)
	f.addAgent("pg-agent", "--max-parallel-builds", "4")
	const n = 8
	nonce := fmt.Sprint(time.Now().UnixNano())
	var drvs []string
	for i := range n {
		drvs = append(drvs, run(t, "nix-instantiate", "testdata/slow-set.nix", "--argstr", "nonce", nonce,
			"--argstr", "n", fmt.Sprint(n), "--argstr", "sleep", "2", "-A", fmt.Sprintf("b%d", i)))
	}
	ids := lines(f.mustSSH("build " + strings.Join(drvs, " ")))
	if len(ids) != n {
		t.Fatalf("build printed %d ids, want %d", len(ids), n)
	}
	// Restart once the first builds run, so results arrive during and
	// right after the outage.
	f.waitState(ids[0], time.Minute, "started", "succeeded")
	restart := exec.Command("pg_ctlcluster", append(cluster, "restart")...)
	if out, err := restart.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctlcluster %s restart: %v\n%s", strings.Join(cluster, " "), err, out)
	}
	t.Logf("PostgreSQL restarted")
	deadline := time.Now().Add(3 * time.Minute)
	for _, id := range ids {
		for {
			r := f.ssh(f.admin, "build show "+id+" --json")
			var b buildJSON
			if r.Code == 0 && jsonUnmarshal(r.Stdout, &b) == nil && b.State == "succeeded" {
				if len(b.Outputs) == 0 || b.Outputs[0].NarHash == "" {
					t.Errorf("build %s succeeded without recorded outputs: %+v", id, b)
				}
				break
			}
			if r.Code == 0 && (b.State == "failed" || b.State == "canceled" || b.State == "failed-dependency") {
				t.Fatalf("build %s ended %s after the restart", id, b.State)
			}
			if time.Now().After(deadline) {
				t.Fatalf("build %s not succeeded 3 minutes after the restart (last: exit %d %s %s)", id, r.Code, r.Stdout, r.Stderr)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	clog := f.coord.log.String()
	t.Logf("coordinator: %d store retries, %d results left unacknowledged for a resend",
		strings.Count(clog, "database connection lost, retrying"), strings.Count(clog, "result not recorded"))
	if got := countRows(t, dsn, `SELECT COUNT(DISTINCT build_id) FROM results`); got != n {
		t.Errorf("results recorded for %d builds, want %d", got, n)
	}
	if got := countRows(t, dsn, `SELECT COUNT(*) FROM events WHERE type = 'succeeded'`); got != n {
		t.Errorf("%d succeeded events, want %d (one per build)", got, n)
	}
}

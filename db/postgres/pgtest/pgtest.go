// Package pgtest gives tests a throw-away PostgreSQL schema in the
// database named by GBC_TEST_POSTGRES (a postgres:// URL whose role may
// create schemas). Without it tests skip with a message saying how to run
// them, except in CI (CI=true), where a missing database is a failure: CI
// must never pass by silently testing one backend.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver
)

// Env names the variable holding the test database URL.
const Env = "GBC_TEST_POSTGRES"

// URL returns the test database URL, skipping (or, in CI, failing) the
// test when none is configured or reachable.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(Env)
	if u == "" {
		unavailable(t, Env+" is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := sql.Open("pgx", u)
	if err == nil {
		err = d.PingContext(ctx)
		d.Close()
	}
	if err != nil {
		unavailable(t, fmt.Sprintf("%s=%s is not reachable: %v", Env, u, err))
	}
	return u
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL tests cannot run in CI: %s (.ci/run starts the cluster and exports %s)", why, Env)
	}
	t.Skipf("skipping PostgreSQL test: %s (set %s=postgres://user:pass@127.0.0.1/db to run it; .ci/run does)", why, Env)
}

// Schema creates an empty schema, dropped when the test ends, and returns
// a URL that uses it (search_path), so each test sees its own tables.
// It holds the shared side of the restart lock (see Exclusive) for the
// test's lifetime.
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	Shared(t)
	return newSchema(t, base)
}

// ExclusiveSchema is Schema for a test that restarts the server: it holds
// the exclusive side of the restart lock instead, so no other PostgreSQL
// test (in any test binary) runs meanwhile.
func ExclusiveSchema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	Exclusive(t)
	return newSchema(t, base)
}

func newSchema(t testing.TB, base string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	name := "gbct_" + hex.EncodeToString(b[:])
	d, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	ctx := context.Background()
	if _, err := d.ExecContext(ctx, `CREATE SCHEMA `+name); err != nil {
		d.Close()
		t.Fatalf("pgtest: creating schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		defer d.Close()
		// Retried: a restart test may have just bounced the server.
		for try := 0; try < 20; try++ {
			if _, err := d.ExecContext(ctx, `DROP SCHEMA `+name+` CASCADE`); err == nil {
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("pgtest: could not drop schema %s", name)
	})
	return WithSchema(t, base, name)
}

// WithSchema returns u with search_path set to schema.
func WithSchema(t testing.TB, u, schema string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		t.Fatalf("pgtest: %s must be a postgres:// URL, got %q", Env, u)
	}
	q := pu.Query()
	q.Set("search_path", schema)
	pu.RawQuery = q.Encode()
	return pu.String()
}

// lockPath is shared by every test binary: go test runs packages in
// parallel, and a test that restarts the server must not pull it from
// under another package's tests.
func lockPath() string { return filepath.Join(os.TempDir(), "gbc-test-postgres.lock") }

// Shared holds the shared side of the cross-process restart lock until
// the test ends.
func Shared(t testing.TB) { flock(t, syscall.LOCK_SH) }

// Exclusive holds the exclusive side until the test ends: no other test
// using PostgreSQL runs meanwhile, in this process or another.
func Exclusive(t testing.TB) { flock(t, syscall.LOCK_EX) }

func flock(t testing.TB, how int) {
	t.Helper()
	f, err := os.OpenFile(lockPath(), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		t.Fatalf("pgtest: locking %s: %v", lockPath(), err)
	}
	t.Cleanup(func() { f.Close() })
}

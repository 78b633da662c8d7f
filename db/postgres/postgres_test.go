package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/dbtest"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
	"github.com/gbc-farm/gbc/migrations"
)

func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", postgres.Redact(dsn), err)
	}
	return s
}

func TestStore(t *testing.T) {
	pgtest.URL(t)
	dbtest.Run(t, func(t *testing.T) db.Store {
		s := open(t, pgtest.Schema(t))
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

func rawDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	d, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConcurrentMigration: coordinators starting at once on an empty
// database both come up, and the schema is migrated exactly once.
func TestConcurrentMigration(t *testing.T) {
	dsn := pgtest.Schema(t)
	const n = 4
	errs := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for range n {
		go func() {
			start.Wait()
			s, err := postgres.Open(t.Context(), dsn, nil)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	start.Done()
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	want, err := migrations.Latest(migrations.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	var rows, max int
	if err := rawDB(t, dsn).QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	if rows != want || max != want {
		t.Errorf("schema_migrations: %d rows, max %d; want %d", rows, max, want)
	}
}

// TestMigrationWaitsForLock: while another session holds the migration
// lock, Open waits; it proceeds once the lock is released.
func TestMigrationWaitsForLock(t *testing.T) {
	dsn := pgtest.Schema(t)
	ctx := t.Context()
	conn, err := rawDB(t, dsn).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const key = `hashtextextended('gbc-migrations:' || current_schema(), 0)`
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+key+`)`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s, err := postgres.Open(ctx, dsn, nil)
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Open finished (%v) while another session held the migration lock", err)
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(`+key+`)`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open after unlock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open still waiting 10 s after the lock was released")
	}
}

func TestMigrationsIdempotentAndNewerRefused(t *testing.T) {
	dsn := pgtest.Schema(t)
	open(t, dsn).Close()
	open(t, dsn).Close()
	raw := rawDB(t, dsn)
	if err := migrations.Apply(t.Context(), raw, migrations.Postgres, nil); err != nil {
		t.Fatalf("Apply on migrated db: %v", err)
	}
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(t.Context(), dsn, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a database from the future")
	}
	if !errors.Is(err, migrations.ErrTooNew) {
		t.Errorf("Open: %v, want ErrTooNew", err)
	}
}

// TestUnreachable: a server that is not there fails Open promptly with a
// message naming the database but not its password.
func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := postgres.Open(ctx, "postgres://u:secret@127.0.0.1:1/nodb?connect_timeout=2", nil)
	if err == nil {
		t.Fatal("Open succeeded against port 1")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error leaks the password: %v", err)
	}
	if !postgres.Retryable(err) {
		t.Errorf("connection refused is not Retryable: %v", err)
	}
}

// TestEventIDsInCommitOrder: a follower that resumes after the highest id
// it has seen misses nothing while many writers commit concurrently (ids
// from a plain sequence would be allocated in one order and committed in
// another).
func TestEventIDsInCommitOrder(t *testing.T) {
	s := open(t, pgtest.Schema(t))
	defer s.Close()
	ctx := t.Context()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := s.CreateBuilds(ctx, []db.NewBuild{{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux", CreatedAt: time.Now()}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[int64]bool{}
	var after int64
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true // one more pass after the last commit
		default:
		}
		es, err := s.Events(ctx, db.EventFilter{AfterID: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			seen[e.ID] = true
			after = e.ID
		}
	}
	all, err := s.Events(ctx, db.EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != writers*each {
		t.Fatalf("%d events, want %d", len(all), writers*each)
	}
	for _, e := range all {
		if !seen[e.ID] {
			t.Errorf("event %d (%s) committed below an id the follower had already passed", e.ID, e.Build)
		}
	}
}

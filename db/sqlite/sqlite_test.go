package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/dbtest"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/migrations"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestStore(t *testing.T) {
	dbtest.Run(t, func(t *testing.T) db.Store {
		s := open(t, filepath.Join(t.TempDir(), "gbc.db"))
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "dir with ? and #", "gbc.db")
	// The directory must exist; the odd characters check the URI escaping.
	if err := mkdirAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	if err := s.CreateAgent(ctx, db.Agent{ID: "a1", Name: "n", Active: true, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuilds(ctx, []db.NewBuild{{ID: "b1", Derivation: "/nix/store/x.drv", System: "x86_64-linux", CreatedAt: at}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AllocateBuildFor(ctx, "b1", "a1", at); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	b, err := s.Build(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != db.StateAllocated || b.AgentID != "a1" || !b.CreatedAt.Equal(at) || len(b.Attempts) != 1 {
		t.Errorf("after reopen: %+v", b)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "gbc.db")
	open(t, path).Close()
	open(t, path).Close()
	raw := rawDB(t, path)
	want, err := migrations.Latest(migrations.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := migrations.Apply(ctx, raw, migrations.SQLite, nil); err != nil {
			t.Fatalf("Apply on migrated db: %v", err)
		}
	}
	var n, max int
	if err := raw.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != want || max != want {
		t.Errorf("schema_migrations: %d rows, max %d; want %d", n, max, want)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gbc.db")
	open(t, path).Close()
	raw := rawDB(t, path)
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(t.Context(), path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a database from the future")
	}
	if !errors.Is(err, migrations.ErrTooNew) {
		t.Errorf("Open: %v, want ErrTooNew", err)
	}
}

func TestPragmas(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gbc.db")
	open(t, path).Close()
	raw := rawDB(t, path)
	var mode string
	if err := raw.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v; want wal (persistent)", mode, err)
	}
}

func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// TestTwoStoresOneFile: a second process (e.g. an admin command) writing
// the same database waits for the lock instead of failing.
func TestTwoStoresOneFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "gbc.db")
	s1, s2 := open(t, path), open(t, path)
	defer s1.Close()
	defer s2.Close()
	errs := make(chan error, 2)
	for i, s := range []*sqlite.Store{s1, s2} {
		go func() {
			for n := range 50 {
				id := fmt.Sprintf("s%d-%d", i, n)
				err := s.CreateBuilds(ctx, []db.NewBuild{{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux"}})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	bs, err := s1.Builds(ctx, db.BuildFilter{})
	if err != nil || len(bs) != 100 {
		t.Fatalf("Builds: %d, %v", len(bs), err)
	}
}

package migrations

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	_ "github.com/mattn/go-sqlite3"
)

func rawDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func TestEmbeddedLoad(t *testing.T) {
	ms, err := List(SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Name != "0001_init.sql" {
		t.Fatalf("embedded migrations: %+v", ms)
	}
	pg, err := List(Postgres)
	if err != nil {
		t.Fatal(err)
	}
	// Both dialects describe the same schema, so they move in step.
	if len(pg) != len(ms) {
		t.Errorf("%d postgres migrations, %d sqlite ones; every schema change needs both", len(pg), len(ms))
	}
	if _, err := List("oracle"); err == nil {
		t.Error("List accepted an unknown dialect")
	}
}

func TestLoadRejectsBadSets(t *testing.T) {
	cases := map[string]fstest.MapFS{
		"gap":       {"0001_a.sql": {}, "0003_c.sql": {}},
		"duplicate": {"0001_a.sql": {}, "01_b.sql": {}},
		"no start":  {"0002_b.sql": {}},
		"bad name":  {"0001_a.sql": {}, "init.sql": {}},
		"zero":      {"0000_a.sql": {}},
	}
	for name, fsys := range cases {
		if ms, err := load(fsys); err == nil {
			t.Errorf("%s: accepted %+v", name, ms)
		}
	}
	ms, err := load(fstest.MapFS{"0002_b.sql": {}, "0001_a.sql": {}, "README": {}})
	if err != nil || len(ms) != 2 || ms[0].Version != 1 || ms[1].Version != 2 {
		t.Errorf("ordering: %+v, %v", ms, err)
	}
}

func TestApplyStepsAndRollback(t *testing.T) {
	ctx := t.Context()
	db := rawDB(t)
	v1 := []Migration{{1, "0001_a.sql", "CREATE TABLE a (x INTEGER);"}}
	if err := apply(ctx, db, SQLite, v1, nil); err != nil {
		t.Fatal(err)
	}
	// Version 2 creates a table then fails: the table must not survive and
	// the recorded version must stay 1.
	bad := append(v1, Migration{2, "0002_b.sql", "CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);"})
	err := apply(ctx, db, SQLite, bad, nil)
	if err == nil || !strings.Contains(err.Error(), "0002_b.sql") {
		t.Fatalf("failing migration: %v", err)
	}
	if v, err := Current(ctx, db, SQLite); err != nil || v != 1 {
		t.Errorf("version after failed step: %d, %v", v, err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("table from failed migration survived: %d, %v", n, err)
	}
	good := append(v1, Migration{2, "0002_b.sql", "CREATE TABLE b (x INTEGER);"})
	if err := apply(ctx, db, SQLite, good, nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := Current(ctx, db, SQLite); v != 2 {
		t.Errorf("version: %d, want 2", v)
	}
	// An older binary (knowing only v1) must refuse this database.
	if err := apply(ctx, db, SQLite, v1, nil); !errors.Is(err, ErrTooNew) {
		t.Errorf("older binary: %v, want ErrTooNew", err)
	}
}

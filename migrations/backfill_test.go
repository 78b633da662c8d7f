package migrations_test

import (
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"

	"github.com/gbc-farm/gbc/db/postgres/pgtest"
	"github.com/gbc-farm/gbc/migrations"
)

// TestAttemptKindBackfill: migration 7 gives attempts recorded before it
// the kind their reason meant then, and failed-dependency builds their
// failed input and build, on both dialects.
func TestAttemptKindBackfill(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		d, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "m.db"))
		if err != nil {
			t.Fatal(err)
		}
		d.SetMaxOpenConns(1)
		t.Cleanup(func() { d.Close() })
		testAttemptKindBackfill(t, d, migrations.SQLite)
	})
	t.Run("postgres", func(t *testing.T) {
		d, err := sql.Open("pgx", pgtest.Schema(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		testAttemptKindBackfill(t, d, migrations.Postgres)
	})
}

func testAttemptKindBackfill(t *testing.T, d *sql.DB, dialect migrations.Dialect) {
	ctx := t.Context()
	if err := migrations.ApplyThrough(ctx, d, dialect, 6, nil); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO agents (id, name) VALUES ('a1', 'a1')`,
		`INSERT INTO builds (id, derivation, system, state, failure_reason) VALUES
			('b1', '/nix/store/b1-x.drv', 'x86_64-linux', 'failed', 'infrastructure: setup-failure: no input (3 attempts)'),
			('b2', '/nix/store/b2-x.drv', 'x86_64-linux', 'failed-dependency', 'dependency failed: input /nix/store/in-x.drv (build b1)'),
			('b3', '/nix/store/b3-x.drv', 'x86_64-linux', 'failed', 'build: exit 1')`,
		`INSERT INTO attempts (build_id, number, agent_id, outcome, reason) VALUES
			('b1', 1, 'a1', 'requeued', 'setup-failure: no input'),
			('b1', 2, 'a1', 'requeued', 'waiting for inputs: setup-failure: no input (missing /nix/store/in-x.drv)'),
			('b1', 3, 'a1', 'requeued', 'verification: NAR hash x, reported y'),
			('b1', 4, 'a1', 'requeued', 'agent disconnected'),
			('b1', 5, 'a1', 'failed', 'infrastructure: setup-failure: no input (3 attempts)'),
			('b3', 1, 'a1', 'succeeded', ''),
			('b3', 2, 'a1', 'failed', 'build: exit 1'),
			('b3', 3, 'a1', '', '')`,
	} {
		if _, err := d.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := migrations.Apply(ctx, d, dialect, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"b1/1": "setup", "b1/2": "waiting-for-inputs", "b1/3": "verification", "b1/4": "infrastructure",
		"b1/5": "setup", "b3/1": "", "b3/2": "build", "b3/3": "",
	}
	rows, err := d.QueryContext(ctx, `SELECT build_id, number, kind FROM attempts`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			id, kind string
			num      int
		)
		if err := rows.Scan(&id, &num, &kind); err != nil {
			t.Fatal(err)
		}
		key := id + "/" + strconv.Itoa(num)
		if kind != want[key] {
			t.Errorf("attempt %s: kind %q, want %q", key, kind, want[key])
		}
		n++
	}
	if err := rows.Err(); err != nil || n != len(want) {
		t.Errorf("read %d attempts (%v), want %d", n, err, len(want))
	}
	for id, w := range map[string][2]string{"b1": {"", ""}, "b2": {"/nix/store/in-x.drv", "b1"}, "b3": {"", ""}} {
		var in, build string
		if err := d.QueryRowContext(ctx, `SELECT failed_input, failed_build FROM builds WHERE id = '`+id+`'`).Scan(&in, &build); err != nil {
			t.Fatal(err)
		}
		if in != w[0] || build != w[1] {
			t.Errorf("build %s: failed input %q build %q, want %q %q", id, in, build, w[0], w[1])
		}
	}
}

// Package migrations holds the coordinator's schema as embedded, versioned,
// forward-only SQL files, one directory per SQL dialect, and the runner that
// brings a database up to date.
//
// Files are named NNNN_description.sql; versions start at 1 and have no
// gaps, so a binary knows exactly which schema it was built for. A database
// whose recorded version is newer than the binary knows is refused: running
// old code against a schema it does not understand is how data gets lost.
package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed sqlite/*.sql postgres/*.sql
var embedded embed.FS

// Dialect selects the SQL flavour and therefore the migration directory.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// ErrTooNew: the database was migrated by a newer binary.
var ErrTooNew = errors.New("database schema is newer than this binary")

// dialectSQL keeps the runner's own statements per dialect, so the
// differences stay here and not in the control flow.
type dialectSQL struct {
	createTable string
	insert      string // version, name, applied_at (unix ms)
	// lock and unlock, when set, bracket the whole run on one connection so
	// that two processes starting at once never migrate concurrently (a
	// PostgreSQL session advisory lock). SQLite needs none: its writer
	// transactions are already exclusive (BEGIN IMMEDIATE) and the version
	// is re-read inside each one.
	lock, unlock string
}

func dialectFor(d Dialect) (dialectSQL, error) {
	switch d {
	case SQLite:
		return dialectSQL{
			createTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at INTEGER NOT NULL
)`,
			insert: `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		}, nil
	case Postgres:
		// The lock key is per schema, so databases holding several gbc
		// schemas (tests do) do not wait for each other.
		const key = `hashtextextended('gbc-migrations:' || current_schema(), 0)`
		return dialectSQL{
			createTable: `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at BIGINT  NOT NULL
)`,
			insert: `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			lock:   `SELECT pg_advisory_lock(` + key + `)`,
			unlock: `SELECT pg_advisory_unlock(` + key + `)`,
		}, nil
	}
	return dialectSQL{}, fmt.Errorf("migrations: unknown dialect %q", d)
}

// Migration is one schema step.
type Migration struct {
	Version int
	Name    string // file name
	SQL     string
}

// List returns the embedded migrations for d in version order.
func List(d Dialect) ([]Migration, error) {
	if _, err := dialectFor(d); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(embedded, string(d))
	if err != nil {
		return nil, fmt.Errorf("migrations: dialect %q: %w", d, err)
	}
	return load(sub)
}

// Latest is the schema version this binary targets for d.
func Latest(d Dialect) (int, error) {
	ms, err := List(d)
	if err != nil {
		return 0, err
	}
	return len(ms), nil
}

// load reads NNNN_*.sql files from the root of fsys and checks that the
// versions run 1, 2, … without gaps or duplicates.
func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: reading directory: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migrations: file %q: name must be NNNN_description.sql", name)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("migrations: reading %q: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations: file %q has version %d, want %d (versions must start at 1 without gaps or duplicates)", m.Name, m.Version, i+1)
		}
	}
	return ms, nil
}

// Current reports the highest version recorded in db (0 for a database
// that was never migrated).
func Current(ctx context.Context, db *sql.DB, d Dialect) (int, error) {
	return current(ctx, db, d)
}

// conn is what the runner needs; *sql.DB and *sql.Conn (the one that holds
// the advisory lock) both have it.
type conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

func current(ctx context.Context, db conn, d Dialect) (int, error) {
	ds, err := dialectFor(d)
	if err != nil {
		return 0, err
	}
	if _, err := db.ExecContext(ctx, ds.createTable); err != nil {
		return 0, fmt.Errorf("migrations: creating schema_migrations: %w", err)
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: reading schema version: %w", err)
	}
	return int(v.Int64), nil
}

// Apply brings db up to the latest embedded schema for d. Each migration
// runs in its own transaction together with its version row, so a failed
// step leaves the database at the previous version. Applying to an
// up-to-date database does nothing.
func Apply(ctx context.Context, db *sql.DB, d Dialect, logger *slog.Logger) error {
	ms, err := List(d)
	if err != nil {
		return err
	}
	return apply(ctx, db, d, ms, logger)
}

func apply(ctx context.Context, pool *sql.DB, d Dialect, ms []Migration, logger *slog.Logger) (err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ds, err := dialectFor(d)
	if err != nil {
		return err
	}
	var db conn = pool
	if ds.lock != "" {
		c, cerr := pool.Conn(ctx)
		if cerr != nil {
			return fmt.Errorf("migrations: connection for the migration lock: %w", cerr)
		}
		defer c.Close()
		if _, lerr := c.ExecContext(ctx, ds.lock); lerr != nil {
			return fmt.Errorf("migrations: taking the migration lock: %w", lerr)
		}
		defer func() {
			// A session lock dies with its connection; if unlocking fails
			// the connection is suspect, so drop it rather than pool it.
			if _, uerr := c.ExecContext(context.WithoutCancel(ctx), ds.unlock); uerr != nil {
				c.Raw(func(any) error { return driver.ErrBadConn })
				err = errors.Join(err, fmt.Errorf("migrations: releasing the migration lock: %w", uerr))
			}
		}()
		db = c
	}
	cur, err := current(ctx, db, d)
	if err != nil {
		return err
	}
	if cur > len(ms) {
		return fmt.Errorf("migrations: database at version %d, binary knows up to %d: %w", cur, len(ms), ErrTooNew)
	}
	for _, m := range ms[cur:] {
		if err := applyOne(ctx, db, ds, m); err != nil {
			return err
		}
		logger.InfoContext(ctx, "schema migrated", "version", m.Version, "file", m.Name)
	}
	return nil
}

func applyOne(ctx context.Context, db conn, ds dialectSQL, m Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: %s: begin: %w", m.Name, err)
	}
	defer tx.Rollback()
	// Re-read inside the transaction: another process may have migrated
	// between our first look and now.
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return fmt.Errorf("migrations: %s: reading schema version: %w", m.Name, err)
	}
	switch {
	case int(v.Int64) >= m.Version:
		return nil
	case int(v.Int64) != m.Version-1:
		return fmt.Errorf("migrations: %s: database at version %d, expected %d", m.Name, v.Int64, m.Version-1)
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migrations: applying %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, ds.insert, m.Version, m.Name, time.Now().UTC().UnixMilli()); err != nil {
		return fmt.Errorf("migrations: recording %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: committing %s: %w", m.Name, err)
	}
	return nil
}

// Package sqlite implements db.Store on SQLite (mattn/go-sqlite3).
//
// All writes go through one connection (MaxOpenConns 1) whose transactions
// start with BEGIN IMMEDIATE, so writers queue in database/sql instead of
// failing with SQLITE_BUSY on a lock upgrade, and every read-check-write
// transition is serialised. Queries use a separate read-only pool that, in
// WAL mode, reads a consistent snapshot without blocking the writer.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/migrations"
)

// Store is a db.Store backed by one SQLite file.
type Store struct {
	w      *sql.DB // the single writer connection
	r      *sql.DB // read-only pool
	logger *slog.Logger
	path   string
}

var (
	_ db.Store            = (*Store)(nil)
	_ db.DependencyFailer = (*Store)(nil)
)

// busyTimeoutMS bounds how long a connection waits for another process's
// lock (or a checkpoint) before failing.
const busyTimeoutMS = 10000

// dsn builds a file: URI so that mode=ro is honoured; the path is escaped
// because '?', '#' and '%' are meaningful in a URI.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMS))
	q.Set("_foreign_keys", "1")
	if readOnly {
		q.Set("mode", "ro")
		q.Set("_query_only", "1")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "NORMAL")
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and migrates it to
// the schema this binary knows. A database migrated by a newer binary is
// refused with an error wrapping migrations.ErrTooNew.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: resolving %q: %w", path, err)
	}
	w, err := sql.Open("sqlite3", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	var mode string
	if err := w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: opening %s: %w", abs, err)
	}
	if mode != "wal" {
		w.Close()
		return nil, fmt.Errorf("sqlite: %s: journal_mode is %q, want wal (does the filesystem support shared memory?)", abs, mode)
	}
	if err := migrations.Apply(ctx, w, migrations.SQLite, logger); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: migrating %s: %w", abs, err)
	}
	r, err := sql.Open("sqlite3", dsn(abs, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: opening %s read-only: %w", abs, err)
	}
	r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	r.SetMaxIdleConns(max(4, runtime.GOMAXPROCS(0)))
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: opening %s read-only: %w", abs, err)
	}
	logger.DebugContext(ctx, "sqlite store open", "path", abs)
	return &Store{w: w, r: r, logger: logger, path: abs}, nil
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// ms converts a time to the stored form: unix milliseconds, NULL for the
// zero time.
func ms(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMilli(), Valid: true}
}

// fromMS is the inverse of ms; times come back in UTC.
func fromMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64).UTC()
}

func isConstraint(err error, code sqlite3.ErrNoExtended) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.ExtendedCode == code
}

func isForeignKey(err error) bool {
	return isConstraint(err, sqlite3.ErrConstraintForeignKey)
}

func isUnique(err error) bool {
	return isConstraint(err, sqlite3.ErrConstraintPrimaryKey) || isConstraint(err, sqlite3.ErrConstraintUnique)
}

// write runs fn in one immediate transaction on the writer.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in one transaction on the reader pool, so multi-query reads
// see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// DB is the writer connection, for tools that work below the Store
// interface (migrate-data reads a whole farm in one transaction, which on
// the writer also keeps a running coordinator from changing it meanwhile).
// Coordinator code must not use it.
func (s *Store) DB() *sql.DB { return s.w }

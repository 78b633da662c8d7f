// Package postgres implements db.Store on PostgreSQL through pgx's
// database/sql driver (github.com/jackc/pgx/v5/stdlib).
//
// The SQL is the SQLite backend's, statement for statement: transitions
// are compare-and-set UPDATEs (under READ COMMITTED PostgreSQL re-checks
// the WHERE clause on the newest row version after waiting for a
// concurrent writer, so the check and the change cannot be separated),
// multi-query reads run in one REPEATABLE READ read-only transaction (one
// snapshot), and CreateBuilds inserts each child table with one statement
// over arrays (unnest) instead of one round trip per row.
//
// A lost connection is retried with backoff (see retry.go): a transaction
// that failed before its COMMIT was sent did not happen, so it is run again
// from the start; a COMMIT whose outcome is unknown is returned as an error
// and never retried, so the caller cannot acknowledge something that may
// not be stored (and a retried transition cannot fail spuriously with
// ErrConflict because its first try did commit).
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/migrations"
)

// Store is a db.Store backed by one PostgreSQL database (or schema).
type Store struct {
	db     *sql.DB
	logger *slog.Logger
	retry  Backoff
}

var (
	_ db.Store            = (*Store)(nil)
	_ db.DependencyFailer = (*Store)(nil)
	_ db.Scheduling       = (*Store)(nil)
)

// Options tune Open; the zero value is the production default.
type Options struct {
	// MaxConns bounds the pool (default 16).
	MaxConns int
	// Retry is how long and how often lost connections are retried
	// (default DefaultBackoff).
	Retry Backoff
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value string as libpq takes) and migrates it, under a PostgreSQL
// advisory lock, to the schema this binary knows. A database migrated by a
// newer binary is refused with an error wrapping migrations.ErrTooNew.
// The server must be reachable now: a coordinator that cannot see its
// database at start has nothing to serve.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*Store, error) {
	return OpenWith(ctx, dsn, logger, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, dsn string, logger *slog.Logger, o Options) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.Retry == (Backoff{}) {
		o.Retry = DefaultBackoff
	}
	where := Redact(dsn)
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: opening %s: %w", where, err)
	}
	pool.SetMaxOpenConns(o.MaxConns)
	pool.SetMaxIdleConns(o.MaxConns)
	// Recycle connections now and then so a server-side failover or a
	// changed pg_hba setting is picked up without a restart.
	pool.SetConnMaxLifetime(30 * time.Minute)
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connecting to %s: %w", where, err)
	}
	if err := migrations.Apply(ctx, pool, migrations.Postgres, logger); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: migrating %s: %w", where, err)
	}
	logger.DebugContext(ctx, "postgres store open", "database", where)
	return &Store{db: pool, logger: logger, retry: o.Retry}, nil
}

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

// DB is the underlying pool, for tools that work below the Store
// interface (migrate-data, benchmarks). Coordinator code must not use it.
func (s *Store) DB() *sql.DB { return s.db }

// Redact returns dsn with any password replaced, for messages and logs.
func Redact(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "postgres database (unparsable connection string)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
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

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isForeignKey(err error) bool { return pgCode(err) == "23503" }
func isUnique(err error) bool     { return pgCode(err) == "23505" }

// rebind turns the ? placeholders the queries are written with (shared
// with the SQLite backend, so the two stay easy to compare) into $1, $2, ….
// No query here has a ? inside a string literal.
func rebind(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// txn is a transaction whose queries use ? placeholders.
type txn struct{ tx *sql.Tx }

func (t txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, rebind(q), args...)
}

func (t txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, rebind(q), args...)
}

func (t txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, rebind(q), args...)
}

func (t txn) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, rebind(q))
}

// commitError marks a failed COMMIT: whether it took effect is unknown
// unless the driver says nothing was sent.
type commitError struct{ err error }

func (e commitError) Error() string { return "commit: " + e.err.Error() }
func (e commitError) Unwrap() error { return e.err }

// write runs fn in one READ COMMITTED transaction, retrying the whole
// transaction while the connection is lost (see retry.go).
func (s *Store) write(ctx context.Context, fn func(tx txn) error) error {
	return s.withRetry(ctx, func() error {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer tx.Rollback()
		if err := fn(txn{tx}); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return commitError{err}
		}
		return nil
	})
}

// read runs fn in one read-only REPEATABLE READ transaction, so multi-query
// reads see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx txn) error) error {
	return s.withRetry(ctx, func() error {
		tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
		if err != nil {
			return fmt.Errorf("begin read: %w", err)
		}
		defer tx.Rollback()
		return fn(txn{tx})
	})
}

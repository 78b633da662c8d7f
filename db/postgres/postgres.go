// Package postgres implements db.Store on PostgreSQL through pgx's
// database/sql driver (github.com/jackc/pgx/v5/stdlib): it connects,
// migrates under an advisory lock, and hands the pool to db/sqlstore with
// PostgreSQL's dialect (this file, builds.go, events.go, retry.go).
//
// The SQL is the one both backends share (db/sqlstore): transitions
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
	"github.com/gbc-farm/gbc/db/sqlstore"
	"github.com/gbc-farm/gbc/migrations"
)

// Store is a db.Store backed by one PostgreSQL database (or schema).
// DB() is the pool.
type Store struct {
	*sqlstore.Store
}

var _ db.Store = (*Store)(nil)

// dialect is PostgreSQL's part of the shared SQL.
func dialect(logger *slog.Logger, retry Backoff) sqlstore.Dialect {
	return sqlstore.Dialect{
		Rebind: rebind,
		// PostgreSQL sorts NULL last ascending, SQLite first; the indexes
		// (migrations/postgres) are declared to match.
		NullsFirst:   " NULLS FIRST",
		NullsLast:    " NULLS LAST",
		LockEvents:   lockEvents,
		InsertEvents: insertEvents,
		InsertBuilds: insertBuilds,
		ReadTx:       sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead},
		Retry: func(ctx context.Context, try func() error) error {
			return retry.run(ctx, logger, try)
		},
		IsUnique:     isUnique,
		IsForeignKey: isForeignKey,
	}
}

// Options tune Open; the zero value is the production default.
type Options struct {
	// MaxConns bounds the pool (default 16).
	MaxConns int
	// Retry is how long and how often lost connections are retried
	// (default DefaultBackoff).
	Retry Backoff
	// Observer, if set, is told of every transaction and of the events
	// committed (metrics).
	Observer db.Observer
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
	return &Store{sqlstore.New(dialect(logger, o.Retry), pool, pool, o.Observer)}, nil
}

// Redact returns dsn with any password replaced, for messages and logs.
func Redact(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "postgres database (unparsable connection string)"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
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

// rebind turns the ? placeholders the shared queries are written with
// into $1, $2, ….
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

// Package sqlite implements db.Store on SQLite (mattn/go-sqlite3): it
// opens the file, migrates it and hands its two pools to db/sqlstore, which
// holds the SQL both backends share.
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
	"github.com/gbc-farm/gbc/db/sqlstore"
	"github.com/gbc-farm/gbc/migrations"
)

// Store is a db.Store backed by one SQLite file. DB() is the writer
// connection.
type Store struct {
	*sqlstore.Store
	path string
	ckpt *checkpointer
}

var _ db.Store = (*Store)(nil)

// dialect is SQLite's part of the shared SQL: ? placeholders and NULL
// ordering as written, no event lock (the single writer commits in id
// order), no retries (there is no connection to lose), reads on the
// read-only pool.
func dialect() sqlstore.Dialect {
	return sqlstore.Dialect{
		ReadTx:            sql.TxOptions{ReadOnly: true},
		SingleWriter:      true,
		DirectSingleReads: true,
		IsUnique:          isUnique,
		IsForeignKey:      isForeignKey,
	}
}

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
		// 64 MiB of page cache for the one writer connection (default
		// 2 MiB): with a large queue the builds indexes a transition
		// updates no longer fit the default and every row re-reads pages.
		q.Set("_cache_size", "-65536")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and migrates it to
// the schema this binary knows. A database migrated by a newer binary is
// refused with an error wrapping migrations.ErrTooNew.
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	return OpenWith(ctx, path, logger, Options{})
}

// Options tune OpenWith; the zero value is Open.
type Options struct {
	// Observer, if set, is told of every transaction and of the events
	// committed (metrics).
	Observer db.Observer
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, logger *slog.Logger, o Options) (*Store, error) {
	return open(ctx, path, logger, checkpointInterval, o)
}

func open(ctx context.Context, path string, logger *slog.Logger, ckptEvery time.Duration, o Options) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: resolving %q: %w", path, err)
	}
	w := sql.OpenDB(newWriterConnector(dsn(abs, false)))
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
	// The checkpointer's connection writes the database file, so it is
	// not one of the read-only readers.
	cp, err := sql.Open("sqlite3", dsn(abs, false))
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: opening %s for checkpoints: %w", abs, err)
	}
	cp.SetMaxOpenConns(1)
	logger.DebugContext(ctx, "sqlite store open", "path", abs)
	st := sqlstore.New(dialect(), w, r, o.Observer)
	return &Store{Store: st, path: abs,
		ckpt: startCheckpointer(cp, ckptEvery, st.WhileQuiet, logger)}, nil
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

// Close stops the checkpointer and closes the pools; the last connection
// to close checkpoints what is left.
func (s *Store) Close() error {
	return errors.Join(s.ckpt.close(), s.Store.Close())
}

// Package sqlstore is the one SQL implementation of db.Store that the
// SQLite and PostgreSQL backends share. The SQL is written once, with ? placeholders and the
// schema in migrations/<dialect>; a Dialect supplies the few things that
// really differ: placeholder rebinding, NULL ordering, how event ids are
// kept in commit order, how transactions are begun and retried, bulk
// submission, and error classification. The backends (db/sqlite,
// db/postgres) open their pools, migrate, and hand both to New.
//
// Transitions are compare-and-set UPDATEs (see transitions.go); reads of
// several queries run in one read-only transaction, so they see one
// snapshot on either backend.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// Dialect is what a backend contributes besides its pools. Zero fields
// mean "portable default", which is what SQLite uses.
type Dialect struct {
	// Rebind turns the ? placeholders every statement here is written
	// with into the driver's (PostgreSQL: $1, $2, …); nil keeps them.
	Rebind func(q string) string

	// NullsFirst and NullsLast are appended to ascending and descending
	// ORDER BY terms on nullable columns so that a row without CreatedAt
	// sorts as SQLite sorts NULL natively (first ascending, last
	// descending); SQLite leaves them empty so its indexes serve the
	// order, PostgreSQL says " NULLS FIRST" / " NULLS LAST".
	NullsFirst, NullsLast string

	// LockEvents, if set, runs in a writer transaction before each event
	// insert and must serialise event writers until commit, so that event
	// ids become visible in commit order (a reader that saw id N must
	// never later find a new event below N). SQLite's single writer
	// gives that for free.
	LockEvents func(ctx context.Context, tx Tx) error

	// InsertEvents, if set, appends several events with one statement,
	// ids in slice order, in a writer transaction that already holds
	// LockEvents. Without it they are inserted one by one, which on a
	// client-server database is a round trip each with the event lock
	// held (FailDependencies writes up to a chunk's worth at once).
	InsertEvents func(ctx context.Context, tx Tx, events []EventRow) error

	// InsertBuilds, if set, replaces the portable row-by-row insert of
	// CreateBuilds: the builds, their tags, features and outputs, and one
	// SubmittedEvent each, in batch order (seq and event ids follow it).
	// The builds are validated and their ids unique within the batch; an
	// id already stored must come back wrapping db.ErrExists.
	InsertBuilds func(ctx context.Context, tx Tx, builds []db.NewBuild) error

	// ReadTx begins the read-only transaction of a multi-query read.
	ReadTx sql.TxOptions
	// DirectSingleReads runs single-statement reads (Key, Keys, Agent,
	// Agents) on the reader pool without a transaction: one statement
	// sees one snapshot anyway, and SQLite saves a BEGIN/COMMIT on every
	// SSH authentication.
	DirectSingleReads bool

	// Retry runs one try of a whole transaction (begin to commit) again
	// while that is safe and worthwhile; nil runs it once. A failed
	// COMMIT comes back as a CommitError, whose outcome is unknown.
	Retry func(ctx context.Context, try func() error) error

	// SingleWriter says the database takes one writer at a time (SQLite):
	// writers then queue in this process, in priority order, instead of
	// on the pool's one connection in random order.
	SingleWriter bool

	// IsUnique and IsForeignKey classify constraint violations.
	IsUnique, IsForeignKey func(error) bool
}

// Store is a db.Store on one SQL database.
type Store struct {
	d    Dialect
	w, r *sql.DB
	wl   *writeLock
	obs  db.Observer // nil: none

	// ORDER BY clauses with the dialect's NULL placement.
	newestFirst, oldestFirst, keysOrder, agentsOrder string
}

var _ db.Store = (*Store)(nil)

// New returns a Store writing through writer and reading through reader
// (which may be the same pool). Both must be migrated already. The Store
// owns them from now on: Close closes them. obs, if not nil, is told of
// every transaction and of the events committed.
func New(d Dialect, writer, reader *sql.DB, obs db.Observer) *Store {
	if reader == nil {
		reader = writer
	}
	return &Store{
		d: d, w: writer, r: reader, wl: newWriteLock(d.SingleWriter), obs: obs,
		newestFirst: "created_at DESC" + d.NullsLast + ", seq DESC",
		oldestFirst: "created_at" + d.NullsFirst + ", seq",
		keysOrder:   "created_at" + d.NullsFirst + ", fingerprint",
		agentsOrder: "created_at" + d.NullsFirst + ", id",
	}
}

// Close closes the pools.
func (s *Store) Close() error {
	if s.r == s.w {
		return s.w.Close()
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// DB is the writer pool, for tools that work below the Store interface
// (migrate-data reads a whole farm in one transaction, which on SQLite's
// single writer also keeps a running coordinator from changing it
// meanwhile; benchmarks measure sizes). Coordinator code must not use it.
func (s *Store) DB() *sql.DB { return s.w }

// queryer is what both *sql.Tx and *sql.DB offer.
type queryer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, q string) (*sql.Stmt, error)
}

// Tx runs statements written with ? placeholders in a transaction (or,
// for single-statement reads, on a pool), rebinding them for the driver.
type Tx struct {
	q      queryer
	rebind func(string) string
	// stmts, if set, prepares each distinct statement once and reuses
	// it: for transactions that run the same few statements many times.
	stmts *stmtCache
	// eventsLocked, in a writer transaction, records that the dialect's
	// event lock is held (until commit), so a transaction writing several
	// events takes it once.
	eventsLocked *bool
	// events, in a writer transaction, counts the events written by
	// type, for the Observer once the transaction committed.
	events *eventTally
}

// eventTally counts a transaction's events by type.
type eventTally struct{ n map[db.EventType]int }

// countEvents notes n events of type t written in this transaction.
func (t Tx) countEvents(typ db.EventType, n int) {
	if t.events == nil {
		return
	}
	if t.events.n == nil {
		t.events.n = map[db.EventType]int{}
	}
	t.events.n[typ] += n
}

type stmtCache struct {
	m map[string]*sql.Stmt
}

// prepared returns the cached statement for q (already rebound), or nil
// when there is no cache or q could not be prepared (the caller then runs
// q directly and gets the same error from it).
func (t Tx) prepared(ctx context.Context, q string) *sql.Stmt {
	if t.stmts == nil {
		return nil
	}
	if st, ok := t.stmts.m[q]; ok {
		return st
	}
	st, err := t.q.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	t.stmts.m[q] = st
	return st
}

func (c *stmtCache) close() {
	for _, st := range c.m {
		st.Close()
	}
	clear(c.m)
}

func (t Tx) sql(q string) string {
	if t.rebind == nil {
		return q
	}
	return t.rebind(q)
}

// ExecContext is sql.Tx.ExecContext with ? placeholders.
func (t Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := t.prepared(ctx, t.sql(q)); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.q.ExecContext(ctx, t.sql(q), args...)
}

// QueryContext is sql.Tx.QueryContext with ? placeholders.
func (t Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.prepared(ctx, t.sql(q)); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.q.QueryContext(ctx, t.sql(q), args...)
}

// QueryRowContext is sql.Tx.QueryRowContext with ? placeholders.
func (t Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.prepared(ctx, t.sql(q)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.q.QueryRowContext(ctx, t.sql(q), args...)
}

// PrepareContext is sql.Tx.PrepareContext with ? placeholders.
func (t Tx) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return t.q.PrepareContext(ctx, t.sql(q))
}

// CommitError marks a failed COMMIT: whether it took effect is unknown
// unless the driver says nothing was sent, so a retry policy must not
// simply run the transaction again.
type CommitError struct{ Err error }

func (e CommitError) Error() string { return "commit: " + e.Err.Error() }
func (e CommitError) Unwrap() error { return e.Err }

func (s *Store) retry(ctx context.Context, try func() error) error {
	if s.d.Retry == nil {
		return try()
	}
	return s.d.Retry(ctx, try)
}

// write runs fn in one writer transaction (the driver's default
// isolation: SQLite BEGIN IMMEDIATE on its single connection, PostgreSQL
// READ COMMITTED), retried as the dialect says.
func (s *Store) write(ctx context.Context, fn func(tx Tx) error) error {
	return s.writeAs(ctx, normal, false, fn)
}

// writeUrgent is write for the transitions the coordinator makes under
// its lock (see writeLock).
func (s *Store) writeUrgent(ctx context.Context, fn func(tx Tx) error) error {
	return s.writeAs(ctx, urgent, false, fn)
}

// writeBackground runs a batch nobody waits on (the same statements many
// times, each prepared once), after letting other writes go first (see
// writeLock).
func (s *Store) writeBackground(ctx context.Context, fn func(tx Tx) error) error {
	s.wl.yield(ctx)
	return s.writeAs(ctx, normal, true, fn)
}

// WhileQuiet runs fn while no write of this process runs, waiting for its
// turn as a background batch does: for maintenance that must see the
// database between writes (SQLite's checkpointer finishing a WAL so the
// next write can start it over). Only single-writer dialects exclude
// writes; elsewhere fn just runs.
func (s *Store) WhileQuiet(ctx context.Context, fn func() error) error {
	s.wl.yield(ctx)
	if err := s.wl.lock(ctx, normal); err != nil {
		return fmt.Errorf("waiting for a quiet moment: %w", err)
	}
	defer s.wl.unlock()
	return fn()
}

func (s *Store) writeAs(ctx context.Context, class int, cached bool, fn func(tx Tx) error) error {
	if err := s.wl.lock(ctx, class); err != nil {
		return fmt.Errorf("waiting to write: %w", err)
	}
	defer s.wl.unlock()
	return s.writeTx(ctx, cached, fn)
}

func (s *Store) writeTx(ctx context.Context, cached bool, fn func(tx Tx) error) error {
	return s.retry(ctx, func() (err error) {
		events := &eventTally{}
		defer s.observe(db.TxWrite, time.Now(), &err, events)
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer tx.Rollback()
		t := Tx{q: tx, rebind: s.d.Rebind, eventsLocked: new(bool), events: events}
		if cached {
			t.stmts = &stmtCache{m: map[string]*sql.Stmt{}}
			defer t.stmts.close()
		}
		if err := fn(t); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return CommitError{err}
		}
		return nil
	})
}

// observe tells the Observer, if any, of one try of a transaction that
// began at start and ended with *err, and of the events it committed.
func (s *Store) observe(kind db.TxKind, start time.Time, err *error, events *eventTally) {
	if s.obs == nil {
		return
	}
	s.obs.Transaction(kind, time.Since(start), *err)
	if *err != nil || events == nil {
		return
	}
	for t, n := range events.n {
		s.obs.EventsCommitted(t, n)
	}
}

// read runs fn in one read-only transaction on the reader pool, so
// multi-query reads see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx Tx) error) error {
	return s.retry(ctx, func() (err error) {
		defer s.observe(db.TxRead, time.Now(), &err, nil)
		opts := s.d.ReadTx
		tx, err := s.r.BeginTx(ctx, &opts)
		if err != nil {
			return fmt.Errorf("begin read: %w", err)
		}
		defer tx.Rollback()
		return fn(Tx{q: tx, rebind: s.d.Rebind})
	})
}

// readOne runs a read of a single statement (see
// Dialect.DirectSingleReads).
func (s *Store) readOne(ctx context.Context, fn func(tx Tx) error) error {
	if !s.d.DirectSingleReads {
		return s.read(ctx, fn)
	}
	return s.retry(ctx, func() (err error) {
		defer s.observe(db.TxRead, time.Now(), &err, nil)
		return fn(Tx{q: s.r, rebind: s.d.Rebind})
	})
}

func (s *Store) isUnique(err error) bool {
	return err != nil && s.d.IsUnique != nil && s.d.IsUnique(err)
}

func (s *Store) isForeignKey(err error) bool {
	return err != nil && s.d.IsForeignKey != nil && s.d.IsForeignKey(err)
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

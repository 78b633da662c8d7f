package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"
)

// SQLite's default checkpoints the WAL from inside whichever commit
// pushes it past 1,000 pages, so one transition in a few hundred paid for
// copying the WAL into the database and two fsyncs while every other
// writer (and the coordinator lock behind it) waited: the dispatch
// benchmark's p99 fell from ~45 ms to ~17 ms at one probing agent when
// that moved out of the commit path. The writer connection therefore
// never checkpoints; a background goroutine on its own connection runs a
// PASSIVE checkpoint (it neither blocks nor waits for the writer or
// readers) every checkpointInterval.
//
// Durability is unchanged in kind: with synchronous=NORMAL a commit is on
// disk once a checkpoint (or the WAL's own sync) has run, so an OS crash
// or power loss may lose the last interval's commits, never corrupt the
// file; a crash of the coordinator process loses nothing.
const checkpointInterval = time.Second

// A checkpoint running beside a steady stream of writes copies frames but
// never sees the WAL's end: SQLite starts the WAL over (instead of growing
// the file) only when a write begins with every frame copied. So once the
// WAL holds restartFrames, the checkpointer copies what it can beside the
// writers and then finishes the tail while no write runs (a short pass: a
// few new frames and two fsyncs); the next write starts the WAL from its
// beginning, and journal_size_limit truncates the file back. Without this
// the WAL grew to 1.4 GB in a 100,000-queued dispatch benchmark.
const (
	restartFrames   = 8192     // ≈ 32 MiB of 4 KiB pages
	walSizeLimit    = 64 << 20 // bytes kept after a restart
	walSizeLimitSQL = "PRAGMA journal_size_limit = 67108864"
)

// walConnector opens writer connections with automatic checkpoints off,
// on every (re)connection rather than once on the pool.
type walConnector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

func newWriterConnector(dsn string) *walConnector {
	return &walConnector{dsn: dsn, drv: &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			if _, err := c.Exec("PRAGMA wal_autocheckpoint = 0", nil); err != nil {
				return fmt.Errorf("turning off automatic checkpoints: %w", err)
			}
			if _, err := c.Exec(walSizeLimitSQL, nil); err != nil {
				return fmt.Errorf("setting journal_size_limit: %w", err)
			}
			return nil
		},
	}}
}

func (c *walConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c *walConnector) Driver() driver.Driver                        { return c.drv }

// checkpointer runs PASSIVE checkpoints until closed.
type checkpointer struct {
	db        *sql.DB
	restartAt int                                       // WAL frames from which a round finishes between writes
	quiet     func(context.Context, func() error) error // runs fn while no write runs
	log       *slog.Logger
	stop      chan struct{}
	wg        sync.WaitGroup
}

func startCheckpointer(db *sql.DB, interval time.Duration, quiet func(context.Context, func() error) error, log *slog.Logger) *checkpointer {
	c := &checkpointer{db: db, restartAt: restartFrames, quiet: quiet, log: log, stop: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				if _, _, err := c.round(context.Background()); err != nil {
					c.log.Warn("sqlite checkpoint", "err", err)
				}
			}
		}
	}()
	return c
}

// round is one checkpoint beside the writers and, once the WAL is long,
// a second one between writes so that the next write restarts it. It
// returns the second pass's figures when there was one.
func (c *checkpointer) round(ctx context.Context) (walFrames, done int, err error) {
	walFrames, done, err = c.checkpoint(ctx)
	if err != nil || walFrames < c.restartAt {
		return walFrames, done, err
	}
	err = c.quiet(ctx, func() error {
		walFrames, done, err = c.checkpoint(ctx)
		return err
	})
	if err == nil && done < walFrames {
		// A reader still holds an old snapshot; the next round retries.
		c.log.Debug("sqlite checkpoint incomplete", "wal_frames", walFrames, "copied", done)
	}
	return walFrames, done, err
}

// checkpoint copies what it can of the WAL into the database file and
// returns the WAL's frames and how many of them are now in the file.
// Frames a reader still needs stay until a later round.
func (c *checkpointer) checkpoint(ctx context.Context) (walFrames, done int, err error) {
	var busy int
	if err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &walFrames, &done); err != nil {
		return 0, 0, fmt.Errorf("wal_checkpoint(PASSIVE): %w", err)
	}
	return walFrames, done, nil
}

func (c *checkpointer) close() error {
	close(c.stop)
	c.wg.Wait()
	return c.db.Close()
}

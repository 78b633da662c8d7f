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
			return nil
		},
	}}
}

func (c *walConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c *walConnector) Driver() driver.Driver                        { return c.drv }

// checkpointer runs PASSIVE checkpoints until closed.
type checkpointer struct {
	db   *sql.DB
	log  *slog.Logger
	stop chan struct{}
	wg   sync.WaitGroup
}

func startCheckpointer(db *sql.DB, interval time.Duration, log *slog.Logger) *checkpointer {
	c := &checkpointer{db: db, log: log, stop: make(chan struct{})}
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
				if _, _, err := c.checkpoint(context.Background()); err != nil {
					c.log.Warn("sqlite checkpoint", "err", err)
				}
			}
		}
	}()
	return c
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

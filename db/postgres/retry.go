package postgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gbc-farm/gbc/db/sqlstore"
)

// Backoff is how a Store retries while the server is unreachable: waits
// start at First, double up to Max, and the whole call gives up after
// Total (or when its context ends), returning the last error.
type Backoff struct {
	First, Max, Total time.Duration
}

// DefaultBackoff rides out a server restart (a few seconds) and a short
// network outage; a longer outage surfaces as errors, which callers
// treat as "try again later" (the coordinator keeps builds queued and
// never acknowledges an unrecorded result).
var DefaultBackoff = Backoff{First: 50 * time.Millisecond, Max: 2 * time.Second, Total: 30 * time.Second}

// run runs fn until it succeeds, fails for a reason other than a lost
// connection, or the backoff is used up.
func (b Backoff) run(ctx context.Context, logger *slog.Logger, fn func() error) error {
	start := time.Now()
	wait := b.First
	for try := 1; ; try++ {
		err := fn()
		if err == nil || !Retryable(err) || ctx.Err() != nil {
			return err
		}
		if time.Since(start)+wait > b.Total {
			return fmt.Errorf("database unreachable for %v (%d tries): %w", time.Since(start).Round(time.Millisecond), try, err)
		}
		logger.WarnContext(ctx, "database connection lost, retrying", "try", try, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, b.Max)
	}
}

// Retryable reports whether err means the statement or transaction did
// not take effect because the connection to the server was lost or the
// server is restarting, so running it again from the start is safe. A
// COMMIT whose reply was lost is not retryable: it may have committed.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ce sqlstore.CommitError
	if errors.As(err, &ce) {
		return pgconn.SafeToRetry(ce.Err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"): // connection exception
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // admin/crash shutdown, cannot connect now
			return true
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock: the transaction was rolled back
			return true
		}
		return false
	}
	var (
		cerr *pgconn.ConnectError
		nerr net.Error
	)
	return pgconn.SafeToRetry(err) ||
		errors.As(err, &cerr) ||
		errors.As(err, &nerr) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "conn closed")
}

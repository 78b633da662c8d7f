package postgres

import (
	"context"
	"fmt"

	"github.com/gbc-farm/gbc/db/sqlstore"
)

// eventLock serialises event writers from their first event to their
// commit. Without it a sequence hands out ids in insert order but
// transactions commit in any order, so a reader (events --follow, a hook)
// that saw id N could later find a new event below N and never deliver
// it. SQLite gets this for free from its single writer. Every writer takes
// it last, after its row locks, so it cannot deadlock against them; it is
// re-entrant within a transaction and released at commit or rollback.
const eventLock = `SELECT pg_advisory_xact_lock(hashtextextended('gbc-events:' || current_schema(), 0))`

// lockEvents is the dialect's LockEvents.
func lockEvents(ctx context.Context, tx sqlstore.Tx) error {
	if _, err := tx.ExecContext(ctx, eventLock); err != nil {
		return fmt.Errorf("taking the event lock: %w", err)
	}
	return nil
}

package coordinator

import (
	"context"

	"github.com/gbc-farm/gbc/db"
)

// EventsPruned returns matching events in id order and, from the same
// snapshot, the id through which the log was pruned (0: never), so a
// reader resuming below it can tell that events are missing.
func (c *Coordinator) EventsPruned(ctx context.Context, f db.EventFilter) ([]db.Event, int64, error) {
	return c.store.EventsPruned(ctx, f)
}

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

// insertEvents is the dialect's InsertEvents: one INSERT … SELECT FROM
// unnest(arrays), ids in slice order (ORDER BY the ordinality, as
// insertBuilds does for submitted events).
func insertEvents(ctx context.Context, tx sqlstore.Tx, events []sqlstore.EventRow) error {
	typ, data := make([]string, len(events)), make([]string, len(events))
	at := make([]int64, len(events))
	build, agent := make([]*string, len(events)), make([]*string, len(events))
	for i := range events {
		e := &events[i]
		typ[i], at[i], data[i] = e.Type, e.At, e.Data
		if e.Build.Valid {
			build[i] = &e.Build.String
		}
		if e.Agent.Valid {
			agent[i] = &e.Agent.String
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO events (type, at, build_id, agent_id, data)
		SELECT e_type, e_at, e_build, e_agent, e_data
		FROM unnest(?::text[], ?::int8[], ?::text[], ?::text[], ?::text[])
			WITH ORDINALITY AS t(e_type, e_at, e_build, e_agent, e_data, ord)
		ORDER BY ord`, typ, at, build, agent, data)
	return err
}

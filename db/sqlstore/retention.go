package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// PruneEvents deletes one batch from the start of the event log (see
// db.Store). The batch is found by walking the primary key from the
// lowest id, so no index on at is needed and the walk reads only the rows
// it deletes (plus the one that stops it); the ids of pending hook events
// come from the (type, id) index.
func (s *Store) PruneEvents(ctx context.Context, before time.Time, hooks []db.HookFilter, limit int) (db.PruneResult, error) {
	if limit <= 0 {
		return db.PruneResult{}, fmt.Errorf("pruning events: batch limit %d is not positive", limit)
	}
	var res db.PruneResult
	err := s.writeBackground(ctx, func(tx Tx) error {
		res = db.PruneResult{}
		floor, heldBy, err := pendingFloor(ctx, tx, hooks)
		if err != nil {
			return err
		}
		var newest int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&newest); err != nil {
			return fmt.Errorf("newest event id: %w", err)
		}
		if newest <= floor {
			floor, heldBy = newest, ""
		}
		from, err := prunedThrough(ctx, tx)
		if err != nil {
			return err
		}
		end, n, byAge, err := prunablePrefix(ctx, tx, from, floor, before.UnixMilli(), limit)
		if err != nil {
			return err
		}
		if n > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id > ? AND id <= ?`, from, end); err != nil {
				return fmt.Errorf("deleting events through %d: %w", end, err)
			}
			// Done marks beyond a cursor for events that are gone mean
			// nothing any more.
			if _, err := tx.ExecContext(ctx, `DELETE FROM hook_done WHERE event_id <= ?`, end); err != nil {
				return fmt.Errorf("deleting hook marks through %d: %w", end, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_retention (id, pruned_through) VALUES (1, ?)
				ON CONFLICT (id) DO UPDATE SET pruned_through = CASE WHEN excluded.pruned_through > event_retention.pruned_through
					THEN excluded.pruned_through ELSE event_retention.pruned_through END`, end); err != nil {
				return fmt.Errorf("recording events pruned through %d: %w", end, err)
			}
		}
		res.Deleted, res.More = n, n == limit
		if res.PrunedThrough, err = prunedThrough(ctx, tx); err != nil {
			return err
		}
		if !res.More && !byAge && heldBy != "" {
			// Stopped at the hook's event: say so only if age alone would
			// have let it go, so the log names a hook that really holds
			// old events back.
			var at int64
			err := tx.QueryRowContext(ctx, `SELECT at FROM events WHERE id = ?`, floor).Scan(&at)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("age of event %d: %w", floor, err)
			}
			if err == nil && at < before.UnixMilli() {
				res.HeldBy, res.HeldAt = heldBy, floor
			}
		}
		return nil
	})
	if err != nil {
		return db.PruneResult{}, fmt.Errorf("pruning events before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return res, nil
}

// pendingFloor returns the lowest event id that one of hooks still has to
// run (math.MaxInt64 if none) and that hook's name. A hook without stored
// progress has not registered yet and starts at the end of the log, so it
// holds nothing back. Pending ids only ever appear above the newest
// committed event, and cursors only rise, so a floor read early in the
// transaction stays safe until its commit.
func pendingFloor(ctx context.Context, tx Tx, hooks []db.HookFilter) (int64, string, error) {
	floor, by := int64(math.MaxInt64), ""
	for _, h := range hooks {
		var cursor int64
		err := tx.QueryRowContext(ctx, `SELECT cursor FROM hook_cursors WHERE hook = ?`, h.Name).Scan(&cursor)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, "", fmt.Errorf("cursor of hook %q: %w", h.Name, err)
		}
		for _, t := range h.Types {
			// One index seek per type: the first matching event above
			// the cursor that the hook has not marked done (those are
			// few, bounded by its parallelism).
			var id int64
			err := tx.QueryRowContext(ctx, `SELECT id FROM events WHERE type = ? AND id > ?
				AND id NOT IN (SELECT event_id FROM hook_done WHERE hook = ?) ORDER BY id LIMIT 1`,
				string(t), cursor, h.Name).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return 0, "", fmt.Errorf("first pending %s event of hook %q: %w", t, h.Name, err)
			}
			if id < floor {
				floor, by = id, h.Name
			}
		}
	}
	return floor, by, nil
}

// prunablePrefix walks the log from its lowest id (above from, the
// pruned-through id) and returns the last id of the prefix below floor
// whose events all happened before cutoff (unix ms), at most limit of
// them, with their number; byAge reports that a young event ended the
// prefix. Starting the index range above from matters on PostgreSQL: the
// rows earlier batches deleted stay in the index until vacuum, and a walk
// from the start would step over all of them again in every batch.
func prunablePrefix(ctx context.Context, tx Tx, from, floor, cutoff int64, limit int) (end int64, n int, byAge bool, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, at FROM events WHERE id > ? AND id < ? ORDER BY id LIMIT ?`, from, floor, limit)
	if err != nil {
		return 0, 0, false, fmt.Errorf("reading the oldest events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, at int64
		if err := rows.Scan(&id, &at); err != nil {
			return 0, 0, false, fmt.Errorf("reading the oldest events: %w", err)
		}
		if at >= cutoff {
			// A prefix, not every old row: an event stamped late (a
			// clock step back) waits for its successors rather than
			// leaving a hole in the middle of the log.
			byAge = true
			break
		}
		end, n = id, n+1
	}
	if err := rows.Err(); err != nil {
		return 0, 0, false, fmt.Errorf("reading the oldest events: %w", err)
	}
	return end, n, byAge, nil
}

func prunedThrough(ctx context.Context, tx Tx) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT pruned_through FROM event_retention WHERE id = 1`).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("reading how far events were pruned: %w", err)
	}
	return id, nil
}

// EventsPruned is Events plus, from the same read snapshot, the id
// through which the log was pruned.
func (s *Store) EventsPruned(ctx context.Context, f db.EventFilter) ([]db.Event, int64, error) {
	var (
		events []db.Event
		pruned int64
	)
	err := s.read(ctx, func(tx Tx) error {
		var err error
		if pruned, err = prunedThrough(ctx, tx); err != nil {
			return err
		}
		events, err = listEvents(ctx, tx, f)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("listing events after %d: %w", f.AfterID, err)
	}
	return events, pruned, nil
}

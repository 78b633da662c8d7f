package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/gbc-farm/gbc/db"
)

// insertEvent appends one event inside tx and returns its id, taking the
// dialect's event lock first (see Dialect.LockEvents).
// lockEvents takes the dialect's event lock unless this transaction
// already holds it (it is held until commit).
func (s *Store) lockEvents(ctx context.Context, tx Tx) error {
	if s.d.LockEvents == nil || (tx.eventsLocked != nil && *tx.eventsLocked) {
		return nil
	}
	if err := s.d.LockEvents(ctx, tx); err != nil {
		return err
	}
	if tx.eventsLocked != nil {
		*tx.eventsLocked = true
	}
	return nil
}

func (s *Store) insertEvent(ctx context.Context, tx Tx, e db.Event) (int64, error) {
	args, err := eventArgs(e)
	if err != nil {
		return 0, err
	}
	if err := s.lockEvents(ctx, tx); err != nil {
		return 0, err
	}
	var id int64
	err = tx.QueryRowContext(ctx, insertEventSQL+` RETURNING id`, args...).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("appending %s event of build %q: %w", e.Type, e.Build, err)
	}
	tx.countEvents(e.Type, 1)
	return id, nil
}

const insertEventSQL = `INSERT INTO events (type, at, build_id, agent_id, data) VALUES (?, ?, ?, ?, ?)`

// eventArgs checks e and returns the arguments of insertEventSQL.
func eventArgs(e db.Event) ([]any, error) {
	r, err := eventRow(e)
	if err != nil {
		return nil, err
	}
	return []any{r.Type, r.At, r.Build, r.Agent, r.Data}, nil
}

// EventRow is one event as the events table stores it, for
// Dialect.InsertEvents.
type EventRow struct {
	Type         string
	At           int64 // Unix milliseconds
	Build, Agent sql.NullString
	Data         string // JSON
}

func eventRow(e db.Event) (EventRow, error) {
	if !db.ValidEventType(e.Type) {
		return EventRow{}, fmt.Errorf("event type %q is not known", e.Type)
	}
	data, err := db.EventData(e)
	if err != nil {
		return EventRow{}, err
	}
	return EventRow{Type: string(e.Type), At: e.At.UnixMilli(), Build: nullString(e.Build), Agent: nullString(e.Agent), Data: string(data)}, nil
}

// insertEvents appends events in order inside tx: with one statement
// where the dialect has InsertEvents, else one insertEvent each.
func (s *Store) insertEvents(ctx context.Context, tx Tx, events []db.Event) error {
	if len(events) < 2 {
		for _, e := range events {
			if _, err := s.insertEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	}
	rows := make([]EventRow, len(events))
	for i, e := range events {
		var err error
		if rows[i], err = eventRow(e); err != nil {
			return fmt.Errorf("%s event of build %q: %w", e.Type, e.Build, err)
		}
	}
	if err := s.lockEvents(ctx, tx); err != nil {
		return err
	}
	insert := s.d.InsertEvents
	if insert == nil {
		insert = insertEventRows
	}
	if err := insert(ctx, tx, rows); err != nil {
		return fmt.Errorf("appending %d events (first: %s of build %q): %w", len(events), events[0].Type, events[0].Build, err)
	}
	for _, e := range events {
		tx.countEvents(e.Type, 1)
	}
	return nil
}

// insertEventRows is the portable Dialect.InsertEvents: one statement
// prepared for the batch. Preparing it per event (as insertEvent does,
// for its RETURNING) was a third of a failed-dependency batch's time on
// SQLite.
func insertEventRows(ctx context.Context, tx Tx, rows []EventRow) error {
	st, err := tx.PrepareContext(ctx, insertEventSQL)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, r := range rows {
		if _, err := st.ExecContext(ctx, r.Type, r.At, r.Build, r.Agent, r.Data); err != nil {
			return err
		}
	}
	return nil
}

// buildTags reads a build's tags in order.
func buildTags(ctx context.Context, tx Tx, id string) ([]db.Tag, error) {
	var tags []db.Tag
	err := eachRow(ctx, tx, `SELECT key, value FROM build_tags WHERE build_id = ? ORDER BY pos`, []any{id},
		func(rows *sql.Rows) error {
			var t db.Tag
			if err := rows.Scan(&t.Key, &t.Value); err != nil {
				return err
			}
			tags = append(tags, t)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("reading tags of build %s: %w", id, err)
	}
	return tags, nil
}

// AppendEvent records an event that is not part of a build transition.
func (s *Store) AppendEvent(ctx context.Context, e db.Event) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx Tx) error {
		var err error
		id, err = s.insertEvent(ctx, tx, e)
		return err
	})
	return id, err
}

// Events returns matching events in id order.
func (s *Store) Events(ctx context.Context, f db.EventFilter) ([]db.Event, error) {
	var events []db.Event
	err := s.read(ctx, func(tx Tx) error {
		var err error
		events, err = listEvents(ctx, tx, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing events after %d: %w", f.AfterID, err)
	}
	return events, nil
}

// LastEventID is the newest event's id (0: none): the primary key's last
// entry on either backend.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	err := s.readOne(ctx, func(tx Tx) error {
		return tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("newest event id: %w", err)
	}
	return id, nil
}

func listEvents(ctx context.Context, tx Tx, f db.EventFilter) ([]db.Event, error) {
	conds := []string{"id > ?"}
	args := []any{f.AfterID}
	if len(f.Types) > 0 {
		conds = append(conds, "type IN (?"+strings.Repeat(", ?", len(f.Types)-1)+")")
		for _, t := range f.Types {
			args = append(args, string(t))
		}
	}
	if f.Build != "" {
		conds = append(conds, "build_id = ?")
		args = append(args, f.Build)
	}
	q := `SELECT id, type, at, build_id, agent_id, data FROM events WHERE ` + strings.Join(conds, " AND ") + ` ORDER BY id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	var events []db.Event
	err := eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
		var (
			e            db.Event
			typ, data    string
			at           sql.NullInt64
			build, agent sql.NullString
		)
		if err := rows.Scan(&e.ID, &typ, &at, &build, &agent, &data); err != nil {
			return err
		}
		e.Type, e.At, e.Build, e.Agent = db.EventType(typ), fromMS(at), build.String, agent.String
		if err := db.DecodeEventData(&e, []byte(data)); err != nil {
			return err
		}
		events = append(events, e)
		return nil
	})
	return events, err
}

// HookProgress returns the hook's cursor and the ids done beyond it.
func (s *Store) HookProgress(ctx context.Context, hook string) (db.HookProgress, error) {
	var p db.HookProgress
	err := s.read(ctx, func(tx Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT cursor FROM hook_cursors WHERE hook = ?`, hook).Scan(&p.Cursor)
		p.Registered = err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return eachRow(ctx, tx, `SELECT event_id FROM hook_done WHERE hook = ? AND event_id > ? ORDER BY event_id`,
			[]any{hook, p.Cursor}, func(rows *sql.Rows) error {
				var id int64
				if err := rows.Scan(&id); err != nil {
					return err
				}
				p.Done = append(p.Done, id)
				return nil
			})
	})
	if err != nil {
		return db.HookProgress{}, fmt.Errorf("progress of hook %q: %w", hook, err)
	}
	return p, nil
}

// MarkHookDone records a finished event and advances the cursor.
func (s *Store) MarkHookDone(ctx context.Context, hook string, eventID, cursor int64) error {
	err := s.write(ctx, func(tx Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO hook_done (hook, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, hook, eventID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO hook_cursors (hook, cursor) VALUES (?, ?)
			ON CONFLICT (hook) DO UPDATE SET cursor = CASE WHEN excluded.cursor > hook_cursors.cursor THEN excluded.cursor ELSE hook_cursors.cursor END`, hook, cursor); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM hook_done WHERE hook = ? AND event_id <= (SELECT cursor FROM hook_cursors WHERE hook = ?)`, hook, hook)
		return err
	})
	if err != nil {
		return fmt.Errorf("marking event %d done for hook %q: %w", eventID, hook, err)
	}
	return nil
}

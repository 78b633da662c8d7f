package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/db"
)

func validateCheck(c db.NewCheck) error {
	switch {
	case c.ID == "":
		return errors.New("check: empty id")
	case c.Derivation == "" || strings.ContainsAny(c.Derivation, "\n\r"):
		return fmt.Errorf("check %s: derivation %q", c.ID, c.Derivation)
	case c.Agents < 1:
		return fmt.Errorf("check %s: %d agents, want at least 1", c.ID, c.Agents)
	}
	seen := map[int]bool{}
	for _, sd := range c.Sides {
		if seen[sd.Side] {
			return fmt.Errorf("check %s: side %d twice", c.ID, sd.Side)
		}
		seen[sd.Side] = true
		if (sd.Side == db.CheckSideCache) != (sd.BuildID == "") {
			return fmt.Errorf("check %s: side %d with build %q (only the cache side, 0, has none)", c.ID, sd.Side, sd.BuildID)
		}
	}
	return nil
}

// CreateCheck records the check, its sides and its builds in one
// transaction.
func (s *Store) CreateCheck(ctx context.Context, c db.NewCheck, builds []db.NewBuild) error {
	if err := validateCheck(c); err != nil {
		return err
	}
	for _, b := range builds {
		if err := validateNewBuild(b); err != nil {
			return err
		}
	}
	insert := s.d.InsertBuilds
	if insert == nil {
		insert = s.insertBuilds
	}
	err := s.write(ctx, func(tx Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO checks (id, derivation, system, agents, against_cache, priority, state, created_at)
			VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)`, c.ID, c.Derivation, c.System, c.Agents, c.AgainstCache, c.Priority, ms(c.CreatedAt))
		if s.isUnique(err) {
			return db.ErrExists
		}
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		for _, sd := range c.Sides {
			if _, err := tx.ExecContext(ctx, `INSERT INTO check_sides (check_id, side, build_id, agent_id) VALUES (?, ?, ?, ?)`,
				c.ID, sd.Side, sd.BuildID, sd.AgentID); err != nil {
				return fmt.Errorf("side %d: %w", sd.Side, err)
			}
			if err := insertCheckOutputs(ctx, tx, c.ID, sd.Side, sd.Outputs); err != nil {
				return err
			}
		}
		if len(builds) > 0 {
			return insert(ctx, tx, builds)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", c.ID, err)
	}
	return nil
}

func insertCheckOutputs(ctx context.Context, tx Tx, id string, side int, outs []db.CheckOutput) error {
	for _, o := range outs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO check_outputs (check_id, side, name, path, nar_hash, nar_size, file, compression)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, side, o.Name, o.Path, o.NarHash, o.NarSize, o.File, o.Compression); err != nil {
			return fmt.Errorf("side %d output %s: %w", side, o.Name, err)
		}
	}
	return nil
}

// RecordCheckSide sets a side's agent and replaces its outputs.
func (s *Store) RecordCheckSide(ctx context.Context, checkID string, side int, agentID string, outputs []db.CheckOutput) error {
	err := s.write(ctx, func(tx Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE check_sides SET agent_id = ? WHERE check_id = ? AND side = ?`, agentID, checkID, side)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return db.ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM check_outputs WHERE check_id = ? AND side = ?`, checkID, side); err != nil {
			return err
		}
		return insertCheckOutputs(ctx, tx, checkID, side, outputs)
	})
	if err != nil {
		return fmt.Errorf("check %s side %d: %w", checkID, side, err)
	}
	return nil
}

// FinishCheck is a compare-and-set from pending, with its event.
func (s *Store) FinishCheck(ctx context.Context, id string, at time.Time, state db.CheckState, unreproducible []string) error {
	if !state.Valid() || state == db.CheckPending {
		return fmt.Errorf("check %s: finish as %q", id, state)
	}
	err := s.write(ctx, func(tx Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE checks SET state = ?, unreproducible = ?, ended_at = ? WHERE id = ? AND state = 'pending'`,
			string(state), strings.Join(unreproducible, " "), ms(at), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var cur string
			err := tx.QueryRowContext(ctx, `SELECT state FROM checks WHERE id = ?`, id).Scan(&cur)
			if errors.Is(err, sql.ErrNoRows) {
				return db.ErrNotFound
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: check is %s", db.ErrConflict, cur)
		}
		var drv, system string
		if err := tx.QueryRowContext(ctx, `SELECT derivation, system FROM checks WHERE id = ?`, id).Scan(&drv, &system); err != nil {
			return err
		}
		e := db.Event{Type: db.EventCheckFinished, At: at, Check: id, Verdict: state, Derivation: drv, System: system}
		for _, name := range unreproducible {
			e.Outputs = append(e.Outputs, db.EventOutput{Name: name})
		}
		_, err = s.insertEvent(ctx, tx, e)
		return err
	})
	if err != nil {
		return fmt.Errorf("check %s: %w", id, err)
	}
	return nil
}

const checkColumns = `id, derivation, system, agents, against_cache, priority, state, unreproducible, created_at, ended_at`

func scanCheck(rows interface{ Scan(...any) error }) (db.Check, error) {
	var c db.Check
	var state, unrep string
	var created, ended sql.NullInt64
	if err := rows.Scan(&c.ID, &c.Derivation, &c.System, &c.Agents, &c.AgainstCache, &c.Priority, &state, &unrep, &created, &ended); err != nil {
		return c, err
	}
	c.State = db.CheckState(state)
	if unrep != "" {
		c.Unreproducible = strings.Fields(unrep)
	}
	c.CreatedAt, c.EndedAt = fromMS(created), fromMS(ended)
	return c, nil
}

func listChecks(ctx context.Context, tx Tx, where string, args []any, order string, limit int) ([]db.Check, error) {
	q := `SELECT ` + checkColumns + ` FROM checks c`
	if where != "" {
		q += ` WHERE ` + where
	}
	q += ` ORDER BY ` + order
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	var out []db.Check
	err := eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
		c, err := scanCheck(rows)
		out = append(out, c)
		return err
	})
	return out, err
}

// checkSides loads the sides of the checks, with outputs if asked.
func checkSides(ctx context.Context, tx Tx, checks []db.Check, outputs bool) error {
	for i := range checks {
		c := &checks[i]
		c.Sides = nil
		err := eachRow(ctx, tx, `SELECT side, build_id, agent_id FROM check_sides WHERE check_id = ? ORDER BY side`, []any{c.ID},
			func(rows *sql.Rows) error {
				var sd db.CheckSide
				err := rows.Scan(&sd.Side, &sd.BuildID, &sd.AgentID)
				c.Sides = append(c.Sides, sd)
				return err
			})
		if err != nil {
			return fmt.Errorf("check %s: sides: %w", c.ID, err)
		}
		if !outputs {
			continue
		}
		for j := range c.Sides {
			sd := &c.Sides[j]
			err := eachRow(ctx, tx, `SELECT name, path, nar_hash, nar_size, file, compression FROM check_outputs
				WHERE check_id = ? AND side = ? ORDER BY name`, []any{c.ID, sd.Side},
				func(rows *sql.Rows) error {
					var o db.CheckOutput
					err := rows.Scan(&o.Name, &o.Path, &o.NarHash, &o.NarSize, &o.File, &o.Compression)
					sd.Outputs = append(sd.Outputs, o)
					return err
				})
			if err != nil {
				return fmt.Errorf("check %s side %d: outputs: %w", c.ID, sd.Side, err)
			}
		}
	}
	return nil
}

// Check returns one check with sides and outputs; ErrNotFound.
func (s *Store) Check(ctx context.Context, id string) (db.Check, error) {
	var c db.Check
	err := s.read(ctx, func(tx Tx) error {
		cs, err := listChecks(ctx, tx, `id = ?`, []any{id}, `id`, 0)
		if err != nil {
			return err
		}
		if len(cs) == 0 {
			return db.ErrNotFound
		}
		if err := checkSides(ctx, tx, cs, true); err != nil {
			return err
		}
		c = cs[0]
		return nil
	})
	if err != nil {
		return db.Check{}, fmt.Errorf("check %s: %w", id, err)
	}
	return c, nil
}

// Checks lists checks newest first, with sides but no outputs.
func (s *Store) Checks(ctx context.Context, f db.CheckFilter) ([]db.Check, error) {
	var where []string
	var args []any
	if f.State != "" {
		where = append(where, `state = ?`)
		args = append(args, string(f.State))
	}
	if f.Derivation != "" {
		where = append(where, `derivation = ?`)
		args = append(args, f.Derivation)
	}
	var out []db.Check
	err := s.read(ctx, func(tx Tx) error {
		var err error
		out, err = listChecks(ctx, tx, strings.Join(where, " AND "), args, `created_at DESC`+s.d.NullsLast+`, id DESC`, f.Limit)
		if err != nil {
			return err
		}
		return checkSides(ctx, tx, out, false)
	})
	if err != nil {
		return nil, fmt.Errorf("listing checks: %w", err)
	}
	return out, nil
}

// latestCheck keeps, of each derivation's checks, the newest (by
// creation, then id).
const latestCheck = `NOT EXISTS (SELECT 1 FROM checks n WHERE n.derivation = c.derivation
	AND (n.created_at > c.created_at OR (n.created_at = c.created_at AND n.id > c.id)))`

// ChecksSummary counts the latest check of each derivation by system and
// state.
func (s *Store) ChecksSummary(ctx context.Context) ([]db.CheckCount, []db.Check, error) {
	var counts []db.CheckCount
	var unrep []db.Check
	err := s.read(ctx, func(tx Tx) error {
		counts, unrep = nil, nil
		err := eachRow(ctx, tx, `SELECT system, state, count(*) FROM checks c WHERE `+latestCheck+` GROUP BY system, state ORDER BY system, state`, nil,
			func(rows *sql.Rows) error {
				var cc db.CheckCount
				var st string
				err := rows.Scan(&cc.System, &st, &cc.Count)
				cc.State = db.CheckState(st)
				counts = append(counts, cc)
				return err
			})
		if err != nil {
			return err
		}
		unrep, err = listChecks(ctx, tx, `state = 'unreproducible' AND `+latestCheck, nil, `created_at`+s.d.NullsFirst+`, id`, 0)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("summarising checks: %w", err)
	}
	return counts, unrep, nil
}

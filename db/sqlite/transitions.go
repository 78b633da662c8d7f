package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// current is what a transition checks before it changes anything.
type current struct {
	state   db.BuildState
	agentID string
	attempt int // number of the latest attempt, 0 if never allocated
}

// transition runs one state change in a writer transaction: it loads the
// build, checks that it is in one of the allowed states and (when
// holder is set) that agentID holds it, then calls apply. The final UPDATE
// in apply is also conditioned on the old state, so the check holds even
// on a backend with weaker isolation.
func (s *Store) transition(ctx context.Context, op, id, agentID string, holder bool, allowed []db.BuildState,
	apply func(tx *sql.Tx, cur current) error) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var (
			cur    current
			state  string
			holdBy sql.NullString
		)
		err := tx.QueryRowContext(ctx, `SELECT state, agent_id, attempts FROM builds WHERE id = ?`, id).
			Scan(&state, &holdBy, &cur.attempt)
		if errors.Is(err, sql.ErrNoRows) {
			return db.ErrNotFound
		}
		if err != nil {
			return err
		}
		cur.state, cur.agentID = db.BuildState(state), holdBy.String
		if !slices.Contains(allowed, cur.state) {
			return fmt.Errorf("state is %s, want one of %v: %w", cur.state, allowed, db.ErrConflict)
		}
		if holder && cur.agentID != agentID {
			return fmt.Errorf("held by agent %q, not %q: %w", cur.agentID, agentID, db.ErrConflict)
		}
		return apply(tx, cur)
	})
	if err != nil {
		if agentID != "" {
			return fmt.Errorf("%s build %s (agent %s): %w", op, id, agentID, err)
		}
		return fmt.Errorf("%s build %s: %w", op, id, err)
	}
	return nil
}

// setBuild updates the build row only if it is still in state from.
func setBuild(ctx context.Context, tx *sql.Tx, id string, from db.BuildState, set string, args ...any) error {
	args = append(args, id, string(from))
	res, err := tx.ExecContext(ctx, `UPDATE builds SET `+set+` WHERE id = ? AND state = ?`, args...)
	if err != nil {
		return fmt.Errorf("updating build: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("build left state %s concurrently: %w", from, db.ErrConflict)
	}
	return nil
}

// setAttempt updates the latest attempt.
func setAttempt(ctx context.Context, tx *sql.Tx, id string, number int, set string, args ...any) error {
	args = append(args, id, number)
	res, err := tx.ExecContext(ctx, `UPDATE attempts SET `+set+` WHERE build_id = ? AND number = ?`, args...)
	if err != nil {
		return fmt.Errorf("updating attempt %d: %w", number, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("attempt %d missing", number)
	}
	return nil
}

var (
	held   = []db.BuildState{db.StateAllocated, db.StateStarted}
	active = []db.BuildState{db.StateScheduled, db.StateAllocated, db.StateStarted}
)

// AllocateBuild: scheduled → allocated, opening attempt n+1 for agentID.
func (s *Store) AllocateBuild(ctx context.Context, id, agentID string, at time.Time) error {
	return s.transition(ctx, "allocating", id, agentID, false, []db.BuildState{db.StateScheduled},
		func(tx *sql.Tx, cur current) error {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM agents WHERE id = ?`, agentID).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("agent %s: %w", agentID, db.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("looking up agent %s: %w", agentID, err)
			}
			n := cur.attempt + 1
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO attempts (build_id, number, agent_id, allocated_at) VALUES (?, ?, ?, ?)`,
				id, n, agentID, ms(at)); err != nil {
				return fmt.Errorf("opening attempt %d: %w", n, err)
			}
			return setBuild(ctx, tx, id, cur.state,
				`state = 'allocated', agent_id = ?, attempts = ?, started_at = NULL, ended_at = NULL, failure_reason = ''`,
				agentID, n)
		})
}

// StartBuild: allocated → started; agentID must hold the build.
func (s *Store) StartBuild(ctx context.Context, id, agentID string, at time.Time) error {
	return s.transition(ctx, "starting", id, agentID, true, []db.BuildState{db.StateAllocated},
		func(tx *sql.Tx, cur current) error {
			if err := setAttempt(ctx, tx, id, cur.attempt, `started_at = ?`, ms(at)); err != nil {
				return err
			}
			return setBuild(ctx, tx, id, cur.state, `state = 'started', started_at = ?`, ms(at))
		})
}

// SucceedBuild: started → succeeded with the verified results.
func (s *Store) SucceedBuild(ctx context.Context, id, agentID string, at time.Time, results []db.OutputResult) error {
	seen := map[string]bool{}
	for _, r := range results {
		if r.Name == "" || seen[r.Name] {
			return fmt.Errorf("succeeding build %s: output name %q empty or repeated", id, r.Name)
		}
		seen[r.Name] = true
	}
	return s.transition(ctx, "succeeding", id, agentID, true, []db.BuildState{db.StateStarted},
		func(tx *sql.Tx, cur current) error {
			insRes, err := tx.PrepareContext(ctx, `INSERT INTO results
				(build_id, name, pos, path, nar_hash, nar_size, file_hash, file_size, compression, file)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
			if err != nil {
				return fmt.Errorf("preparing results: %w", err)
			}
			defer insRes.Close()
			insRef, err := tx.PrepareContext(ctx, `INSERT INTO result_references (build_id, name, pos, reference) VALUES (?, ?, ?, ?)`)
			if err != nil {
				return fmt.Errorf("preparing references: %w", err)
			}
			defer insRef.Close()
			for i, r := range results {
				if _, err := insRes.ExecContext(ctx, id, r.Name, i, r.Path, r.NarHash, r.NarSize,
					r.FileHash, r.FileSize, r.Compression, r.File); err != nil {
					return fmt.Errorf("recording output %s: %w", r.Name, err)
				}
				for j, ref := range r.References {
					if _, err := insRef.ExecContext(ctx, id, r.Name, j, ref); err != nil {
						return fmt.Errorf("recording output %s reference %s: %w", r.Name, ref, err)
					}
				}
			}
			if err := setAttempt(ctx, tx, id, cur.attempt, `ended_at = ?, outcome = 'succeeded'`, ms(at)); err != nil {
				return err
			}
			return setBuild(ctx, tx, id, cur.state, `state = 'succeeded', ended_at = ?, failure_reason = ''`, ms(at))
		})
}

// FailBuild: allocated or started → failed, recording reason and exit code.
func (s *Store) FailBuild(ctx context.Context, id, agentID string, at time.Time, reason string, exitCode int) error {
	return s.transition(ctx, "failing", id, agentID, true, held,
		func(tx *sql.Tx, cur current) error {
			if err := setAttempt(ctx, tx, id, cur.attempt, `ended_at = ?, outcome = 'failed', reason = ?, exit_code = ?`,
				ms(at), reason, exitCode); err != nil {
				return err
			}
			return setBuild(ctx, tx, id, cur.state, `state = 'failed', ended_at = ?, failure_reason = ?`, ms(at), reason)
		})
}

// RequeueBuild: allocated or started → scheduled; the attempt is closed
// as requeued with the reason. AgentID keeps naming the last agent.
func (s *Store) RequeueBuild(ctx context.Context, id, agentID string, at time.Time, reason string) error {
	return s.transition(ctx, "requeueing", id, agentID, true, held,
		func(tx *sql.Tx, cur current) error {
			if err := setAttempt(ctx, tx, id, cur.attempt, `ended_at = ?, outcome = 'requeued', reason = ?`,
				ms(at), reason); err != nil {
				return err
			}
			return setBuild(ctx, tx, id, cur.state, `state = 'scheduled', started_at = NULL, ended_at = NULL`)
		})
}

// CancelBuild: any non-terminal state → canceled.
func (s *Store) CancelBuild(ctx context.Context, id string, at time.Time) error {
	return s.transition(ctx, "canceling", id, "", false, active,
		func(tx *sql.Tx, cur current) error {
			if cur.state != db.StateScheduled {
				if err := setAttempt(ctx, tx, id, cur.attempt, `ended_at = ?, outcome = 'canceled'`, ms(at)); err != nil {
					return err
				}
			}
			return setBuild(ctx, tx, id, cur.state, `state = 'canceled', ended_at = ?`, ms(at))
		})
}

// FailDependency moves a scheduled build to failed-dependency because an
// input can no longer be built; cause names it (e.g. the failed build) and
// becomes the failure reason. Not yet part of db.Store (adding a method
// would break existing fakes); see db.DependencyFailer.
func (s *Store) FailDependency(ctx context.Context, id string, at time.Time, cause string) error {
	return s.transition(ctx, "failing dependency of", id, "", false, []db.BuildState{db.StateScheduled},
		func(tx *sql.Tx, cur current) error {
			return setBuild(ctx, tx, id, cur.state, `state = 'failed-dependency', ended_at = ?, failure_reason = ?`, ms(at), cause)
		})
}

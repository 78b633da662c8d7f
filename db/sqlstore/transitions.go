package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// rule is the precondition of a transition and the event it records.
type rule struct {
	op      string          // for messages: "allocating", …
	from    []db.BuildState // states the build may be in
	holder  bool            // the build's agent must be the caller's
	urgent  bool            // made under the coordinator lock: writes first (see writeLock)
	agentID string          // the caller's agent, if any
	at      time.Time
	event   db.Event // Type and details; build, agent, attempt, derivation, system, tags and time are filled in
}

// changed is the build row as the transition left it.
type changed struct {
	attempt    int
	derivation string
	system     string
	agentID    string
	// What an allocation hands the agent besides outputs, returned by the
	// same UPDATE so that dispatch (under the coordinator lock) does not
	// spend another statement (a round trip on PostgreSQL) reading them.
	priority                 int
	timeoutSec, maxSilentSec sql.NullInt64
}

// transition changes one build in a writer transaction. The precondition
// is part of the UPDATE's WHERE clause (compare-and-set), so the check
// and the change cannot be separated on any backend; the new attempt
// number comes back with RETURNING. Only when nothing matched does a
// second query find out why, to return ErrNotFound or a precise
// ErrConflict. then, if set, runs in the same transaction with the
// build's latest attempt number; the rule's event is appended last, in
// the same transaction.
func (s *Store) transition(ctx context.Context, id string, r rule, set string, setArgs []any,
	then func(tx Tx, c changed) error) error {
	write := s.write
	if r.urgent {
		write = s.writeUrgent
	}
	err := write(ctx, func(tx Tx) error {
		return s.transitionTx(ctx, tx, id, r, set, setArgs, then)
	})
	if err != nil {
		return r.wrap(id, err)
	}
	return nil
}

func (r rule) wrap(id string, err error) error {
	if r.agentID != "" {
		return fmt.Errorf("%s build %s (agent %s): %w", r.op, id, r.agentID, err)
	}
	return fmt.Errorf("%s build %s: %w", r.op, id, err)
}

// transitionTx is transition inside the caller's writer transaction, so
// that several transitions can share one commit.
func (s *Store) transitionTx(ctx context.Context, tx Tx, id string, r rule, set string, setArgs []any,
	then func(tx Tx, c changed) error) error {
	var q strings.Builder
	args := append(append([]any(nil), setArgs...), id)
	fmt.Fprintf(&q, "UPDATE builds SET %s WHERE id = ? AND state IN (", set)
	for i, st := range r.from {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("?")
		args = append(args, string(st))
	}
	q.WriteString(")")
	if r.holder {
		q.WriteString(" AND agent_id = ?")
		args = append(args, r.agentID)
	}
	q.WriteString(" RETURNING attempts, derivation, system, agent_id, priority, timeout_seconds, max_silent_seconds")
	var (
		c     changed
		agent sql.NullString
	)
	err := tx.QueryRowContext(ctx, q.String(), args...).Scan(&c.attempt, &c.derivation, &c.system, &agent,
		&c.priority, &c.timeoutSec, &c.maxSilentSec)
	if errors.Is(err, sql.ErrNoRows) {
		return whyNot(ctx, tx, id, r)
	}
	if s.isForeignKey(err) {
		// Only AllocateBuildFor sets agent_id.
		return fmt.Errorf("agent %s: %w", r.agentID, db.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("updating build: %w", err)
	}
	c.agentID = agent.String
	if then != nil {
		if err := then(tx, c); err != nil {
			return err
		}
	}
	if r.event.Type == "" {
		return nil
	}
	e := r.event
	e.At, e.Build, e.Derivation, e.System = r.at, id, c.derivation, c.system
	if e.Agent == "" {
		e.Agent = c.agentID
	}
	if c.attempt > 0 && c.agentID != "" {
		e.Attempt = c.attempt
	}
	if e.Tags, err = buildTags(ctx, tx, id); err != nil {
		return err
	}
	_, err = s.insertEvent(ctx, tx, e)
	return err
}

// whyNot explains a transition whose UPDATE matched no row.
func whyNot(ctx context.Context, tx Tx, id string, r rule) error {
	var (
		state  string
		holder sql.NullString
	)
	err := tx.QueryRowContext(ctx, `SELECT state, agent_id FROM builds WHERE id = ?`, id).Scan(&state, &holder)
	if errors.Is(err, sql.ErrNoRows) {
		return db.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("reading build: %w", err)
	}
	for _, st := range r.from {
		if db.BuildState(state) == st {
			return fmt.Errorf("held by agent %q, not %q: %w", holder.String, r.agentID, db.ErrConflict)
		}
	}
	return fmt.Errorf("state is %s, want one of %v: %w", state, r.from, db.ErrConflict)
}

// setAttempt updates one attempt, which must exist.
func setAttempt(ctx context.Context, tx Tx, id string, number int, set string, args ...any) error {
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

// AllocateBuildFor: scheduled → allocated, opening attempt n+1 for
// agentID, and returning the allocated build's run parameters, read in
// the same transaction.
func (s *Store) AllocateBuildFor(ctx context.Context, id, agentID string, at time.Time) (db.Allocation, error) {
	var a db.Allocation
	err := s.transition(ctx, id,
		rule{op: "allocating", urgent: true, from: []db.BuildState{db.StateScheduled}, agentID: agentID, at: at, event: db.Event{Type: db.EventAllocated}},
		`state = 'allocated', agent_id = ?, attempts = attempts + 1, started_at = NULL, ended_at = NULL, failure_reason = ''`,
		[]any{agentID},
		func(tx Tx, c changed) error {
			n := c.attempt
			_, err := tx.ExecContext(ctx,
				`INSERT INTO attempts (build_id, number, agent_id, allocated_at) VALUES (?, ?, ?, ?)`,
				id, n, agentID, ms(at))
			if err != nil {
				return fmt.Errorf("opening attempt %d: %w", n, err)
			}
			a = db.Allocation{ID: id, Derivation: c.derivation, System: c.system, Attempt: n, Priority: c.priority,
				TimeoutSeconds: int(c.timeoutSec.Int64), MaxSilentSeconds: int(c.maxSilentSec.Int64)}
			err = eachRow(ctx, tx, `SELECT name, path FROM build_outputs WHERE build_id = ? ORDER BY pos`, []any{id},
				func(rows *sql.Rows) error {
					var o db.DerivationOutput
					if err := rows.Scan(&o.Name, &o.Path); err != nil {
						return err
					}
					a.Outputs = append(a.Outputs, o)
					return nil
				})
			if err != nil {
				return fmt.Errorf("reading outputs of allocated build: %w", err)
			}
			return nil
		})
	return a, err
}

// StartBuildWith: allocated → started, recording the hardware report on
// the attempt in the same transaction; agentID must hold the build.
func (s *Store) StartBuildWith(ctx context.Context, id, agentID string, at time.Time, hw db.Hardware) error {
	b, err := json.Marshal(hw)
	if err != nil {
		return fmt.Errorf("hardware of build %s: %w", id, err)
	}
	err = s.write(ctx, func(tx Tx) error { return s.startTx(ctx, tx, id, agentID, at, string(b)) })
	if err != nil {
		return startRule(agentID, at).wrap(id, err)
	}
	return nil
}

func startRule(agentID string, at time.Time) rule {
	return rule{op: "starting", from: []db.BuildState{db.StateAllocated}, holder: true, agentID: agentID, at: at, event: db.Event{Type: db.EventStarted}}
}

// startTx starts the build; hardware, if not empty, is the JSON report
// to keep on the attempt.
func (s *Store) startTx(ctx context.Context, tx Tx, id, agentID string, at time.Time, hardware string) error {
	return s.transitionTx(ctx, tx, id, startRule(agentID, at), `state = 'started', started_at = ?`, []any{ms(at)},
		func(tx Tx, c changed) error {
			if hardware != "" {
				return setAttempt(ctx, tx, id, c.attempt, `started_at = ?, hardware = ?`, ms(at), hardware)
			}
			return setAttempt(ctx, tx, id, c.attempt, `started_at = ?`, ms(at))
		})
}

// SucceedBuild: started → succeeded with the verified results. From
// allocated, the start is implied (a result without a prior "started",
// or one whose "started" is still in flight): it is recorded, with its
// event, in the same transaction, so a success costs one commit.
func (s *Store) SucceedBuild(ctx context.Context, id, agentID string, at time.Time, results []db.OutputResult) error {
	seen := map[string]bool{}
	var outs []db.EventOutput
	for _, r := range results {
		if r.Name == "" || seen[r.Name] {
			return fmt.Errorf("succeeding build %s: output name %q empty or repeated", id, r.Name)
		}
		seen[r.Name] = true
		outs = append(outs, db.EventOutput{Name: r.Name, Path: r.Path, NarHash: r.NarHash, NarSize: r.NarSize})
	}
	r := rule{op: "succeeding", from: []db.BuildState{db.StateStarted}, holder: true, agentID: agentID, at: at, event: db.Event{Type: db.EventSucceeded, Outputs: outs}}
	err := s.write(ctx, func(tx Tx) error {
		// Usually already started; then this matches no row.
		if err := s.startTx(ctx, tx, id, agentID, at, ""); err != nil && !errors.Is(err, db.ErrConflict) {
			return err
		}
		return s.transitionTx(ctx, tx, id, r, `state = 'succeeded', ended_at = ?, failure_reason = ''`, []any{ms(at)},
			func(tx Tx, c changed) error {
				n := c.attempt
				if err := insertResults(ctx, tx, id, results); err != nil {
					return err
				}
				return setAttempt(ctx, tx, id, n, `ended_at = ?, outcome = 'succeeded'`, ms(at))
			})
	})
	if err != nil {
		return r.wrap(id, err)
	}
	return nil
}

func insertResults(ctx context.Context, tx Tx, id string, results []db.OutputResult) error {
	if len(results) == 0 {
		return nil
	}
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
	return nil
}

// FailBuild: allocated or started → failed, recording kind, reason and
// exit code.
func (s *Store) FailBuild(ctx context.Context, id, agentID string, at time.Time, kind db.AttemptKind, reason string, exitCode int) error {
	if err := checkKind("failing", id, kind); err != nil {
		return err
	}
	return s.transition(ctx, id,
		rule{op: "failing", from: held, holder: true, agentID: agentID, at: at, event: db.Event{Type: db.EventFailed, Reason: reason, ExitCode: exitCode}},
		`state = 'failed', ended_at = ?, failure_reason = ?`, []any{ms(at), reason},
		func(tx Tx, c changed) error {
			n := c.attempt
			return setAttempt(ctx, tx, id, n, `ended_at = ?, outcome = 'failed', kind = ?, reason = ?, exit_code = ?`,
				ms(at), string(kind), reason, exitCode)
		})
}

// RequeueBuild: allocated or started → scheduled; the attempt is closed
// as requeued with kind and reason. AgentID keeps naming the last agent.
func (s *Store) RequeueBuild(ctx context.Context, id, agentID string, at time.Time, kind db.AttemptKind, reason string) error {
	if err := checkKind("requeueing", id, kind); err != nil {
		return err
	}
	return s.transition(ctx, id,
		rule{op: "requeueing", urgent: true, from: held, holder: true, agentID: agentID, at: at, event: db.Event{Type: db.EventRequeued, Reason: reason}},
		`state = 'scheduled', started_at = NULL, ended_at = NULL`, nil,
		func(tx Tx, c changed) error {
			n := c.attempt
			return setAttempt(ctx, tx, id, n, `ended_at = ?, outcome = 'requeued', kind = ?, reason = ?`, ms(at), string(kind), reason)
		})
}

// CancelBuild: any non-terminal state → canceled; an open attempt (the
// build was allocated or started) is closed as canceled.
func (s *Store) CancelBuild(ctx context.Context, id string, at time.Time) error {
	return s.transition(ctx, id,
		rule{op: "canceling", urgent: true, from: active, at: at, event: db.Event{Type: db.EventCanceled}},
		`state = 'canceled', ended_at = ?`, []any{ms(at)},
		func(tx Tx, c changed) error {
			n := c.attempt
			_, err := tx.ExecContext(ctx, `UPDATE attempts SET ended_at = ?, outcome = 'canceled'
				WHERE build_id = ? AND number = ? AND outcome = ''`, ms(at), id, n)
			if err != nil {
				return fmt.Errorf("closing attempt %d: %w", n, err)
			}
			return nil
		})
}

// FailDependency moves a scheduled build to failed-dependency because an
// input can no longer be built, recording the failed input and build, and
// d.Reason as the failure reason.
func (s *Store) FailDependency(ctx context.Context, at time.Time, d db.DependencyFailure) error {
	return s.transition(ctx, d.ID, failDependencyRule(at, d.Reason()),
		`state = 'failed-dependency', ended_at = ?, failure_reason = ?, failed_input = ?, failed_build = ?`,
		[]any{ms(at), d.Reason(), d.FailedInput, d.FailedBuild}, nil)
}

// checkKind refuses a kind that is not one of db's, before any write.
func checkKind(op, id string, kind db.AttemptKind) error {
	if !kind.Valid() {
		return fmt.Errorf("%s build %s: attempt kind %q is not one of db's", op, id, kind)
	}
	return nil
}

func failDependencyRule(at time.Time, cause string) rule {
	return rule{op: "failing dependency of", from: []db.BuildState{db.StateScheduled}, at: at,
		event: db.Event{Type: db.EventFailedDependency, Reason: cause}}
}

// FailDependencies is FailDependency for many builds in one transaction:
// one commit (and, on SQLite, one turn of the single writer) instead of
// one per dependent, and set-based: one UPDATE per distinct cause (a
// failed build's dependents usually share one) and one tag read per chunk
// instead of statements per build. Events are appended in the order of
// deps. A build that is not scheduled (ErrConflict) or not there
// (ErrNotFound) is skipped and reported in skipped; any other error rolls
// the whole set back. It is a background write: it lets transitions that
// are waiting for the writer go first (see writeGate), so callers with
// many dependents should pass them in chunks.
func (s *Store) FailDependencies(ctx context.Context, at time.Time, deps []db.DependencyFailure) (skipped map[string]error, err error) {
	if len(deps) == 0 {
		return nil, nil
	}
	err = s.writeBackground(ctx, func(tx Tx) error {
		skipped = map[string]error{} // a retried transaction starts over
		changedByID := make(map[string]changed, len(deps))
		// Group by cause (failed input and build), keeping first-seen
		// order; a repeated id is a conflict on its second appearance, as
		// two single calls would be.
		type cause struct {
			input, build string
			canceled     bool
		}
		var causes []cause
		byCause := map[cause][]string{}
		seen := make(map[string]bool, len(deps))
		for _, d := range deps {
			if seen[d.ID] {
				continue
			}
			seen[d.ID] = true
			k := cause{d.FailedInput, d.FailedBuild, d.InputCanceled}
			if _, ok := byCause[k]; !ok {
				causes = append(causes, k)
			}
			byCause[k] = append(byCause[k], d.ID)
		}
		for _, k := range causes {
			reason := db.DependencyFailure{FailedInput: k.input, FailedBuild: k.build, InputCanceled: k.canceled}.Reason()
			for ids := range slices.Chunk(byCause[k], setChunk) {
				// "state || ''" keeps SQLite's planner off the
				// (state, seq) index (EXPLAIN QUERY PLAN picks it for
				// "state = 'scheduled'"): with a long id list
				// and no statistics it otherwise walks every scheduled
				// build instead of looking up each id.
				q := `UPDATE builds SET state = 'failed-dependency', ended_at = ?, failure_reason = ?, failed_input = ?, failed_build = ?
					WHERE id IN (` + placeholders(len(ids)) + `) AND state || '' = 'scheduled'
					RETURNING id, attempts, derivation, system, agent_id`
				args := append([]any{ms(at), reason, k.input, k.build}, anys(ids)...)
				err := eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
					var (
						id    string
						c     changed
						agent sql.NullString
					)
					if err := rows.Scan(&id, &c.attempt, &c.derivation, &c.system, &agent); err != nil {
						return err
					}
					c.agentID = agent.String
					changedByID[id] = c
					return nil
				})
				if err != nil {
					return fmt.Errorf("failing dependents: %w", err)
				}
			}
		}
		var moved []string
		for _, d := range deps {
			if _, ok := changedByID[d.ID]; ok && seen[d.ID] {
				moved = append(moved, d.ID)
			}
		}
		tags := map[string][]db.Tag{}
		for ids := range slices.Chunk(moved, setChunk) {
			err := eachRow(ctx, tx, `SELECT build_id, key, value FROM build_tags WHERE build_id IN (`+placeholders(len(ids))+`) ORDER BY build_id, pos`,
				anys(ids), func(rows *sql.Rows) error {
					var (
						id string
						t  db.Tag
					)
					if err := rows.Scan(&id, &t.Key, &t.Value); err != nil {
						return err
					}
					tags[id] = append(tags[id], t)
					return nil
				})
			if err != nil {
				return fmt.Errorf("reading tags of dependents: %w", err)
			}
		}
		// Appended together after the loop: on PostgreSQL one statement
		// instead of a round trip per dependent, with the event lock
		// every other writer waits for held meanwhile.
		events := make([]db.Event, 0, len(moved))
		for _, d := range deps {
			r := failDependencyRule(at, d.Reason())
			c, ok := changedByID[d.ID]
			if !ok || !seen[d.ID] {
				// Not moved, or a repeat of one that was: say why.
				err := whyNot(ctx, tx, d.ID, r)
				if err == nil || !(errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrNotFound)) {
					return r.wrap(d.ID, err)
				}
				skipped[d.ID] = r.wrap(d.ID, err)
				continue
			}
			seen[d.ID] = false // a later repeat is reported as above
			e := r.event
			e.At, e.Build, e.Derivation, e.System, e.Agent, e.Tags = at, d.ID, c.derivation, c.system, c.agentID, tags[d.ID]
			if c.attempt > 0 && c.agentID != "" {
				e.Attempt = c.attempt
			}
			events = append(events, e)
		}
		if err := s.insertEvents(ctx, tx, events); err != nil {
			return fmt.Errorf("failed-dependency events: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failing %d dependents: %w", len(deps), err)
	}
	if len(skipped) == 0 {
		skipped = nil
	}
	return skipped, nil
}

// setChunk bounds the ids bound in one statement (SQLite allows 32,766
// variables, PostgreSQL 65,535).
const setChunk = 500

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, v := range ss {
		out[i] = v
	}
	return out
}

// SetupFailBuild: allocated or started → scheduled (or failed when final),
// closing the attempt with the reason; events setup-failure, then
// missing-inputs when missing is not empty, then failed when final.
func (s *Store) SetupFailBuild(ctx context.Context, id, agentID string, at time.Time, kind db.AttemptKind, reason string, missing []string, final bool) error {
	if err := checkKind("recording setup failure of", id, kind); err != nil {
		return err
	}
	set, args := `state = 'scheduled', started_at = NULL, ended_at = NULL`, []any(nil)
	outcome := db.OutcomeRequeued
	if final {
		set, args = `state = 'failed', ended_at = ?, failure_reason = ?`, []any{ms(at), reason}
		outcome = db.OutcomeFailed
	}
	// The events are appended in the callback rather than by the rule, so
	// that setup-failure comes first and the others follow in id order.
	r := rule{op: "recording setup failure of", urgent: true, from: held, holder: true, agentID: agentID, at: at}
	events := []db.Event{{Type: db.EventSetupFailure, Reason: reason, Missing: missing}}
	if len(missing) > 0 {
		events = append(events, db.Event{Type: db.EventMissingInputs, Reason: reason, Missing: missing})
	}
	if final {
		events = append(events, db.Event{Type: db.EventFailed, Reason: reason})
	}
	return s.transition(ctx, id, r, set, args, func(tx Tx, c changed) error {
		if err := setAttempt(ctx, tx, id, c.attempt, `ended_at = ?, outcome = ?, kind = ?, reason = ?`, ms(at), string(outcome), string(kind), reason); err != nil {
			return err
		}
		tags, err := buildTags(ctx, tx, id)
		if err != nil {
			return err
		}
		for _, e := range events {
			e.At, e.Build, e.Agent, e.Attempt, e.Derivation, e.System, e.Tags = at, id, agentID, c.attempt, c.derivation, c.system, tags
			if _, err := s.insertEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetBuildPriority changes the priority of a build that has not ended.
func (s *Store) SetBuildPriority(ctx context.Context, id string, priority int) error {
	return s.transition(ctx, id,
		rule{op: "setting priority of", from: []db.BuildState{db.StateScheduled, db.StateAllocated, db.StateStarted}},
		`priority = ?`, []any{priority}, nil)
}

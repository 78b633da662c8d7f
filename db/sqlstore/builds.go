package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gbc-farm/gbc/db"
)

func validateNewBuild(b db.NewBuild) error {
	switch {
	case b.ID == "":
		return fmt.Errorf("build with derivation %q: empty id", b.Derivation)
	case b.Derivation == "":
		return fmt.Errorf("build %s: empty derivation", b.ID)
	case b.System == "":
		return fmt.Errorf("build %s: empty system", b.ID)
	}
	if err := validateInputs(b.ID, b.InputDerivations); err != nil {
		return err
	}
	seen := make(map[string]bool, len(b.Outputs))
	for _, o := range b.Outputs {
		if o.Name == "" {
			return fmt.Errorf("build %s: output with empty name", b.ID)
		}
		if seen[o.Name] {
			return fmt.Errorf("build %s: output %q declared twice", b.ID, o.Name)
		}
		seen[o.Name] = true
	}
	return nil
}

// SubmittedEvent is the event CreateBuilds records for b.
func SubmittedEvent(b db.NewBuild) db.Event {
	e := db.Event{Type: db.EventSubmitted, At: b.CreatedAt, Build: b.ID, Derivation: b.Derivation, System: b.System, Tags: b.Tags}
	for _, o := range b.Outputs {
		e.Outputs = append(e.Outputs, db.EventOutput{Name: o.Name, Path: o.Path})
	}
	return e
}

// CreateBuilds records all builds or none; ErrExists (naming the build) if
// an id is already recorded or repeats within the batch.
func (s *Store) CreateBuilds(ctx context.Context, builds []db.NewBuild) error {
	seen := make(map[string]bool, len(builds))
	for _, b := range builds {
		if err := validateNewBuild(b); err != nil {
			return err
		}
		if seen[b.ID] {
			return fmt.Errorf("build %s: repeated in the batch: %w", b.ID, db.ErrExists)
		}
		seen[b.ID] = true
	}
	if len(builds) == 0 {
		return nil
	}
	if s.d.InsertBuilds == nil {
		return s.write(ctx, func(tx Tx) error { return s.insertBuilds(ctx, tx, builds) })
	}
	return s.write(ctx, func(tx Tx) error {
		if err := s.d.InsertBuilds(ctx, tx, builds); err != nil {
			return err
		}
		tx.countEvents(db.EventSubmitted, len(builds)) // one each, by the dialect
		return nil
	})
}

// insertBuilds is the portable CreateBuilds: prepared statements, one row
// at a time, which SQLite runs in-process at little cost per row.
func (s *Store) insertBuilds(ctx context.Context, tx Tx, builds []db.NewBuild) error {
	stmts := make([]*sql.Stmt, 0, 4)
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	prep := func(q string) (*sql.Stmt, error) {
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("preparing %q: %w", q, err)
		}
		stmts = append(stmts, st)
		return st, nil
	}
	insBuild, err := prep(`INSERT INTO builds (id, derivation, system, priority, state, created_at, defer_until, timeout_seconds, max_silent_seconds, input_drvs)
		VALUES (?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	insTag, err := prep(`INSERT INTO build_tags (build_id, pos, key, value) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	insFeature, err := prep(`INSERT INTO build_features (build_id, pos, feature) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	insOutput, err := prep(`INSERT INTO build_outputs (build_id, name, pos, path) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	// One prepared event insert for the batch where the dialect needs no
	// event lock (SQLite: its single writer already orders them); else
	// insertEvent takes the lock per event.
	var insEvent *sql.Stmt
	if s.d.LockEvents == nil {
		if insEvent, err = prep(insertEventSQL); err != nil {
			return err
		}
	}
	for _, b := range builds {
		_, err := insBuild.ExecContext(ctx, b.ID, b.Derivation, b.System, b.Priority, ms(b.CreatedAt), ms(b.DeferUntil), b.TimeoutSeconds, b.MaxSilentSeconds,
			EncodeInputs(b.Derivation, b.InputDerivations))
		if s.isUnique(err) {
			return fmt.Errorf("build %s: %w", b.ID, db.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("build %s: insert: %w", b.ID, err)
		}
		for i, t := range b.Tags {
			if _, err := insTag.ExecContext(ctx, b.ID, i, t.Key, t.Value); err != nil {
				return fmt.Errorf("build %s: tag %s=%s: %w", b.ID, t.Key, t.Value, err)
			}
		}
		for i, f := range b.RequiredFeatures {
			if _, err := insFeature.ExecContext(ctx, b.ID, i, f); err != nil {
				return fmt.Errorf("build %s: feature %s: %w", b.ID, f, err)
			}
		}
		for i, o := range b.Outputs {
			if _, err := insOutput.ExecContext(ctx, b.ID, o.Name, i, o.Path); err != nil {
				return fmt.Errorf("build %s: output %s: %w", b.ID, o.Name, err)
			}
		}
		if insEvent == nil {
			if _, err := s.insertEvent(ctx, tx, SubmittedEvent(b)); err != nil {
				return err
			}
			continue
		}
		e := SubmittedEvent(b)
		args, err := eventArgs(e)
		if err != nil {
			return err
		}
		if _, err := insEvent.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("appending %s event of build %q: %w", e.Type, e.Build, err)
		}
		tx.countEvents(e.Type, 1)
	}
	return nil
}

const buildCols = `id, derivation, system, priority, state, agent_id, created_at, started_at, ended_at, failure_reason, failed_input, failed_build, defer_until, timeout_seconds, max_silent_seconds, input_drvs`

func scanBuild(sc interface{ Scan(...any) error }, in *interner) (db.Build, error) {
	var (
		b                       db.Build
		state                   string
		agentID                 sql.NullString
		created, started, ended sql.NullInt64
		deferUntil              sql.NullInt64
		inputs                  sql.NullString
	)
	if err := sc.Scan(&b.ID, &b.Derivation, &b.System, &b.Priority, &state, &agentID,
		&created, &started, &ended, &b.FailureReason, &b.FailedInput, &b.FailedBuild, &deferUntil, &b.TimeoutSeconds, &b.MaxSilentSeconds, &inputs); err != nil {
		return db.Build{}, err
	}
	b.InputDerivations = in.decode(b.Derivation, inputs)
	b.State = db.BuildState(state)
	b.AgentID = agentID.String
	b.CreatedAt = fromMS(created)
	b.StartedAt = fromMS(started)
	b.EndedAt = fromMS(ended)
	b.DeferUntil = fromMS(deferUntil)
	return b, nil
}

// selection is a WHERE clause on builds with its arguments and order; it
// is used both for the builds themselves and, as a subquery, for their
// child rows, so one read transaction fetches everything in a few queries
// however many builds match.
type selection struct {
	where string
	args  []any
	order string
	limit int
}

func (sel selection) query(cols string) string {
	var q strings.Builder
	fmt.Fprintf(&q, "SELECT %s FROM builds", cols)
	if sel.where != "" {
		fmt.Fprintf(&q, " WHERE %s", sel.where)
	}
	if sel.order != "" {
		fmt.Fprintf(&q, " ORDER BY %s", sel.order)
	}
	if sel.limit > 0 {
		fmt.Fprintf(&q, " LIMIT %d", sel.limit)
	}
	return q.String()
}

// listBuilds returns the selected builds with tags, features and outputs.
func listBuilds(ctx context.Context, tx Tx, sel selection) ([]db.Build, error) {
	rows, err := tx.QueryContext(ctx, sel.query(buildCols), sel.args...)
	if err != nil {
		return nil, err
	}
	var (
		builds []db.Build
		index  = map[string]int{}
		intern = newInterner(0)
	)
	for rows.Next() {
		b, err := scanBuild(rows, intern)
		if err != nil {
			rows.Close()
			return nil, err
		}
		index[b.ID] = len(builds)
		builds = append(builds, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(builds) == 0 {
		return nil, nil
	}
	in := "build_id IN (" + sel.query("id") + ")"
	// Child rows come sorted by build, so each lookup in index is for the
	// build just seen; the map keeps this correct whatever the order.
	get := func(id string) *db.Build {
		if i, ok := index[id]; ok {
			return &builds[i]
		}
		return nil // not in the first query; cannot happen within one snapshot
	}
	var id string
	if err := eachRow(ctx, tx, `SELECT build_id, key, value FROM build_tags WHERE `+in+` ORDER BY build_id, pos`, sel.args,
		func(rows *sql.Rows) error {
			var t db.Tag
			if err := rows.Scan(&id, &t.Key, &t.Value); err != nil {
				return err
			}
			if b := get(id); b != nil {
				b.Tags = append(b.Tags, t)
			}
			return nil
		}); err != nil {
		return nil, fmt.Errorf("tags: %w", err)
	}
	if err := eachRow(ctx, tx, `SELECT build_id, feature FROM build_features WHERE `+in+` ORDER BY build_id, pos`, sel.args,
		func(rows *sql.Rows) error {
			var f string
			if err := rows.Scan(&id, &f); err != nil {
				return err
			}
			if b := get(id); b != nil {
				b.RequiredFeatures = append(b.RequiredFeatures, f)
			}
			return nil
		}); err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	if err := eachRow(ctx, tx, `SELECT build_id, name, path FROM build_outputs WHERE `+in+` ORDER BY build_id, pos`, sel.args,
		func(rows *sql.Rows) error {
			var o db.DerivationOutput
			if err := rows.Scan(&id, &o.Name, &o.Path); err != nil {
				return err
			}
			if b := get(id); b != nil {
				b.Outputs = append(b.Outputs, o)
			}
			return nil
		}); err != nil {
		return nil, fmt.Errorf("outputs: %w", err)
	}
	return builds, nil
}

// eachRow runs a query and calls fn for every row.
func eachRow(ctx context.Context, tx Tx, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Build returns one build with attempts and results; ErrNotFound.
func (s *Store) Build(ctx context.Context, id string) (db.Build, error) {
	var b db.Build
	err := s.read(ctx, func(tx Tx) error {
		bs, err := listBuilds(ctx, tx, selection{where: "id = ?", args: []any{id}})
		if err != nil {
			return err
		}
		if len(bs) == 0 {
			return db.ErrNotFound
		}
		b = bs[0]
		if b.Attempts, err = attempts(ctx, tx, id); err != nil {
			return fmt.Errorf("attempts: %w", err)
		}
		if b.Results, err = results(ctx, tx, id); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		return nil
	})
	if err != nil {
		return db.Build{}, fmt.Errorf("build %s: %w", id, err)
	}
	return b, nil
}

func attempts(ctx context.Context, tx Tx, id string) ([]db.Attempt, error) {
	rows, err := tx.QueryContext(ctx, `SELECT number, agent_id, allocated_at, started_at, ended_at, outcome, kind, reason, exit_code, hardware,
		preparing_at, uploading_at, verifying_at, publishing_at
		FROM attempts WHERE build_id = ? ORDER BY number`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []db.Attempt
	for rows.Next() {
		var (
			a                         db.Attempt
			allocated, started, ended sql.NullInt64
			hw                        string
			preparing, uploading      sql.NullInt64
			verifying, publishing     sql.NullInt64
		)
		if err := rows.Scan(&a.Number, &a.AgentID, &allocated, &started, &ended, &a.Outcome, &a.Kind, &a.Reason, &a.ExitCode, &hw,
			&preparing, &uploading, &verifying, &publishing); err != nil {
			return nil, err
		}
		for _, p := range []struct {
			phase db.Phase
			at    sql.NullInt64
		}{{db.PhasePreparing, preparing}, {db.PhaseBuilding, started}, {db.PhaseUploading, uploading},
			{db.PhaseVerifying, verifying}, {db.PhasePublishing, publishing}} {
			if p.at.Valid {
				a.Phases = append(a.Phases, db.PhaseTime{Phase: p.phase, At: fromMS(p.at)})
			}
		}
		if hw != "" {
			if err := json.Unmarshal([]byte(hw), &a.Hardware); err != nil {
				return nil, fmt.Errorf("attempt %d: hardware: %w", a.Number, err)
			}
		}
		a.AllocatedAt, a.StartedAt, a.EndedAt = fromMS(allocated), fromMS(started), fromMS(ended)
		as = append(as, a)
	}
	return as, rows.Err()
}

func results(ctx context.Context, tx Tx, id string) ([]db.OutputResult, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, path, nar_hash, nar_size, file_hash, file_size, compression, file
		FROM results WHERE build_id = ? ORDER BY pos`, id)
	if err != nil {
		return nil, err
	}
	var rs []db.OutputResult
	index := map[string]int{}
	for rows.Next() {
		var r db.OutputResult
		if err := rows.Scan(&r.Name, &r.Path, &r.NarHash, &r.NarSize, &r.FileHash, &r.FileSize, &r.Compression, &r.File); err != nil {
			rows.Close()
			return nil, err
		}
		index[r.Name] = len(rs)
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, nil
	}
	rows, err = tx.QueryContext(ctx, `SELECT name, reference FROM result_references WHERE build_id = ? ORDER BY name, pos`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var name, ref string
		if err := rows.Scan(&name, &ref); err != nil {
			return nil, err
		}
		if i, ok := index[name]; ok {
			rs[i].References = append(rs[i].References, ref)
		}
	}
	return rs, rows.Err()
}

func (s *Store) list(ctx context.Context, what string, sel selection) ([]db.Build, error) {
	var bs []db.Build
	err := s.read(ctx, func(tx Tx) error {
		var err error
		bs, err = listBuilds(ctx, tx, sel)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return bs, nil
}

// Builds lists builds newest first, without attempts and results.
func (s *Store) Builds(ctx context.Context, f db.BuildFilter) ([]db.Build, error) {
	var conds []string
	var args []any
	if f.State != "" {
		conds = append(conds, "state = ?")
		args = append(args, string(f.State))
	}
	if f.AgentID != "" {
		conds = append(conds, "agent_id = ?")
		args = append(args, f.AgentID)
	}
	if f.Derivation != "" {
		conds = append(conds, "derivation = ?")
		args = append(args, f.Derivation)
	}
	if !f.EndedBefore.IsZero() {
		conds = append(conds, "ended_at < ?")
		args = append(args, ms(f.EndedBefore))
	}
	sel := selection{where: strings.Join(conds, " AND "), args: args, order: s.newestFirst, limit: f.Limit}
	return s.list(ctx, fmt.Sprintf("listing builds (state %q, agent %q, limit %d)", f.State, f.AgentID, f.Limit), sel)
}

// BuildsOnAgent returns the allocated and started builds agentID holds,
// oldest first.
func (s *Store) BuildsOnAgent(ctx context.Context, agentID string) ([]db.Build, error) {
	return s.list(ctx, fmt.Sprintf("listing builds on agent %s", agentID), selection{
		where: "agent_id = ? AND state IN ('allocated', 'started')",
		args:  []any{agentID},
		order: s.oldestFirst,
	})
}

// BuildsForDerivations lists every build of the given derivations, newest
// first, in chunks so the statement stays under SQLite's variable limit
// (PostgreSQL's is 65535); each chunk is ordered and the chunks follow
// each other.
func (s *Store) BuildsForDerivations(ctx context.Context, derivations []string) ([]db.Build, error) {
	const chunk = 500
	var out []db.Build
	for i := 0; i < len(derivations); i += chunk {
		part := derivations[i:min(i+chunk, len(derivations))]
		args := make([]any, len(part))
		for j, d := range part {
			args[j] = d
		}
		bs, err := s.list(ctx, fmt.Sprintf("listing builds of %d derivations", len(part)), selection{
			where: "derivation IN (?" + strings.Repeat(", ?", len(part)-1) + ")",
			args:  args,
			order: s.newestFirst,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, bs...)
	}
	return out, nil
}

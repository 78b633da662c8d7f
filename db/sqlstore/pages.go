package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/gbc-farm/gbc/db"
)

// BuildsPage returns one page of builds, newest first by seq. The page's
// positions come first (seq and id, through the filter's index), then the
// builds themselves by id, so the child rows are read for this page only.
func (s *Store) BuildsPage(ctx context.Context, q db.BuildQuery) (db.BuildPage, error) {
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = db.DefaultPageLimit
	case limit > db.MaxPageLimit:
		limit = db.MaxPageLimit
	}
	q2, args := pageQuery(q, limit)
	what := fmt.Sprintf("page of builds (state %q, system %q, name %q, tag %s=%s, agent %q, before %d)",
		q.State, q.System, q.Name, q.Tag.Key, q.Tag.Value, q.AgentID, q.Before)
	var page db.BuildPage
	err := s.read(ctx, func(tx Tx) error {
		var (
			ids  []any
			seqs []int64
		)
		if err := eachRow(ctx, tx, q2, args, func(rows *sql.Rows) error {
			var seq int64
			var id string
			if err := rows.Scan(&seq, &id); err != nil {
				return err
			}
			seqs = append(seqs, seq)
			ids = append(ids, id)
			return nil
		}); err != nil {
			return err
		}
		if len(ids) > limit {
			ids, page.Next = ids[:limit], seqs[limit-1]
		}
		if len(ids) == 0 {
			return nil
		}
		bs, err := listBuilds(ctx, tx, selection{where: "id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")", args: ids, order: "seq DESC"})
		if err != nil {
			return err
		}
		page.Builds = bs
		return nil
	})
	if err != nil {
		return db.BuildPage{}, fmt.Errorf("%s: %w", what, err)
	}
	return page, nil
}

// pageQuery is the query of a page's positions (seq, id), newest first.
// One filter drives it, walking its index in seq order from the cursor:
// the most selective one given (derivation name, then agent, tag, system,
// state). The others are only checked on the rows it yields, written so
// that no planner picks their index instead (col || ” is not indexed,
// in SQLite or PostgreSQL), which without statistics it may, and then
// walk a whole system's builds for a name's few.
func pageQuery(q db.BuildQuery, limit int) (string, []any) {
	type filter struct {
		col, val string
	}
	var eq []filter
	for _, f := range []filter{{"drv_name", q.Name}, {"agent_id", q.AgentID}, {"system", q.System}, {"state", string(q.State)}} {
		if f.val != "" {
			eq = append(eq, f)
		}
	}
	var conds []string
	var args []any
	tagDrives := q.Tag.Key != "" && (len(eq) == 0 || eq[0].col == "system" || eq[0].col == "state")
	for i, f := range eq {
		col := "b." + f.col
		if i > 0 || tagDrives {
			col += " || ''"
		}
		conds = append(conds, col+" = ?")
		args = append(args, f.val)
	}
	if tagDrives {
		// Walk the tag's builds through build_tags_kv_seq.
		conds = append([]string{"t.key = ?", "t.value = ?"}, conds...)
		args = append([]any{q.Tag.Key, q.Tag.Value}, args...)
		if q.Before > 0 {
			conds = append(conds, "t.build_seq < ?")
			args = append(args, q.Before)
		}
		return fmt.Sprintf("SELECT b.seq, b.id FROM build_tags t JOIN builds b ON b.seq = t.build_seq WHERE %s ORDER BY t.build_seq DESC LIMIT %d",
			strings.Join(conds, " AND "), limit+1), args
	}
	if q.Tag.Key != "" {
		conds = append(conds, "EXISTS (SELECT 1 FROM build_tags t WHERE t.build_id = b.id AND t.key || '' = ? AND t.value = ?)")
		args = append(args, q.Tag.Key, q.Tag.Value)
	}
	if q.Before > 0 {
		conds = append(conds, "b.seq < ?")
		args = append(args, q.Before)
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	return fmt.Sprintf("SELECT b.seq, b.id FROM builds b%s ORDER BY b.seq DESC LIMIT %d", where, limit+1), args
}

// AgentAttemptCounts counts an agent's attempts by outcome and kind
// (through attempts_agent).
func (s *Store) AgentAttemptCounts(ctx context.Context, agentID string) ([]db.AttemptCount, error) {
	var out []db.AttemptCount
	err := s.read(ctx, func(tx Tx) error {
		return eachRow(ctx, tx, `SELECT outcome, kind, COUNT(*) FROM attempts WHERE agent_id = ? GROUP BY outcome, kind ORDER BY outcome, kind`,
			[]any{agentID}, func(rows *sql.Rows) error {
				var c db.AttemptCount
				if err := rows.Scan(&c.Outcome, &c.Kind, &c.Count); err != nil {
					return err
				}
				out = append(out, c)
				return nil
			})
	})
	if err != nil {
		return nil, fmt.Errorf("counting attempts of agent %s: %w", agentID, err)
	}
	return out, nil
}

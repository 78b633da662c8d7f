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
	var conds []string
	var args []any
	add := func(cond string, a ...any) {
		conds = append(conds, cond)
		args = append(args, a...)
	}
	if q.State != "" {
		add("state = ?", string(q.State))
	}
	if q.System != "" {
		add("system = ?", q.System)
	}
	if q.Name != "" {
		add("drv_name = ?", q.Name)
	}
	if q.AgentID != "" {
		add("agent_id = ?", q.AgentID)
	}
	if q.Tag.Key != "" {
		add("id IN (SELECT build_id FROM build_tags WHERE key = ? AND value = ?)", q.Tag.Key, q.Tag.Value)
	}
	if q.Before > 0 {
		add("seq < ?", q.Before)
	}
	what := fmt.Sprintf("page of builds (state %q, system %q, name %q, tag %s=%s, agent %q, before %d)",
		q.State, q.System, q.Name, q.Tag.Key, q.Tag.Value, q.AgentID, q.Before)
	var page db.BuildPage
	err := s.read(ctx, func(tx Tx) error {
		sel := selection{where: strings.Join(conds, " AND "), args: args, order: "seq DESC", limit: limit + 1}
		var (
			ids  []any
			seqs []int64
		)
		if err := eachRow(ctx, tx, sel.query("seq, id"), args, func(rows *sql.Rows) error {
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

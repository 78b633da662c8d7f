package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/gbc-farm/gbc/db"
)

// ScheduledBuildsPage returns up to limit scheduled builds with seq above
// after, in seq (recording) order, and the seq of the last one. It walks
// the index builds_state_seq (migration 0004), so a page costs the same
// wherever it starts. The page's tags and features come from two
// joins on the same seq range, in the same read transaction, so they
// belong to exactly the page's builds; outputs are not read.
func (s *Store) ScheduledBuildsPage(ctx context.Context, after int64, limit int) ([]db.QueuedBuild, int64, error) {
	if limit <= 0 {
		return nil, after, fmt.Errorf("scheduled builds after %d: limit %d, want > 0", after, limit)
	}
	var (
		page []db.QueuedBuild
		seqs []int64
	)
	err := s.read(ctx, func(tx Tx) error {
		page, seqs = page[:0], seqs[:0]
		rows, err := tx.QueryContext(ctx, `SELECT seq, id, derivation, system, priority, created_at, defer_until, input_drvs
			FROM builds WHERE state = 'scheduled' AND seq > ? ORDER BY seq LIMIT ?`, after, limit)
		if err != nil {
			return err
		}
		// Raw input columns are decoded once the page's derivations are
		// known, so that an input naming one of them shares its string.
		var raw []sql.NullString
		for rows.Next() {
			var (
				b                   db.QueuedBuild
				seq                 int64
				created, deferUntil sql.NullInt64
				inputs              sql.NullString
			)
			if err := rows.Scan(&seq, &b.ID, &b.Derivation, &b.System, &b.Priority, &created, &deferUntil, &inputs); err != nil {
				rows.Close()
				return err
			}
			b.CreatedAt, b.DeferUntil = fromMS(created), fromMS(deferUntil)
			page, seqs, raw = append(page, b), append(seqs, seq), append(raw, inputs)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		in := newInterner(len(page))
		for i := range page {
			page[i].Derivation = in.add(page[i].Derivation)
		}
		for i := range page {
			page[i].InputDerivations = in.decode(page[i].Derivation, raw[i])
			raw[i] = sql.NullString{}
		}
		last := seqs[len(seqs)-1]
		// Both joins come in seq order, as the page does: one forward walk.
		j := 0
		at := func(seq int64) *db.QueuedBuild {
			for j < len(seqs) && seqs[j] < seq {
				j++
			}
			if j < len(seqs) && seqs[j] == seq {
				return &page[j]
			}
			return nil // not in the page; cannot happen within one snapshot
		}
		var seq int64
		if err := eachRow(ctx, tx, `SELECT b.seq, t.key, t.value FROM builds b JOIN build_tags t ON t.build_id = b.id
			WHERE b.state = 'scheduled' AND b.seq > ? AND b.seq <= ? ORDER BY b.seq, t.pos`, []any{after, last},
			func(rows *sql.Rows) error {
				var t db.Tag
				if err := rows.Scan(&seq, &t.Key, &t.Value); err != nil {
					return err
				}
				if b := at(seq); b != nil {
					b.Tags = append(b.Tags, t)
				}
				return nil
			}); err != nil {
			return fmt.Errorf("tags: %w", err)
		}
		j = 0
		if err := eachRow(ctx, tx, `SELECT b.seq, f.feature FROM builds b JOIN build_features f ON f.build_id = b.id
			WHERE b.state = 'scheduled' AND b.seq > ? AND b.seq <= ? ORDER BY b.seq, f.pos`, []any{after, last},
			func(rows *sql.Rows) error {
				var f string
				if err := rows.Scan(&seq, &f); err != nil {
					return err
				}
				if b := at(seq); b != nil {
					b.RequiredFeatures = append(b.RequiredFeatures, f)
				}
				return nil
			}); err != nil {
			return fmt.Errorf("features: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, after, fmt.Errorf("scheduled builds after %d (limit %d): %w", after, limit, err)
	}
	if len(page) == 0 {
		return nil, after, nil
	}
	return page, seqs[len(seqs)-1], nil
}

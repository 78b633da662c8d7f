package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// agentKeysTx lists the fingerprints of an agent's keys.
func agentKeysTx(ctx context.Context, tx Tx, id string) ([]string, error) {
	var fps []string
	err := eachRow(ctx, tx, `SELECT fingerprint FROM keys WHERE agent_id = ? ORDER BY fingerprint`, []any{id},
		func(rows *sql.Rows) error {
			var fp string
			err := rows.Scan(&fp)
			fps = append(fps, fp)
			return err
		})
	return fps, err
}

// ArchiveAgent deactivates the agent, removes its keys and records when.
func (s *Store) ArchiveAgent(ctx context.Context, id string, at time.Time) ([]string, error) {
	var fps []string
	err := s.write(ctx, func(tx Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET active = ?, archived_at = ? WHERE id = ?`, false, ms(at), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return db.ErrNotFound
		}
		if fps, err = agentKeysTx(ctx, tx, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM keys WHERE agent_id = ?`, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("archiving agent %s: %w", id, err)
	}
	return fps, nil
}

// DeleteAgent removes an agent that no build or attempt names.
func (s *Store) DeleteAgent(ctx context.Context, id string) ([]string, error) {
	var fps []string
	err := s.write(ctx, func(tx Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM agents WHERE id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return db.ErrNotFound
		}
		var used int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM builds WHERE agent_id = ?) + (SELECT count(*) FROM attempts WHERE agent_id = ?)`,
			id, id).Scan(&used); err != nil {
			return err
		}
		if used > 0 {
			return fmt.Errorf("%w: %d builds or attempts name it (archive it instead)", db.ErrConflict, used)
		}
		var err error
		if fps, err = agentKeysTx(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE agent_id = ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM agents WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deleting agent %s: %w", id, err)
	}
	return fps, nil
}

// PinPaths records pins, replacing the reason of a path pinned again.
func (s *Store) PinPaths(ctx context.Context, pins []db.Pin) error {
	for _, p := range pins {
		if p.Path == "" || strings.ContainsAny(p.Path, "\n\r") {
			return fmt.Errorf("pin %q: not a path", p.Path)
		}
	}
	return s.write(ctx, func(tx Tx) error {
		for _, p := range pins {
			_, err := tx.ExecContext(ctx, `INSERT INTO cache_pins (path, reason, created_at, created_by) VALUES (?, ?, ?, ?)
				ON CONFLICT (path) DO UPDATE SET reason = excluded.reason`, p.Path, p.Reason, ms(p.CreatedAt), p.By)
			if err != nil {
				return fmt.Errorf("pin %s: %w", p.Path, err)
			}
		}
		return nil
	})
}

// UnpinPaths removes pins; it returns how many existed.
func (s *Store) UnpinPaths(ctx context.Context, paths []string) (int, error) {
	n := 0
	err := s.write(ctx, func(tx Tx) error {
		n = 0
		for _, p := range paths {
			res, err := tx.ExecContext(ctx, `DELETE FROM cache_pins WHERE path = ?`, p)
			if err != nil {
				return fmt.Errorf("unpin %s: %w", p, err)
			}
			k, _ := res.RowsAffected()
			n += int(k)
		}
		return nil
	})
	return n, err
}

// Pins lists every pin by path.
func (s *Store) Pins(ctx context.Context) ([]db.Pin, error) {
	var ps []db.Pin
	err := s.readOne(ctx, func(tx Tx) error {
		ps = nil
		return eachRow(ctx, tx, `SELECT path, reason, created_at, created_by FROM cache_pins ORDER BY path`, nil,
			func(rows *sql.Rows) error {
				var p db.Pin
				var at sql.NullInt64
				err := rows.Scan(&p.Path, &p.Reason, &at, &p.By)
				p.CreatedAt = fromMS(at)
				ps = append(ps, p)
				return err
			})
	})
	if err != nil {
		return nil, fmt.Errorf("listing pins: %w", err)
	}
	return ps, nil
}

// RecordCacheAccess upserts last accesses, never moving one backwards.
// It is a background batch: nobody waits on it.
func (s *Store) RecordCacheAccess(ctx context.Context, accesses []db.CacheAccess) error {
	if len(accesses) == 0 {
		return nil
	}
	err := s.writeBackground(ctx, func(tx Tx) error {
		for _, a := range accesses {
			_, err := tx.ExecContext(ctx, `INSERT INTO cache_access (hash_part, last_access) VALUES (?, ?)
				ON CONFLICT (hash_part) DO UPDATE SET last_access = CASE
					WHEN excluded.last_access > cache_access.last_access THEN excluded.last_access
					ELSE cache_access.last_access END`, a.HashPart, a.At.UnixMilli())
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording %d cache accesses: %w", len(accesses), err)
	}
	return nil
}

// CacheAccesses returns every recorded last access.
func (s *Store) CacheAccesses(ctx context.Context) ([]db.CacheAccess, error) {
	var as []db.CacheAccess
	err := s.readOne(ctx, func(tx Tx) error {
		as = nil
		return eachRow(ctx, tx, `SELECT hash_part, last_access FROM cache_access`, nil,
			func(rows *sql.Rows) error {
				var a db.CacheAccess
				var at int64
				err := rows.Scan(&a.HashPart, &at)
				a.At = time.UnixMilli(at).UTC()
				as = append(as, a)
				return err
			})
	})
	if err != nil {
		return nil, fmt.Errorf("reading cache accesses: %w", err)
	}
	return as, nil
}

// ForgetCacheAccess deletes the rows of deleted paths.
func (s *Store) ForgetCacheAccess(ctx context.Context, hashParts []string) error {
	if len(hashParts) == 0 {
		return nil
	}
	err := s.writeBackground(ctx, func(tx Tx) error {
		for _, h := range hashParts {
			if _, err := tx.ExecContext(ctx, `DELETE FROM cache_access WHERE hash_part = ?`, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forgetting %d cache accesses: %w", len(hashParts), err)
	}
	return nil
}

// BuildRootsPage pages builds by seq with their tags and declared outputs.
func (s *Store) BuildRootsPage(ctx context.Context, after int64, limit int) ([]db.BuildRoot, int64, error) {
	if limit <= 0 {
		return nil, after, fmt.Errorf("build roots page: limit %d", limit)
	}
	var (
		page []db.BuildRoot
		last int64
	)
	err := s.read(ctx, func(tx Tx) error {
		page, last = nil, after
		index := map[string]int{}
		sub := `SELECT id FROM builds WHERE seq > ? ORDER BY seq LIMIT ?`
		if err := eachRow(ctx, tx, `SELECT seq, id, derivation, state, created_at, ended_at FROM builds WHERE seq > ? ORDER BY seq LIMIT ?`,
			[]any{after, limit}, func(rows *sql.Rows) error {
				var (
					b              db.BuildRoot
					state          string
					created, ended sql.NullInt64
				)
				if err := rows.Scan(&last, &b.ID, &b.Derivation, &state, &created, &ended); err != nil {
					return err
				}
				b.State = db.BuildState(state)
				b.CreatedAt, b.EndedAt = fromMS(created), fromMS(ended)
				index[b.ID] = len(page)
				page = append(page, b)
				return nil
			}); err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		var id string
		if err := eachRow(ctx, tx, `SELECT build_id, key, value FROM build_tags WHERE build_id IN (`+sub+`) ORDER BY build_id, pos`,
			[]any{after, limit}, func(rows *sql.Rows) error {
				var t db.Tag
				if err := rows.Scan(&id, &t.Key, &t.Value); err != nil {
					return err
				}
				if i, ok := index[id]; ok {
					page[i].Tags = append(page[i].Tags, t)
				}
				return nil
			}); err != nil {
			return fmt.Errorf("tags: %w", err)
		}
		return eachRow(ctx, tx, `SELECT build_id, path FROM build_outputs WHERE build_id IN (`+sub+`) ORDER BY build_id, pos`,
			[]any{after, limit}, func(rows *sql.Rows) error {
				var p string
				if err := rows.Scan(&id, &p); err != nil {
					return err
				}
				if i, ok := index[id]; ok {
					page[i].Outputs = append(page[i].Outputs, p)
				}
				return nil
			})
	})
	if err != nil {
		return nil, after, fmt.Errorf("build roots after %d: %w", after, err)
	}
	return page, last, nil
}

// DeleteBuilds removes terminal builds; child rows go by ON DELETE CASCADE.
func (s *Store) DeleteBuilds(ctx context.Context, ids []string) (int, error) {
	n := 0
	err := s.writeBackground(ctx, func(tx Tx) error {
		n = 0
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `DELETE FROM builds WHERE id = ? AND state IN ('succeeded', 'failed', 'canceled', 'failed-dependency')`, id)
			if err != nil {
				return fmt.Errorf("build %s: %w", id, err)
			}
			k, _ := res.RowsAffected()
			n += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting %d builds: %w", len(ids), err)
	}
	return n, nil
}

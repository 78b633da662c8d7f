package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gbc-farm/gbc/db"
)

func validateKey(k db.Key) error {
	if k.Fingerprint == "" {
		return fmt.Errorf("key: empty fingerprint")
	}
	switch k.Role {
	case db.RoleAdmin, db.RoleOperator, db.RoleReader:
		if k.AgentID != "" {
			return fmt.Errorf("key %s: role %s must not name an agent (got %q)", k.Fingerprint, k.Role, k.AgentID)
		}
	case db.RoleAgent:
		if k.AgentID == "" {
			return fmt.Errorf("key %s: role agent needs an agent id", k.Fingerprint)
		}
	default:
		return fmt.Errorf("key %s: unknown role %q", k.Fingerprint, k.Role)
	}
	return nil
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func (s *Store) insertKey(ctx context.Context, tx Tx, k db.Key) error {
	if err := validateKey(k); err != nil {
		return err
	}
	if k.Role == db.RoleAgent {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM agents WHERE id = ?`, k.AgentID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("key %s: agent %s: %w", k.Fingerprint, k.AgentID, db.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("key %s: looking up agent %s: %w", k.Fingerprint, k.AgentID, err)
		}
	}
	_, err := tx.ExecContext(ctx,
		`INSERT INTO keys (fingerprint, authorized_key, role, agent_id, comment, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.Fingerprint, k.AuthorizedKey, string(k.Role), nullString(k.AgentID), k.Comment, ms(k.CreatedAt))
	if s.isUnique(err) {
		return fmt.Errorf("key %s: %w", k.Fingerprint, db.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("key %s: insert: %w", k.Fingerprint, err)
	}
	return nil
}

// PutKey records a new key; ErrExists if the fingerprint is known,
// ErrNotFound if an agent key names an unknown agent.
func (s *Store) PutKey(ctx context.Context, k db.Key) error {
	return s.write(ctx, func(tx Tx) error { return s.insertKey(ctx, tx, k) })
}

const keyCols = `fingerprint, authorized_key, role, agent_id, comment, created_at`

func scanKey(sc interface{ Scan(...any) error }) (db.Key, error) {
	var (
		k       db.Key
		role    string
		agentID sql.NullString
		created sql.NullInt64
	)
	if err := sc.Scan(&k.Fingerprint, &k.AuthorizedKey, &role, &agentID, &k.Comment, &created); err != nil {
		return db.Key{}, err
	}
	k.Role = db.Role(role)
	k.AgentID = agentID.String
	k.CreatedAt = fromMS(created)
	return k, nil
}

// Key returns the key with that fingerprint; ErrNotFound.
func (s *Store) Key(ctx context.Context, fingerprint string) (db.Key, error) {
	var k db.Key
	err := s.readOne(ctx, func(tx Tx) error {
		var err error
		k, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyCols+` FROM keys WHERE fingerprint = ?`, fingerprint))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return db.Key{}, fmt.Errorf("key %s: %w", fingerprint, db.ErrNotFound)
	}
	if err != nil {
		return db.Key{}, fmt.Errorf("key %s: %w", fingerprint, err)
	}
	return k, nil
}

// Keys lists all keys, oldest first.
func (s *Store) Keys(ctx context.Context) ([]db.Key, error) {
	var ks []db.Key
	err := s.readOne(ctx, func(tx Tx) error {
		ks = nil
		return eachRow(ctx, tx, `SELECT `+keyCols+` FROM keys ORDER BY `+s.keysOrder, nil,
			func(rows *sql.Rows) error {
				k, err := scanKey(rows)
				ks = append(ks, k)
				return err
			})
	})
	if err != nil {
		return nil, fmt.Errorf("listing keys: %w", err)
	}
	return ks, nil
}

// DeleteKey removes a key; ErrNotFound.
func (s *Store) DeleteKey(ctx context.Context, fingerprint string) error {
	return s.write(ctx, func(tx Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE fingerprint = ?`, fingerprint)
		if err != nil {
			return fmt.Errorf("deleting key %s: %w", fingerprint, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("deleting key %s: %w", fingerprint, db.ErrNotFound)
		}
		return nil
	})
}

// CreateAgent records an agent and its keys in one transaction; ErrExists
// if the agent id or any key fingerprint is taken. Keys must have role
// agent; an empty AgentID is bound to a.ID, a different one is an error.
func (s *Store) CreateAgent(ctx context.Context, a db.Agent, keys ...db.Key) error {
	if a.ID == "" {
		return fmt.Errorf("agent: empty id")
	}
	keys = slices.Clone(keys) // binding AgentID must not write to the caller's slice
	for i := range keys {
		if keys[i].AgentID == "" {
			keys[i].AgentID = a.ID
		}
		if keys[i].Role != db.RoleAgent || keys[i].AgentID != a.ID {
			return fmt.Errorf("agent %s: key %s has role %q for agent %q, want role agent for this agent",
				a.ID, keys[i].Fingerprint, keys[i].Role, keys[i].AgentID)
		}
	}
	return s.write(ctx, func(tx Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO agents (id, name, active, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?)`,
			a.ID, a.Name, a.Active, ms(a.CreatedAt), ms(a.LastSeenAt))
		if s.isUnique(err) {
			return fmt.Errorf("agent %s: %w", a.ID, db.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("agent %s: insert: %w", a.ID, err)
		}
		for _, k := range keys {
			if err := s.insertKey(ctx, tx, k); err != nil {
				return fmt.Errorf("agent %s: %w", a.ID, err)
			}
		}
		return nil
	})
}

const agentCols = `id, name, active, created_at, last_seen_at, archived_at`

func scanAgent(sc interface{ Scan(...any) error }) (db.Agent, error) {
	var (
		a             db.Agent
		created, seen sql.NullInt64
		archived      sql.NullInt64
	)
	if err := sc.Scan(&a.ID, &a.Name, &a.Active, &created, &seen, &archived); err != nil {
		return db.Agent{}, err
	}
	a.CreatedAt = fromMS(created)
	a.LastSeenAt = fromMS(seen)
	a.ArchivedAt = fromMS(archived)
	return a, nil
}

// Agent returns one agent; ErrNotFound.
func (s *Store) Agent(ctx context.Context, id string) (db.Agent, error) {
	var a db.Agent
	err := s.readOne(ctx, func(tx Tx) error {
		var err error
		a, err = scanAgent(tx.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return db.Agent{}, fmt.Errorf("agent %s: %w", id, db.ErrNotFound)
	}
	if err != nil {
		return db.Agent{}, fmt.Errorf("agent %s: %w", id, err)
	}
	return a, nil
}

// Agents lists all agents, oldest first.
func (s *Store) Agents(ctx context.Context) ([]db.Agent, error) {
	var as []db.Agent
	err := s.readOne(ctx, func(tx Tx) error {
		as = nil
		return eachRow(ctx, tx, `SELECT `+agentCols+` FROM agents ORDER BY `+s.agentsOrder, nil,
			func(rows *sql.Rows) error {
				a, err := scanAgent(rows)
				as = append(as, a)
				return err
			})
	})
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	return as, nil
}

func (s *Store) updateAgent(ctx context.Context, what, id, query string, args ...any) error {
	return s.write(ctx, func(tx Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("%s agent %s: %w", what, id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%s agent %s: %w", what, id, db.ErrNotFound)
		}
		return nil
	})
}

// SetAgentActive enables or disables an agent; ErrNotFound.
func (s *Store) SetAgentActive(ctx context.Context, id string, active bool) error {
	return s.updateAgent(ctx, "setting active on", id, `UPDATE agents SET active = ? WHERE id = ?`, active, id)
}

// TouchAgent records when the agent was last seen; ErrNotFound.
func (s *Store) TouchAgent(ctx context.Context, id string, at time.Time) error {
	return s.updateAgent(ctx, "touching", id, `UPDATE agents SET last_seen_at = ? WHERE id = ?`, ms(at), id)
}

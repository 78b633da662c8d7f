package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/keys"
)

// Operator actions on agents and keys (register an agent, activate,
// deactivate, archive or delete it; add and remove keys). Every change of
// who may do what goes through here, whoever asks (the SSH commands, `gbc
// coordinator --admin-key`), so the rules on roles are in one place: an
// operator key has role admin, operator or reader and names no agent; an
// agent key has role agent and names an existing agent. Removing a key
// (RemoveKey, revoke.go) is also the place that ends what the key
// authenticated.

// ErrBadKey: a key line or role that the rules above refuse.
var ErrBadKey = errors.New("bad key")

// MaxAgentName bounds an agent's name in bytes.
const MaxAgentName = 200

// operatorRole reports whether r is a role an operator key may have.
func operatorRole(r db.Role) bool {
	switch r {
	case db.RoleAdmin, db.RoleOperator, db.RoleReader:
		return true
	}
	return false
}

// CreateAgent registers an active agent and, atomically, its key when
// keyLine is not empty (an authorized_keys line). An empty name is
// derived from the new id. It returns the agent's id.
func (c *Coordinator) CreateAgent(ctx context.Context, name, keyLine string) (string, error) {
	id := uuid.NewString()
	if name == "" {
		name = "agent-" + id[:8]
	}
	if len(name) > MaxAgentName {
		return "", fmt.Errorf("%w: agent name is %d bytes, limit %d", ErrBadKey, len(name), MaxAgentName)
	}
	if text.HasControl(name) {
		return "", fmt.Errorf("%w: agent name %q contains control characters or bytes that are not UTF-8", ErrBadKey, text.Truncate(name, 100))
	}
	now := c.clk.Now()
	var ks []db.Key
	if keyLine != "" {
		ak, err := keys.ParseAuthorizedKey(keyLine)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		if err := c.keyTaken(ctx, ak.Fingerprint, "no agent was created"); err != nil {
			return "", err
		}
		ks = append(ks, db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: id, Comment: ak.Comment, CreatedAt: now})
	}
	if err := c.store.CreateAgent(ctx, db.Agent{ID: id, Name: name, Active: true, CreatedAt: now}, ks...); err != nil {
		if errors.Is(err, db.ErrExists) && len(ks) > 0 {
			if kerr := c.keyTaken(ctx, ks[0].Fingerprint, "no agent was created"); kerr != nil {
				return "", kerr // registered meanwhile
			}
		}
		return "", fmt.Errorf("create agent %q: %w", text.Truncate(name, 64), err)
	}
	c.mu.Lock()
	c.noteAgentLocked(id, func(m *agentMeta) { m.name, m.active = name, true })
	c.mu.Unlock()
	c.log.Info("agent created", "agent", id, "name", name, "keys", len(ks))
	return id, nil
}

// AddAgentKey adds a key (an authorized_keys line) for an existing agent
// and returns its fingerprint.
func (c *Coordinator) AddAgentKey(ctx context.Context, agentID, keyLine string) (string, error) {
	if _, err := c.store.Agent(ctx, agentID); errors.Is(err, db.ErrNotFound) {
		return "", &plainError{fmt.Sprintf("no agent %q ('agents' lists the agent ids)", text.Truncate(agentID, 64)), db.ErrNotFound}
	} else if err != nil {
		return "", fmt.Errorf("read agent %q: %w", text.Truncate(agentID, 64), err)
	}
	ak, err := keys.ParseAuthorizedKey(keyLine)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: agentID, Comment: ak.Comment, CreatedAt: c.clk.Now()}
	if err := c.store.PutKey(ctx, k); err != nil {
		if errors.Is(err, db.ErrExists) {
			if kerr := c.keyTaken(ctx, ak.Fingerprint, "nothing was added"); kerr != nil {
				return "", kerr
			}
		}
		return "", fmt.Errorf("add key %s: %w", ak.Fingerprint, err)
	}
	c.log.Info("agent key added", "agent", agentID, "fingerprint", ak.Fingerprint)
	return ak.Fingerprint, nil
}

// AddKey adds an operator key (an authorized_keys line) with role admin,
// operator or reader and returns its fingerprint; agent keys go through
// CreateAgent and AddAgentKey.
func (c *Coordinator) AddKey(ctx context.Context, keyLine string, role db.Role) (string, error) {
	if !operatorRole(role) {
		return "", fmt.Errorf("%w: role must be admin, operator or reader (agent keys: 'agent ID key add'), got %q", ErrBadKey, text.Truncate(string(role), 40))
	}
	ak, err := keys.ParseAuthorizedKey(keyLine)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: role, Comment: ak.Comment, CreatedAt: c.clk.Now()}
	if err := c.store.PutKey(ctx, k); err != nil {
		return "", fmt.Errorf("add key %s: %w", ak.Fingerprint, err)
	}
	c.log.Info("key added", "fingerprint", ak.Fingerprint, "role", role)
	return ak.Fingerprint, nil
}

// EnsureAdminKey gives a key (an authorized_keys line) the admin role;
// for a key already registered as admin it does nothing, and a key
// registered with another role is refused rather than changed.
func (c *Coordinator) EnsureAdminKey(ctx context.Context, keyLine string) (string, error) {
	ak, err := keys.ParseAuthorizedKey(keyLine)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	existing, err := c.store.Key(ctx, ak.Fingerprint)
	switch {
	case err == nil:
		if existing.Role != db.RoleAdmin {
			return "", fmt.Errorf("%w: %s is already registered with role %s", ErrBadKey, ak.Fingerprint, existing.Role)
		}
		return ak.Fingerprint, nil
	case !errors.Is(err, db.ErrNotFound):
		return "", fmt.Errorf("look up admin key %s: %w", ak.Fingerprint, err)
	}
	k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAdmin, Comment: ak.Comment, CreatedAt: c.clk.Now()}
	if err := c.store.PutKey(ctx, k); err != nil && !errors.Is(err, db.ErrExists) {
		return "", fmt.Errorf("add admin key %s: %w", ak.Fingerprint, err)
	}
	c.log.Info("admin key ensured", "fingerprint", ak.Fingerprint)
	return ak.Fingerprint, nil
}

// keyTaken refuses a key that is already registered, saying to whom and
// what was not done (an error wrapping db.ErrExists); nil when the key is
// not registered.
func (c *Coordinator) keyTaken(ctx context.Context, fingerprint, notDone string) error {
	k, err := c.store.Key(ctx, fingerprint)
	if errors.Is(err, db.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up key %s: %w", fingerprint, err)
	}
	owner := "as an " + string(k.Role) + " key"
	if k.AgentID != "" {
		owner = "to agent " + k.AgentID
		if a, err := c.store.Agent(ctx, k.AgentID); err == nil {
			owner = fmt.Sprintf("to agent %s (%s)", a.Name, a.ID)
		}
	}
	return &plainError{fmt.Sprintf("key %s is already registered %s; %s (a key belongs to one agent or operator: generate another, or 'key remove %s' first)",
		fingerprint, owner, notDone, fingerprint), db.ErrExists}
}

// Key returns a registered key (db.ErrNotFound if there is none): the
// SSH server authenticates sessions with it.
func (c *Coordinator) Key(ctx context.Context, fingerprint string) (db.Key, error) {
	return c.store.Key(ctx, fingerprint)
}

// Keys lists the registered keys.
func (c *Coordinator) Keys(ctx context.Context) ([]db.Key, error) {
	return c.store.Keys(ctx)
}

// Agent returns a registered agent (db.ErrNotFound if there is none).
func (c *Coordinator) Agent(ctx context.Context, id string) (db.Agent, error) {
	return c.store.Agent(ctx, id)
}

// Agents lists the registered agents.
func (c *Coordinator) Agents(ctx context.Context) ([]db.Agent, error) {
	return c.store.Agents(ctx)
}

// SetAgentActive activates or deactivates an agent. Deactivating revokes
// it: its session ends at once and results still in flight are refused
// (never signed), every connection of its keys is closed (OnRevocation),
// it cannot connect again, and the builds it held go back to the queue
// (not counted against them). Activating lets it in again.
func (c *Coordinator) SetAgentActive(ctx context.Context, agentID string, active bool) error {
	if err := c.store.SetAgentActive(ctx, agentID, active); err != nil {
		if errors.Is(err, db.ErrNotFound) {
			return &plainError{fmt.Sprintf("no agent %q ('agents' lists the agent ids)", text.Truncate(agentID, 64)), db.ErrNotFound}
		}
		return fmt.Errorf("set agent %s active=%v: %w", agentID, active, err)
	}
	c.log.Info("agent activation changed", "agent", agentID, "active", active)
	c.mu.Lock()
	c.noteAgentLocked(agentID, func(m *agentMeta) { m.active = active })
	if s := c.departed[agentID]; s != nil {
		s.inactive = !active
	}
	c.mu.Unlock()
	if active {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.dispatchLocked(ctx)
		return nil
	}
	fps, err := c.agentKeys(ctx, agentID)
	if err != nil {
		// The store refuses the agent's keys already; live connections
		// end with the session or at their next channel.
		c.log.Error("list keys of a deactivated agent", "agent", agentID, "err", err)
	}
	return c.revokeAgent(ctx, agentID, fps, "agent deactivated")
}

// revokeAgent ends an agent that the store no longer lets in: its session
// (results in flight refused), the connections of its keys fps, and its
// builds, which go back to the queue.
func (c *Coordinator) revokeAgent(ctx context.Context, agentID string, fps []string, reason string) error {
	c.mu.Lock()
	if s := c.sessions[agentID]; s != nil {
		s.inactive = true
	}
	c.mu.Unlock()
	c.revokeSession(agentID, reason)
	c.announce(Revocation{Fingerprints: fps, Reason: reason})
	c.mu.Lock()
	defer c.mu.Unlock()
	bs, err := c.store.BuildsOnAgent(ctx, agentID)
	if err != nil {
		return fmt.Errorf("agent %s: %s; its builds will be requeued after the disconnect grace: %w", agentID, reason, err)
	}
	for _, b := range bs {
		c.requeueLocked(ctx, b.ID, agentID, db.KindInfrastructure, reason, "")
	}
	c.dispatchLocked(ctx)
	return nil
}

// ArchiveAgent retires an agent for good: it is deactivated and revoked
// at once (as SetAgentActive(false)), its keys are removed, and it is
// hidden from listings unless asked; its builds and attempts keep naming
// it.
func (c *Coordinator) ArchiveAgent(ctx context.Context, agentID string) error {
	fps, err := c.store.ArchiveAgent(ctx, agentID, c.clk.Now())
	if err != nil {
		if errors.Is(err, db.ErrNotFound) {
			return &plainError{fmt.Sprintf("no agent %q ('agents --all' lists the agent ids)", text.Truncate(agentID, 64)), db.ErrNotFound}
		}
		return fmt.Errorf("archive agent %s: %w", agentID, err)
	}
	c.log.Info("agent archived", "agent", agentID, "keys_removed", len(fps))
	c.mu.Lock()
	c.noteAgentLocked(agentID, func(m *agentMeta) { m.active = false })
	c.mu.Unlock()
	err = c.revokeAgent(ctx, agentID, fps, "agent archived")
	// Retired for good: no longer an agent a build could wait for.
	c.mu.Lock()
	delete(c.departed, agentID)
	c.mu.Unlock()
	return err
}

// DeleteAgent removes an agent that never held a build, with its keys.
func (c *Coordinator) DeleteAgent(ctx context.Context, agentID string) error {
	fps, err := c.store.DeleteAgent(ctx, agentID)
	switch {
	case errors.Is(err, db.ErrNotFound):
		return &plainError{fmt.Sprintf("no agent %q ('agents --all' lists the agent ids)", text.Truncate(agentID, 64)), db.ErrNotFound}
	case errors.Is(err, db.ErrConflict):
		return &plainError{fmt.Sprintf("agent %s has builds or attempts; archive it instead (agent %s archive) to keep its history", text.Truncate(agentID, 64), text.Truncate(agentID, 64)), db.ErrConflict}
	case err != nil:
		return fmt.Errorf("delete agent %s: %w", agentID, err)
	}
	c.log.Info("agent deleted", "agent", agentID, "keys_removed", len(fps))
	c.revokeSession(agentID, "agent deleted")
	c.announce(Revocation{Fingerprints: fps, Reason: "agent deleted"})
	c.mu.Lock()
	delete(c.known, agentID)
	delete(c.departed, agentID)
	c.mu.Unlock()
	return nil
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gbc-farm/gbc/db"
)

// ErrRevoked refuses a result from a session whose key was removed or
// whose agent was deactivated: it is neither recorded nor signed.
var ErrRevoked = errors.New("the agent's key was removed or the agent deactivated")

// Revocation names the keys whose live connections must end now.
type Revocation struct {
	Fingerprints []string
	Reason       string
}

// OnRevocation registers fn to be told, synchronously, of every key
// removal and agent deactivation; the SSH server closes the connections
// of those keys. Register before serving.
func (c *Coordinator) OnRevocation(fn func(Revocation)) {
	c.revokeMu.Lock()
	defer c.revokeMu.Unlock()
	c.revokers = append(c.revokers, fn)
}

func (c *Coordinator) announce(r Revocation) {
	c.revokeMu.Lock()
	fns := slices.Clone(c.revokers)
	c.revokeMu.Unlock()
	for _, fn := range fns {
		fn(r)
	}
}

// RemoveKey deletes a key and ends everything authenticated with it: its
// connections (through OnRevocation) and, for an agent key, the agent's
// session, whose results still in flight are refused. The agent may
// reconnect with another of its keys; its builds then continue, or go
// back to the queue after the disconnect grace as for any disconnect.
func (c *Coordinator) RemoveKey(ctx context.Context, fingerprint string) error {
	k, err := c.store.Key(ctx, fingerprint)
	if err != nil {
		return fmt.Errorf("key %s: %w", fingerprint, err)
	}
	if err := c.store.DeleteKey(ctx, fingerprint); err != nil {
		return fmt.Errorf("delete key %s: %w", fingerprint, err)
	}
	if k.Role == db.RoleAgent && k.AgentID != "" {
		c.revokeSession(k.AgentID, "key removed")
	}
	c.announce(Revocation{Fingerprints: []string{fingerprint}, Reason: "key removed"})
	c.log.Info("key removed", "fingerprint", fingerprint, "role", k.Role, "agent", k.AgentID)
	return nil
}

// revokeSession ends the agent's live session so that nothing more it
// sends is recorded. It waits for a result being published to finish:
// once it returns, no result of that session is ever signed.
func (c *Coordinator) revokeSession(agentID, reason string) {
	c.mu.Lock()
	s := c.sessions[agentID]
	c.mu.Unlock()
	if s == nil {
		return
	}
	s.resultMu.Lock()
	s.revoked = true
	s.resultMu.Unlock()
	c.log.Warn("agent session revoked", "agent", agentID, "reason", reason)
	s.Close()
}

// admit holds off revocation while a result is recorded; the caller
// calls release when done. A revoked session gets ErrRevoked.
func (s *Session) admit() (release func(), err error) {
	s.resultMu.RLock()
	if s.revoked {
		s.resultMu.RUnlock()
		return nil, fmt.Errorf("agent %s: %w", s.agentID, ErrRevoked)
	}
	return s.resultMu.RUnlock, nil
}

// agentKeys lists the fingerprints of an agent's keys.
func (c *Coordinator) agentKeys(ctx context.Context, agentID string) ([]string, error) {
	ks, err := c.store.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys of agent %s: %w", agentID, err)
	}
	var fps []string
	for _, k := range ks {
		if k.Role == db.RoleAgent && k.AgentID == agentID {
			fps = append(fps, k.Fingerprint)
		}
	}
	return fps, nil
}

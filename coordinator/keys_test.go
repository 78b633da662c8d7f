package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/db"
)

// newKeyLine returns a fresh authorized_keys line with comment.
func newKeyLine(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(p))) + " " + comment
}

// TestKeyRules: the role rules of operator actions, whoever calls them.
func TestKeyRules(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	// An operator key: admin, operator or reader, never agent or unknown.
	line := newKeyLine(t, "ops")
	fp, err := h.c.AddKey(ctx, line, db.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := h.c.Key(ctx, fp); err != nil || k.Role != db.RoleOperator || k.AgentID != "" || k.Comment != "ops" {
		t.Errorf("operator key: %+v, %v", k, err)
	}
	for _, r := range []db.Role{db.RoleAgent, "", "root"} {
		if _, err := h.c.AddKey(ctx, newKeyLine(t, "x"), r); !errors.Is(err, ErrBadKey) {
			t.Errorf("AddKey with role %q: %v, want ErrBadKey", r, err)
		}
	}
	if _, err := h.c.AddKey(ctx, "ssh-ed25519 not-base64", db.RoleReader); !errors.Is(err, ErrBadKey) {
		t.Errorf("AddKey of a bad line: %v, want ErrBadKey", err)
	}
	if _, err := h.c.AddKey(ctx, line, db.RoleReader); !errors.Is(err, db.ErrExists) {
		t.Errorf("AddKey twice: %v, want ErrExists", err)
	}

	// An agent with its key, and a second key for it.
	agentLine := newKeyLine(t, "builder")
	id, err := h.c.CreateAgent(ctx, "", agentLine)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.c.Agents(ctx)
	if err != nil || len(as) != 1 || as[0].ID != id || as[0].Name != "agent-"+id[:8] || !as[0].Active {
		t.Errorf("agents: %+v, %v", as, err)
	}
	fp2, err := h.c.AddAgentKey(ctx, id, newKeyLine(t, "second"))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := h.c.Key(ctx, fp2); err != nil || k.Role != db.RoleAgent || k.AgentID != id {
		t.Errorf("agent key: %+v, %v", k, err)
	}
	if _, err := h.c.AddAgentKey(ctx, "no-such-agent", newKeyLine(t, "x")); !errors.Is(err, db.ErrNotFound) {
		t.Errorf("AddAgentKey for an unknown agent: %v, want ErrNotFound", err)
	}
	if _, err := h.c.CreateAgent(ctx, strings.Repeat("n", MaxAgentName+1), ""); !errors.Is(err, ErrBadKey) {
		t.Errorf("CreateAgent with a long name: %v, want ErrBadKey", err)
	}
	if _, err := h.c.CreateAgent(ctx, "bad", "not a key"); !errors.Is(err, ErrBadKey) {
		t.Errorf("CreateAgent with a bad key: %v, want ErrBadKey", err)
	}
	if as, _ := h.c.Agents(ctx); len(as) != 1 {
		t.Errorf("refused CreateAgent calls registered agents: %+v", as)
	}

	// The admin key: added once, then a no-op; a key with another role
	// is refused, not promoted.
	admin := newKeyLine(t, "admin")
	afp, err := h.c.EnsureAdminKey(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.c.EnsureAdminKey(ctx, admin); err != nil || again != afp {
		t.Errorf("EnsureAdminKey again: %s, %v", again, err)
	}
	if k, err := h.c.Key(ctx, afp); err != nil || k.Role != db.RoleAdmin {
		t.Errorf("admin key: %+v, %v", k, err)
	}
	if _, err := h.c.EnsureAdminKey(ctx, line); !errors.Is(err, ErrBadKey) {
		t.Errorf("EnsureAdminKey of an operator key: %v, want ErrBadKey", err)
	}
	if k, _ := h.c.Key(ctx, fp); k.Role != db.RoleOperator {
		t.Errorf("operator key changed to %s", k.Role)
	}

	// Removal.
	if err := h.c.RemoveKey(ctx, fp); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Key(ctx, fp); !errors.Is(err, db.ErrNotFound) {
		t.Errorf("removed key: %v, want ErrNotFound", err)
	}
	if err := h.c.RemoveKey(ctx, fp); !errors.Is(err, db.ErrNotFound) {
		t.Errorf("RemoveKey twice: %v, want ErrNotFound", err)
	}
	ks, err := h.c.Keys(ctx)
	if err != nil || len(ks) != 3 {
		t.Errorf("keys: %d, %v; want the two agent keys and the admin key", len(ks), err)
	}
}

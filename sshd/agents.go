package sshd

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/keys"
)

type agentJSON struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Active     bool   `json:"active"`
	Connected  bool   `json:"connected"`
	CreatedAt  string `json:"created_at"`
	LastSeenAt string `json:"last_seen_at"`
}

func setupAgents(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		as, err := x.s.store.Agents(x.ctx)
		if err != nil {
			return err
		}
		list := make([]agentJSON, 0, len(as))
		for _, a := range as {
			list = append(list, agentJSON{a.ID, a.Name, a.Active, x.s.coord.Connected(a.ID), jsonTime(a.CreatedAt), jsonTime(a.LastSeenAt)})
		}
		if *asJSON {
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tACTIVE\tCONNECTED\tLAST SEEN")
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\n", a.ID, a.Name, a.Active, x.s.coord.Connected(a.ID), textTime(a.LastSeenAt))
		}
		return tw.Flush()
	}
}

func setupAgentNew(fs *pflag.FlagSet) func(x *call) error {
	name := fs.String("name", "", "a name for the agent (default: derived from its id)")
	keyLine := fs.String("key", "", "the agent's public key line ('ssh-ed25519 AAAA…')")
	return func(x *call) error {
		if len(x.args) > 0 && fs.Changed("key") {
			// The shell split an unquoted key line into words.
			return usageErr("--key takes the whole key line as one argument, got %d more word(s); %s", len(x.args), quoteKeyHint)
		}
		if err := needArgs(x, 0, "no positional arguments"); err != nil {
			return err
		}
		id := uuid.NewString()
		n := *name
		if n == "" {
			n = "agent-" + id[:8]
		}
		if len(n) > 200 {
			return usageErr("--name is %d bytes, limit 200", len(n))
		}
		now := x.s.now()
		var ks []db.Key
		if *keyLine != "" {
			ak, err := keys.ParseAuthorizedKey(*keyLine)
			if err != nil {
				return usageErr("--key: %v", err)
			}
			if err := keyTaken(x, ak.Fingerprint, "no agent was created"); err != nil {
				return err
			}
			ks = append(ks, db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: id, Comment: ak.Comment, CreatedAt: now})
		}
		if err := x.s.store.CreateAgent(x.ctx, db.Agent{ID: id, Name: n, Active: true, CreatedAt: now}, ks...); err != nil {
			if errors.Is(err, db.ErrExists) && len(ks) > 0 {
				if kerr := keyTaken(x, ks[0].Fingerprint, "no agent was created"); kerr != nil {
					return kerr // registered meanwhile
				}
			}
			return fmt.Errorf("create agent %q: %w", n, err)
		}
		fmt.Fprintln(x.out, id)
		return nil
	}
}

func setupAgentKeyAdd(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := oneKeyLine(x); err != nil {
			return err
		}
		agentID := x.params[0]
		if _, err := x.s.store.Agent(x.ctx, agentID); errors.Is(err, db.ErrNotFound) {
			return fmt.Errorf("no agent %q ('agents' lists the agent ids)", text.Truncate(agentID, 64))
		} else if err != nil {
			return fmt.Errorf("read agent %q: %w", text.Truncate(agentID, 64), err)
		}
		ak, err := keys.ParseAuthorizedKey(x.args[0])
		if err != nil {
			return usageErr("%v", err)
		}
		k := db.Key{Fingerprint: ak.Fingerprint, AuthorizedKey: ak.Line, Role: db.RoleAgent, AgentID: agentID, Comment: ak.Comment, CreatedAt: x.s.now()}
		if err := x.s.store.PutKey(x.ctx, k); err != nil {
			if errors.Is(err, db.ErrExists) {
				if kerr := keyTaken(x, ak.Fingerprint, "nothing was added"); kerr != nil {
					return kerr
				}
			}
			return fmt.Errorf("add key %s: %w", ak.Fingerprint, err)
		}
		fmt.Fprintln(x.out, ak.Fingerprint)
		return nil
	}
}

func setupAgentActive(active bool) func(fs *pflag.FlagSet) func(x *call) error {
	return func(fs *pflag.FlagSet) func(x *call) error {
		return func(x *call) error {
			if err := needArgs(x, 0, "no arguments after the agent id"); err != nil {
				return err
			}
			return x.s.coord.SetAgentActive(x.ctx, x.params[0], active)
		}
	}
}

// keyTaken refuses a key that is already registered, saying to whom and
// what was not done.
func keyTaken(x *call, fingerprint, notDone string) error {
	k, err := x.s.store.Key(x.ctx, fingerprint)
	if errors.Is(err, db.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up key %s: %w", fingerprint, err)
	}
	owner := "as an " + string(k.Role) + " key"
	if k.AgentID != "" {
		owner = "to agent " + k.AgentID
		if a, err := x.s.store.Agent(x.ctx, k.AgentID); err == nil {
			owner = fmt.Sprintf("to agent %s (%s)", a.Name, a.ID)
		}
	}
	return &exitError{code: 1, err: fmt.Errorf("key %s is already registered %s; %s (a key belongs to one agent or operator: generate another, or 'key remove %s' first)",
		fingerprint, owner, notDone, fingerprint)}
}

// quoteKeyHint is how to pass a key line as the one argument it is.
const quoteKeyHint = `quote it: "'$(cat KEY.pub)'" (the outer quotes for your shell, the inner ones for the coordinator)`

// oneKeyLine checks that a key line came as one argument; an unquoted one
// arrives split into words.
func oneKeyLine(x *call) error {
	if len(x.args) > 1 {
		return usageErr("the key line is one argument, got %d words; %s", len(x.args), quoteKeyHint)
	}
	return needArgs(x, 1, "one public key line")
}

package sshd

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
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
	ArchivedAt string `json:"archived_at,omitempty"`
}

func setupAgents(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "list archived agents too")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		listed, err := x.s.coord.Agents(x.ctx)
		if err != nil {
			return err
		}
		as := listed[:0:0]
		for _, a := range listed {
			if *all || a.ArchivedAt.IsZero() {
				as = append(as, a)
			}
		}
		list := make([]agentJSON, 0, len(as))
		for _, a := range as {
			list = append(list, agentJSON{a.ID, a.Name, a.Active, x.s.coord.Connected(a.ID), jsonTime(a.CreatedAt), jsonTime(a.LastSeenAt), jsonTime(a.ArchivedAt)})
		}
		if *asJSON {
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		if *all {
			fmt.Fprintln(tw, "ID\tNAME\tACTIVE\tCONNECTED\tLAST SEEN\tARCHIVED")
		} else {
			fmt.Fprintln(tw, "ID\tNAME\tACTIVE\tCONNECTED\tLAST SEEN")
		}
		for _, a := range as {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s", a.ID, text.Escape(a.Name), a.Active, x.s.coord.Connected(a.ID), textTime(a.LastSeenAt))
			if *all {
				fmt.Fprintf(tw, "\t%s", textTime(a.ArchivedAt))
			}
			fmt.Fprintln(tw)
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
		if len(*name) > coordinator.MaxAgentName {
			return usageErr("--name is %d bytes, limit %d", len(*name), coordinator.MaxAgentName)
		}
		if *keyLine != "" {
			if _, err := keys.ParseAuthorizedKey(*keyLine); err != nil {
				return usageErr("--key: %v", err)
			}
		}
		id, err := x.s.coord.CreateAgent(x.ctx, *name, *keyLine)
		if err != nil {
			return err
		}
		fmt.Fprintln(x.out, id)
		return nil
	}
}

func setupAgentKeyAdd(fs *pflag.FlagSet) func(x *call) error {
	return addKey(func(x *call) (string, error) { return x.s.coord.AddAgentKey(x.ctx, x.params[0], x.args[0]) })
}

func setupAgentActive(active bool) func(fs *pflag.FlagSet) func(x *call) error {
	return func(fs *pflag.FlagSet) func(x *call) error {
		return agentAction(func(x *call, id string) error { return x.s.coord.SetAgentActive(x.ctx, id, active) })
	}
}

func setupAgentArchive(fs *pflag.FlagSet) func(x *call) error {
	return agentAction(func(x *call, id string) error { return x.s.coord.ArchiveAgent(x.ctx, id) })
}

func setupAgentDelete(fs *pflag.FlagSet) func(x *call) error {
	return agentAction(func(x *call, id string) error { return x.s.coord.DeleteAgent(x.ctx, id) })
}

// agentAction is a command on the agent its path names ("agent ID
// archive") that takes no arguments of its own.
func agentAction(act func(x *call, id string) error) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments after the agent id"); err != nil {
			return err
		}
		return act(x, x.params[0])
	}
}

// addKey is a command that adds the key line, its one argument, and
// prints the new key's fingerprint; a key the coordinator's rules refuse
// exits with status 2, as a usage error does.
func addKey(add func(x *call) (string, error)) func(x *call) error {
	return func(x *call) error {
		if err := oneKeyLine(x); err != nil {
			return err
		}
		fp, err := add(x)
		if errors.Is(err, coordinator.ErrBadKey) {
			return &exitError{code: 2, err: err}
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(x.out, fp)
		return nil
	}
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

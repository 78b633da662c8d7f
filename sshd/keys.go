package sshd

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

type keyJSON struct {
	Fingerprint string `json:"fingerprint"`
	Role        string `json:"role"`
	Agent       string `json:"agent,omitempty"`
	Comment     string `json:"comment"`
	Key         string `json:"key"`
	CreatedAt   string `json:"created_at"`
}

func setupKeys(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		ks, err := x.s.coord.Keys(x.ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]keyJSON, 0, len(ks))
			for _, k := range ks {
				list = append(list, keyJSON{k.Fingerprint, string(k.Role), k.AgentID, k.Comment, k.AuthorizedKey, jsonTime(k.CreatedAt)})
			}
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "FINGERPRINT\tROLE\tAGENT\tCOMMENT")
		for _, k := range ks {
			agent := k.AgentID
			if agent == "" {
				agent = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Fingerprint, k.Role, agent, text.Escape(k.Comment))
		}
		return tw.Flush()
	}
}

func setupKeyAdd(fs *pflag.FlagSet) func(x *call) error {
	role := fs.String("role", "", "admin, operator or reader (required)")
	return addKey(func(x *call) (string, error) { return x.s.coord.AddKey(x.ctx, x.args[0], coordinator.Role(*role)) })
}

func setupKeyRemove(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 1, "one fingerprint"); err != nil {
			return err
		}
		fp := x.args[0]
		if fp == x.who.Fingerprint {
			return errors.New("refusing to remove the key this session uses")
		}
		if err := x.s.coord.RemoveKey(x.ctx, fp); errors.Is(err, coordinator.ErrNotFound) {
			return fmt.Errorf("no key %q ('keys' lists the fingerprints)", text.Truncate(fp, 80))
		} else if err != nil {
			return fmt.Errorf("remove key %q: %w", text.Truncate(fp, 80), err)
		}
		return nil
	}
}

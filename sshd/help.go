package sshd

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

func setupHelp(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		table := commandTable()
		if len(x.args) > 0 {
			c, _, _, ok := route(table, x.args)
			if !ok {
				return usageErr("unknown command %q", strings.Join(x.args, " "))
			}
			cfs := pflag.NewFlagSet(c.name(), pflag.ContinueOnError)
			c.setup(cfs)
			printUsage(x.out, c, cfs)
			return nil
		}
		fmt.Fprintln(x.out, "commands (run '<command> --help' for flags):")
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		for _, c := range table {
			mark := ""
			if !allowed(x.who.Role, c.role) {
				mark = " (not for your key)"
			}
			fmt.Fprintf(tw, "  %s %s\t%s [%s]%s\n", c.name(), c.args, c.summary, c.role, mark)
		}
		return tw.Flush()
	}
}

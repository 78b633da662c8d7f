package sshd

import "github.com/spf13/pflag"

func setupLog(fs *pflag.FlagSet) func(x *call) error {
	attempt := fs.Int("attempt", 0, "the log of this attempt (1, 2, …; default: the latest)")
	follow := fs.BoolP("follow", "f", false, "keep printing the log as it arrives until the attempt ends")
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		if *attempt < 0 {
			return usageErr("--attempt must be positive")
		}
		return x.s.coord.CopyLog(x.ctx, x.out, x.args[0], *attempt, *follow)
	}
}

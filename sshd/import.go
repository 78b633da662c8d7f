package sshd

import (
	"fmt"

	"github.com/spf13/pflag"
)

func setupImport(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("import takes no arguments; pipe the export stream to stdin")
		}
		paths, err := x.s.coord.Import(x.ctx, x.in)
		for _, p := range paths {
			fmt.Fprintln(x.out, p)
		}
		if err != nil {
			return err
		}
		x.s.log.Info("imported into the cache", "paths", len(paths), "fingerprint", x.who.Fingerprint)
		return nil
	}
}

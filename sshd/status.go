package sshd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

func setupStatus(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		st := x.s.coord.Status()
		if *asJSON {
			return writeJSON(x.out, map[string]any{"queued": st.Queued, "blocked": st.Blocked, "deferred": st.Deferred,
				"allocated": st.Allocated, "agents": nonNil(st.Connected)})
		}
		systems := make([]string, 0, len(st.Queued))
		for sys := range st.Queued {
			systems = append(systems, sys)
		}
		sort.Strings(systems)
		fmt.Fprintf(x.out, "queued: %d system(s), %d waiting for inputs, %d deferred, %d allocated\n", len(systems), st.Blocked, st.Deferred, st.Allocated)
		for _, sys := range systems {
			fmt.Fprintf(x.out, "  %s: %d\n", sys, st.Queued[sys])
		}
		fmt.Fprintf(x.out, "connected agents: %d\n", len(st.Connected))
		for _, a := range st.Connected {
			fmt.Fprintf(x.out, "  %s %s systems=%s running=%d/%d active=%v\n", a.ID, a.Name, strings.Join(a.Systems, ","), len(a.Running), a.MaxParallel, a.Active)
		}
		return nil
	}
}

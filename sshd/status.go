package sshd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/internal/text"
)

func setupStatus(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		st := x.s.coord.Status()
		if *asJSON {
			return writeJSON(x.out, map[string]any{"queued": st.Queued, "blocked": st.Blocked, "stuck": st.Stuck,
				"unmatched": st.Unmatched, "deferred": st.Deferred, "allocated": st.Allocated, "agents": nonNil(st.Connected),
				"disk": st.Space})
		}
		systems := make([]string, 0, len(st.Queued))
		ready := 0
		for sys, n := range st.Queued {
			systems = append(systems, sys)
			ready += n
		}
		sort.Strings(systems)
		fmt.Fprintf(x.out, "builds: %d ready to run, %d waiting for inputs, %d deferred, %d running\n", ready, st.Blocked, st.Deferred, st.Allocated)
		for _, sys := range systems {
			fmt.Fprintf(x.out, "  ready for %s: %d\n", sys, st.Queued[sys])
		}
		if st.Stuck > 0 {
			fmt.Fprintf(x.out, "stuck: %d build(s) wait for inputs that nothing will build; 'build show ID' names them, and submitting them or --ensure-all-related-derivation-outputs-have-successful-builds unblocks them\n", st.Stuck)
		}
		if st.Unmatched > 0 {
			fmt.Fprintf(x.out, "unmatched: %d ready build(s) that no connected agent can take (system, features or tags); 'build show ID' says why\n", st.Unmatched)
		}
		if sp := st.Space; sp.Paused {
			why := fmt.Sprintf("free space %d bytes under the reserve of %d (--min-free-space)", sp.Free, sp.Reserve)
			if sp.Full {
				why = "the state directory's disk is full"
			}
			fmt.Fprintf(x.out, "allocation paused: %s; uploads are refused until space returns\n", why)
		}
		fmt.Fprintf(x.out, "connected agents: %d\n", len(st.Connected))
		for _, a := range st.Connected {
			fmt.Fprintf(x.out, "  %s %s systems=%s running=%d/%d active=%v\n", a.ID, text.Escape(a.Name), text.Escape(strings.Join(a.Systems, ",")), len(a.Running), a.MaxParallel, a.Active)
		}
		return nil
	}
}

package sshd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

// The reproducibility check commands: check (submit), check show, check
// fetch, checks, checks summary.

func setupCheck(fs *pflag.FlagSet) func(x *call) error {
	agents := fs.Int("agents", coordinator.DefaultCheckAgents, "build each derivation on `N` distinct agents")
	againstCache := fs.Bool("against-cache", false, "also count the NAR already published in the cache for each output as one side")
	prio := fs.Int("priority", coordinator.DefaultCheckPriority, "priority of the check builds (ordinary builds default to 0)")
	wait := fs.Bool("wait", false, "wait for every verdict and print it; exit 0 only if all are reproducible")
	asJSON := fs.Bool("json", false, "print JSON: the checks (with --wait, their verdicts)")
	fromStdin := fs.Bool("stdin", false, "also read .drv paths from stdin, separated by white space")
	return func(x *call) error {
		if err := x.drvArgs(*fromStdin); err != nil {
			return err
		}
		ids, err := x.s.coord.SubmitChecks(x.ctx, coordinator.CheckRequest{Derivations: x.args, Agents: *agents,
			AgainstCache: *againstCache, Priority: *prio})
		for _, id := range ids {
			if !*asJSON {
				fmt.Fprintln(x.out, id)
			}
		}
		if err != nil {
			return err
		}
		if !*wait {
			if *asJSON {
				list := make([]checkListJSON, len(ids))
				for i, id := range ids {
					list[i] = checkListJSON{ID: id, Derivation: x.args[i], State: coordinator.CheckPending}
				}
				return writeJSON(x.out, list)
			}
			return nil
		}
		type result struct {
			i   int
			c   coordinator.Check
			err error
		}
		results := make(chan result, len(ids))
		for i, id := range ids {
			go func() {
				c, err := x.s.coord.WaitCheck(x.ctx, id, func(why string) {
					fmt.Fprintf(x.errOut, "check %s pending: %s\n", id, text.Escape(why))
				})
				if err != nil {
					err = fmt.Errorf("wait for check %s: %w", id, err)
				}
				results <- result{i, c, err}
			}()
		}
		bad := 0
		done := make([]checkListJSON, len(ids))
		for range ids {
			r := <-results
			if r.err != nil {
				return r.err
			}
			if r.c.State != coordinator.CheckReproducible {
				bad++
			}
			done[r.i] = checkJSON(r.c)
			if !*asJSON {
				fmt.Fprintln(x.out, verdictLine(r.c))
			}
		}
		if *asJSON {
			if err := writeJSON(x.out, done); err != nil {
				return err
			}
		}
		if bad > 0 {
			return fmt.Errorf("%d of %d check(s) not reproducible", bad, len(ids))
		}
		return nil
	}
}

// verdictLine is "check ID reproducible" or "check ID unreproducible (out dev)".
func verdictLine(c coordinator.Check) string {
	s := fmt.Sprintf("check %s %s", c.ID, c.State)
	if len(c.Unreproducible) > 0 {
		s += " (" + text.Escape(strings.Join(c.Unreproducible, " ")) + ")"
	}
	return s
}

// checkListJSON is a check as checks --json and check --wait --json print it.
type checkListJSON struct {
	ID             string                 `json:"id"`
	Derivation     string                 `json:"derivation"`
	System         string                 `json:"system,omitempty"`
	State          coordinator.CheckState `json:"state"`
	Unreproducible []string               `json:"unreproducible,omitempty"`
	Agents         int                    `json:"agents,omitempty"`
	AgainstCache   bool                   `json:"against_cache,omitempty"`
	CreatedAt      string                 `json:"created_at,omitempty"`
	EndedAt        string                 `json:"ended_at,omitempty"`
	Sides          []checkSideListJSON    `json:"sides,omitempty"`
}

type checkSideListJSON struct {
	Side  int    `json:"side"`
	Build string `json:"build,omitempty"`
	Agent string `json:"agent,omitempty"`
}

func checkJSON(c coordinator.Check) checkListJSON {
	j := checkListJSON{ID: c.ID, Derivation: c.Derivation, System: c.System, State: c.State, Unreproducible: c.Unreproducible,
		Agents: c.Agents, AgainstCache: c.AgainstCache, CreatedAt: jsonTime(c.CreatedAt), EndedAt: jsonTime(c.EndedAt)}
	for _, sd := range c.Sides {
		j.Sides = append(j.Sides, checkSideListJSON{Side: sd.Side, Build: sd.BuildID, Agent: sd.AgentID})
	}
	return j
}

func setupCheckShow(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	noDiff := fs.Bool("no-diff", false, "do not compare the NARs of unreproducible outputs")
	diffoscope := fs.Bool("diffoscope", false, "also run diffoscope (if installed on the coordinator) on the restored trees of each unreproducible output, with a time limit")
	return func(x *call) error {
		if len(x.args) != 1 {
			return usageErr("want one check id")
		}
		r, err := x.s.coord.ShowCheck(x.ctx, x.args[0], !*noDiff)
		if err != nil {
			return err
		}
		if *asJSON {
			if err := writeJSON(x.out, r); err != nil {
				return err
			}
		} else {
			writeCheckText(x, r)
		}
		if !*diffoscope {
			return nil
		}
		for _, o := range r.Outputs {
			if o.Verdict != string(coordinator.CheckUnreproducible) {
				continue
			}
			for _, sd := range o.Sides[1:] {
				if sd.NarHash == o.Sides[0].NarHash {
					continue
				}
				left, right := o.Sides[0].Side, sd.Side
				fmt.Fprintf(x.out, "diffoscope: output %s, side %d vs side %d\n", text.Escape(o.Name), left, right)
				err := x.s.coord.Diffoscope(x.ctx, r.ID, o.Name, left, right, x.out)
				if errors.Is(err, coordinator.ErrNoDiffoscope) {
					return err
				}
				if err != nil {
					fmt.Fprintf(x.errOut, "diffoscope: %s\n", text.Escape(err.Error()))
				}
			}
		}
		return nil
	}
}

func writeCheckText(x *call, r coordinator.CheckReport) {
	var b strings.Builder
	head := fmt.Sprintf("check %s: %s", r.ID, r.State)
	var unrep []string
	for _, o := range r.Outputs {
		if o.Verdict == string(coordinator.CheckUnreproducible) {
			unrep = append(unrep, o.Name)
		}
	}
	if len(unrep) > 0 {
		head += " (" + text.Escape(strings.Join(unrep, " ")) + ")"
	}
	fmt.Fprintln(&b, head)
	fmt.Fprintf(&b, "derivation:    %s\n", text.Escape(r.Derivation))
	fmt.Fprintf(&b, "system:        %s\n", text.Escape(r.System))
	fmt.Fprintf(&b, "agents:        %d (against cache: %v)\n", r.Agents, r.AgainstCache)
	fmt.Fprintf(&b, "priority:      %d\n", r.Priority)
	fmt.Fprintf(&b, "created:       %s\n", textTime(r.CreatedAt))
	if r.EndedAt != nil {
		fmt.Fprintf(&b, "ended:         %s\n", textTime(*r.EndedAt))
	}
	if r.Waiting != "" {
		fmt.Fprintf(&b, "waiting:       %s\n", text.Escape(r.Waiting))
	}
	fmt.Fprintln(&b, "sides:")
	for _, sd := range r.Sides {
		if sd.Side == 0 {
			who := "unknown agent"
			if sd.Agent != "" {
				who = "agent " + text.Escape(sd.AgentName) + " (" + text.Escape(sd.Agent) + ")"
			}
			fmt.Fprintf(&b, "  0  the cache (published by %s)\n", who)
			continue
		}
		fmt.Fprintf(&b, "  %d  build %s  %s", sd.Side, sd.Build, orDash(string(sd.BuildState)))
		if sd.Agent != "" {
			fmt.Fprintf(&b, "  agent %s (%s)", text.Escape(sd.AgentName), text.Escape(sd.Agent))
		}
		if hw := sd.Hardware; hw != nil {
			fmt.Fprintf(&b, "  %d cores, %s memory, %s %s", hw.Cores, humanBytes(hw.MemoryBytes), text.Escape(orDash(hw.Backend)), text.Escape(orDash(hw.BackendVersion)))
		}
		b.WriteByte('\n')
		if sd.Failure != "" && sd.BuildState != coordinator.StateSucceeded {
			fmt.Fprintf(&b, "     %s\n", text.Escape(text.Truncate(sd.Failure, 300)))
		}
	}
	for _, o := range r.Outputs {
		fmt.Fprintf(&b, "output %s %s: %s\n", text.Escape(o.Name), text.Escape(o.Path), o.Verdict)
		for _, s := range o.Sides {
			fmt.Fprintf(&b, "  side %d  %s  %d bytes\n", s.Side, text.Escape(s.NarHash), s.NarSize)
		}
		for _, d := range o.Differences {
			fmt.Fprintf(&b, "  side %d vs side %d:\n", d.Left, d.Right)
			if d.Error != "" {
				fmt.Fprintf(&b, "    not compared: %s\n", text.Escape(d.Error))
				continue
			}
			d.Report.WriteText(&b, "    ")
		}
	}
	fmt.Fprint(x.out, b.String())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func setupCheckFetch(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if len(x.args) != 3 {
			return usageErr("want CHECK-ID OUTPUT SIDE (a side number, an agent id or name, or cache)")
		}
		return x.s.coord.FetchCheckNar(x.ctx, x.args[0], x.args[1], x.args[2], x.out)
	}
}

func setupChecks(fs *pflag.FlagSet) func(x *call) error {
	state := fs.String("state", "", "only checks in `STATE`: pending, reproducible, unreproducible or failed")
	drv := fs.String("derivation", "", "only checks of this .drv path")
	limit := fs.Int("limit", 100, "at most this many (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("no arguments (did you mean 'check show ID'?)")
		}
		if *limit < 0 {
			return usageErr("--limit must not be negative")
		}
		cs, err := x.s.coord.Checks(x.ctx, coordinator.CheckFilter{State: coordinator.CheckState(*state), Derivation: *drv, Limit: *limit})
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]checkListJSON, len(cs))
			for i, c := range cs {
				list[i] = checkJSON(c)
			}
			return writeJSON(x.out, list)
		}
		var b strings.Builder
		for _, c := range cs {
			fmt.Fprintf(&b, "%s  %-14s  %s  %s", c.ID, c.State, textTime(c.CreatedAt), text.Escape(c.Derivation))
			if len(c.Unreproducible) > 0 {
				fmt.Fprintf(&b, "  (%s)", text.Escape(strings.Join(c.Unreproducible, " ")))
			}
			b.WriteByte('\n')
		}
		fmt.Fprint(x.out, b.String())
		return nil
	}
}

// summaryJSON is checks summary --json: per system, how many derivations
// have their latest check in each state, and the unreproducible ones.
type summaryJSON struct {
	Systems map[string]*systemSummaryJSON `json:"systems"`
}

type systemSummaryJSON struct {
	Counts         map[coordinator.CheckState]int `json:"counts"`
	Unreproducible []unreproducibleJSON           `json:"unreproducible"`
}

type unreproducibleJSON struct {
	Derivation string   `json:"derivation"`
	Check      string   `json:"check"`
	Outputs    []string `json:"outputs"`
	EndedAt    string   `json:"ended_at,omitempty"`
}

func setupChecksSummary(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON (the shape QA pages read)")
	return func(x *call) error {
		if len(x.args) != 0 {
			return usageErr("no arguments")
		}
		counts, unrep, err := x.s.coord.ChecksSummary(x.ctx)
		if err != nil {
			return err
		}
		sum := summaryJSON{Systems: map[string]*systemSummaryJSON{}}
		sys := func(s string) *systemSummaryJSON {
			if sum.Systems[s] == nil {
				sum.Systems[s] = &systemSummaryJSON{Counts: map[coordinator.CheckState]int{}, Unreproducible: []unreproducibleJSON{}}
			}
			return sum.Systems[s]
		}
		for _, c := range counts {
			sys(c.System).Counts[c.State] = c.Count
		}
		for _, c := range unrep {
			s := sys(c.System)
			s.Unreproducible = append(s.Unreproducible, unreproducibleJSON{Derivation: c.Derivation, Check: c.ID,
				Outputs: nonNil(c.Unreproducible), EndedAt: jsonTime(c.EndedAt)})
		}
		if *asJSON {
			return writeJSON(x.out, sum)
		}
		var b strings.Builder
		for _, c := range counts {
			fmt.Fprintf(&b, "%s  %-14s  %d\n", text.Escape(c.System), c.State, c.Count)
		}
		for _, c := range unrep {
			fmt.Fprintf(&b, "unreproducible  %s  %s  check %s\n", text.Escape(c.System), text.Escape(c.Derivation), c.ID)
		}
		fmt.Fprint(x.out, b.String())
		return nil
	}
}

package sshd

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

type outputJSON struct {
	Name        string   `json:"name"`
	Path        string   `json:"path"`
	NarHash     string   `json:"nar_hash"`
	NarSize     int64    `json:"nar_size"`
	FileHash    string   `json:"file_hash"`
	FileSize    int64    `json:"file_size"`
	Compression string   `json:"compression"`
	References  []string `json:"references"`
}

type attemptJSON struct {
	Number      int    `json:"number"`
	Agent       string `json:"agent"`
	AllocatedAt string `json:"allocated_at"`
	StartedAt   string `json:"started_at"`
	EndedAt     string `json:"ended_at"`
	Outcome     string `json:"outcome"`
	Kind        string `json:"kind,omitempty"` // why a failed or requeued attempt ended
	Reason      string `json:"reason"`
	ExitCode    int    `json:"exit_code"`
	// Hardware is what the agent reported when the attempt started.
	Hardware *coordinator.Hardware `json:"hardware,omitempty"`
	// Phases are the phases the attempt went through, in order.
	Phases []phaseJSON `json:"phases"`
}

// phaseJSON is one phase of an attempt. A phase ends when the next one
// begins or the attempt ends; the one an attempt is still in has no
// ended_at, and its duration is the time in it so far.
type phaseJSON struct {
	Name       string `json:"name"`
	StartedAt  string `json:"started_at"`
	EndedAt    string `json:"ended_at"`
	DurationMS int64  `json:"duration_ms"`
	Current    bool   `json:"current,omitempty"`
}

// phasesOf lists an attempt's phases; now ends the current one.
func phasesOf(a coordinator.Attempt, now time.Time) []phaseJSON {
	out := []phaseJSON{}
	for _, sp := range a.Spans() {
		p := phaseJSON{Name: string(sp.Phase), StartedAt: jsonTime(sp.Started), EndedAt: jsonTime(sp.Ended)}
		end := sp.Ended
		if end.IsZero() {
			end, p.Current = now, true
		}
		p.DurationMS = max(0, end.Sub(sp.Started).Milliseconds())
		out = append(out, p)
	}
	return out
}

type buildJSON struct {
	ID               string        `json:"id"`
	Derivation       string        `json:"derivation"`
	System           string        `json:"system"`
	Priority         int           `json:"priority"`
	State            string        `json:"state"`
	Agent            string        `json:"agent"`
	CreatedAt        string        `json:"created_at"`
	StartedAt        string        `json:"started_at"`
	EndedAt          string        `json:"ended_at"`
	Tags             []string      `json:"tags"`
	RequiredFeatures []string      `json:"required_features"`
	Attempts         []attemptJSON `json:"attempts"`
	FailureReason    string        `json:"failure_reason"`
	FailedInput      string        `json:"failed_input,omitempty"` // failed-dependency: the input derivation that failed
	DeferUntil       string        `json:"defer_until,omitempty"`
	TimeoutSeconds   int           `json:"timeout_seconds,omitempty"`
	MaxSilentSeconds int           `json:"max_silent_time_seconds,omitempty"`
	Queue            *queueJSON    `json:"queue,omitempty"` // only in build show, while queued or running
	Outputs          []outputJSON  `json:"outputs"`
}

// queueJSON is a live build's place in the scheduler and, while it is
// queued, what it waits for.
type queueJSON struct {
	State           string `json:"state"` // waiting, deferred, ready, allocated
	DerivedPriority int    `json:"derived_priority"`
	Dependents      int    `json:"dependents"`
	// BlockingInputs are the input derivations it waits for.
	BlockingInputs []coordinator.BlockingInput `json:"blocking_inputs,omitempty"`
	// UnbuildableInputs are the derivations in its input closure that
	// nothing will build: it waits for them forever unless someone acts.
	UnbuildableInputs []string `json:"unbuildable_inputs,omitempty"`
	UnbuildableTotal  int      `json:"unbuildable_total,omitempty"`
	// NoAgent says why no agent takes it now, as a kind with details.
	NoAgent *coordinator.NoAgent `json:"no_agent,omitempty"`
}

// queueOf reads a live build's place in the queue; nil once it ended.
func queueOf(x *call, id string) *queueJSON {
	st, p, n, ok := x.s.coord.QueueOrder(id)
	if !ok {
		return nil
	}
	q := &queueJSON{State: st, DerivedPriority: p, Dependents: n}
	if bl, ok := x.s.coord.Blockage(id); ok {
		q.BlockingInputs, q.UnbuildableInputs, q.UnbuildableTotal, q.NoAgent = bl.Inputs, bl.Unbuildable, bl.UnbuildableTotal, bl.NoAgent
	}
	return q
}

// explainText tells an operator why a queued build will not run by
// itself: inputs nothing will build, or no connected agent that can take
// it; empty for a build that only waits its turn (or has ended).
func explainText(id string, q *queueJSON) string {
	if q == nil {
		return ""
	}
	var b strings.Builder
	if q.UnbuildableTotal > 0 {
		more := ""
		if n := q.UnbuildableTotal - len(q.UnbuildableInputs); n > 0 {
			more = fmt.Sprintf(" and %d more", n)
		}
		fmt.Fprintf(&b, "build %s waits for inputs that nothing will build (no build here, outputs not in the cache): %s%s; %s\n",
			id, text.Escape(strings.Join(q.UnbuildableInputs, " ")), more, coordinator.FixUnbuildable)
	}
	if na := q.NoAgent; na != nil && !na.Kind.Passing() {
		fmt.Fprintf(&b, "build %s: %s\n", id, text.Escape(na.Message))
	}
	return b.String()
}

// toJSON converts a build; now is the end of the phase a running attempt
// is in.
func toJSON(b coordinator.Build, now time.Time) buildJSON {
	j := buildJSON{
		ID: b.ID, Derivation: b.Derivation, System: b.System, Priority: b.Priority,
		State: string(b.State), Agent: b.AgentID, CreatedAt: jsonTime(b.CreatedAt),
		StartedAt: jsonTime(b.StartedAt), EndedAt: jsonTime(b.EndedAt),
		Tags: []string{}, RequiredFeatures: nonNil(b.RequiredFeatures), Attempts: []attemptJSON{},
		FailureReason: b.FailureReason, Outputs: []outputJSON{},
		DeferUntil: jsonTime(b.DeferUntil), TimeoutSeconds: b.TimeoutSeconds, MaxSilentSeconds: b.MaxSilentSeconds,
	}
	if b.State == coordinator.StateFailedDependency {
		j.FailedInput = b.FailedInput
	}
	for _, t := range b.Tags {
		j.Tags = append(j.Tags, t.Key+"="+t.Value)
	}
	for _, a := range b.Attempts {
		aj := attemptJSON{a.Number, a.AgentID, jsonTime(a.AllocatedAt), jsonTime(a.StartedAt), jsonTime(a.EndedAt), string(a.Outcome), string(a.Kind), a.Reason, a.ExitCode, nil, phasesOf(a, now)}
		if !a.Hardware.IsZero() {
			hw := a.Hardware
			aj.Hardware = &hw
		}
		j.Attempts = append(j.Attempts, aj)
	}
	for _, r := range b.Results {
		j.Outputs = append(j.Outputs, outputJSON{r.Name, r.Path, r.NarHash, r.NarSize, r.FileHash, r.FileSize, r.Compression, nonNil(r.References)})
	}
	return j
}

// buildFilterFlags registers the filters shared by builds and builds cancel.
func buildFilterFlags(fs *pflag.FlagSet, defaultLimit int) func() (coordinator.BuildFilter, error) {
	state := fs.String("state", "", "only builds in this state (scheduled, allocated, started, succeeded, failed, canceled, failed-dependency)")
	agent := fs.String("agent", "", "only builds whose latest attempt ran on this agent id")
	limit := fs.Int("limit", defaultLimit, "at most this many builds, newest first (0: all)")
	return func() (coordinator.BuildFilter, error) {
		st := coordinator.BuildState(*state)
		switch st {
		case "", coordinator.StateScheduled, coordinator.StateAllocated, coordinator.StateStarted, coordinator.StateSucceeded, coordinator.StateFailed, coordinator.StateCanceled, coordinator.StateFailedDependency:
		default:
			return coordinator.BuildFilter{}, usageErr("--state %q is not a build state", *state)
		}
		if *limit < 0 {
			return coordinator.BuildFilter{}, usageErr("--limit must not be negative")
		}
		return coordinator.BuildFilter{State: st, AgentID: *agent, Limit: *limit}, nil
	}
}

func setupBuilds(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	filter := buildFilterFlags(fs, 100)
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		f, err := filter()
		if err != nil {
			return err
		}
		bs, err := x.s.coord.Builds(x.ctx, f)
		if err != nil {
			return err
		}
		if *asJSON {
			list := make([]buildJSON, 0, len(bs))
			for _, b := range bs {
				// The list leaves out attempts and outputs; JSON readers
				// get them, as build show has them.
				full, err := x.s.coord.Build(x.ctx, b.ID)
				if err == nil {
					b = full
				} else if !errors.Is(err, coordinator.ErrNotFound) {
					return err
				}
				list = append(list, toJSON(b, x.s.cfg.Clock.Now()))
			}
			return writeJSON(x.out, list)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSYSTEM\tPRIO\tAGENT\tCREATED\tDERIVATION")
		for _, b := range bs {
			agent := b.AgentID
			if agent == "" {
				agent = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.ID, b.State, text.Escape(b.System), b.Priority, agent, textTime(b.CreatedAt), text.Escape(b.Derivation))
		}
		return tw.Flush()
	}
}

func setupBuildsCancel(fs *pflag.FlagSet) func(x *call) error {
	filter := buildFilterFlags(fs, 0)
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		f, err := filter()
		if err != nil {
			return err
		}
		if f.State.Terminal() {
			return usageErr("--state %s: those builds have already ended", f.State)
		}
		bs, err := x.s.coord.Builds(x.ctx, f)
		if err != nil {
			return err
		}
		n := 0
		for _, b := range bs {
			if b.State.Terminal() {
				continue
			}
			if err := x.s.coord.Cancel(x.ctx, b.ID); err != nil {
				if errors.Is(err, coordinator.ErrConflict) {
					continue // ended meanwhile
				}
				return err
			}
			fmt.Fprintln(x.out, b.ID)
			n++
		}
		fmt.Fprintf(x.errOut, "canceled %d build(s)\n", n)
		return nil
	}
}

func setupBuildPriority(fs *pflag.FlagSet) func(x *call) error {
	return func(x *call) error {
		if err := needArgs(x, 2, "a build id and a priority"); err != nil {
			return err
		}
		p, err := strconv.Atoi(x.args[1])
		if err != nil || p < math.MinInt32 || p > math.MaxInt32 {
			return usageErr("priority %q is not a 32-bit integer", text.Truncate(x.args[1], 40))
		}
		return x.s.coord.SetPriority(x.ctx, x.args[0], p)
	}
}

func setupBuildShow(fs *pflag.FlagSet) func(x *call) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		b, err := x.s.coord.Build(x.ctx, x.args[0])
		if err != nil {
			return err
		}
		j := toJSON(b, x.s.cfg.Clock.Now())
		j.Queue = queueOf(x, b.ID)
		if *asJSON {
			return writeJSON(x.out, j)
		}
		tw := tabwriter.NewWriter(x.out, 2, 8, 2, ' ', 0)
		row := func(k, v string) {
			if v == "" {
				v = "-"
			}
			fmt.Fprintf(tw, "%s:\t%s\n", k, text.Escape(v))
		}
		row("id", j.ID)
		row("derivation", j.Derivation)
		row("system", j.System)
		row("priority", fmt.Sprint(j.Priority))
		row("state", j.State)
		row("agent", j.Agent)
		row("created_at", j.CreatedAt)
		row("started_at", j.StartedAt)
		row("ended_at", j.EndedAt)
		row("tags", strings.Join(j.Tags, " "))
		row("required_features", strings.Join(j.RequiredFeatures, " "))
		row("attempts", fmt.Sprint(len(j.Attempts)))
		row("failure_reason", j.FailureReason)
		if j.FailedInput != "" {
			row("failed_input", j.FailedInput)
		}
		if j.DeferUntil != "" {
			row("defer_until", j.DeferUntil)
		}
		if q := j.Queue; q != nil {
			row("queue", fmt.Sprintf("%s derived_priority=%d dependents=%d", q.State, q.DerivedPriority, q.Dependents))
			for _, in := range q.BlockingInputs {
				what := "build " + strings.Join(in.Builds, ", build ")
				if len(in.Builds) == 0 {
					what = "no build here, outputs not in the cache"
				}
				if in.Unbuildable {
					what += "; nothing will build it"
				}
				row("waits for", in.Derivation+" ("+what+")")
			}
			if q.UnbuildableTotal > 0 {
				more := ""
				if n := q.UnbuildableTotal - len(q.UnbuildableInputs); n > 0 {
					more = fmt.Sprintf(" and %d more", n)
				}
				row("unbuildable", strings.Join(q.UnbuildableInputs, " ")+more)
				row("to unblock", coordinator.FixUnbuildable)
			}
			if na := q.NoAgent; na != nil {
				row("no agent", string(na.Kind)+": "+na.Message)
			}
		}
		for _, a := range j.Attempts {
			row(fmt.Sprintf("attempt %d", a.Number), fmt.Sprintf("agent %s %s %s", a.Agent, a.Outcome, a.Reason))
			if hw := a.Hardware; hw != nil {
				row(fmt.Sprintf("attempt %d hardware", a.Number), fmt.Sprintf("cores=%d memory=%s free_disk=%s load1=%.2f backend=%s %s",
					hw.Cores, humanBytes(hw.MemoryBytes), humanBytes(hw.FreeDiskBytes), hw.Load1, hw.Backend, hw.BackendVersion))
			}
			for _, p := range a.Phases {
				took := (time.Duration(p.DurationMS) * time.Millisecond).String()
				if p.Current {
					took += " so far"
				}
				row(fmt.Sprintf("attempt %d %s", a.Number, p.Name), p.StartedAt+" "+took)
			}
		}
		for _, o := range j.Outputs {
			row("output "+o.Name, fmt.Sprintf("%s %s nar_size=%d file_size=%d %s", o.Path, o.NarHash, o.NarSize, o.FileSize, o.Compression))
		}
		return tw.Flush()
	}
}

func setupBuildCancel(fs *pflag.FlagSet) func(x *call) error {
	withDeps := fs.Bool("with-dependents", false, "also cancel every build that waits on this one, directly or not (without it, queued builds that would wait for it forever become failed-dependency)")
	return func(x *call) error {
		if err := needArgs(x, 1, "one build id"); err != nil {
			return err
		}
		if !*withDeps {
			return x.s.coord.Cancel(x.ctx, x.args[0])
		}
		deps, err := x.s.coord.CancelWithDependents(x.ctx, x.args[0])
		for _, d := range deps {
			fmt.Fprintln(x.out, d)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(x.errOut, "canceled %s and %d dependent build(s)\n", x.args[0], len(deps))
		return nil
	}
}

func setupBuildsPrune(fs *pflag.FlagSet) func(x *call) error {
	before := fs.String("finished-before", "", "remove builds that ended before this date (2026-01-31 or RFC 3339); required")
	state := fs.String("state", "", "only builds in this final state (succeeded, failed, canceled, failed-dependency)")
	dry := fs.Bool("dry-run", false, "print what would be removed, remove nothing")
	force := fs.Bool("force", false, "remove builds whose outputs are pinned or kept by a rule too")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		if *before == "" {
			return usageErr("--finished-before is required")
		}
		t, err := time.Parse(time.RFC3339, *before)
		if err != nil {
			if t, err = time.Parse(time.DateOnly, *before); err != nil {
				return usageErr("--finished-before %q: want a date (2026-01-31) or an RFC 3339 time", *before)
			}
		}
		rep, err := x.s.coord.PruneBuilds(x.ctx, coordinator.PruneOptions{FinishedBefore: t,
			State: coordinator.BuildState(*state), DryRun: *dry, Force: *force})
		if err != nil {
			return err
		}
		rep.Pruned = nonNil(rep.Pruned)
		if *asJSON {
			return writeJSON(x.out, rep)
		}
		for _, id := range rep.Pruned {
			fmt.Fprintln(x.out, id)
		}
		for _, k := range rep.Kept {
			fmt.Fprintf(x.errOut, "kept %s: %s\n", k.ID, text.Escape(k.Reason))
		}
		verb := "removed"
		if *dry {
			verb = "would remove"
		}
		fmt.Fprintf(x.errOut, "%s %d build(s) and %d log file(s); %d kept (--force removes them too)\n", verb, len(rep.Pruned), rep.Logs, len(rep.Kept))
		return nil
	}
}

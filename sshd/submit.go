package sshd

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

func setupBuild(fs *pflag.FlagSet) func(x *call) error {
	prio := fs.Int("priority", 0, "higher runs first")
	tags := fs.StringArray("tag", nil, "K=V label (repeatable)")
	wait := fs.Bool("wait", false, "wait for every build to end and print its result; exit 0 only if all succeeded")
	deferUntil := fs.String("defer-until", "", "hold the builds back until `TIME` (RFC 3339, or +DURATION from now, e.g. +10m)")
	ignoreExisting := fs.Bool("ignore-if-build-for-outputs-exists", false, "reuse a queued, running or succeeded build of the same derivation instead of adding one")
	ensureInputs := fs.Bool("ensure-all-related-derivation-outputs-have-successful-builds", false,
		"also submit every derivation in the input closure whose outputs have no successful build and are not in the cache")
	timeout := fs.Duration("timeout", 0, "stop a build running longer than this (default: the coordinator's)")
	maxSilent := fs.Duration("max-silent-time", 0, "stop a build silent for longer than this (default: the coordinator's)")
	asJSON := fs.Bool("json", false, "print JSON: the builds (with what each waits for), and with --wait their results")
	fromStdin := fs.Bool("stdin", false, "also read .drv paths from stdin, separated by white space (for more paths than a command line holds)")
	return func(x *call) error {
		if err := x.drvArgs(*fromStdin); err != nil {
			return err
		}
		var until time.Time
		if v := *deferUntil; v != "" {
			if d, ok := strings.CutPrefix(v, "+"); ok {
				dur, err := time.ParseDuration(d)
				if err != nil || dur < 0 {
					return usageErr("--defer-until %q: not a +DURATION", text.Truncate(v, 40))
				}
				until = x.s.now().Add(dur)
			} else {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return usageErr("--defer-until %q: want RFC 3339 (2026-01-02T15:04:05Z) or +DURATION", text.Truncate(v, 40))
				}
				until = t
			}
		}
		if *timeout < 0 || *maxSilent < 0 {
			return usageErr("--timeout and --max-silent-time must not be negative")
		}
		var ts []coordinator.Tag
		for _, t := range *tags {
			k, v, ok := strings.Cut(t, "=")
			if !ok || k == "" {
				return usageErr("--tag %q is not K=V", text.Truncate(t, 80))
			}
			ts = append(ts, coordinator.Tag{Key: k, Value: v})
		}
		ids, err := x.s.coord.Submit(x.ctx, coordinator.Submission{Derivations: x.args, Priority: *prio, Tags: ts,
			DeferUntil: until, IgnoreIfExists: *ignoreExisting, EnsureInputs: *ensureInputs,
			Timeout: *timeout, MaxSilentTime: *maxSilent})
		if err != nil {
			return err
		}
		// Why a build will not run by itself, said at once rather than
		// after a wait that never ends.
		queues := make([]*queueJSON, len(ids))
		for i, id := range ids {
			queues[i] = queueOf(x, id)
		}
		if *asJSON && !*wait {
			list := make([]submittedJSON, len(ids))
			for i, id := range ids {
				list[i] = submittedJSON{ID: id, Derivation: x.args[i], Queue: queues[i]}
			}
			return writeJSON(x.out, list)
		}
		if !*asJSON {
			for _, id := range ids {
				fmt.Fprintln(x.out, id)
			}
		}
		said := make(map[string]string, len(ids)) // what explain last said per build
		for i, id := range ids {
			said[id] = explainText(id, queues[i])
			fmt.Fprint(x.errOut, said[id])
		}
		if !*wait {
			return nil
		}
		type result struct {
			i   int
			b   coordinator.Build
			err error
		}
		results := make(chan result, len(ids))
		for i, id := range ids {
			go func() {
				b, err := x.s.coord.Wait(x.ctx, id)
				if err != nil {
					err = fmt.Errorf("wait for build %s: %w", id, err)
				}
				results <- result{i, b, err}
			}()
		}
		failed := 0
		done := make([]buildJSON, len(ids)) // --json: in the order given
		for pending := len(ids); pending > 0; {
			var r result
			select {
			case r = <-results:
				pending--
				delete(said, ids[r.i])
			case <-x.s.cfg.Clock.After(explainEvery):
				// Agents come and go: say it again when the reason a
				// waited-for build will not run changes.
				for id, last := range said {
					if now := explainText(id, queueOf(x, id)); now != last {
						said[id] = now
						fmt.Fprint(x.errOut, now)
					}
				}
				continue
			}
			if r.err != nil {
				return r.err
			}
			b := r.b
			if b.State != coordinator.StateSucceeded {
				failed++
			}
			if *asJSON {
				done[r.i] = toJSON(b, x.s.cfg.Clock.Now())
				continue
			}
			switch b.State {
			case coordinator.StateSucceeded:
				fmt.Fprintf(x.out, "build %s succeeded (on agent %s)\n", b.ID, b.AgentID)
			case coordinator.StateFailed:
				fmt.Fprintf(x.out, "build %s failed (on agent %s)\n", b.ID, b.AgentID)
				fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, text.Escape(b.FailureReason))
			default:
				fmt.Fprintf(x.out, "build %s %s\n", b.ID, b.State)
				if b.FailureReason != "" {
					fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, text.Escape(b.FailureReason))
				}
			}
		}
		if *asJSON {
			if err := writeJSON(x.out, done); err != nil {
				return err
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d build(s) did not succeed", failed, len(ids))
		}
		return nil
	}
}

// explainEvery is how often build --wait looks again at why the builds
// it waits for do not run.
const explainEvery = 30 * time.Second

// submittedJSON is one submitted build as build --json prints it.
type submittedJSON struct {
	ID         string     `json:"id"`
	Derivation string     `json:"derivation"`
	Queue      *queueJSON `json:"queue,omitempty"`
}

// Bounds of build --stdin: far above any real submission, far below what
// would hurt the coordinator.
const (
	maxStdinPathBytes = 64 << 20
	maxStdinPaths     = 1_000_000
)

// drvArgs takes the .drv paths of build and check: the arguments, and
// with --stdin (fromStdin) those read from standard input; at least one.
func (x *call) drvArgs(fromStdin bool) error {
	if fromStdin {
		more, err := readPaths(x.in)
		if err != nil {
			return usageErr("--stdin: %v", err)
		}
		x.args = append(x.args, more...)
	}
	if len(x.args) == 0 {
		return usageErr("want at least one .drv path")
	}
	return nil
}

// readPaths reads white-space separated paths from r, bounded in bytes
// and count.
func readPaths(r io.Reader) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxStdinPathBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(data) > maxStdinPathBytes {
		return nil, fmt.Errorf("stdin holds more than %d bytes of paths", maxStdinPathBytes)
	}
	paths := strings.Fields(string(data))
	if len(paths) > maxStdinPaths {
		return nil, fmt.Errorf("stdin holds %d paths, limit %d", len(paths), maxStdinPaths)
	}
	return paths, nil
}

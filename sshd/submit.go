package sshd

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
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
	return func(x *call) error {
		if len(x.args) == 0 {
			return usageErr("want at least one .drv path")
		}
		var until time.Time
		if v := *deferUntil; v != "" {
			if d, ok := strings.CutPrefix(v, "+"); ok {
				dur, err := time.ParseDuration(d)
				if err != nil || dur < 0 {
					return usageErr("--defer-until %q: not a +DURATION", truncate(v, 40))
				}
				until = x.s.now().Add(dur)
			} else {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return usageErr("--defer-until %q: want RFC 3339 (2026-01-02T15:04:05Z) or +DURATION", truncate(v, 40))
				}
				until = t
			}
		}
		if *timeout < 0 || *maxSilent < 0 {
			return usageErr("--timeout and --max-silent-time must not be negative")
		}
		var ts []db.Tag
		for _, t := range *tags {
			k, v, ok := strings.Cut(t, "=")
			if !ok || k == "" {
				return usageErr("--tag %q is not K=V", truncate(t, 80))
			}
			ts = append(ts, db.Tag{Key: k, Value: v})
		}
		ids, err := x.s.coord.Submit(x.ctx, coordinator.Submission{Derivations: x.args, Priority: *prio, Tags: ts,
			DeferUntil: until, IgnoreIfExists: *ignoreExisting, EnsureInputs: *ensureInputs,
			Timeout: *timeout, MaxSilentTime: *maxSilent})
		if err != nil {
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(x.out, id)
		}
		if !*wait {
			return nil
		}
		type result struct {
			b   db.Build
			err error
		}
		results := make(chan result, len(ids))
		for _, id := range ids {
			go func() {
				b, err := x.s.coord.Wait(x.ctx, id)
				if err != nil {
					err = fmt.Errorf("wait for build %s: %w", id, err)
				}
				results <- result{b, err}
			}()
		}
		failed := 0
		for range ids {
			r := <-results
			if r.err != nil {
				return r.err
			}
			b := r.b
			switch b.State {
			case db.StateSucceeded:
				fmt.Fprintf(x.out, "build %s succeeded (on agent %s)\n", b.ID, b.AgentID)
				continue
			case db.StateFailed:
				fmt.Fprintf(x.out, "build %s failed (on agent %s)\n", b.ID, b.AgentID)
				fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, b.FailureReason)
			default:
				fmt.Fprintf(x.out, "build %s %s\n", b.ID, b.State)
				if b.FailureReason != "" {
					fmt.Fprintf(x.errOut, "build %s: %s\n", b.ID, b.FailureReason)
				}
			}
			failed++
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d build(s) did not succeed", failed, len(ids))
		}
		return nil
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/hooks"
)

// hookFlags are the coordinator's hook options.
type hookFlags struct {
	exec          *[]string
	timeout       *time.Duration
	parallel      *int
	tries         *int
	backoff       *time.Duration
	retryFailed   *int
	submitMissing *bool
}

func addHookFlags(fs *pflag.FlagSet) hookFlags {
	return hookFlags{
		exec: fs.StringArray("hook", nil, "run `EVENT=PROGRAM` for every event of that type (repeatable): the event as JSON on stdin, "+
			"GBC_EVENT, GBC_EVENT_ID, GBC_BUILD_ID in the environment, output to this log"),
		timeout:       fs.Duration("hook-timeout", hooks.DefaultTimeout, "time limit of one hook run"),
		parallel:      fs.Int("hook-parallel", hooks.DefaultParallel, "concurrent runs per hook"),
		tries:         fs.Int("hook-tries", hooks.DefaultMaxTries, "tries per event before it is reported as hook-failed"),
		backoff:       fs.Duration("hook-backoff", hooks.DefaultBackoff, "wait before the second try of a failed hook (doubles after each)"),
		retryFailed:   fs.Int("retry-failed", 0, "resubmit a failed build up to `N` times, tagged retry=<k> retry-of=<build> (0: off)"),
		submitMissing: fs.Bool("submit-missing-inputs", true, "on a setup failure naming missing input derivations, submit builds for those without a live or succeeded one (needed-by=<build>) and let the build wait for them"),
	}
}

// hooks builds the hook list; submit, submitMissing and builds serve the
// built-ins.
func (f hookFlags) hooks(log *slog.Logger, submit hooks.SubmitFunc, submitMissing hooks.SubmitMissingFunc, builds hooks.BuildReader) ([]hooks.Hook, error) {
	if *f.timeout <= 0 || *f.parallel < 1 || *f.tries < 1 || *f.backoff <= 0 || *f.retryFailed < 0 {
		return nil, usageError{"--hook-timeout, --hook-parallel, --hook-tries and --hook-backoff must be positive, --retry-failed not negative"}
	}
	base := hooks.Hook{Parallel: *f.parallel, Timeout: *f.timeout, MaxTries: *f.tries, Backoff: *f.backoff}
	var hs []hooks.Hook
	for _, spec := range *f.exec {
		ev, prog, ok := strings.Cut(spec, "=")
		if !ok || prog == "" {
			return nil, usageError{fmt.Sprintf("--hook %q: want EVENT=PROGRAM", spec)}
		}
		if !db.ValidEventType(db.EventType(ev)) {
			return nil, usageError{fmt.Sprintf("--hook %q: unknown event %q", spec, ev)}
		}
		abs, err := filepath.Abs(prog)
		if err != nil {
			return nil, fmt.Errorf("--hook %q: %w", spec, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, usageError{fmt.Sprintf("--hook %q: %s is not an executable file", spec, abs)}
		}
		// The name keys the hook's progress: the same EVENT=PROGRAM
		// after a restart resumes where it stopped.
		h := base
		h.Name = "exec:" + ev + "=" + abs
		h.Types = []db.EventType{db.EventType(ev)}
		h.Handler = hooks.Exec(abs, log.With("hook", h.Name))
		hs = append(hs, h)
	}
	isBad := func(err error) bool { return errors.Is(err, coordinator.ErrBadSubmission) }
	if *f.retryFailed > 0 {
		h := base
		h.Name = "builtin:retry-failed"
		h.Types = []db.EventType{db.EventFailed}
		h.Handler = hooks.RetryFailed(*f.retryFailed, submit, builds, isBad)
		hs = append(hs, h)
	}
	if *f.submitMissing {
		h := base
		h.Name = "builtin:submit-missing-inputs"
		h.Types = []db.EventType{db.EventMissingInputs}
		h.Handler = hooks.SubmitMissingInputs(submitMissing, isBad)
		hs = append(hs, h)
	}
	return hs, nil
}

// startHooks runs the hooks in the background; the returned stop cancels
// them and waits (handlers not finished then run again at the next start).
// The collector is the hooks' backlog metrics (nil without hooks).
func startHooks(ctx context.Context, log *slog.Logger, store hooks.Store, clk clock.Clock, hs []hooks.Hook) (stop func(), c prometheus.Collector, err error) {
	if len(hs) == 0 {
		return func() {}, nil, nil
	}
	r, err := hooks.New(hooks.Config{Store: store, Hooks: hs, Logger: log, Clock: clk})
	if err != nil {
		return nil, nil, err
	}
	if err := r.Prepare(ctx); err != nil {
		return nil, nil, fmt.Errorf("register hooks: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	names := make([]string, 0, len(hs))
	for _, h := range hs {
		names = append(names, h.Name)
	}
	log.Info("hooks running", "hooks", names)
	return func() { cancel(); <-done }, r.Collector(), nil
}

// submitMissingVia adapts coordinator.SubmitMissingInputs for the
// built-in hook.
func submitMissingVia(c *coordinator.Coordinator) hooks.SubmitMissingFunc {
	return func(ctx context.Context, build string, missing []string) error {
		_, err := c.SubmitMissingInputs(ctx, build, missing)
		return err
	}
}

// submitVia adapts coordinator.Submit for the built-in hooks.
func submitVia(c *coordinator.Coordinator) hooks.SubmitFunc {
	return func(ctx context.Context, drvs []string, prio int, tags []db.Tag) ([]string, error) {
		return c.Submit(ctx, coordinator.Submission{Derivations: drvs, Priority: prio, Tags: tags})
	}
}

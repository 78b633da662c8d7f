package hooks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gbc-farm/gbc/db"
)

// SubmitFunc submits derivations (coordinator.Submit) and returns the
// build ids.
type SubmitFunc func(ctx context.Context, drvs []string, priority int, tags []db.Tag) ([]string, error)

// isBad, given to the built-ins, tells a submission error that retrying
// cannot fix (an unreadable .drv) from a passing one (a busy database).

// BuildReader is the part of db.Store the built-ins read.
type BuildReader interface {
	Build(ctx context.Context, id string) (db.Build, error)
	Builds(ctx context.Context, f db.BuildFilter) ([]db.Build, error)
}

// RetryFailed resubmits a failed build's derivation, up to n times per
// original build: the new build carries the original's tags with
// retry=<k> and retry-of=<failed build>, and its priority. Running twice
// for the same event submits once (a build with retry-of=<id> already
// exists).
func RetryFailed(n int, submit SubmitFunc, builds BuildReader, isBad func(error) bool) Handler {
	return func(ctx context.Context, e db.Event) error {
		if e.Type != db.EventFailed || e.Build == "" {
			return nil
		}
		b, err := builds.Build(ctx, e.Build)
		if err != nil {
			return fmt.Errorf("retry-failed: %w", err)
		}
		k := 0
		var tags []db.Tag
		for _, t := range b.Tags {
			switch t.Key {
			case db.TagRetry:
				k, _ = strconv.Atoi(t.Value)
			case db.TagRetryOf:
			default:
				tags = append(tags, t)
			}
		}
		if k >= n {
			return nil // out of retries; the failure stands
		}
		others, err := builds.Builds(ctx, db.BuildFilter{Derivation: b.Derivation})
		if err != nil {
			return fmt.Errorf("retry-failed: %w", err)
		}
		for _, o := range others {
			for _, t := range o.Tags {
				if t.Key == db.TagRetryOf && t.Value == b.ID {
					return nil // already retried (this event ran before)
				}
			}
		}
		tags = append(tags, db.Tag{Key: db.TagRetry, Value: strconv.Itoa(k + 1)}, db.Tag{Key: db.TagRetryOf, Value: b.ID})
		if _, err := submit(ctx, []string{b.Derivation}, b.Priority, tags); err != nil {
			if isBad != nil && isBad(err) {
				return Permanent(fmt.Errorf("retry-failed: resubmit %s: %w", b.Derivation, err))
			}
			return fmt.Errorf("retry-failed: resubmit %s: %w", b.Derivation, err)
		}
		return nil
	}
}

// SubmitMissingInputs submits a build for every missing input derivation
// (.drv paths in a missing-inputs event) that has no build here yet,
// tagged needed-by=<build>. Other paths are skipped: the coordinator
// traces missing output paths to their input derivations and adds those
// to the event.
//
// The coordinator already does this when it records the setup failure
// (coordinator.Config.SubmitMissingInputs), before requeueing the build,
// so the build waits for them; this handler then finds builds and does
// nothing. It remains the at-least-once path: a submission that failed
// there for a passing reason (a busy database) is retried from the event.
func SubmitMissingInputs(submit SubmitFunc, builds BuildReader, isBad func(error) bool) Handler {
	return func(ctx context.Context, e db.Event) error {
		if e.Type != db.EventMissingInputs {
			return nil
		}
		var drvs []string
		for _, p := range e.Missing {
			if !strings.HasSuffix(p, ".drv") {
				continue
			}
			bs, err := builds.Builds(ctx, db.BuildFilter{Derivation: p, Limit: 1})
			if err != nil {
				return fmt.Errorf("submit-missing-inputs: %w", err)
			}
			if len(bs) == 0 {
				drvs = append(drvs, p)
			}
		}
		if len(drvs) == 0 {
			return nil
		}
		prio := 0
		if b, err := builds.Build(ctx, e.Build); err == nil {
			prio = b.Priority
		}
		// One submission per derivation, so one unreadable .drv does not
		// keep the others from being built.
		var errs []error
		bad := 0
		for _, d := range drvs {
			if _, err := submit(ctx, []string{d}, prio, []db.Tag{{Key: db.TagNeededBy, Value: e.Build}}); err != nil {
				if isBad != nil && isBad(err) {
					bad++
				}
				errs = append(errs, fmt.Errorf("submit %s: %w", d, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			err = fmt.Errorf("submit-missing-inputs: %w", err)
			if bad == len(errs) {
				return Permanent(err)
			}
			return err
		}
		return nil
	}
}

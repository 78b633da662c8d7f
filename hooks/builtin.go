package hooks

import (
	"context"
	"fmt"
	"strconv"

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

// SubmitMissingFunc applies the coordinator's one rule for builds of a
// build's missing inputs (coordinator.SubmitMissingInputs): which of the
// paths get a build, with what priority and tags.
type SubmitMissingFunc func(ctx context.Context, build string, missing []string) error

// SubmitMissingInputs hands a missing-inputs event's paths to the
// coordinator's rule. The coordinator already applied it when it recorded
// the setup failure, before requeueing the build, so the build waits for
// the inputs; this handler then submits nothing. It remains the
// at-least-once path: a submission that failed there for a passing reason
// (a busy database) is retried from the event. An error isBad calls
// permanent (every derivation refused) is not retried.
func SubmitMissingInputs(submit SubmitMissingFunc, isBad func(error) bool) Handler {
	return func(ctx context.Context, e db.Event) error {
		if e.Type != db.EventMissingInputs || e.Build == "" || len(e.Missing) == 0 {
			return nil
		}
		if err := submit(ctx, e.Build, e.Missing); err != nil {
			err = fmt.Errorf("submit-missing-inputs: %w", err)
			if isBad != nil && isBad(err) {
				return Permanent(err)
			}
			return err
		}
		return nil
	}
}

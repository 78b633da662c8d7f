package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// PruneOptions select the builds `builds prune` removes.
type PruneOptions struct {
	FinishedBefore time.Time
	State          BuildState // "" : any terminal state
	DryRun         bool
	// Force removes builds whose outputs are pinned or kept by a rule too.
	Force bool
}

// PruneReport says what a prune removed (or would).
type PruneReport struct {
	DryRun bool         `json:"dry_run"`
	Pruned []string     `json:"pruned"`
	Kept   []PrunedKept `json:"kept,omitempty"`
	Logs   int          `json:"logs_deleted"`
}

// PrunedKept is a selected build left alone, and why.
type PrunedKept struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// pruneBatch is how many builds one DeleteBuilds call removes.
const pruneBatch = 500

// PruneBuilds removes finished build records with their attempts,
// results and attempt logs. Builds whose outputs are pinned, or kept by a
// keep rule or --cache-keep-default, stay unless Force.
func (c *Coordinator) PruneBuilds(ctx context.Context, o PruneOptions) (PruneReport, error) {
	rep := PruneReport{DryRun: o.DryRun}
	if o.FinishedBefore.IsZero() {
		return rep, &plainError{"builds prune: --finished-before is required", db.ErrConflict}
	}
	if o.State != "" && !o.State.Terminal() {
		return rep, &plainError{fmt.Sprintf("builds prune: state %q is not a final state (succeeded, failed, canceled, failed-dependency)", o.State), db.ErrConflict}
	}
	pins, err := c.store.Pins(ctx)
	if err != nil {
		return rep, fmt.Errorf("builds prune: %w", err)
	}
	pinned := map[string]bool{}
	for _, p := range pins {
		pinned[p.Path] = true
	}
	bs, err := c.store.Builds(ctx, db.BuildFilter{State: o.State, EndedBefore: o.FinishedBefore})
	if err != nil {
		return rep, fmt.Errorf("builds prune: %w", err)
	}
	now := c.clk.Now()
	var ids []string
	for _, b := range bs {
		if !b.State.Terminal() {
			continue
		}
		if !o.Force {
			if why := c.keepsBuild(b, pinned, now); why != "" {
				rep.Kept = append(rep.Kept, PrunedKept{ID: b.ID, Reason: why})
				continue
			}
		}
		ids = append(ids, b.ID)
	}
	if o.DryRun {
		rep.Pruned = ids
		return rep, nil
	}
	for i := 0; i < len(ids); i += pruneBatch {
		part := ids[i:min(i+pruneBatch, len(ids))]
		// Listings carry no attempts; their numbers name the log files.
		for _, id := range part {
			b, err := c.store.Build(ctx, id)
			if err != nil {
				continue
			}
			for _, a := range b.Attempts {
				for _, f := range []string{c.attemptLog(id, a.Number), c.attemptLog(id, a.Number) + ".zst"} {
					if err := os.Remove(f); err == nil {
						rep.Logs++
					} else if !errors.Is(err, os.ErrNotExist) {
						c.log.Warn("builds prune: remove log", "file", f, "err", err)
					}
				}
			}
		}
		if _, err := c.store.DeleteBuilds(ctx, part); err != nil {
			return rep, fmt.Errorf("builds prune: after %d builds: %w", len(rep.Pruned), err)
		}
		rep.Pruned = append(rep.Pruned, part...)
	}
	c.log.Info("builds pruned", "builds", len(rep.Pruned), "kept", len(rep.Kept), "logs", rep.Logs)
	return rep, nil
}

// keepsBuild says why a finished build's record stays, "" if nothing
// keeps it.
func (c *Coordinator) keepsBuild(b db.Build, pinned map[string]bool, now time.Time) string {
	for _, o := range b.Outputs {
		if pinned[o.Path] {
			return "output " + o.Path + " is pinned"
		}
	}
	return c.cfg.CachePolicy.KeepsBuild(buildRoot(db.BuildRoot{ID: b.ID, Derivation: b.Derivation, State: b.State,
		CreatedAt: b.CreatedAt, EndedAt: b.EndedAt, Tags: b.Tags, Outputs: outputPaths(b.Outputs)}), now)
}

func outputPaths(os []db.DerivationOutput) []string {
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = o.Path
	}
	return out
}

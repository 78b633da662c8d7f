package coordinator

import (
	"context"
	"fmt"

	"github.com/gbc-farm/gbc/db"
)

// Builds whose input derivations are still being built here wait in
// c.blocked until those end. Only derivations with a live (non-terminal)
// build count; anything else is assumed to be available to the agent.

type blockedBuild struct {
	build   db.NewBuild
	pending map[string]bool // input .drv paths with a live build
}

// trackLocked records a live build of a derivation.
func (c *Coordinator) trackLocked(id, drv string) {
	c.drvOf[id] = drv
	if c.active[drv] == nil {
		c.active[drv] = map[string]bool{}
	}
	c.active[drv][id] = true
}

// admitLocked queues a scheduled build, or parks it until the live builds
// of its input derivations end.
func (c *Coordinator) admitLocked(b db.NewBuild, inputs []string) {
	pending := map[string]bool{}
	for _, in := range inputs {
		if in != b.Derivation && len(c.active[in]) > 0 {
			pending[in] = true
		}
	}
	if len(pending) == 0 {
		c.enqueueLocked(b)
		return
	}
	c.blocked[b.ID] = &blockedBuild{build: b, pending: pending}
	for in := range pending {
		c.dependents[in] = append(c.dependents[in], b.ID)
	}
}

// outcome is how a build ended, for dependency handling.
type outcome int

const (
	outcomeSucceeded outcome = iota
	outcomeFailed
	outcomeCanceled
)

// endedLocked is called once per build reaching a terminal state: it wakes
// waiters and settles dependents once no live build of the derivation is
// left. After a success they run. After a failure they become
// failed-dependency when the store supports it (db.DependencyFailer),
// recursively; otherwise they run and report the missing input as a setup
// failure, so they end visibly instead of waiting forever. After a cancel
// they run: the input may still be substitutable.
func (c *Coordinator) endedLocked(ctx context.Context, id string, how outcome) {
	for _, ch := range c.waiters[id] {
		close(ch)
	}
	delete(c.waiters, id)
	delete(c.setupAvoid, id)
	delete(c.blocked, id)
	c.dequeueLocked(id)
	drv, ok := c.drvOf[id]
	if !ok {
		return
	}
	delete(c.drvOf, id)
	delete(c.active[drv], id)
	if len(c.active[drv]) == 0 {
		delete(c.active, drv)
	} else if how != outcomeSucceeded {
		return // another build of the same derivation may still succeed
	}
	deps := c.dependents[drv]
	delete(c.dependents, drv)
	failer, canFail := c.store.(db.DependencyFailer)
	for _, d := range deps {
		bb := c.blocked[d]
		if bb == nil {
			continue
		}
		if how == outcomeFailed && canFail {
			cause := fmt.Sprintf("input %s failed (build %s)", drv, id)
			if err := failer.FailDependency(ctx, d, c.clk.Now(), cause); err != nil {
				c.log.Error("mark failed dependency", "build", d, "err", err)
			} else {
				c.log.Info("build failed: dependency", "build", d, "cause", cause)
				c.endedLocked(ctx, d, outcomeFailed)
				continue
			}
		}
		delete(bb.pending, drv)
		if len(bb.pending) == 0 {
			delete(c.blocked, d)
			c.enqueueLocked(bb.build)
		}
	}
}

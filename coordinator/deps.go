package coordinator

import "github.com/gbc-farm/gbc/db"

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

// endedLocked is called once per build reaching a terminal state: it wakes
// waiters and unblocks dependents. A dependent of a failed input is
// released only when no other live build of that input remains; it then
// runs and reports the missing input as a setup failure, so it ends
// visibly instead of waiting forever.
func (c *Coordinator) endedLocked(id string, succeeded bool) {
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
	} else if !succeeded {
		return
	}
	deps := c.dependents[drv]
	delete(c.dependents, drv)
	for _, d := range deps {
		bb := c.blocked[d]
		if bb == nil {
			continue
		}
		delete(bb.pending, drv)
		if len(bb.pending) == 0 {
			delete(c.blocked, d)
			c.enqueueLocked(bb.build)
		}
	}
}

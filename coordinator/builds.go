package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
)

// plainError says once what went wrong and what to do, and still matches
// the store's sentinel (db.ErrNotFound, db.ErrConflict) with errors.Is.
type plainError struct {
	msg string
	is  error
}

func (e *plainError) Error() string { return e.msg }

func (e *plainError) Unwrap() error { return e.is }

// Build reads a build an operator named; an unknown id says so
// plainly.
func (c *Coordinator) Build(ctx context.Context, id string) (db.Build, error) {
	// Taken before the read: a mark committed after it is in the read.
	marks := c.unflushedMarks(id)
	b, err := c.store.Build(ctx, id)
	if errors.Is(err, db.ErrNotFound) {
		return db.Build{}, &plainError{fmt.Sprintf("no build %q ('builds' lists the build ids)", text.Truncate(id, 64)), db.ErrNotFound}
	}
	if err != nil {
		return db.Build{}, fmt.Errorf("read build %s: %w", text.Truncate(id, 64), err)
	}
	return withMarks(b, marks), nil
}

// Builds lists builds for an operator, newest first (db.Store.Builds).
func (c *Coordinator) Builds(ctx context.Context, f db.BuildFilter) ([]db.Build, error) {
	return c.store.Builds(ctx, f)
}

// alreadyEnded is the error for changing a build that has ended.
func alreadyEnded(b db.Build, what string) error {
	return &plainError{fmt.Sprintf("build %s has already ended (%s); %s", b.ID, b.State, what), db.ErrConflict}
}

// MaxCancelDependents bounds the builds one cancel --with-dependents takes
// with it (each is a transaction, under the coordinator's lock).
const MaxCancelDependents = 10000

// Cancel cancels a build that has not ended; an agent holding it is told
// to stop. Queued builds that would then wait forever for its outputs
// (derivation-ordered mode, no other build of its derivation queued or
// running, outputs not available) become failed-dependency, naming it.
func (c *Coordinator) Cancel(ctx context.Context, id string) error {
	_, err := c.cancel(ctx, id, false)
	return err
}

// CancelWithDependents cancels a build and every build that waits on its
// derivation, directly or not, queued or running (those are stopped on
// their agents), and returns the ids of the dependents it canceled.
func (c *Coordinator) CancelWithDependents(ctx context.Context, id string) ([]string, error) {
	return c.cancel(ctx, id, true)
}

func (c *Coordinator) cancel(ctx context.Context, id string, withDependents bool) ([]string, error) {
	b, err := c.Build(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.State.Terminal() {
		return nil, alreadyEnded(b, "there is nothing to cancel")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var deps []string
	if withDependents {
		var n int
		deps, n = c.sched.Dependents(id, MaxCancelDependents)
		if n > len(deps) {
			return nil, fmt.Errorf("%w: build %s has %d dependents, more than %d to cancel at once: cancel the builds that depend on it first ('builds cancel' with filters)",
				ErrBadSubmission, id, n, MaxCancelDependents)
		}
	}
	now := c.clk.Now()
	var canceled []string
	for _, d := range deps {
		holder := ""
		if st, _ := c.sched.StateOf(d); st == scheduler.Allocated {
			// Running (permissive mode): stop it on its agent.
			if held, err := c.store.Build(ctx, d); err == nil {
				holder = held.AgentID
			}
		}
		if err := c.store.CancelBuild(ctx, d, now); err != nil {
			if errors.Is(err, db.ErrConflict) || errors.Is(err, db.ErrNotFound) {
				continue // ended meanwhile
			}
			return canceled, fmt.Errorf("cancel build %s, a dependent of %s: %w", d, id, err)
		}
		if holder != "" {
			c.stopLocked(d, holder)
		}
		// Plain Cancel: the dependents waiting on d are canceled here too.
		c.wakeLocked(d)
		delete(c.avoid, d)
		c.sched.Cancel(d)
		c.log.Info("build canceled", "build", d, "with", id)
		canceled = append(canceled, d)
	}
	if err := c.store.CancelBuild(ctx, id, now); err != nil {
		return canceled, fmt.Errorf("cancel build %s: %w", id, err)
	}
	if b.State == db.StateAllocated || b.State == db.StateStarted {
		c.stopLocked(id, b.AgentID)
	}
	c.log.Info("build canceled", "build", id)
	c.endedLocked(ctx, id, outcomeCanceled)
	c.dispatchLocked(ctx)
	return canceled, nil
}

// stopLocked tells the agent holding a canceled build to stop it and
// frees its slot.
func (c *Coordinator) stopLocked(id, agentID string) {
	if agentID == "" {
		return
	}
	if s := c.sessions[agentID]; s != nil {
		if _, held := s.holds[id]; held {
			s.cancels[id] = s.push(&protocol.Cancel{Build: id})
		}
	}
	c.releaseLocked(id, agentID)
}

// SetPriority changes a build's priority; everything it waits on is
// re-ordered through derived priority.
func (c *Coordinator) SetPriority(ctx context.Context, id string, priority int) error {
	b, err := c.Build(ctx, id)
	if err != nil {
		return err
	}
	if b.State.Terminal() {
		return alreadyEnded(b, "only queued or running builds have a priority to change")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.store.SetBuildPriority(ctx, id, priority); err != nil {
		if errors.Is(err, db.ErrConflict) {
			return &plainError{fmt.Sprintf("build %s ended meanwhile; only queued or running builds have a priority to change", id), db.ErrConflict}
		}
		return fmt.Errorf("set priority of build %s: %w", id, err)
	}
	c.sched.SetPriority(id, priority)
	c.log.Info("build priority changed", "build", id, "priority", priority)
	return nil
}

// QueueOrder reports a queued or running build's place in the order:
// its scheduler state, derived priority and number of builds waiting on it.
func (c *Coordinator) QueueOrder(id string) (state string, derived, dependents int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.sched.StateOf(id)
	if !ok {
		return "", 0, 0, false
	}
	derived, dependents, _ = c.sched.Order(id)
	return st.String(), derived, dependents, true
}

// Wait blocks until the build reaches a terminal state and returns it.
func (c *Coordinator) Wait(ctx context.Context, id string) (db.Build, error) {
	for {
		// Register before reading, so an end recorded after the read
		// still wakes us.
		ch := make(chan struct{})
		c.mu.Lock()
		c.waiters[id] = append(c.waiters[id], ch)
		c.mu.Unlock()
		b, err := c.store.Build(ctx, id)
		if err != nil {
			c.dropWaiter(id, ch)
			return db.Build{}, fmt.Errorf("build %s: %w", id, err)
		}
		if b.State.Terminal() {
			c.dropWaiter(id, ch)
			return b, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.dropWaiter(id, ch)
			return db.Build{}, ctx.Err()
		case <-c.done:
			return db.Build{}, errors.New("coordinator is shutting down")
		}
	}
}

func (c *Coordinator) dropWaiter(id string, ch chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = slices.Delete(ws, i, i+1)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
	} else {
		c.waiters[id] = ws
	}
}

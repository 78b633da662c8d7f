package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// The activity history behind the web overview's chart: builds ended and
// the queue's depth, in slots of ActivitySlot over the last ActivitySpan.
// It is kept in memory from the builds' ends as they happen and from
// samples of the in-memory queue, so the overview never counts rows; it
// starts empty when the coordinator starts.
const (
	ActivitySlot = 15 * time.Minute
	ActivitySpan = 24 * time.Hour
	// activitySample is how often the queue's depth is sampled.
	activitySample = 30 * time.Second
)

const activitySlots = int(ActivitySpan / ActivitySlot)

// ActivityPoint is one slot of the history.
type ActivityPoint struct {
	Start     time.Time
	Succeeded int
	Failed    int // failed builds (not failed-dependency or canceled)
	// Queued and Running are the largest depth sampled in the slot (queued:
	// waiting, deferred or ready; running: allocated to an agent). Sampled
	// false: the coordinator was not running then.
	Queued, Running int
	Sampled         bool
}

// activity is a ring of slots, indexed by slot number modulo its length.
type activity struct {
	slots [activitySlots]ActivityPoint
}

func slotStart(t time.Time) time.Time { return t.Truncate(ActivitySlot) }

// slot returns the slot that holds t, clearing it if it held an older one.
func (a *activity) slot(t time.Time) *ActivityPoint {
	start := slotStart(t)
	p := &a.slots[int(start.Unix()/int64(ActivitySlot/time.Second))%activitySlots]
	if !p.Start.Equal(start) {
		*p = ActivityPoint{Start: start}
	}
	return p
}

func (a *activity) ended(t time.Time, how outcome) {
	p := a.slot(t)
	switch how {
	case outcomeSucceeded:
		p.Succeeded++
	case outcomeFailed:
		p.Failed++
	}
}

func (a *activity) sample(t time.Time, queued, running int) {
	p := a.slot(t)
	p.Queued, p.Running, p.Sampled = max(p.Queued, queued), max(p.Running, running), true
}

// points returns the slots of the span ending at now, oldest first.
func (a *activity) points(now time.Time) []ActivityPoint {
	out := make([]ActivityPoint, 0, activitySlots)
	first := slotStart(now).Add(-ActivitySpan + ActivitySlot)
	for i := range activitySlots {
		start := first.Add(time.Duration(i) * ActivitySlot)
		p := a.slots[int(start.Unix()/int64(ActivitySlot/time.Second))%activitySlots]
		if !p.Start.Equal(start) {
			p = ActivityPoint{Start: start}
		}
		out = append(out, p)
	}
	return out
}

// sampleQueueLocked records the queue's depth now.
func (c *Coordinator) sampleQueueLocked() {
	st := c.sched.Stats()
	c.activity.sample(c.clk.Now(), st.Ready+st.Waiting+st.Deferred, st.Allocated)
}

// sampleActivity samples the queue's depth until Close.
func (c *Coordinator) sampleActivity() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		c.sampleQueueLocked()
		c.mu.Unlock()
		select {
		case <-c.clk.After(activitySample):
		case <-c.done:
			return
		}
	}
}

// Activity returns the last ActivitySpan of history in slots of
// ActivitySlot, oldest first; the last slot is the current one, with the
// queue's depth as of now.
func (c *Coordinator) Activity() []ActivityPoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sampleQueueLocked()
	return c.activity.points(c.clk.Now())
}

// BuildsPage returns one page of builds for a listing (db.Store.BuildsPage).
func (c *Coordinator) BuildsPage(ctx context.Context, q db.BuildQuery) (db.BuildPage, error) {
	p, err := c.store.BuildsPage(ctx, q)
	if err != nil {
		return db.BuildPage{}, fmt.Errorf("read builds: %w", err)
	}
	return p, nil
}

// AgentAttemptCounts counts an agent's attempts by how they ended.
func (c *Coordinator) AgentAttemptCounts(ctx context.Context, agentID string) ([]db.AttemptCount, error) {
	return c.store.AgentAttemptCounts(ctx, agentID)
}

// MaxRecentEvents bounds one RecentEvents call.
const MaxRecentEvents = 500

// RecentEvents returns up to limit of the newest events with ids below
// before (0: the newest events), newest first, and the id to pass as
// before for the next older page (0: none is left).
func (c *Coordinator) RecentEvents(ctx context.Context, before int64, limit int) ([]db.Event, int64, error) {
	limit = min(max(limit, 1), MaxRecentEvents)
	if before <= 0 {
		last, err := c.store.LastEventID(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("read the newest event id: %w", err)
		}
		before = last + 1
	}
	after := max(before-1-int64(limit), 0)
	es, pruned, err := c.store.EventsPruned(ctx, db.EventFilter{AfterID: after, Limit: limit})
	if err != nil {
		return nil, 0, fmt.Errorf("read events after %d: %w", after, err)
	}
	out := make([]db.Event, 0, len(es))
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].ID < before {
			out = append(out, es[i])
		}
	}
	next := int64(0)
	if after > pruned && after > 0 {
		next = after + 1
	}
	return out, next, nil
}

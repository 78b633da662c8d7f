package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/db"
)

// Defaults of EventRetention.
const (
	// DefaultEventRetention keeps a month of events: longer than any
	// consumer of `events --since` or a hook should plausibly be down,
	// and enough for a monthly look back, while bounding the table.
	DefaultEventRetention = 30 * 24 * time.Hour
	// DefaultPruneInterval: the table is pruned hourly (and at start), so
	// it holds at most the retention plus an hour of events.
	DefaultPruneInterval = time.Hour
	// DefaultPruneBatch bounds the rows deleted per writer transaction.
	// SQLite has one writer that dispatch and result recording share; a
	// batch of 10,000 holds it for ~40 ms (see docs/database.md), and
	// between batches waiting writers go first.
	DefaultPruneBatch = 10_000
)

// EventRetention deletes events older than Keep from the start of the log,
// never one that a hook in Hooks has not finished (nor anything after
// it). Hooks are the hooks configured in this run: progress rows of hooks
// that are no longer configured hold nothing back.
type EventRetention struct {
	Store    db.Store
	Keep     time.Duration
	Hooks    []db.HookFilter
	Interval time.Duration // 0: DefaultPruneInterval
	Batch    int           // 0: DefaultPruneBatch
	Clock    clock.Clock   // nil: the wall clock
	Logger   *slog.Logger  // nil: discard
}

// PruneStats is what one pass did.
type PruneStats struct {
	Deleted       int
	Batches       int
	PrunedThrough int64
	// LongestBatch is the longest single PruneEvents transaction: how long
	// the writer was held at most.
	LongestBatch time.Duration
	Took         time.Duration
	// HeldBy and HeldAt: a configured hook's pending event that kept
	// events older than Keep.
	HeldBy string
	HeldAt int64
}

func (r EventRetention) withDefaults() EventRetention {
	if r.Interval <= 0 {
		r.Interval = DefaultPruneInterval
	}
	if r.Batch <= 0 {
		r.Batch = DefaultPruneBatch
	}
	if r.Clock == nil {
		r.Clock = clock.Real{}
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// Prune runs one pass: batches until nothing more is due.
func (r EventRetention) Prune(ctx context.Context) (PruneStats, error) {
	r = r.withDefaults()
	if r.Store == nil || r.Keep <= 0 {
		return PruneStats{}, errors.New("event retention: no store or no retention period")
	}
	before := r.Clock.Now().Add(-r.Keep)
	var st PruneStats
	start := time.Now()
	for {
		t := time.Now()
		res, err := r.Store.PruneEvents(ctx, before, r.Hooks, r.Batch)
		// Wall time, not r.Clock: this measures the database.
		d := time.Since(t)
		if err != nil {
			st.Took = time.Since(start)
			return st, err
		}
		st.Batches++
		st.Deleted += res.Deleted
		st.PrunedThrough, st.HeldBy, st.HeldAt = res.PrunedThrough, res.HeldBy, res.HeldAt
		st.LongestBatch = max(st.LongestBatch, d)
		if !res.More {
			break
		}
		// Each batch is its own transaction, and a writer that queued
		// meanwhile (dispatch, a result) gets SQLite's one connection
		// before the next batch does. That alone lets one writer in per
		// batch; resting as long as the batch took leaves the others at
		// least half of the writer's time during a long catch-up. Wall
		// time: this paces the database, not the farm's clock.
		rest := time.NewTimer(d)
		select {
		case <-ctx.Done():
			rest.Stop()
			st.Took = time.Since(start)
			return st, ctx.Err()
		case <-rest.C:
		}
	}
	st.Took = time.Since(start)
	return st, nil
}

// Run prunes once now and then every Interval until ctx ends. A failed
// pass is logged and retried at the next interval.
func (r EventRetention) Run(ctx context.Context) {
	r = r.withDefaults()
	log := r.Logger
	log.Info("event retention", "keep", r.Keep, "interval", r.Interval, "batch", r.Batch, "hooks", len(r.Hooks))
	for {
		// Armed before the pass, so the schedule does not drift by the
		// pass's own length (and a fake clock can step it).
		tick := r.Clock.After(r.Interval)
		st, err := r.Prune(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("prune events", "deleted", st.Deleted, "err", err)
		case st.Deleted > 0:
			log.Info("events pruned", "deleted", st.Deleted, "through_id", st.PrunedThrough, "batches", st.Batches,
				"longest_batch", st.LongestBatch, "took", st.Took)
		}
		if st.HeldBy != "" {
			log.Warn("events older than the retention are kept: a hook has not finished one yet",
				"hook", st.HeldBy, "event", st.HeldAt, "keep", r.Keep)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/hooks"
)

// daysDuration is a flag value that takes Go durations and whole days
// ("30d"), the unit retention periods are thought in.
type daysDuration time.Duration

func (d *daysDuration) String() string {
	v := time.Duration(*d)
	if v > 0 && v%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	return v.String()
}

func (d *daysDuration) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 32)
		if err != nil || days < 0 {
			return fmt.Errorf("%q: want a whole number of days (30d) or a duration (720h)", s)
		}
		*d = daysDuration(time.Duration(days) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a whole number of days (30d) or a duration (720h)", s)
	}
	*d = daysDuration(v)
	return nil
}

func (d *daysDuration) Type() string { return "duration" }

// startRetention prunes events older than keep in the background (keep 0:
// never). Only the hooks of this run hold events back: a hook removed from
// the command line no longer does, and if it comes back after its
// pending events were pruned it resumes at the next kept one.
func startRetention(ctx context.Context, log *slog.Logger, store db.Store, clk clock.Clock, keep time.Duration, hs []hooks.Hook) (stop func()) {
	if keep <= 0 {
		log.Info("event retention off: events are kept forever")
		return func() {}
	}
	filters := make([]db.HookFilter, 0, len(hs))
	for _, h := range hs {
		filters = append(filters, db.HookFilter{Name: h.Name, Types: h.Types})
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		coordinator.EventRetention{Store: store, Keep: keep, Hooks: filters, Clock: clk, Logger: log}.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

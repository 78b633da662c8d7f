package sshd

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
)

// followPoll is how often --follow looks for new rows. Polling the store
// (rather than an in-memory feed) means a follower sees exactly the
// committed rows, in id order, and resumes with --since after any break.
const followPoll = 200 * time.Millisecond

// eventPage bounds one read, so a long backlog streams in pieces.
const eventPage = 1000

func setupEvents(fs *pflag.FlagSet) func(x *call) error {
	follow := fs.BoolP("follow", "f", false, "keep printing new events until the connection closes")
	since := fs.Int64("since", 0, "only events with an id greater than this (resume from the last id seen)")
	types := fs.StringArray("type", nil, "only events of this type (repeatable): "+eventTypeList())
	build := fs.String("build", "", "only events of this build")
	return func(x *call) error {
		if err := needArgs(x, 0, "no arguments"); err != nil {
			return err
		}
		if *since < 0 {
			return usageErr("--since must not be negative")
		}
		f := coordinator.EventFilter{AfterID: *since, Build: *build, Limit: eventPage}
		for _, t := range *types {
			for _, one := range strings.Split(t, ",") {
				et := coordinator.EventType(strings.TrimSpace(one))
				if !coordinator.ValidEventType(et) {
					return usageErr("--type %q is not an event type (%s)", text.Truncate(one, 40), eventTypeList())
				}
				f.Types = append(f.Types, et)
			}
		}
		enc := json.NewEncoder(x.out)
		for {
			// The page and how far the log was pruned come from one
			// snapshot, so a gap is reported exactly when rows after the
			// position are gone, also while following.
			es, pruned, err := x.s.coord.EventsPruned(x.ctx, f)
			if err != nil {
				return err
			}
			if pruned > f.AfterID {
				// Stderr, so stdout stays one event per line.
				if f.AfterID > 0 {
					fmt.Fprintf(x.errOut, "events: pruned through id %d: the events after id %d up to %d were deleted by the event retention and are missing; continuing after %d\n",
						pruned, f.AfterID, pruned, pruned)
				} else {
					fmt.Fprintf(x.errOut, "events: pruned through id %d: older events were deleted by the event retention; the log starts after %d\n", pruned, pruned)
				}
				f.AfterID = pruned
			}
			for _, e := range es {
				if err := enc.Encode(e); err != nil {
					return fmt.Errorf("write event %d: %w", e.ID, err)
				}
				f.AfterID = e.ID
			}
			if len(es) == eventPage {
				continue
			}
			if !*follow {
				return nil
			}
			select {
			case <-x.ctx.Done():
				return nil
			case <-time.After(followPoll):
			}
		}
	}
}

func eventTypeList() string {
	names := make([]string, 0, len(coordinator.EventTypes()))
	for _, t := range coordinator.EventTypes() {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

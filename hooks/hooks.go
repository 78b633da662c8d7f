// Package hooks runs hooks from the event log, at least once.
//
// Events are rows (db.Event) written in the same transaction as the state
// change they record; this package reads them back and hands every event
// of a hook's types to its Handler. Progress is kept per hook in the
// store (a cursor plus the ids finished beyond it), so a crash at any
// point loses no event: whatever was not marked done runs again after the
// restart. A handler may therefore see an event more than once and should
// be idempotent (the built-ins are).
//
// Each hook runs at most Parallel handlers at a time; a failing handler is
// retried with exponential backoff up to MaxTries, then reported as a
// hook-failed event (and in the log) and marked done, so one bad event
// does not stop the hook.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/internal/text"
)

// Store is what the runner needs from db.Store.
type Store interface {
	Events(ctx context.Context, f db.EventFilter) ([]db.Event, error)
	AppendEvent(ctx context.Context, e db.Event) (int64, error)
	HookProgress(ctx context.Context, hook string) (db.HookProgress, error)
	MarkHookDone(ctx context.Context, hook string, eventID, cursor int64) error
	LastEventID(ctx context.Context) (int64, error)
}

// Handler handles one event. An error wrapped by Permanent is not retried.
type Handler func(ctx context.Context, e db.Event) error

// Defaults for Hook fields left zero.
const (
	DefaultParallel = 4
	DefaultTimeout  = 5 * time.Minute
	DefaultMaxTries = 5
	DefaultBackoff  = 2 * time.Second
	maxBackoff      = 5 * time.Minute
	defaultPoll     = 250 * time.Millisecond
)

// Hook is one consumer of the event log.
type Hook struct {
	// Name identifies the hook's progress in the store; keep it stable
	// across restarts. A hook the store has never seen starts at the end
	// of the log (it does not replay history).
	Name    string
	Types   []db.EventType
	Handler Handler
	// Parallel bounds concurrent handler calls.
	Parallel int
	// Timeout bounds one try.
	Timeout time.Duration
	// MaxTries is the number of tries before the event is reported as
	// hook-failed.
	MaxTries int
	// Backoff is the wait before the second try; it doubles after each
	// further failure.
	Backoff time.Duration
}

// Config wires a Runner.
type Config struct {
	Store  Store
	Hooks  []Hook
	Logger *slog.Logger
	Clock  clock.Clock
	// Poll is how often the log is read for new events.
	Poll time.Duration
}

// Runner runs hooks until its context ends.
type Runner struct {
	cfg Config
	log *slog.Logger

	// progress is each hook's position, by name, for Collector.
	mu       sync.Mutex
	progress map[string]*progress
	descs    descs
}

// progress is how far a hook is: the newest event id it saw in the log,
// the id through which it has read every event of its types, and how
// many events it is handling (running or waiting for a retry).
type progress struct {
	head, through int64
	inflight      int
}

// New checks the hooks and fills in defaults.
func New(cfg Config) (*Runner, error) {
	if cfg.Store == nil {
		return nil, errors.New("hooks: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Poll <= 0 {
		cfg.Poll = defaultPoll
	}
	seen := map[string]bool{}
	hooks := make([]Hook, 0, len(cfg.Hooks))
	for i, h := range cfg.Hooks {
		switch {
		case h.Name == "":
			return nil, fmt.Errorf("hooks: hook %d has no name", i)
		case seen[h.Name]:
			return nil, fmt.Errorf("hooks: hook %q given twice", h.Name)
		case h.Handler == nil:
			return nil, fmt.Errorf("hooks: hook %q has no handler", h.Name)
		case len(h.Types) == 0:
			return nil, fmt.Errorf("hooks: hook %q has no event types", h.Name)
		}
		for _, t := range h.Types {
			if !db.ValidEventType(t) {
				return nil, fmt.Errorf("hooks: hook %q: unknown event type %q", h.Name, t)
			}
		}
		seen[h.Name] = true
		if h.Parallel <= 0 {
			h.Parallel = DefaultParallel
		}
		if h.Timeout <= 0 {
			h.Timeout = DefaultTimeout
		}
		if h.MaxTries <= 0 {
			h.MaxTries = DefaultMaxTries
		}
		if h.Backoff <= 0 {
			h.Backoff = DefaultBackoff
		}
		hooks = append(hooks, h)
	}
	cfg.Hooks = hooks
	r := &Runner{cfg: cfg, log: cfg.Logger, progress: map[string]*progress{}, descs: newDescs()}
	for _, h := range hooks {
		r.progress[h.Name] = &progress{}
	}
	return r, nil
}

// Prepare registers hooks the store has never seen, at the current end of
// the log. Call it before the events they should see can happen (before
// serving); Run does it too, later, for hooks still unregistered.
func (r *Runner) Prepare(ctx context.Context) error {
	for _, h := range r.cfg.Hooks {
		if err := r.register(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

// register starts a new hook at the end of the log; a known hook keeps
// its progress.
func (r *Runner) register(ctx context.Context, h Hook) error {
	p, err := r.cfg.Store.HookProgress(ctx, h.Name)
	if err != nil || p.Registered {
		return err
	}
	last, err := r.cfg.Store.LastEventID(ctx)
	if err != nil {
		return err
	}
	if err := r.cfg.Store.MarkHookDone(ctx, h.Name, 0, last); err != nil {
		return err
	}
	r.log.Info("hook registered", "hook", h.Name, "starts_after_event", last)
	return nil
}

// Run runs every hook until ctx is done, then waits for handlers to
// return (they see ctx canceled). Events whose handler did not finish are
// not marked done and run again at the next start.
func (r *Runner) Run(ctx context.Context) {
	done := make(chan struct{}, len(r.cfg.Hooks))
	for _, h := range r.cfg.Hooks {
		go func() {
			defer func() { done <- struct{}{} }()
			r.runHook(ctx, h)
		}()
	}
	for range r.cfg.Hooks {
		<-done
	}
}

type finished struct {
	id          int64
	interrupted bool // the runner stopped first: not finished, runs again
}

// runHook is one hook's loop: read events beyond what it has taken, start
// a handler for each while fewer than Parallel run, and record each
// finished event with the cursor moved past everything finished.
func (r *Runner) runHook(ctx context.Context, h Hook) {
	log := r.log.With("hook", h.Name)
	var (
		scanned  int64          // highest event id taken (or known done)
		done     map[int64]bool // finished beyond the stored cursor
		inflight = map[int64]bool{}
		results  = make(chan finished, h.Parallel)
	)
	// Load progress, retrying: without it the hook cannot start safely.
	for {
		err := r.register(ctx, h)
		var p db.HookProgress
		if err == nil {
			p, err = r.cfg.Store.HookProgress(ctx, h.Name)
		}
		if err == nil {
			scanned = p.Cursor
			done = make(map[int64]bool, len(p.Done))
			for _, id := range p.Done {
				done[id] = true
			}
			break
		}
		log.Error("load hook progress", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-r.cfg.Clock.After(time.Second):
		}
	}
	// record marks a finished event done, moving the cursor past
	// everything finished. It also runs while stopping, so a handler that
	// completed just before is not run again after the restart.
	record := func(f finished) {
		delete(inflight, f.id)
		if f.interrupted {
			return
		}
		cursor := scanned
		if len(inflight) > 0 {
			cursor = slices.Min(mapKeys(inflight)) - 1
		}
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := r.cfg.Store.MarkHookDone(mctx, h.Name, f.id, cursor); err != nil {
			// Not recorded: the event runs again after a restart.
			log.Error("record hook progress", "event", f.id, "err", err)
		}
	}
	defer func() {
		for len(inflight) > 0 {
			record(<-results)
		}
		r.note(h.Name, -1, -1, 0)
	}()
	for {
		// The newest id, read before the events: a short read below
		// then proves the hook has read through it.
		head, herr := r.cfg.Store.LastEventID(ctx)
		if herr != nil {
			head = -1
		}
		through := int64(-1)
		if room := h.Parallel - len(inflight); room > 0 {
			es, err := r.cfg.Store.Events(ctx, db.EventFilter{AfterID: scanned, Types: h.Types, Limit: room})
			if err != nil && ctx.Err() == nil {
				log.Error("read events", "after", scanned, "err", err)
			}
			if err == nil && len(es) < room {
				through = head
			}
			for _, e := range es {
				scanned = e.ID
				if done[e.ID] {
					delete(done, e.ID)
					continue
				}
				inflight[e.ID] = true
				go func() {
					err := r.deliver(ctx, h, log, e)
					results <- finished{id: e.ID, interrupted: err != nil && ctx.Err() != nil}
				}()
			}
			if through < 0 {
				through = scanned
			}
			r.note(h.Name, head, through, len(inflight))
			if len(es) == room {
				continue // more may be waiting; take them as slots free up
			}
		} else {
			r.note(h.Name, head, -1, len(inflight))
		}
		select {
		case <-ctx.Done():
			return
		case f := <-results:
			record(f)
		case <-r.cfg.Clock.After(r.cfg.Poll):
		}
	}
}

// note records a hook's position; a negative head or through keeps the
// one known.
func (r *Runner) note(name string, head, through int64, inflight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.progress[name]
	if head >= 0 {
		p.head = max(p.head, head)
	}
	if through >= 0 {
		p.through = max(p.through, through)
	}
	p.inflight = inflight
}

func mapKeys(m map[int64]bool) []int64 {
	ks := make([]int64, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// deliver runs the handler with retries and backoff. It returns nil when
// the handler succeeded, else the last error after reporting it.
func (r *Runner) deliver(ctx context.Context, h Hook, log *slog.Logger, e db.Event) error {
	wait := h.Backoff
	var err error
	for try := 1; ; try++ {
		err = r.try(ctx, h, e)
		if err == nil {
			log.Info("hook ran", "event", e.ID, "type", e.Type, "build", e.Build, "try", try)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm *permanentError
		if try >= h.MaxTries || errors.As(err, &perm) {
			break
		}
		log.Warn("hook failed; will retry", "event", e.ID, "type", e.Type, "build", e.Build, "try", try, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.cfg.Clock.After(wait):
		}
		wait = min(wait*2, maxBackoff)
	}
	log.Error("hook gave up", "event", e.ID, "type", e.Type, "build", e.Build, "err", err)
	if e.Type != db.EventHookFailed {
		// Reporting a failure to report would loop; log only.
		rep := db.Event{Type: db.EventHookFailed, At: r.cfg.Clock.Now(), Build: e.Build, Agent: e.Agent,
			Hook: h.Name, EventID: e.ID, Reason: text.Truncate(err.Error(), 2000)}
		if _, aerr := r.cfg.Store.AppendEvent(ctx, rep); aerr != nil {
			log.Error("record hook-failed event", "event", e.ID, "err", aerr)
		}
	}
	return err
}

func (r *Runner) try(ctx context.Context, h Hook, e db.Event) (err error) {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	defer func() {
		// A panicking handler is a failed try, not a dead coordinator.
		if p := recover(); p != nil {
			err = fmt.Errorf("hook panicked: %v", p)
		}
	}()
	return h.Handler(ctx, e)
}

type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks an error that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Package db holds the coordinator's durable state behind one interface,
// Store, with one SQL implementation (sqlstore) run on SQLite and
// PostgreSQL (sqlite, postgres) and a test suite that every
// implementation must pass (dbtest).
package db

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound: no row with that key.
	ErrNotFound = errors.New("not found")
	// ErrExists: a row with that key is already there.
	ErrExists = errors.New("already exists")
	// ErrConflict: the row is not in a state that allows the change
	// (e.g. finishing a build that another agent holds).
	ErrConflict = errors.New("state conflict")
)

// Store is the coordinator's durable state. Every method is safe for
// concurrent use. State transitions check the current state and the agent
// that holds the build, and return ErrConflict when they do not match, so
// a confused or malicious agent cannot touch another agent's build.
type Store interface {
	PutKey(ctx context.Context, k Key) error // ErrExists
	Key(ctx context.Context, fingerprint string) (Key, error)
	Keys(ctx context.Context) ([]Key, error)
	DeleteKey(ctx context.Context, fingerprint string) error // ErrNotFound

	// CreateAgent records an agent and, atomically, its keys.
	CreateAgent(ctx context.Context, a Agent, keys ...Key) error
	Agent(ctx context.Context, id string) (Agent, error)
	Agents(ctx context.Context) ([]Agent, error)
	SetAgentActive(ctx context.Context, id string, active bool) error
	TouchAgent(ctx context.Context, id string, at time.Time) error
	// ArchiveAgent deactivates an agent, removes its keys and records
	// when it was archived, in one transaction; its builds and attempts
	// stay. ErrNotFound. It returns the fingerprints removed.
	ArchiveAgent(ctx context.Context, id string, at time.Time) (removedKeys []string, err error)
	// DeleteAgent removes an agent and its keys; ErrNotFound, ErrConflict
	// when any build or attempt names it (archive it instead). It returns
	// the fingerprints removed.
	DeleteAgent(ctx context.Context, id string) (removedKeys []string, err error)

	// CreateBuilds records all builds or none.
	CreateBuilds(ctx context.Context, builds []NewBuild) error
	// Build returns one build with its attempts (oldest first) and results.
	// ErrNotFound.
	Build(ctx context.Context, id string) (Build, error)
	// Builds lists builds newest first (by CreatedAt, then submission
	// order), with tags, features and outputs but without attempts and
	// results.
	Builds(ctx context.Context, f BuildFilter) ([]Build, error)
	// BuildsPage returns one page of the builds q selects, newest first.
	BuildsPage(ctx context.Context, q BuildQuery) (BuildPage, error)
	// AgentAttemptCounts counts an agent's attempts by outcome and kind
	// (open attempts have OutcomeOpen), sorted by outcome then kind.
	AgentAttemptCounts(ctx context.Context, agentID string) ([]AttemptCount, error)
	// BuildsOnAgent returns the builds in state allocated or started that
	// agentID holds (as Builds does, without attempts and results). An
	// unknown agent holds nothing: the result is empty, not ErrNotFound.
	BuildsOnAgent(ctx context.Context, agentID string) ([]Build, error)
	// BuildsForDerivations returns every build (any state, newest first,
	// without attempts and results) of any of the derivations.
	BuildsForDerivations(ctx context.Context, derivations []string) ([]Build, error)
	// ScheduledBuildsPage returns up to limit builds in state scheduled
	// that were recorded after the position after (0: from the first), in
	// recording order, with only what the in-memory queue needs, and the
	// position of the last one (after itself when the page is empty, which
	// means the end). Positions are keyset cursors, so each page costs the
	// same however far the walk is and rebuilding the queue at start never
	// holds more than one page of rows. Within a page, an input path equal
	// to a derivation of the page (or to an earlier input) is the same
	// string, not a copy per build.
	ScheduledBuildsPage(ctx context.Context, after int64, limit int) (page []QueuedBuild, last int64, err error)
	// SetBuildPriority changes a scheduled, allocated or started build's
	// priority; ErrNotFound, ErrConflict once the build has ended.
	SetBuildPriority(ctx context.Context, id string, priority int) error

	// Transitions return ErrNotFound for an unknown build (or, for
	// AllocateBuildFor, an unknown agent) and ErrConflict when the build
	// is not in a state that allows the change or another agent holds it.

	// AllocateBuildFor moves a scheduled build to allocated for agentID,
	// opens a new attempt (numbered 1, 2, … per build) and returns, from
	// the same transaction, what the agent needs to run the build.
	AllocateBuildFor(ctx context.Context, id, agentID string, at time.Time) (Allocation, error)
	// StartBuildWith moves allocated → started, recording the agent's
	// hardware report on the attempt; the agent must hold the build.
	StartBuildWith(ctx context.Context, id, agentID string, at time.Time, hw Hardware) error
	// SucceedBuild records verified results and moves started → succeeded.
	// From allocated it records the implied start too (with its event),
	// in the same transaction.
	SucceedBuild(ctx context.Context, id, agentID string, at time.Time, results []OutputResult) error
	// FailBuild records a final failure: allocated or started → failed
	// (allocated too, so a timeout can be recorded for a build whose start
	// was never reported). kind is KindBuild for the derivation's fault,
	// else the kind of failure whose limit was reached; an invalid kind is
	// refused.
	FailBuild(ctx context.Context, id, agentID string, at time.Time, kind AttemptKind, reason string, exitCode int) error
	// RequeueBuild sends an allocated or started build back to scheduled
	// (a failure outside the derivation); the attempt records kind and
	// reason.
	RequeueBuild(ctx context.Context, id, agentID string, at time.Time, kind AttemptKind, reason string) error
	// RecordPhases records, in one transaction that lets other writes go
	// first, when attempts entered phases. A phase already recorded for
	// an attempt keeps its first time; a mark for an attempt that does not
	// exist (any more) is skipped. PhaseBuilding is the attempt's start
	// (StartBuildWith), not a mark: it, a string that is not a phase, an
	// empty build or an attempt below 1 are refused before any write.
	RecordPhases(ctx context.Context, marks []PhaseMark) error
	// CancelBuild moves any non-terminal build to canceled, closing its
	// open attempt if it has one.
	CancelBuild(ctx context.Context, id string, at time.Time) error
	// SetupFailBuild ends an allocated or started attempt that could not
	// build for reasons outside the derivation: back to scheduled, or to
	// failed when final. The attempt records kind (KindSetup, or
	// KindWaitingForInputs) and reason. It records a setup-failure event, a
	// missing-inputs event when missing (.drv or store paths) is not
	// empty, and a failed event when final.
	SetupFailBuild(ctx context.Context, id, agentID string, at time.Time, kind AttemptKind, reason string, missing []string, final bool) error
	// FailDependency moves a scheduled build to failed-dependency,
	// recording the failed input and build and DependencyFailure.Reason as
	// its failure reason; ErrNotFound, ErrConflict for any other state.
	FailDependency(ctx context.Context, at time.Time, d DependencyFailure) error
	// FailDependencies does the same for many builds in one transaction.
	// Nobody waits on it, so a store may let other writes go first.
	// Builds that are not scheduled (ErrConflict) or unknown (ErrNotFound)
	// are left as they are and returned in skipped with that error; any
	// other error means none was changed.
	FailDependencies(ctx context.Context, at time.Time, deps []DependencyFailure) (skipped map[string]error, err error)

	// Every transition above (and CreateBuilds, FailDependency) appends
	// its event in the same transaction. AppendEvent records an event
	// that is not a build transition (agent connected, hook failed) and
	// returns its id. Ids increase in commit order, so a reader that has
	// seen id N never later finds a new event below N.
	AppendEvent(ctx context.Context, e Event) (int64, error)
	// Events returns matching events in id order.
	Events(ctx context.Context, f EventFilter) ([]Event, error)
	// LastEventID is the newest event's id, 0 when there is none: a new
	// hook starts there without reading the log.
	LastEventID(ctx context.Context) (int64, error)
	// HookProgress returns what a hook has finished (zero for a new hook).
	HookProgress(ctx context.Context, hook string) (HookProgress, error)
	// MarkHookDone records that hook finished eventID and, in the same
	// transaction, moves its cursor to cursor (never backwards),
	// forgetting done ids at or below it.
	MarkHookDone(ctx context.Context, hook string, eventID, cursor int64) error

	// The event log is only ever pruned from its start, so one id
	// describes what is gone: every event with id ≤ PrunedThrough was
	// deleted, every event above it is kept. Ids are never reused after a
	// prune.

	// PruneEvents deletes, in one transaction, at most limit events from
	// the start of the log: the longest prefix of events that happened
	// before before, that lie below every event still pending for one of
	// hooks (a matching event above the hook's cursor that it has not
	// finished), and that is not the newest event (kept so the id
	// sequence survives a copy with migrate-data). Progress rows of hooks
	// not in hooks hold nothing back. Call it again while More is set; each
	// call is a short writer transaction of its own.
	PruneEvents(ctx context.Context, before time.Time, hooks []HookFilter, limit int) (PruneResult, error)
	// EventsPruned is Events that also returns, from the same snapshot,
	// the id through which the log was pruned (0: never), so a reader
	// resuming below it can tell that events are missing.
	EventsPruned(ctx context.Context, f EventFilter) (events []Event, prunedThrough int64, err error)

	// Cache retention (coordinator/gc.go).

	// PinPaths records pins; pinning a pinned path replaces its reason.
	PinPaths(ctx context.Context, pins []Pin) error
	// UnpinPaths removes pins and returns how many there were.
	UnpinPaths(ctx context.Context, paths []string) (int, error)
	// Pins lists every pin, by path.
	Pins(ctx context.Context) ([]Pin, error)
	// RecordCacheAccess stores last-access times, keeping the later of
	// the stored and the given time per path.
	RecordCacheAccess(ctx context.Context, accesses []CacheAccess) error
	// CacheAccesses returns every recorded last access.
	CacheAccesses(ctx context.Context) ([]CacheAccess, error)
	// ForgetCacheAccess drops the rows of paths deleted from the cache.
	ForgetCacheAccess(ctx context.Context, hashParts []string) error
	// BuildRootsPage returns up to limit builds recorded after position
	// after (0: from the first), in recording order, with what retention
	// decides on, and the position of the last one (after itself when the
	// page is empty: the end).
	BuildRootsPage(ctx context.Context, after int64, limit int) (page []BuildRoot, last int64, err error)
	// DeleteBuilds removes finished builds with their tags, outputs,
	// attempts and results, in one transaction, and returns how many it
	// removed; builds that are not terminal are left alone (not counted).
	DeleteBuilds(ctx context.Context, ids []string) (int, error)

	// Reproducibility checks (db/checks.go).

	// CreateCheck records a check with its sides (the cache side with its
	// outputs) and, in the same transaction, the builds of its build
	// sides (as CreateBuilds, with their submitted events). ErrExists.
	CreateCheck(ctx context.Context, c NewCheck, builds []NewBuild) error
	// RecordCheckSide records a side's agent and, for a side that built,
	// its outputs; recording the same side again replaces them.
	// ErrNotFound for an unknown check or side.
	RecordCheckSide(ctx context.Context, checkID string, side int, agentID string, outputs []CheckOutput) error
	// FinishCheck moves a pending check to its verdict and appends its
	// check-finished event in the same transaction; ErrNotFound,
	// ErrConflict when it is not pending.
	FinishCheck(ctx context.Context, id string, at time.Time, state CheckState, unreproducible []string) error
	// Check returns one check with its sides and their outputs.
	Check(ctx context.Context, id string) (Check, error)
	// Checks lists checks newest first, with their sides (build ids and
	// agents) but without outputs.
	Checks(ctx context.Context, f CheckFilter) ([]Check, error)
	// ChecksSummary counts, per system and state, the derivations whose
	// latest check is in that state, and returns the latest checks that
	// are unreproducible (oldest first, without sides).
	ChecksSummary(ctx context.Context) ([]CheckCount, []Check, error)

	Close() error
}

// HookFilter is a hook as pruning sees it: its progress key and the event
// types it runs on.
type HookFilter struct {
	Name  string
	Types []EventType
}

// PruneResult is what one PruneEvents call did.
type PruneResult struct {
	Deleted       int
	PrunedThrough int64 // every event with id ≤ this is gone
	// More: the batch was full; another call may delete more.
	More bool
	// HeldBy and HeldAt name the hook whose pending event stopped the
	// prefix, when that (and not the age of the events) stopped it.
	HeldBy string
	HeldAt int64
}

// TxKind is what a Store transaction did, for an Observer.
type TxKind string

const (
	TxWrite TxKind = "write"
	TxRead  TxKind = "read"
)

// Observer is told what a Store does, for metrics. Its methods are called
// on the store's goroutines, so they must be quick and safe for
// concurrent use.
type Observer interface {
	// Transaction reports one try of a transaction, from its begin to
	// its commit (or the error that ended it; nil: committed).
	Transaction(kind TxKind, took time.Duration, err error)
	// EventsCommitted reports n events of type t that a committed
	// transaction wrote.
	EventsCommitted(t EventType, n int)
}

package coordinator

import (
	"slices"

	"github.com/gbc-farm/gbc/db"
)

// The coordinator's vocabulary for its callers. The operator commands
// (sshd) talk to the coordinator only, never to the store, so they name
// roles, builds, filters and events through this package: the types are
// the store's, declared once in db, and the aliases below are what the
// coordinator's API promises. A caller that needs another one adds it
// here rather than importing db.

// Role is what a key may do.
type Role = db.Role

// The roles.
const (
	RoleAdmin    = db.RoleAdmin
	RoleOperator = db.RoleOperator
	RoleReader   = db.RoleReader
	RoleAgent    = db.RoleAgent
)

// Key is an SSH public key with its role.
type Key = db.Key

// Agent is a registered build agent.
type Agent = db.Agent

// Build is one build with its attempts and outputs.
type Build = db.Build

// Attempt is one allocation of a build to an agent, with its phases.
type Attempt = db.Attempt

// Phase is a stage of an attempt (db.Phases lists them in order).
type Phase = db.Phase

// BuildState is where a build is in its lifecycle.
type BuildState = db.BuildState

// The build states.
const (
	StateScheduled        = db.StateScheduled
	StateAllocated        = db.StateAllocated
	StateStarted          = db.StateStarted
	StateSucceeded        = db.StateSucceeded
	StateFailed           = db.StateFailed
	StateCanceled         = db.StateCanceled
	StateFailedDependency = db.StateFailedDependency
)

// BuildFilter selects builds for Builds and the builds cancel command.
type BuildFilter = db.BuildFilter

// Tag is a key=value label on a build.
type Tag = db.Tag

// Hardware is what an agent reported about its machine.
type Hardware = db.Hardware

// Event is one row of the event log.
type Event = db.Event

// EventType names a kind of event.
type EventType = db.EventType

// EventFilter selects events for Events and EventsPruned.
type EventFilter = db.EventFilter

// EventTypes returns every event type.
func EventTypes() []EventType { return slices.Clone(db.EventTypes) }

// ValidEventType reports whether t is an event type.
func ValidEventType(t EventType) bool { return db.ValidEventType(t) }

// Errors the coordinator's operations return, for errors.Is.
var (
	// ErrNotFound: no build, agent or key with that id.
	ErrNotFound = db.ErrNotFound
	// ErrConflict: the build is not in a state that allows the change.
	ErrConflict = db.ErrConflict
)

// BuildQuery selects one page of builds for BuildsPage.
type BuildQuery = db.BuildQuery

// BuildPage is one page of builds and the cursor of the next.
type BuildPage = db.BuildPage

// Page sizes of BuildsPage.
const (
	DefaultPageLimit = db.DefaultPageLimit
	MaxPageLimit     = db.MaxPageLimit
)

// AttemptCount is how many of an agent's attempts ended one way.
type AttemptCount = db.AttemptCount

// OutputResult is a built, verified output.
type OutputResult = db.OutputResult

// Outcome is how an attempt ended; AttemptKind why one failed.
type (
	Outcome     = db.Outcome
	AttemptKind = db.AttemptKind
)

// ValidBuildState reports whether s names a build state.
func ValidBuildState(s BuildState) bool {
	switch s {
	case StateScheduled, StateAllocated, StateStarted, StateSucceeded, StateFailed, StateCanceled, StateFailedDependency:
		return true
	}
	return false
}

// The attempt kinds (why a failed or requeued attempt ended).
const (
	KindBuild            = db.KindBuild
	KindSetup            = db.KindSetup
	KindWaitingForInputs = db.KindWaitingForInputs
	KindVerification     = db.KindVerification
	KindInfrastructure   = db.KindInfrastructure
	KindCoordinator      = db.KindCoordinator
)

// Check states, for callers.
const (
	CheckPending        = db.CheckPending
	CheckReproducible   = db.CheckReproducible
	CheckUnreproducible = db.CheckUnreproducible
	CheckFailed         = db.CheckFailed
)

// CheckState is a check's verdict so far.
type CheckState = db.CheckState

// CheckFilter selects checks for Checks.
type CheckFilter = db.CheckFilter

// Check is a recorded check.
type Check = db.Check

// CheckCount counts derivations by system and their latest check's state.
type CheckCount = db.CheckCount

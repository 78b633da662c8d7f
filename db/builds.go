package db

import "time"

// BuildState is where a build is in its lifecycle.
type BuildState string

const (
	StateScheduled        BuildState = "scheduled"
	StateAllocated        BuildState = "allocated"
	StateStarted          BuildState = "started"
	StateSucceeded        BuildState = "succeeded"
	StateFailed           BuildState = "failed"
	StateCanceled         BuildState = "canceled"
	StateFailedDependency BuildState = "failed-dependency"
)

// Terminal reports whether no further transition is possible.
func (s BuildState) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCanceled, StateFailedDependency:
		return true
	}
	return false
}

// Tag is a key=value label on a build.
type Tag struct {
	Key, Value string
}

// Tag keys that are protocol: the coordinator and the built-in hooks put
// them on the builds they submit, and read them back to decide.
const (
	TagRetry    = "retry"     // 1, 2, …: which retry of the original this is
	TagRetryOf  = "retry-of"  // the failed build this one retries
	TagNeededBy = "needed-by" // the build whose missing input this is
)

// Outcome is how an attempt ended.
type Outcome string

const (
	OutcomeOpen      Outcome = "" // still allocated or started
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeCanceled  Outcome = "canceled"
	OutcomeRequeued  Outcome = "requeued"
)

// AttemptKind says why an attempt that did not succeed ended, as data:
// what counts toward a retry limit is decided from it, never from the
// reason's text. It is stored as text; a new kind is one constant here and
// one case in Valid.
type AttemptKind string

const (
	// KindNone: the attempt succeeded, was canceled or is still open (and
	// attempts recorded before kinds were, whose reason fits no kind).
	KindNone AttemptKind = ""
	// KindBuild: the derivation's fault (the builder failed or timed out).
	KindBuild AttemptKind = "build"
	// KindSetup: the agent could not set the build up (an input missing,
	// the store daemon refused); counts toward the setup-failure limit.
	KindSetup AttemptKind = "setup"
	// KindWaitingForInputs: a setup failure after which the build waits
	// for builds of its inputs here; counts against nobody.
	KindWaitingForInputs AttemptKind = "waiting-for-inputs"
	// KindVerification: the uploaded outputs did not verify; counts toward
	// the attempt limit.
	KindVerification AttemptKind = "verification"
	// KindInfrastructure: the agent or its link went away (disconnected,
	// reconnected without the build); counts against nobody.
	KindInfrastructure AttemptKind = "infrastructure"
	// KindCoordinator: the coordinator's own trouble (its disk under the
	// free-space reserve or full, a publish that failed after the outputs
	// verified); counts against nobody, neither the build nor the agent.
	KindCoordinator AttemptKind = "coordinator"
)

// Valid reports whether k is a kind a failed or requeued attempt may have.
func (k AttemptKind) Valid() bool {
	switch k {
	case KindBuild, KindSetup, KindWaitingForInputs, KindVerification, KindInfrastructure, KindCoordinator:
		return true
	}
	return false
}

// DerivationOutput is an output a derivation declares.
type DerivationOutput struct {
	Name string
	Path string
}

// OutputResult is a built output whose NAR the coordinator verified.
type OutputResult struct {
	Name        string
	Path        string
	NarHash     string // "sha256:<nix base32>"
	NarSize     int64
	FileHash    string
	FileSize    int64
	Compression string
	References  []string // full store paths
	File        string   // where the compressed NAR lives, relative to the state dir
}

// Attempt is one allocation of a build to an agent.
type Attempt struct {
	Number      int
	AgentID     string
	AllocatedAt time.Time
	StartedAt   time.Time
	EndedAt     time.Time
	Outcome     Outcome
	Kind        AttemptKind // why a failed or requeued attempt ended
	Reason      string      // failure or requeue reason, for people
	ExitCode    int
	Hardware    Hardware // what the agent reported at start
	// Phases are the phases the attempt entered, in phase order, each
	// with when it began (PhaseBuilding is StartedAt); Spans says when
	// each ended.
	Phases []PhaseTime
}

// NewBuild is what a submission records.
type NewBuild struct {
	ID               string
	Derivation       string
	System           string
	Priority         int
	Tags             []Tag
	RequiredFeatures []string
	Outputs          []DerivationOutput
	CreatedAt        time.Time
	// DeferUntil holds the build back until then (zero: not deferred).
	DeferUntil time.Time
	// TimeoutSeconds and MaxSilentSeconds bound the build on its agent;
	// 0 means the coordinator's default when it dispatches.
	TimeoutSeconds   int
	MaxSilentSeconds int
	// InputDerivations are the .drv paths of the derivation's inputs
	// (its inputDrvs), recorded so that the queue can be rebuilt at start
	// without re-reading every .drv. Nil means not recorded (builds from
	// before migration 0004, or a caller that did not read the .drv): the
	// coordinator then re-reads the .drv. A derivation without inputs has
	// a non-nil empty slice. Paths must be non-empty and contain no
	// newline.
	InputDerivations []string
}

// Build is a build with everything `build show` needs.
type Build struct {
	NewBuild
	State         BuildState
	AgentID       string // agent of the latest attempt, if any
	StartedAt     time.Time
	EndedAt       time.Time
	FailureReason string
	// FailedInput and FailedBuild: for a failed-dependency build, the
	// input derivation whose build failed, and that build.
	FailedInput string
	FailedBuild string
	Attempts    []Attempt
	Results     []OutputResult
}

// BuildFilter selects builds for listings; zero values mean "any".
type BuildFilter struct {
	State   BuildState
	AgentID string
	// Derivation selects the builds of one .drv path.
	Derivation string
	// EndedBefore selects builds that ended before then (zero: any).
	EndedBefore time.Time
	Limit       int // 0: no limit
}

// BuildQuery selects one page of builds, newest first (recording order),
// for the web interface; zero values mean "any". Every filter is served by
// an index that walks its builds in recording order, so a page costs about
// the same however many builds there are.
type BuildQuery struct {
	State  BuildState
	System string
	// Name is the derivation's name: its base name without the hash and
	// ".drv" (hello-2.12).
	Name string
	// Tag selects builds carrying this key=value tag (empty Key: any).
	Tag     Tag
	AgentID string // builds whose latest attempt ran on this agent
	// Before is a cursor from an earlier page's Next: only builds
	// recorded before it (0: from the newest).
	Before int64
	Limit  int // at most this many (1 … MaxPageLimit; 0: DefaultPageLimit)
}

// Page sizes of BuildsPage.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// BuildPage is one page of builds (as Builds returns them: without
// attempts and results) and the cursor of the next page (0: this is the
// last).
type BuildPage struct {
	Builds []Build
	Next   int64
}

// AttemptCount is how many attempts on an agent ended one way.
type AttemptCount struct {
	Outcome Outcome
	Kind    AttemptKind
	Count   int
}

// DependencyFailure is one build to move to failed-dependency and why:
// the input derivation whose build failed, and that build.
type DependencyFailure struct {
	ID          string
	FailedInput string
	FailedBuild string
	// InputCanceled: that build was canceled rather than failed.
	InputCanceled bool
}

// Reason is the failure reason recorded for people.
func (d DependencyFailure) Reason() string {
	r := "dependency failed: input " + d.FailedInput + " (build " + d.FailedBuild + ")"
	if d.InputCanceled {
		r += " was canceled"
	}
	return r
}

// QueuedBuild is a scheduled build as the in-memory queue needs it: no
// outputs, timeouts, attempts or results.
type QueuedBuild struct {
	ID               string
	Derivation       string
	System           string
	Priority         int
	Tags             []Tag
	RequiredFeatures []string
	CreatedAt        time.Time
	DeferUntil       time.Time // zero: not deferred
	// InputDerivations as recorded (see NewBuild): nil when not recorded.
	InputDerivations []string
}

// Queued is what the in-memory queue needs of a new build (the fields
// ScheduledBuildsPage returns for a recorded one).
func (b NewBuild) Queued() QueuedBuild {
	return QueuedBuild{ID: b.ID, Derivation: b.Derivation, System: b.System, Priority: b.Priority,
		Tags: b.Tags, RequiredFeatures: b.RequiredFeatures, CreatedAt: b.CreatedAt, DeferUntil: b.DeferUntil,
		InputDerivations: b.InputDerivations}
}

// Allocation is an allocated build as dispatch sends it to the agent.
type Allocation struct {
	ID               string
	Derivation       string
	System           string
	Priority         int
	Attempt          int
	Outputs          []DerivationOutput
	TimeoutSeconds   int // 0: the coordinator's default
	MaxSilentSeconds int // 0: the coordinator's default
}

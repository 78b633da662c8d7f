package db

import "time"

// CheckState is a reproducibility check's verdict so far.
type CheckState string

const (
	// CheckPending: a side has not ended yet.
	CheckPending CheckState = "pending"
	// CheckReproducible: every side built, every output's NAR the same.
	CheckReproducible CheckState = "reproducible"
	// CheckUnreproducible: every side built, some output's NARs differ.
	CheckUnreproducible CheckState = "unreproducible"
	// CheckFailed: a side did not build.
	CheckFailed CheckState = "failed"
)

// Valid reports whether s is a check state.
func (s CheckState) Valid() bool {
	switch s {
	case CheckPending, CheckReproducible, CheckUnreproducible, CheckFailed:
		return true
	}
	return false
}

// CheckSideCache is the side number of the NAR already published in the
// cache (a check --against-cache); build sides are 1, 2, ….
const CheckSideCache = 0

// CheckOutput is one output of a side that built: its NAR hash and size,
// and the compressed NAR the coordinator keeps for the check.
type CheckOutput struct {
	Name        string
	Path        string
	NarHash     string // "sha256:<nix base32>"
	NarSize     int64
	File        string // relative to the state directory
	Compression string
}

// CheckSide is one of the builds compared (or the cache, side 0).
type CheckSide struct {
	Side    int
	BuildID string // empty for the cache side
	// AgentID built it: the agent of the build once it ended; for the
	// cache side, the agent whose build published it, if known.
	AgentID string
	// Outputs are recorded when the side ends successfully.
	Outputs []CheckOutput
}

// NewCheck is what a check submission records (with its builds).
type NewCheck struct {
	ID           string
	Derivation   string
	System       string
	Agents       int // build sides wanted, on distinct agents
	AgainstCache bool
	Priority     int
	CreatedAt    time.Time
	Sides        []CheckSide
}

// Check is a recorded check.
type Check struct {
	NewCheck
	State CheckState
	// Unreproducible names the outputs whose NARs differ.
	Unreproducible []string
	EndedAt        time.Time
}

// CheckFilter selects checks for listings; zero values mean any.
type CheckFilter struct {
	State      CheckState
	Derivation string
	Limit      int // 0: no limit
}

// CheckCount is how many derivations of a system have their latest check
// in a state.
type CheckCount struct {
	System string
	State  CheckState
	Count  int
}

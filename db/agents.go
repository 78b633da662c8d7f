package db

import "time"

// Role is what a key may do.
type Role string

const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleReader   Role = "reader"
	RoleAgent    Role = "agent"
)

// Key is an SSH public key with its role. Agent keys are bound to one agent.
type Key struct {
	Fingerprint   string // "SHA256:…" as ssh-keygen -l prints it
	AuthorizedKey string // one authorized_keys line, without options
	Role          Role
	AgentID       string // only for RoleAgent
	Comment       string
	CreatedAt     time.Time
}

// Agent is a registered build agent.
type Agent struct {
	ID         string
	Name       string
	Active     bool
	CreatedAt  time.Time
	LastSeenAt time.Time // zero if never connected
	// ArchivedAt is when the agent was archived (zero: not archived). An
	// archived agent is inactive, has no keys and is hidden from listings
	// unless asked; its builds and attempts keep naming it.
	ArchivedAt time.Time
}

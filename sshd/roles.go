package sshd

import "github.com/gbc-farm/gbc/coordinator"

// rank orders the operator roles. Agent keys and anything unknown rank 0,
// which no command accepts: the check fails closed.
func rank(r coordinator.Role) int {
	switch r {
	case coordinator.RoleAdmin:
		return 3
	case coordinator.RoleOperator:
		return 2
	case coordinator.RoleReader:
		return 1
	}
	return 0
}

// allowed is the one authorisation decision for commands: the caller's
// role must rank at least the command's minimum, and the minimum must be a
// real operator role.
func allowed(have, need coordinator.Role) bool {
	return rank(need) > 0 && rank(have) >= rank(need)
}

// subsystemAllowed is the decision for subsystems: only agent keys may
// open the agent protocol and the upload tree.
func subsystemAllowed(p principal, name string) bool {
	switch name {
	case "gbc-agent-v1", "sftp":
		return p.Role == coordinator.RoleAgent && p.AgentID != ""
	}
	return false
}

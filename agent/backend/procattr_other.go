//go:build !linux

package backend

import "syscall"

// procAttr puts a store command in its own process group; only Linux can
// tie its life to the agent's.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

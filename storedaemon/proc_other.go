//go:build !linux

package storedaemon

import "syscall"

// daemonProcAttr puts a started daemon in its own process group.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

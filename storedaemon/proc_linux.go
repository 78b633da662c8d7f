package storedaemon

import "syscall"

// daemonProcAttr puts a started daemon in its own process group and has
// the kernel kill it when the process that started it dies.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

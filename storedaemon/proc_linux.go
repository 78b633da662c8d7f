package storedaemon

import "syscall"

// daemonProcAttr puts a started daemon in its own process group and has
// the kernel send it SIGTERM when the thread that started it dies (Go
// threads live as long as the process, so: when the agent dies). On
// SIGTERM a daemon kills its builder before it exits; SIGKILL would leave
// the builder running in its own session.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

package backend

import "syscall"

// procAttr puts a store command in its own process group and has the
// kernel send it SIGTERM when the agent's thread that started it dies.
// Go threads live as long as the process (nothing here locks and ends
// one), so in practice that is when the agent dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

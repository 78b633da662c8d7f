package hooks

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the program in its own process group (so a timeout
// kills its children too) and has the kernel kill it if the coordinator
// dies: after a crash the event runs again anyway, and a stale copy must
// not keep running next to the new one.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

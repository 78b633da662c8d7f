package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startCoordinatorOnTmpfs runs the coordinator in a mount namespace of its
// own with its state directory on a tmpfs of size (mount's size=), so its
// disk can be filled without touching the machine's. It returns the path
// through which the test sees that state directory.
func (f *farm) startCoordinatorOnTmpfs(size string, extra ...string) string {
	t := f.t
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	if err := os.MkdirAll(f.state, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-m", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"`, f.state, size,
		gbcBin, "coordinator", "--state-dir", f.state, "--listen", "127.0.0.1:0", "--admin-key", f.admin.Path + ".pub"}, extra...)
	f.coord = start(t, "unshare", args...)
	m := f.coord.log.waitFor(t, addrRE, 30*time.Second)
	f.addr, f.port = m[1], m[2]
	// unshare and sh exec, so the process is the coordinator, and its root
	// seen through /proc resolves paths in its mount namespace.
	state := filepath.Join(fmt.Sprintf("/proc/%d/root", f.coord.cmd.Process.Pid), f.state)
	hostPub, err := os.ReadFile(filepath.Join(state, "ssh_host_ed25519_key.pub"))
	if err != nil {
		t.Fatalf("host key: %v", err)
	}
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", f.port, strings.TrimSpace(string(hostPub)))
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	return state
}

// waitStatus polls `status` until it contains want (or, with not, until it
// does not).
func (f *farm) waitStatus(want string, not bool, d time.Duration) string {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := f.mustSSH("status")
		if strings.Contains(st, want) != not {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("status after %v (want %q present=%v):\n%s", d, want, !not, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCoordinatorDiskFullIsNotChargedToBuilds: the coordinator's state
// directory (a small tmpfs) filled past --min-free-space pauses
// allocation (status says so), refuses the running build's upload with a
// message saying why, sends that build back to the queue charged to
// nobody, keeps new builds queued, and resumes when space returns: every
// build succeeds, none failed, the agent is not avoided.
func TestCoordinatorDiskFullIsNotChargedToBuilds(t *testing.T) {
	t.Parallel()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	state := f.startCoordinatorOnTmpfs("64m", "--heartbeat", "1s", "--min-free-space", "24MiB")
	a := f.addAgent("agent-disk", "--max-parallel-builds", "1")
	nonce := fmt.Sprint(time.Now().UnixNano())

	g := newGatedBuild(t, t.TempDir(), nonce)
	running := f.mustSSH("build " + g.drv)
	g.waitBuilders(t, 1, time.Minute)
	t.Cleanup(func() { g.open(t) })

	// Leave 16 MiB of the 64: under the 24 MiB reserve.
	filler := filepath.Join(state, "filler")
	run(t, "dd", "if=/dev/zero", "of="+filler, "bs=1M", "count=48", "status=none")
	st := f.waitStatus("allocation paused", false, 30*time.Second)
	if !strings.Contains(st, "--min-free-space") {
		t.Errorf("status does not say why allocation is paused:\n%s", st)
	}
	queued := f.mustSSH("build " + instantiate(t, nonce+"-queued", "base"))

	// The build finishes; its upload is refused for the coordinator's
	// disk, and the agent is told so.
	g.open(t)
	a.log.waitFor(t, mustRE(`upload failed.*under its reserve`), time.Minute)
	deadline := time.Now().Add(time.Minute)
	for {
		b := f.showSched(running)
		if len(b.Attempts) > 0 && b.Attempts[0].Outcome == "requeued" {
			if b.Attempts[0].Kind != "coordinator" || b.State != "scheduled" {
				t.Fatalf("refused upload: state %s, attempts %+v", b.State, b.Attempts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build not requeued after its upload was refused: %+v", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b := f.showSched(queued); b.State != "scheduled" {
		t.Fatalf("build submitted while paused is %s", b.State)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	f.waitStatus("allocation paused", true, 30*time.Second)
	for _, id := range []string{running, queued} {
		b := f.waitState(id, 2*time.Minute, "succeeded", "failed")
		if b.State != "succeeded" || b.Agent != a.ID {
			t.Fatalf("build %s: %s on %s, attempts %+v", id, b.State, b.Agent, b.Attempts)
		}
		for _, at := range b.Attempts[:len(b.Attempts)-1] {
			if at.Kind != "coordinator" {
				t.Errorf("build %s: attempt %+v charged to someone", id, at)
			}
		}
	}
}

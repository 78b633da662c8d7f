package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gatedBuild is a derivation whose builder appends its PID to pids, then
// waits until release exists before it writes its output.
type gatedBuild struct {
	drv, pids, release string
}

func newGatedBuild(t *testing.T, dir, nonce string) gatedBuild {
	t.Helper()
	g := gatedBuild{pids: filepath.Join(dir, "pids"), release: filepath.Join(dir, "release")}
	script := fmt.Sprintf("echo $$ >> %s; while [ ! -e %s ]; do /bin/sleep 0.1; done; echo ok > $out", g.pids, g.release)
	expr := fmt.Sprintf(`derivation { name = "gbc-gated"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" %q ]; nonce = %q; }`, script, nonce)
	f := filepath.Join(dir, "gated.nix")
	if err := os.WriteFile(f, []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	g.drv = run(t, "nix-instantiate", f)
	return g
}

// builders returns the PIDs of every builder run so far, oldest first.
func (g gatedBuild) builders() []int {
	b, _ := os.ReadFile(g.pids)
	var pids []int
	for _, l := range lines(string(b)) {
		if p, err := strconv.Atoi(l); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// waitBuilders waits until n builders have started and returns their PIDs.
func (g gatedBuild) waitBuilders(t *testing.T, n int, d time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p := g.builders(); len(p) >= n {
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d builder(s) started within %v, want %d", len(g.builders()), d, n)
	return nil
}

func (g gatedBuild) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(g.release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// alive reports whether pid is a live process (a zombie counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// waitDead waits up to d for pid to end; on failure it kills it so that
// nothing outlives the test.
func waitDead(t *testing.T, pid int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	t.Fatalf("%s (pid %d) still running %v later", what, pid, d)
}

// gatedOnAgent starts a farm whose coordinator expects heartbeats every
// second and keeps an absent agent's builds for grace, with one
// single-slot agent called name running a gated build: it returns the
// farm, the agent, the gate, the build's id and its builder's pid.
// Whatever happens, the builders end with the test.
func gatedOnAgent(t *testing.T, grace, name string) (*farm, agentProc, gatedBuild, string, int) {
	t.Helper()
	f := newFarm(t)
	f.coord.stop(t)
	f.startCoordinator("--heartbeat", "1s", "--disconnect-grace", grace)
	a := f.addAgent(name, "--max-parallel-builds", "1")
	g := newGatedBuild(t, t.TempDir(), fmt.Sprint(time.Now().UnixNano()))
	id := f.mustSSH("build " + g.drv)
	first := g.waitBuilders(t, 1, time.Minute)[0]
	t.Cleanup(func() { g.open(t) })
	return f, a, g, id, first
}

// TestKilledAgentStopsItsBuilderAndLosesBuildAtOnce: kill -9 of an agent
// mid-build ends the builder it started; the restarted agent's hello
// lists nothing, so the build is requeued at once (the grace is ten
// minutes here) and built again by it.
func TestKilledAgentStopsItsBuilderAndLosesBuildAtOnce(t *testing.T) {
	t.Parallel()
	f, a, g, id, first := gatedOnAgent(t, "10m", "agent-killed")

	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	if _, ok := a.exited(10 * time.Second); !ok {
		t.Fatal("agent did not die")
	}
	waitDead(t, first, 30*time.Second, "the killed agent's builder")

	f.startAgent(a.Key, "agent-killed", "--max-parallel-builds", "1")
	if pids := g.waitBuilders(t, 2, time.Minute); pids[1] == first {
		t.Fatalf("builder pids %v", pids)
	}
	g.open(t)
	b := f.waitState(id, time.Minute, "succeeded", "failed")
	if b.State != "succeeded" || b.Agent != a.ID {
		t.Fatalf("build %s on %s", b.State, b.Agent)
	}
	if len(b.Attempts) != 2 || b.Attempts[0].Outcome != "requeued" || b.Attempts[0].Reason != "agent reconnected without the build" {
		t.Fatalf("attempts %+v", b.Attempts)
	}
}

// TestStoppedAgentPastGraceGetsItsBuildBack: an agent frozen (SIGSTOP)
// past the heartbeat watchdog and the grace loses its build to the queue;
// when it wakes it reconnects still running it, is told to abort it, and
// is given the same build again in the same connect. That new attempt
// must run (not be taken for the aborted one) and succeed.
func TestStoppedAgentPastGraceGetsItsBuildBack(t *testing.T) {
	t.Parallel()
	f, a, g, id, first := gatedOnAgent(t, "2s", "agent-frozen")

	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	f.coord.log.waitFor(t, mustRE(`build requeued.*`+id+`|build requeued.*reason="agent disconnected"`), time.Minute)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	a.log.waitFor(t, mustRE(`abort=\[`+id+`\]`), time.Minute)
	pids := g.waitBuilders(t, 2, time.Minute)
	waitDead(t, first, 30*time.Second, "the aborted run's builder")
	if pids[1] == first {
		t.Fatalf("builder pids %v", pids)
	}
	g.open(t)
	b := f.waitState(id, time.Minute, "succeeded", "failed")
	if b.State != "succeeded" || len(b.Attempts) != 2 || b.Attempts[0].Reason != "agent disconnected" {
		t.Fatalf("build %s, attempts %+v", b.State, b.Attempts)
	}
	var st struct {
		Allocated int `json:"allocated"`
	}
	if err := jsonUnmarshal(f.mustSSH("status --json"), &st); err != nil || st.Allocated != 0 {
		t.Errorf("status after success: %d allocated (%v)", st.Allocated, err)
	}
}

// TestUnregisteredAgentExitsAndNameIsRegistered: an agent whose key is not
// registered exits with a message saying so (no retry loop); a registered
// one is known by its registered name whatever --name says.
func TestUnregisteredAgentExitsAndNameIsRegistered(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	stranger := newKey(t, f.dir, "stranger")
	p := f.startAgent(stranger, "stranger")
	err, ok := p.exited(30 * time.Second)
	if !ok {
		t.Fatalf("agent with an unregistered key still running:\n%s", p.log.String())
	}
	if err == nil || !strings.Contains(p.log.String(), "not registered") {
		t.Fatalf("exit %v, log:\n%s", err, p.log.String())
	}

	key := newKey(t, f.dir, "builder-reg")
	id := f.mustSSH(fmt.Sprintf("agent new --name builder-reg --key '%s'", key.Pub))
	f.startAgent(key, "some-host-name")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			Agents []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"agents"`
		}
		if err := jsonUnmarshal(f.mustSSH("status --json"), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Agents) == 1 {
			if st.Agents[0].ID != id || st.Agents[0].Name != "builder-reg" {
				t.Fatalf("connected agent %+v, want %s named builder-reg", st.Agents[0], id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent did not connect")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

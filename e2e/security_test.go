package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUnauthenticatedFlood: a bounded flood of TCP connections that never
// start the SSH handshake, from one loopback address, fills only that
// address's share; while it lasts `status` answers over real ssh and a
// real agent builds.
func TestUnauthenticatedFlood(t *testing.T) {
	f := newFarmWith(t, "--max-unauthenticated", "64", "--max-unauthenticated-per-source", "8")
	f.addAgent("flood-agent")
	f.coord.log.waitFor(t, regexp.MustCompile(`agent connected`), 30*time.Second)

	const n = 300 // bounded in count; each dial is bounded in time
	admitted := 0
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", f.addr)
		if err != nil {
			t.Fatalf("flood dial: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "SSH-2.0-") {
			admitted++
		}
	}
	if admitted != 8 {
		t.Fatalf("%d of %d flood connections got an SSH greeting, want the per-source cap 8", admitted, n)
	}
	f.coord.log.waitFor(t, regexp.MustCompile(`connections refused: too many still in the SSH handshake`), 10*time.Second)

	// The flood connections are still open: operators and agents work.
	if out := f.mustSSH("status"); !strings.Contains(out, "flood-agent") {
		t.Fatalf("status during the flood does not list the agent:\n%s", out)
	}
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	r := f.ssh(f.admin, "build --wait "+drv)
	if r.Code != 0 || !strings.Contains(r.Stdout, "succeeded") {
		t.Fatalf("build during the flood: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestRemovedKeyEndsFollow: a reader's `events --follow` over OpenSSH
// ends as soon as its key is removed, and the key gets nothing after.
func TestRemovedKeyEndsFollow(t *testing.T) {
	f := newFarm(t)
	reader := newKey(t, f.dir, "reader")
	f.mustSSH("key add --role reader '" + reader.Pub + "'")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := f.sshCmd(ctx, reader, "events --follow")
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	f.coord.log.waitFor(t, regexp.MustCompile(`msg=command command=events[^\n]*role=reader`), 30*time.Second)

	f.mustSSH("key remove " + fingerprint(t, reader))
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("events --follow exited 0 after its key was removed:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("events --follow still running 30s after its key was removed:\n%s", out.String())
	}
	f.coord.log.waitFor(t, regexp.MustCompile(`connections of a revoked key closed[^\n]*reason="key removed"`), 10*time.Second)
	if r := f.ssh(reader, "status"); r.Code != 255 || !strings.Contains(r.Stderr, "Permission denied") {
		t.Fatalf("removed key: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

// TestDeactivatedAgentIsCutOff: deactivating a real `gbc agent` in the
// middle of a build closes its connection at once, sends the build back
// to the queue (not counted against it) and keeps the agent out; after
// `activate` it can connect again and the build succeeds.
func TestDeactivatedAgentIsCutOff(t *testing.T) {
	f := newFarm(t)
	a := f.addAgent("revoked-agent")
	f.coord.log.waitFor(t, regexp.MustCompile(`agent connected`), 30*time.Second)
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "slow", "--argstr", "slowSleep", "3")
	id := f.mustSSH("build " + drv)
	for i := 0; f.show(id).State != "started"; i++ {
		if i > 300 {
			t.Fatalf("build %s never started: %+v", id, f.show(id))
		}
		time.Sleep(100 * time.Millisecond)
	}

	f.mustSSH("agent " + a.ID + " deactivate")
	f.coord.log.waitFor(t, regexp.MustCompile(`connections of a revoked key closed[^\n]*reason="agent deactivated"`), 10*time.Second)
	a.log.waitFor(t, regexp.MustCompile(`disconnected from coordinator; retrying`), 30*time.Second)
	if b := f.show(id); b.State == "succeeded" || b.State == "started" {
		t.Fatalf("build after deactivation is %s, want back in the queue", b.State)
	}
	// Its reconnect is refused at authentication.
	f.coord.log.waitFor(t, regexp.MustCompile(`key refused[^\n]*is deactivated`), 30*time.Second)
	a.stop(t)
	var shown struct {
		Attempts []struct {
			Outcome string `json:"outcome"`
			Reason  string `json:"reason"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("build show "+id+" --json")), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.Attempts) != 1 || shown.Attempts[0].Outcome != "requeued" || shown.Attempts[0].Reason != "agent deactivated" {
		t.Fatalf("attempts after deactivation: %+v, want one requeued (agent deactivated)", shown.Attempts)
	}

	f.mustSSH("agent " + a.ID + " activate")
	f.startAgent(a.Key, "revoked-agent")
	r := f.ssh(f.admin, "build --wait --ignore-if-build-for-outputs-exists "+drv)
	if r.Code != 0 || !strings.Contains(r.Stdout, "build "+id+" succeeded") {
		t.Fatalf("after activate: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestDeactivatedAgentStopsItsBuilds: a real `gbc agent` deactivated in
// the middle of a build that never ends on its own is refused when it
// reconnects; it then exits by itself, soon, and the builder it started
// is gone (closing the daemon connection made the daemon kill it).
func TestDeactivatedAgentStopsItsBuilds(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	a := f.addAgent("stopped-agent", "--max-parallel-builds", "1")
	g := newGatedBuild(t, t.TempDir(), fmt.Sprint(time.Now().UnixNano()))
	f.mustSSH("build " + g.drv)
	pid := g.waitBuilders(t, 1, time.Minute)[0]
	t.Cleanup(func() { g.open(t) }) // whatever happens, the builder ends

	f.mustSSH("agent " + a.ID + " deactivate")
	err, ok := a.exited(60 * time.Second)
	if !ok {
		t.Fatalf("agent still running 60s after it was deactivated:\n%s", a.log.String())
	}
	if err == nil || !strings.Contains(a.log.String(), "refused the key") {
		t.Fatalf("agent exited with %v; want an error saying its key was refused:\n%s", err, a.log.String())
	}
	waitDead(t, pid, 30*time.Second, "the deactivated agent's builder")
}

// TestForwardingRefused: with the real ssh client, a stdio forward to the
// coordinator's own port or to another host, and a remote forward, are
// refused for operator and agent keys alike; nothing is connected.
func TestForwardingRefused(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	agentKey := newKey(t, f.dir, "fwd-agent")
	f.mustSSH(fmt.Sprintf("agent new --name fwd-agent --key '%s'", agentKey.Pub))
	for _, c := range []struct {
		name string
		key  sshKey
		args []string
	}{
		{"admin to the coordinator's port", f.admin, []string{"-W", "127.0.0.1:" + f.port}},
		{"admin to another host", f.admin, []string{"-W", "example.com:80"}},
		{"agent to the coordinator's port", agentKey, []string{"-W", "127.0.0.1:" + f.port}},
		{"admin remote forward", f.admin, []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"}},
	} {
		if got, err := forwardRefused(f, c.key, c.args...); err != nil {
			t.Errorf("%s: %v", c.name, err)
		} else {
			t.Logf("%s: %s", c.name, got)
		}
	}
}

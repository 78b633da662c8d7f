package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Scheduling end to end: real ssh, real gbc agents, real nix-store.

// schedJSON adds what these tests read from `build show --json`.
type schedJSON struct {
	buildJSON
	FailureReason string `json:"failure_reason"`
	FailedInput   string `json:"failed_input"`
	Attempts      []struct {
		Agent   string `json:"agent"`
		Outcome string `json:"outcome"`
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
	} `json:"attempts"`
}

func (f *farm) showSched(id string) schedJSON {
	f.t.Helper()
	var b schedJSON
	out := f.mustSSH("build show " + id + " --json")
	if err := jsonUnmarshal(out, &b); err != nil {
		f.t.Fatalf("build show --json: %v\n%s", err, out)
	}
	return b
}

// waitState polls until the build is in one of the states.
func (f *farm) waitState(id string, d time.Duration, states ...string) schedJSON {
	f.t.Helper()
	deadline := time.Now().Add(d)
	for {
		b := f.showSched(id)
		for _, s := range states {
			if b.State == s {
				return b
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("build %s is %s after %v, want %v", id, b.State, d, states)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return v
}

// TestPriorityOrderOnOneSlotAgent: builds queued before any agent exists
// start in priority order on an agent with one slot.
func TestPriorityOrderOnOneSlotAgent(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	nonce := fmt.Sprint(time.Now().UnixNano())
	prios := []int{1, 7, 3, -2}
	var ids []string
	for i, p := range prios {
		drv := instantiate(t, fmt.Sprintf("%s-prio-%d", nonce, i), "base")
		ids = append(ids, f.mustSSH(fmt.Sprintf("build --priority %d %s", p, drv)))
	}
	f.addAgent("agent-one-slot", "--max-parallel-builds", "1")
	var starts []time.Time
	for _, id := range ids {
		b := f.waitState(id, 2*time.Minute, "succeeded")
		starts = append(starts, mustTime(t, b.StartedAt))
	}
	// Expected order by priority: 7, 3, 1, -2 → ids[1], ids[2], ids[0], ids[3].
	order := []int{1, 2, 0, 3}
	for k := 1; k < len(order); k++ {
		if !starts[order[k-1]].Before(starts[order[k]]) {
			t.Errorf("priority %d started at %v, not before priority %d at %v",
				prios[order[k-1]], starts[order[k-1]], prios[order[k]], starts[order[k]])
		}
	}
}

// TestDependencyOrderChainAndDiamond: submitted dependents first, every
// build starts only after all its inputs ended successfully.
func TestDependencyOrderChainAndDiamond(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	f.addAgent("agent-deps", "--max-parallel-builds", "4")
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, a := range []string{"top", "left", "right", "base"} {
		drv[a] = instantiate(t, nonce, a)
	}
	r := f.ssh(f.admin, "build --wait "+drv["top"]+" "+drv["left"]+" "+drv["right"]+" "+drv["base"])
	if r.Code != 0 {
		t.Fatalf("build --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	out := lines(r.Stdout)
	id := map[string]string{"top": out[0], "left": out[1], "right": out[2], "base": out[3]}
	show := map[string]schedJSON{}
	for a, i := range id {
		show[a] = f.showSched(i)
	}
	after := func(dep, in string) {
		if s, e := mustTime(t, show[dep].StartedAt), mustTime(t, show[in].EndedAt); s.Before(e) {
			t.Errorf("%s started at %v before its input %s ended at %v", dep, s, in, e)
		}
	}
	// Chain base → left → top and diamond base → {left, right} → top.
	after("left", "base")
	after("right", "base")
	after("top", "left")
	after("top", "right")
}

// TestCancelRunningBuild: `build cancel` stops a running build on its agent,
// which then takes new work.
func TestCancelRunningBuild(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	a := f.addAgent("agent-cancel", "--max-parallel-builds", "1")
	nonce := fmt.Sprint(time.Now().UnixNano())
	slow := instantiate(t, nonce+"-slow", "base", "--argstr", "sleep", "60")
	id := f.mustSSH("build " + slow)
	f.waitState(id, time.Minute, "started")
	f.mustSSH("build cancel " + id)
	if b := f.showSched(id); b.State != "canceled" {
		t.Fatalf("after cancel: %s", b.State)
	}
	a.log.waitFor(t, mustRE(`cancel|abort`), 30*time.Second)
	// The slot is free again well before the 60 s sleep would end.
	quick := instantiate(t, nonce+"-quick", "base")
	start := time.Now()
	r := f.ssh(f.admin, "build --wait "+quick)
	if r.Code != 0 {
		t.Fatalf("build after cancel: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if d := time.Since(start); d > 45*time.Second {
		t.Errorf("next build took %v: the canceled build still held the slot", d)
	}
	if b := f.showSched(id); b.State != "canceled" {
		t.Fatalf("canceled build later %s", b.State)
	}
}

// TestFailedDependencyPropagation: the dependent of a failing build ends
// failed-dependency, naming the input that failed.
func TestFailedDependencyPropagation(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	f.addAgent("agent-faildep")
	nonce := fmt.Sprint(time.Now().UnixNano())
	broken := instantiate(t, nonce, "broken")
	after := instantiate(t, nonce, "after-broken")
	r := f.ssh(f.admin, "build --wait "+after+" "+broken)
	if r.Code == 0 {
		t.Fatalf("build --wait exited 0:\n%s", r.Stdout)
	}
	out := lines(r.Stdout)
	b := f.showSched(out[0])
	if b.State != "failed-dependency" || b.FailedInput != broken || !strings.Contains(b.FailureReason, out[1]) {
		t.Fatalf("dependent: state %s failed_input %q reason %q (want input %s, build %s)", b.State, b.FailedInput, b.FailureReason, broken, out[1])
	}
	if len(b.Attempts) != 0 {
		t.Errorf("dependent ran %d attempt(s)", len(b.Attempts))
	}
	if text := f.mustSSH("build show " + out[0]); !strings.Contains(text, "failed_input:") {
		t.Errorf("build show does not name the failed input:\n%s", text)
	}
}

// TestAgentKilledMidBuild: an agent killed while building goes absent; after
// the grace period its build completes on another agent.
func TestAgentKilledMidBuild(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	f.coord.stop(t)
	f.startCoordinator("--heartbeat", "1s", "--disconnect-grace", "2s")
	a1 := f.addAgent("agent-doomed")
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := instantiate(t, nonce, "base", "--argstr", "sleep", "4")
	id := f.mustSSH("build " + drv)
	if b := f.waitState(id, time.Minute, "started"); b.Agent != a1.ID {
		t.Fatalf("started on %s", b.Agent)
	}
	_ = a1.cmd.Process.Signal(syscall.SIGKILL)
	a1.exited(10 * time.Second)
	a2 := f.addAgent("agent-rescue")
	b := f.waitState(id, 2*time.Minute, "succeeded", "failed")
	if b.State != "succeeded" || b.Agent != a2.ID {
		t.Fatalf("build %s on %s, want succeeded on %s", b.State, b.Agent, a2.ID)
	}
	if len(b.Attempts) < 2 || b.Attempts[0].Agent != a1.ID || b.Attempts[0].Outcome != "requeued" {
		t.Fatalf("attempts: %+v", b.Attempts)
	}
}

// TestReconnectKeepsRunningBuild: the coordinator restarts while an agent
// builds; the agent reconnects, is told to continue, and its result counts.
func TestReconnectKeepsRunningBuild(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	a := f.addAgent("agent-steady")
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := instantiate(t, nonce, "base", "--argstr", "sleep", "8")
	id := f.mustSSH("build " + drv)
	f.waitState(id, time.Minute, "started")
	if err := f.coord.stop(t); err != nil {
		t.Fatalf("coordinator stop: %v", err)
	}
	f.startCoordinator("--listen", f.addr)
	a.log.waitFor(t, mustRE(`continue=\S*`+id), time.Minute)
	b := f.waitState(id, 2*time.Minute, "succeeded", "failed", "canceled")
	if b.State != "succeeded" || b.Agent != a.ID || len(b.Attempts) != 1 {
		t.Fatalf("after reconnect: %s on %s with %d attempt(s): %+v", b.State, b.Agent, len(b.Attempts), b.Attempts)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func mustRE(s string) *regexp.Regexp { return regexp.MustCompile(s) }

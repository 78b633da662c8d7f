package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// hookEvent is the part of an event these tests read.
type hookEvent struct {
	ID      int64    `json:"id"`
	Type    string   `json:"type"`
	Build   string   `json:"build"`
	Agent   string   `json:"agent"`
	Reason  string   `json:"reason"`
	Hook    string   `json:"hook"`
	EventID int64    `json:"event_id"`
	Tags    []string `json:"tags"`
	Outputs []struct {
		Name    string `json:"name"`
		Path    string `json:"path"`
		NarHash string `json:"nar_hash"`
	} `json:"outputs"`
}

// newFarmWith is newFarm with extra coordinator flags.
func newFarmWith(t *testing.T, extra ...string) *farm {
	t.Helper()
	f := &farm{t: t, dir: t.TempDir()}
	f.state = filepath.Join(f.dir, "state")
	f.admin = newKey(t, f.dir, "admin")
	f.startCoordinator(extra...)
	return f
}

func writeScript(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func readLines(path string) []string {
	b, _ := os.ReadFile(path)
	return lines(string(b))
}

func waitFile(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *farm) events(args string) []hookEvent {
	f.t.Helper()
	var es []hookEvent
	for _, l := range lines(f.mustSSH("events " + args)) {
		var e hookEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			f.t.Fatalf("events line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es
}

// TestHooks: an exec hook gets the succeeded event with its outputs on
// stdin (and GBC_* in its environment), its output lands in the
// coordinator's log; a hook that keeps failing is retried with backoff,
// then reported as a hook-failed event; retry-failed resubmits a failed
// build once, tagged.
func TestHooks(t *testing.T) {
	dir := t.TempDir()
	notify := writeScript(t, filepath.Join(dir, "notify.sh"),
		`cat > "`+dir+`/event-$GBC_EVENT_ID.json"
echo "$GBC_EVENT $GBC_BUILD_ID" >> "`+dir+`/calls"
echo "notified about $GBC_BUILD_ID"
`)
	failing := writeScript(t, filepath.Join(dir, "fail.sh"),
		`echo try >> "`+dir+`/tries"
echo "hook says no" >&2
exit 3
`)
	f := newFarmWith(t, "--hook", "succeeded="+notify, "--hook", "succeeded="+failing,
		"--hook-tries", "3", "--hook-backoff", "100ms", "--retry-failed", "1")
	f.addAgent("agent-hooks")
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := instantiate(t, nonce, "base")
	r := f.ssh(f.admin, "build --wait "+drv)
	if r.Code != 0 {
		t.Fatalf("build --wait: %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	id := lines(r.Stdout)[0]
	waitFile(t, "the exec hook", 30*time.Second, func() bool { return len(readLines(filepath.Join(dir, "calls"))) > 0 })
	if calls := readLines(filepath.Join(dir, "calls")); len(calls) != 1 || calls[0] != "succeeded "+id {
		t.Fatalf("hook calls %q, want one for %s", calls, id)
	}
	succ := f.events("--type succeeded")
	if len(succ) != 1 || succ[0].Build != id {
		t.Fatalf("succeeded events %+v", succ)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("event-%d.json", succ[0].ID)))
	if err != nil {
		t.Fatal(err)
	}
	var got hookEvent
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("hook stdin %q: %v", raw, err)
	}
	shown := f.show(id)
	if got.Type != "succeeded" || got.Build != id || got.Agent != shown.Agent || len(got.Outputs) != len(shown.Outputs) {
		t.Fatalf("hook got %+v, build %+v", got, shown)
	}
	for i, o := range got.Outputs {
		if o.Path != shown.Outputs[i].Path || o.NarHash != shown.Outputs[i].NarHash {
			t.Errorf("output %d: hook got %+v, build show %+v", i, o, shown.Outputs[i])
		}
	}
	f.coord.log.waitFor(t, regexp.MustCompile(`hook output.*line="notified about `+id+`"`), 10*time.Second)

	// The failing hook: 3 tries, then one hook-failed event.
	waitFile(t, "hook-failed", 30*time.Second, func() bool { return len(f.events("--type hook-failed")) > 0 })
	hf := f.events("--type hook-failed")
	if len(hf) != 1 || hf[0].EventID != succ[0].ID || hf[0].Build != id || !strings.Contains(hf[0].Hook, "fail.sh") ||
		!strings.Contains(hf[0].Reason, "exit status 3") || !strings.Contains(hf[0].Reason, "hook says no") {
		t.Fatalf("hook-failed events %+v", hf)
	}
	if tries := readLines(filepath.Join(dir, "tries")); len(tries) != 3 {
		t.Errorf("failing hook ran %d times, want 3", len(tries))
	}
	if n := strings.Count(f.coord.log.String(), "hook failed; will retry"); n != 2 {
		t.Errorf("%d retry lines in the coordinator log, want 2", n)
	}

	// retry-failed=1: the broken build is resubmitted once, tagged.
	broken := instantiate(t, nonce, "broken")
	bid := f.mustSSH("build " + broken)
	waitFile(t, "the retry to fail too", 60*time.Second, func() bool { return len(f.events("--type failed")) >= 2 })
	time.Sleep(500 * time.Millisecond) // a third build would show up now
	failed := f.events("--type failed")
	subs := f.events("--type submitted")
	if len(failed) != 2 || failed[0].Build != bid || len(subs) != 3 {
		t.Fatalf("failed %+v submitted %+v", failed, subs)
	}
	retry := subs[2]
	if retry.Build != failed[1].Build || strings.Join(retry.Tags, " ") != "retry=1 retry-of="+bid {
		t.Errorf("retry build %+v (tags %v)", retry, retry.Tags)
	}
}

// TestHookRunsAfterCoordinatorSIGKILL: the hook starts for a succeeded
// event and blocks; the coordinator is killed with SIGKILL while it runs
// (after the state change, before the hook finished); after a restart the
// hook runs again for the same event and completes. Deterministic: the
// hook only finishes once the test creates the release file.
func TestHookRunsAfterCoordinatorSIGKILL(t *testing.T) {
	dir := t.TempDir()
	hook := writeScript(t, filepath.Join(dir, "blocking.sh"),
		`echo "$GBC_EVENT_ID" >> "`+dir+`/runs"
cat > "`+dir+`/event.json"
while [ ! -e "`+dir+`/release" ]; do sleep 0.1; done
echo "$GBC_EVENT_ID" >> "`+dir+`/done"
`)
	t.Cleanup(func() { os.WriteFile(filepath.Join(dir, "release"), nil, 0o644) }) // never leave a loop behind
	flags := []string{"--hook", "succeeded=" + hook}
	f := newFarmWith(t, flags...)
	f.addAgent("agent-crash")
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	r := f.ssh(f.admin, "build --wait "+drv)
	if r.Code != 0 {
		t.Fatalf("build --wait: %d\n%s", r.Code, r.Stderr)
	}
	id := lines(r.Stdout)[0]
	waitFile(t, "the hook to start", 30*time.Second, func() bool { return len(readLines(filepath.Join(dir, "runs"))) == 1 })

	if err := f.coord.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.coord.exited(15 * time.Second); !ok {
		t.Fatal("coordinator did not die")
	}
	if done := readLines(filepath.Join(dir, "done")); len(done) != 0 {
		t.Fatalf("the hook finished before the kill: %v", done)
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.startCoordinator(flags...)
	waitFile(t, "the hook to run again after restart", 30*time.Second, func() bool {
		return len(readLines(filepath.Join(dir, "runs"))) == 2 && len(readLines(filepath.Join(dir, "done"))) >= 1
	})
	runs := readLines(filepath.Join(dir, "runs"))
	if runs[0] != runs[1] {
		t.Fatalf("runs for events %v, want the same event twice", runs)
	}
	var e hookEvent
	raw, _ := os.ReadFile(filepath.Join(dir, "event.json"))
	if err := json.Unmarshal(raw, &e); err != nil || e.Type != "succeeded" || e.Build != id || fmt.Sprint(e.ID) != runs[0] {
		t.Fatalf("event after restart %s (%v), want succeeded of %s", raw, err, id)
	}
	// Finished now: a further restart does not run it again.
	f.coord.log.waitFor(t, regexp.MustCompile(`hook ran.*event=`+runs[0]), 10*time.Second)
	if err := f.coord.stop(t); err != nil {
		t.Fatal(err)
	}
	f.startCoordinator(flags...)
	time.Sleep(time.Second)
	if runs := readLines(filepath.Join(dir, "runs")); len(runs) != 2 {
		t.Errorf("hook ran %d times after a clean restart, want 2", len(runs))
	}
}

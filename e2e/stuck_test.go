package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestNothingWaitsSilently: a build whose input nothing will build says so
// when submitted, in build show and in status; cancelling an input leaves
// no dependent scheduled; the operator's error messages say each thing
// once. All through the real OpenSSH client.
func TestNothingWaitsSilently(t *testing.T) {
	f := newFarm(t)
	agent := f.addAgent("stuck-agent")
	nonce := fmt.Sprint(time.Now().UnixNano())
	base := instantiate(t, nonce, "base")
	left := instantiate(t, nonce, "left")

	// left alone: under derivation-ordered allocation base blocks it and
	// nothing builds base.
	r := f.ssh(f.admin, "build "+left)
	if r.Code != 0 {
		t.Fatalf("build: exit %d %s", r.Code, r.Stderr)
	}
	id := strings.TrimSpace(r.Stdout)
	for _, want := range []string{"waits for inputs that nothing will build", base, "--ensure-all-related-derivation-outputs-have-successful-builds"} {
		if !strings.Contains(r.Stderr, want) {
			t.Fatalf("build's stderr does not say %q:\n%s", want, r.Stderr)
		}
	}
	var show struct {
		Queue struct {
			State             string   `json:"state"`
			UnbuildableInputs []string `json:"unbuildable_inputs"`
			BlockingInputs    []struct {
				Derivation  string   `json:"derivation"`
				Builds      []string `json:"builds"`
				Unbuildable bool     `json:"unbuildable"`
			} `json:"blocking_inputs"`
		} `json:"queue"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("build show --json "+id)), &show); err != nil {
		t.Fatal(err)
	}
	q := show.Queue
	if q.State != "waiting" || len(q.UnbuildableInputs) != 1 || q.UnbuildableInputs[0] != base ||
		len(q.BlockingInputs) != 1 || !q.BlockingInputs[0].Unbuildable || len(q.BlockingInputs[0].Builds) != 0 {
		t.Fatalf("build show --json queue: %+v", q)
	}
	if out := f.mustSSH("build show " + id); !strings.Contains(out, "unbuildable:") || !strings.Contains(out, base) {
		t.Fatalf("build show does not list the blocking input:\n%s", out)
	}
	if out := f.mustSSH("status"); !strings.Contains(out, "stuck: 1 build(s) wait for inputs that nothing will build") {
		t.Fatalf("status does not count the stuck build:\n%s", out)
	}
	var st struct {
		Stuck int `json:"stuck"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("status --json")), &st); err != nil || st.Stuck != 1 {
		t.Fatalf("status --json stuck %d (%v)", st.Stuck, err)
	}

	// Submitting base unblocks left, which then builds.
	r = f.ssh(f.admin, "build --wait "+base)
	if r.Code != 0 || strings.Contains(r.Stderr, "nothing will build") {
		t.Fatalf("build --wait base: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	var done []struct {
		State    string            `json:"state"`
		Outputs  []json.RawMessage `json:"outputs"`
		Attempts []json.RawMessage `json:"attempts"`
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := json.Unmarshal([]byte(f.mustSSH("builds --json --state succeeded")), &done); err != nil {
			t.Fatal(err)
		}
		if len(done) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(done) != 2 {
		t.Fatalf("%d succeeded builds, want base and left", len(done))
	}
	for _, b := range done {
		if len(b.Outputs) == 0 || len(b.Attempts) == 0 {
			t.Fatalf("builds --json: a succeeded build without outputs or attempts: %+v", b)
		}
	}
	if out := f.mustSSH("status"); strings.Contains(out, "stuck:") {
		t.Fatalf("status still reports stuck builds:\n%s", out)
	}

	// Cancelling an input: its dependent is failed-dependency, not left
	// scheduled; with --with-dependents both are canceled.
	nonce2 := nonce + "-cancel"
	base2, right2, top2 := instantiate(t, nonce2, "base"), instantiate(t, nonce2, "right"), instantiate(t, nonce2, "top")
	ids := lines(f.mustSSH(fmt.Sprintf("build --defer-until +1h %s %s", base2, right2)))
	f.mustSSH("build cancel " + ids[0])
	deadline = time.Now().Add(time.Minute)
	var dep struct {
		State         string `json:"state"`
		FailureReason string `json:"failure_reason"`
		FailedInput   string `json:"failed_input"`
	}
	for {
		if err := json.Unmarshal([]byte(f.mustSSH("build show --json "+ids[1])), &dep); err != nil {
			t.Fatal(err)
		}
		if dep.State != "scheduled" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if dep.State != "failed-dependency" || dep.FailedInput != base2 || !strings.HasSuffix(dep.FailureReason, "was canceled") {
		t.Fatalf("dependent of a canceled input: %+v", dep)
	}
	ids = lines(f.mustSSH(fmt.Sprintf("build --defer-until +1h %s %s", right2, top2)))
	r = f.ssh(f.admin, "build cancel --with-dependents "+ids[0])
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != ids[1] {
		t.Fatalf("cancel --with-dependents: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	if out := f.mustSSH("build show --json " + ids[1]); !strings.Contains(out, `"state": "canceled"`) {
		t.Fatalf("dependent not canceled: %s", out)
	}

	// Messages: each thing once, with what to do.
	fresh := newKey(t, f.dir, "fresh")
	for _, c := range []struct {
		cmd, want string
		code      int
	}{
		{"build cancel nonsense", `build cancel: no build "nonsense" ('builds' lists the build ids)`, 1},
		{"build priority " + ids[1] + " 5", "build priority: build " + ids[1] + " has already ended (canceled); only queued or running builds have a priority to change", 1},
		{"agent new --name again --key '" + agent.Key.Pub + "'", "agent new: key " + fingerprint(t, agent.Key) + " is already registered to agent stuck-agent (" + agent.ID +
			"); no agent was created (a key belongs to one agent or operator: generate another, or 'key remove " + fingerprint(t, agent.Key) + "' first)", 1},
	} {
		r := f.ssh(f.admin, c.cmd)
		if r.Code != c.code || strings.TrimSpace(r.Stderr) != c.want {
			t.Errorf("%s: exit %d stderr %q, want %d %q", c.cmd, r.Code, r.Stderr, c.code, c.want)
		}
	}
	// A key line passed without the inner quotes reaches the coordinator
	// as several words.
	r = f.ssh(f.admin, "agent new --name fresh --key "+fresh.Pub)
	if r.Code != 2 || !strings.HasPrefix(r.Stderr, "agent new: --key takes the whole key line as one argument") || !strings.Contains(r.Stderr, "quote it") {
		t.Errorf("unquoted key: exit %d stderr %q", r.Code, r.Stderr)
	}
	if n := strings.Count(f.mustSSH("agents --json"), `"id"`); n != 1 {
		t.Errorf("%d agents registered, want only stuck-agent", n)
	}
	var status struct {
		Agents []map[string]any `json:"agents"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("status --json")), &status); err != nil || len(status.Agents) != 1 || status.Agents[0]["last_seen_at"] == nil {
		t.Errorf("status --json agents: %+v (%v), want last_seen_at as in agents --json", status.Agents, err)
	}
}

// TestSubmitWaitSIGTERM: gbc submit passes the build flags on, and SIGTERM
// while it waits says what happened and that the builds stay queued.
func TestSubmitWaitSIGTERM(t *testing.T) {
	f := newFarm(t)
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	p := start(t, gbcBin, "submit", "--coordinator", f.addr, "--identity", f.admin.Path, "--known-hosts", f.knownHosts,
		"--wait", "--defer-until", "+1h", "--tag", "team=web", drv)
	m := p.log.waitFor(t, regexp.MustCompile(`(?m)^([0-9a-f-]{36})$`), time.Minute)
	err := p.stop(t)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("gbc submit after SIGTERM: %v, want exit 1\n%s", err, p.log.String())
	}
	out := p.log.String()
	if !strings.Contains(out, "stopped (terminated signal received) before the coordinator's build command finished; builds it accepted stay queued there") ||
		strings.Contains(out, "without exit status") {
		t.Fatalf("gbc submit does not say what happened:\n%s", out)
	}
	var b struct {
		State      string   `json:"state"`
		Tags       []string `json:"tags"`
		DeferUntil string   `json:"defer_until"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("build show --json "+m[1])), &b); err != nil {
		t.Fatal(err)
	}
	if b.State != "scheduled" || len(b.Tags) != 1 || b.Tags[0] != "team=web" || b.DeferUntil == "" {
		t.Fatalf("submitted build %+v, want scheduled, tagged and deferred", b)
	}
}

// fingerprint is the SHA256 fingerprint ssh-keygen prints for a key.
func fingerprint(t *testing.T, k sshKey) string {
	t.Helper()
	out := run(t, "ssh-keygen", "-l", "-E", "sha256", "-f", k.Path+".pub")
	return strings.Fields(out)[1]
}

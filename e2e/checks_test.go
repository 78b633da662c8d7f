package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/nixhash"
)

// checkShowJSON is what the tests read of check show --json.
type checkShowJSON struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Waiting string `json:"waiting"`
	Sides   []struct {
		Side       int    `json:"side"`
		Build      string `json:"build"`
		BuildState string `json:"build_state"`
		Agent      string `json:"agent"`
		Hardware   *struct {
			Backend        string `json:"backend"`
			BackendVersion string `json:"backend_version"`
		} `json:"hardware"`
	} `json:"sides"`
	Outputs []struct {
		Name    string `json:"name"`
		Verdict string `json:"verdict"`
		Sides   []struct {
			Side    int    `json:"side"`
			NarHash string `json:"nar_hash"`
		} `json:"sides"`
		Differences []struct {
			Left   int `json:"left_side"`
			Right  int `json:"right_side"`
			Report struct {
				Differences []struct {
					Path  string   `json:"path"`
					Kind  string   `json:"kind"`
					What  []string `json:"what"`
					Lines *struct {
						Line  int      `json:"line"`
						Left  []string `json:"left"`
						Right []string `json:"right"`
					} `json:"lines"`
				} `json:"differences"`
			} `json:"report"`
		} `json:"differences"`
	} `json:"outputs"`
}

func (f *farm) showCheck(id string) checkShowJSON {
	f.t.Helper()
	var c checkShowJSON
	out := f.mustSSH("check show --json " + id)
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		f.t.Fatalf("check show --json: %v\n%s", err, out)
	}
	return c
}

var checkLineRE = regexp.MustCompile(`^check ([0-9a-f-]{36}) (\S+)(?: \((.*)\))?$`)

// checkWait runs check --wait and returns the id and the verdict line's
// state and outputs.
func (f *farm) checkWait(flags, drv string, wantCode int) (id, state, outputs string) {
	f.t.Helper()
	r := f.ssh(f.admin, "check --wait "+flags+" "+drv)
	if r.Code != wantCode {
		f.t.Fatalf("check --wait %s: exit %d, want %d\nstdout: %s\nstderr: %s", flags, r.Code, wantCode, r.Stdout, r.Stderr)
	}
	ls := lines(r.Stdout)
	if len(ls) != 2 {
		f.t.Fatalf("check --wait printed %q, want the id and the verdict", r.Stdout)
	}
	m := checkLineRE.FindStringSubmatch(ls[1])
	if m == nil || m[1] != ls[0] {
		f.t.Fatalf("verdict line %q for check %s", ls[1], ls[0])
	}
	return m[1], m[2], m[3]
}

// TestReproducibilityChecks: two agents, each with its own empty store.
// A deterministic derivation is reproducible, built once on each agent; one
// that writes $RANDOM into one file of three is unreproducible and the
// difference names exactly that file (and its differing line); a check
// --against-cache compares the NAR an earlier build published with a
// build on the other agent; a check of three sides on two agents stays
// pending and says why. The cache keeps serving the first NAR.
func TestReproducibilityChecks(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "one", "two")
	coordNix, oneNix, twoNix := dirs[0], dirs[1], dirs[2]
	nonce := fmt.Sprint(time.Now().UnixNano())
	drv := map[string]string{}
	for _, attr := range []string{"same", "same2", "same3", "random", "random2"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "testdata/check.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, httpAddr := newNSFarm(t, coordNix)
	one := f.addNSAgent(oneNix, "agent-one")
	two := f.addNSAgent(twoNix, "agent-two")
	agents := map[string]bool{one.ID: true, two.ID: true}

	// Deterministic: reproducible, one side per agent.
	id, state, outs := f.checkWait("", drv["same"], 0)
	if state != "reproducible" || outs != "" {
		t.Fatalf("same: %s (%s)", state, outs)
	}
	c := f.showCheck(id)
	if c.State != "reproducible" || len(c.Sides) != 2 || c.Sides[0].Agent == c.Sides[1].Agent ||
		!agents[c.Sides[0].Agent] || !agents[c.Sides[1].Agent] {
		t.Fatalf("same: check %+v, want two sides on the two agents", c)
	}
	for _, sd := range c.Sides {
		if sd.BuildState != "succeeded" || sd.Hardware == nil || sd.Hardware.Backend == "" || sd.Hardware.BackendVersion == "" {
			t.Fatalf("same: side %+v: want succeeded with the agent's backend and version", sd)
		}
	}
	if o := c.Outputs[0]; o.Verdict != "reproducible" || len(o.Sides) != 2 || o.Sides[0].NarHash != o.Sides[1].NarHash || len(o.Differences) != 0 {
		t.Fatalf("same: output %+v", o)
	}

	// $RANDOM in one file: unreproducible, and exactly that file differs.
	id, state, outs = f.checkWait("", drv["random"], 1)
	if state != "unreproducible" || outs != "out" {
		t.Fatalf("random: %s (%s), want unreproducible (out)", state, outs)
	}
	c = f.showCheck(id)
	o := c.Outputs[0]
	if o.Verdict != "unreproducible" || len(o.Differences) != 1 {
		t.Fatalf("random: output %+v", o)
	}
	diffs := o.Differences[0].Report.Differences
	if len(diffs) != 1 || diffs[0].Path != "/share/b.txt" || diffs[0].Kind != "changed" || !slicesHas(diffs[0].What, "sha256") {
		t.Fatalf("random: differences %+v, want only /share/b.txt changed", diffs)
	}
	if l := diffs[0].Lines; l == nil || l.Line != 2 || !strings.HasPrefix(l.Left[0], "random ") || !strings.HasPrefix(l.Right[0], "random ") || l.Left[0] == l.Right[0] {
		t.Fatalf("random: differing lines %+v, want line 2 on both sides", diffs[0].Lines)
	}
	text := f.mustSSH("check show " + id)
	t.Logf("check show %s:\n%s", id, text)
	if !strings.Contains(text, "unreproducible") || !strings.Contains(text, "changed /share/b.txt") || strings.Contains(text, "/share/a.txt") {
		t.Fatalf("random: check show:\n%s", text)
	}
	// diffoscope on the two restored trees, when the coordinator has it.
	if _, err := exec.LookPath("diffoscope"); err == nil {
		r := f.ssh(f.admin, "check show --no-diff --diffoscope "+id)
		if r.Code != 0 || !strings.Contains(r.Stdout, "diffoscope: output out, side 1 vs side 2") ||
			!strings.Contains(r.Stdout, "b.txt") || strings.Contains(r.Stdout, "c.txt") {
			t.Fatalf("check show --diffoscope: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
		}
	} else {
		t.Log("diffoscope not installed: check show --diffoscope not tested")
	}
	// Both NARs are kept: check fetch streams each, and they hash to what
	// the sides reported.
	for _, s := range o.Sides {
		r := f.ssh(f.admin, fmt.Sprintf("check fetch %s out %d", id, s.Side))
		if r.Code != 0 {
			t.Fatalf("check fetch side %d: exit %d: %s", s.Side, r.Code, r.Stderr)
		}
		want, err := nixhash.Parse(s.NarHash)
		if err != nil {
			t.Fatal(err)
		}
		if got := nixhash.NewSHA256(sha256.Sum256([]byte(r.Stdout))); !got.Equal(want) {
			t.Fatalf("check fetch side %d: NAR hashes to %s, side reported %s", s.Side, got, want)
		}
	}
	// The cache serves one NAR of the path, the first it got: one of the
	// two sides'.
	path := f.show(c.Sides[0].Build).Outputs[0].Path
	resp, err := http.Get("http://" + httpAddr + "/" + strings.TrimPrefix(path, "/nix/store/")[:32] + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^NarHash: (\S+)$`).FindStringSubmatch(string(body))
	if m == nil || (m[1] != o.Sides[0].NarHash && m[1] != o.Sides[1].NarHash) {
		t.Fatalf("cache narinfo of %s:\n%s\nwant the NarHash of one side (%s or %s)", path, body, o.Sides[0].NarHash, o.Sides[1].NarHash)
	}

	// --against-cache: an ordinary build publishes same2 and random2; a
	// check with one build side puts them on the other agent.
	for _, tc := range []struct {
		attr, state string
		code        int
	}{{"same2", "reproducible", 0}, {"random2", "unreproducible", 1}} {
		r := f.ssh(f.admin, "build --wait "+drv[tc.attr])
		if r.Code != 0 {
			t.Fatalf("build %s: exit %d\n%s\n%s", tc.attr, r.Code, r.Stdout, r.Stderr)
		}
		builder := f.show(lines(r.Stdout)[0]).Agent
		id, state, _ := f.checkWait("--against-cache --agents 1", drv[tc.attr], tc.code)
		if state != tc.state {
			t.Fatalf("%s against the cache: %s, want %s", tc.attr, state, tc.state)
		}
		c := f.showCheck(id)
		if len(c.Sides) != 2 || c.Sides[0].Side != 0 || c.Sides[0].Agent != builder || c.Sides[1].Agent == builder || !agents[c.Sides[1].Agent] {
			t.Fatalf("%s against the cache: sides %+v, want the cache (published by %s) and the other agent", tc.attr, c.Sides, builder)
		}
	}

	// Three sides, two agents: two build, the third waits and says why.
	r := f.ssh(f.admin, "check --agents 3 "+drv["same3"])
	if r.Code != 0 {
		t.Fatalf("check --agents 3: exit %d: %s", r.Code, r.Stderr)
	}
	id = lines(r.Stdout)[0]
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c = f.showCheck(id)
		n := 0
		for _, sd := range c.Sides {
			if sd.BuildState == "succeeded" {
				n++
			}
		}
		if n == 2 && strings.Contains(c.Waiting, "holds or built another side of this check") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check of 3 sides on 2 agents: %+v", c)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c.State != "pending" {
		t.Fatalf("check of 3 sides on 2 agents is %s", c.State)
	}
	if text := f.mustSSH("check show " + id); !strings.Contains(text, "waiting:") {
		t.Fatalf("check show of a waiting check:\n%s", text)
	}

	// Every verdict is an event; the summary counts the latest checks.
	evs := lines(f.mustSSH("events --type check-finished"))
	if len(evs) != 4 {
		t.Fatalf("check-finished events: %d, want 4:\n%s", len(evs), strings.Join(evs, "\n"))
	}
	var sum struct {
		Systems map[string]struct {
			Counts         map[string]int `json:"counts"`
			Unreproducible []struct {
				Derivation string `json:"derivation"`
			} `json:"unreproducible"`
		} `json:"systems"`
	}
	if err := json.Unmarshal([]byte(f.mustSSH("checks summary --json")), &sum); err != nil {
		t.Fatal(err)
	}
	for _, s := range sum.Systems {
		if s.Counts["reproducible"] != 2 || s.Counts["unreproducible"] != 2 || s.Counts["pending"] != 1 || len(s.Unreproducible) != 2 {
			t.Fatalf("checks summary: %+v", sum)
		}
	}
}

func slicesHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

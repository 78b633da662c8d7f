package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildJSON is the part of `build show --json` these tests read.
type buildJSON struct {
	ID         string `json:"id"`
	Derivation string `json:"derivation"`
	System     string `json:"system"`
	State      string `json:"state"`
	Agent      string `json:"agent"`
	CreatedAt  string `json:"created_at"`
	StartedAt  string `json:"started_at"`
	EndedAt    string `json:"ended_at"`
	Outputs    []struct {
		Name        string `json:"name"`
		Path        string `json:"path"`
		NarHash     string `json:"nar_hash"`
		NarSize     int64  `json:"nar_size"`
		FileSize    int64  `json:"file_size"`
		Compression string `json:"compression"`
	} `json:"outputs"`
}

func (f *farm) show(id string) buildJSON {
	f.t.Helper()
	var b buildJSON
	out := f.mustSSH("build show " + id + " --json")
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		f.t.Fatalf("build show --json: %v\n%s", err, out)
	}
	return b
}

func narSize(t *testing.T, path string) int64 {
	t.Helper()
	cmd := exec.Command("nix-store", "--dump", path)
	cmd.Env = nixEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-store --dump %s: %v", path, err)
	}
	return int64(len(out))
}

var uuidLine = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestBuildGraphOverSSH is the walking skeleton: operators use plain ssh, two
// agents build with real nix-store, outputs come back verified.
func TestBuildGraphOverSSH(t *testing.T) {
	f := newFarm(t)
	a1 := f.addAgent("agent-one", "--max-parallel-builds", "2")
	a2 := f.addAgent("agent-two", "--max-parallel-builds", "2")
	agents := map[string]bool{a1.ID: true, a2.ID: true}

	nonce := fmt.Sprint(time.Now().UnixNano())
	var drvs []string
	for _, attr := range []string{"base", "left", "right", "top"} {
		drvs = append(drvs, instantiate(t, nonce, attr))
	}
	r := f.ssh(f.admin, "build --wait "+strings.Join(drvs, " "))
	if r.Code != 0 {
		t.Fatalf("build --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	out := lines(r.Stdout)
	if len(out) != 2*len(drvs) {
		t.Fatalf("build --wait printed %d lines, want %d (ids then results):\n%s", len(out), 2*len(drvs), r.Stdout)
	}
	ids := out[:len(drvs)]
	resultRE := regexp.MustCompile(`^build (\S+) succeeded \(on agent (\S+)\)$`)
	seen := map[string]bool{}
	for _, l := range out[len(drvs):] {
		m := resultRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected result line %q", l)
		}
		if !agents[m[2]] {
			t.Errorf("%q names an agent that is not ours", l)
		}
		seen[m[1]] = true
	}
	for i, id := range ids {
		if !uuidLine.MatchString(id) {
			t.Fatalf("build id line %q is not a UUID", id)
		}
		if !seen[id] {
			t.Errorf("no result line for build %s", id)
		}
		b := f.show(id)
		if b.State != "succeeded" || b.Derivation != drvs[i] || !agents[b.Agent] {
			t.Errorf("build %s: state %q derivation %q agent %q", id, b.State, b.Derivation, b.Agent)
		}
		if b.System == "" || b.CreatedAt == "" || b.StartedAt == "" || b.EndedAt == "" {
			t.Errorf("build %s: missing system or times: %+v", id, b)
		}
		want := lines(run(t, "nix-store", "-q", "--outputs", drvs[i]))
		if len(b.Outputs) != len(want) {
			t.Fatalf("build %s: %d outputs, want %d", id, len(b.Outputs), len(want))
		}
		for _, o := range b.Outputs {
			hash := "sha256:" + run(t, "nix-hash", "--type", "sha256", "--base32", o.Path)
			if o.NarHash != hash {
				t.Errorf("%s: nar_hash %s, nix-hash says %s", o.Path, o.NarHash, hash)
			}
			if size := narSize(t, o.Path); o.NarSize != size {
				t.Errorf("%s: nar_size %d, nix-store --dump is %d bytes", o.Path, o.NarSize, size)
			}
			if o.Compression != "zstd" || o.FileSize <= 0 {
				t.Errorf("%s: compression %q file_size %d", o.Path, o.Compression, o.FileSize)
			}
		}
	}

	list := f.mustSSH("builds --state succeeded --json")
	var all []buildJSON
	if err := json.Unmarshal([]byte(list), &all); err != nil {
		t.Fatalf("builds --json: %v\n%s", err, list)
	}
	if len(all) != len(drvs) {
		t.Errorf("builds --state succeeded lists %d builds, want %d", len(all), len(drvs))
	}
}

// TestFailingBuild: a builder that exits 1 is a failed build, reported with
// the agent that ran it, and --wait exits non-zero.
func TestFailingBuild(t *testing.T) {
	f := newFarm(t)
	a := f.addAgent("agent-fail")
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "broken")
	r := f.ssh(f.admin, "build --wait "+drv)
	if r.Code == 0 {
		t.Fatalf("build --wait of a failing derivation exited 0:\n%s", r.Stdout)
	}
	out := lines(r.Stdout)
	if len(out) != 2 {
		t.Fatalf("want id + result line, got:\n%s\n%s", r.Stdout, r.Stderr)
	}
	want := fmt.Sprintf("build %s failed (on agent %s)", out[0], a.ID)
	if out[1] != want {
		t.Fatalf("result line %q, want %q", out[1], want)
	}
	if b := f.show(out[0]); b.State != "failed" || b.Agent != a.ID || len(b.Outputs) != 0 {
		t.Fatalf("build show: %+v", b)
	}
}

// TestCoordinatorRestartKeepsState: the host key and database survive a
// clean stop (SIGTERM exits 0) and restart.
func TestCoordinatorRestartKeepsState(t *testing.T) {
	f := newFarm(t)
	reader := newKey(t, f.dir, "reader")
	f.mustSSH("key add --role reader '" + reader.Pub + "'")
	oldKnown := f.knownHosts
	if err := f.coord.stop(t); err != nil {
		t.Fatalf("coordinator exit after SIGTERM: %v\n%s", err, f.coord.log.String())
	}
	f.startCoordinator()
	if f.knownHosts != oldKnown {
		t.Fatal("known_hosts path changed")
	}
	// The old known_hosts content is rewritten from the same .pub file; the
	// real check is that ssh with StrictHostKeyChecking accepts it and that
	// the reader key still works.
	if r := f.ssh(reader, "builds"); r.Code != 0 {
		t.Fatalf("reader after restart: exit %d: %s", r.Code, r.Stderr)
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// phasesJSON is what these tests read from `build show --json`.
type phasesJSON struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Attempts []struct {
		Agent       string `json:"agent"`
		AllocatedAt string `json:"allocated_at"`
		EndedAt     string `json:"ended_at"`
		Phases      []struct {
			Name       string `json:"name"`
			StartedAt  string `json:"started_at"`
			EndedAt    string `json:"ended_at"`
			DurationMS int64  `json:"duration_ms"`
			Current    bool   `json:"current"`
		} `json:"phases"`
	} `json:"attempts"`
	Queue *struct {
		State   string `json:"state"`
		NoAgent *struct {
			Kind    string   `json:"kind"`
			System  string   `json:"system"`
			Systems []string `json:"systems"`
			Agents  []struct {
				ID          string `json:"id"`
				Name        string `json:"name"`
				Connected   bool   `json:"connected"`
				Running     int    `json:"running"`
				MaxParallel int    `json:"max_parallel_builds"`
			} `json:"agents"`
			Message string `json:"message"`
		} `json:"no_agent"`
	} `json:"queue"`
}

func (f *farm) showPhases(id string) phasesJSON {
	f.t.Helper()
	var b phasesJSON
	out := f.mustSSH("build show --json " + id)
	if err := jsonUnmarshal(out, &b); err != nil {
		f.t.Fatalf("build show --json: %v\n%s", err, out)
	}
	return b
}

// TestPhasesAndWhyNotRunning: with a real agent building real
// derivations, a build's attempt goes through every phase in order, each
// ending where the next begins; a running build is in building; a build
// for a system no agent builds says so as data, and one queued behind a
// busy agent says every agent that could take it is full, and one
// submitted after the agent stopped says its agent is absent.
func TestPhasesAndWhyNotRunning(t *testing.T) {
	t.Parallel()
	f := newFarm(t)
	nonce := fmt.Sprint(time.Now().UnixNano())
	release := filepath.Join(f.dir, "release")
	drv := func(attr string) string {
		return run(t, "nix-instantiate", "testdata/phases.nix", "--argstr", "nonce", nonce, "--argstr", "release", release, "-A", attr)
	}

	// No agent at all yet: the submission says so at once.
	r := f.ssh(f.admin, "build "+drv("riscv"))
	riscv := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || !strings.Contains(r.Stderr, "build "+riscv+": no agent has connected since the coordinator started") {
		t.Fatalf("build riscv: %+v", r)
	}
	a := f.addAgent("phases-agent", "--max-parallel-builds", "1")

	quick := f.mustSSH("build --wait " + drv("quick"))
	quick = lines(quick)[0]
	b := f.showPhases(quick)
	if b.State != "succeeded" || len(b.Attempts) != 1 {
		t.Fatalf("quick: %+v", b)
	}
	at := b.Attempts[0]
	var names []string
	for _, p := range at.Phases {
		names = append(names, p.Name)
	}
	if want := []string{"preparing", "building", "uploading", "verifying", "publishing"}; !slices.Equal(names, want) {
		t.Fatalf("phases %v, want %v", names, want)
	}
	prev := mustTime(t, at.AllocatedAt)
	for i, p := range at.Phases {
		start, end := mustTime(t, p.StartedAt), mustTime(t, p.EndedAt)
		if start.Before(prev) || end.Before(start) || p.Current || p.DurationMS != end.Sub(start).Milliseconds() {
			t.Errorf("phase %s: %+v (previous began %v)", p.Name, p, prev)
		}
		if i+1 < len(at.Phases) && p.EndedAt != at.Phases[i+1].StartedAt {
			t.Errorf("phase %s ends %s, the next begins %s", p.Name, p.EndedAt, at.Phases[i+1].StartedAt)
		}
		prev = start
	}
	if last := at.Phases[len(at.Phases)-1]; last.EndedAt != at.EndedAt {
		t.Errorf("publishing ends %s, the attempt %s", last.EndedAt, at.EndedAt)
	}
	if out := f.mustSSH("build show " + quick); !strings.Contains(out, "attempt 1 building:") || !strings.Contains(out, "attempt 1 publishing:") {
		t.Errorf("build show lacks the phases:\n%s", out)
	}

	// The riscv build: nothing here builds its system.
	rb := f.showPhases(riscv)
	if rb.Queue == nil || rb.Queue.NoAgent == nil || rb.Queue.NoAgent.Kind != "no-agent-for-system" ||
		rb.Queue.NoAgent.System != "riscv64-linux" || len(rb.Queue.NoAgent.Systems) == 0 {
		t.Fatalf("riscv: %+v", rb.Queue)
	}
	if out := f.mustSSH("build show " + riscv); !strings.Contains(out, "no-agent-for-system: no agent builds system riscv64-linux") {
		t.Errorf("build show riscv:\n%s", out)
	}

	// One build holds the only slot; the next says every agent that
	// could take it is full, and the running one is building.
	hold := f.mustSSH("build " + drv("hold"))
	f.waitState(hold, 2*time.Minute, "started")
	behind := f.mustSSH("build " + drv("behind"))
	bb := f.showPhases(behind)
	if bb.Queue == nil || bb.Queue.NoAgent == nil || bb.Queue.NoAgent.Kind != "agents-full" || len(bb.Queue.NoAgent.Agents) != 1 {
		t.Fatalf("behind: %+v", bb.Queue)
	}
	if ag := bb.Queue.NoAgent.Agents[0]; ag.ID != a.ID || ag.Name != "phases-agent" || !ag.Connected || ag.Running != 1 || ag.MaxParallel != 1 {
		t.Errorf("full agent: %+v", ag)
	}
	hb := f.showPhases(hold)
	if n := len(hb.Attempts); n != 1 || len(hb.Attempts[0].Phases) == 0 {
		t.Fatalf("hold: %+v", hb)
	}
	cur := hb.Attempts[0].Phases[len(hb.Attempts[0].Phases)-1]
	if cur.Name != "building" || !cur.Current || cur.EndedAt != "" {
		t.Errorf("running build's phase: %+v", cur)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.waitState(behind, 2*time.Minute, "succeeded")
	if b := f.showPhases(hold); b.State != "succeeded" || len(b.Attempts[0].Phases) != 5 {
		t.Errorf("hold after release: %+v", b)
	}

	// The agent stops: a build it could take says its agent is absent.
	if err := a.stop(t); err != nil {
		t.Logf("agent exit: %v", err)
	}
	later := f.mustSSH("build " + drv("later"))
	deadline := time.Now().Add(time.Minute)
	for {
		lb := f.showPhases(later)
		if lb.Queue != nil && lb.Queue.NoAgent != nil && lb.Queue.NoAgent.Kind == "agents-absent" {
			na := lb.Queue.NoAgent
			if len(na.Agents) != 1 || na.Agents[0].ID != a.ID || na.Agents[0].Connected {
				t.Errorf("absent agents: %+v", na.Agents)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("later: %+v, want agents-absent", lb.Queue)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

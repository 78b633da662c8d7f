package sshd

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

func decodeEvents(t *testing.T, out string) []db.Event {
	t.Helper()
	var es []db.Event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e db.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es
}

// TestEventsCommand: the lifecycle shows up as JSON lines; --type and
// --since filter; --follow prints an event committed after it started;
// build show includes the hardware reported at start.
func TestEventsCommand(t *testing.T) {
	e := newEnv(t, 0)
	agentID, key := e.newAgent()
	a, b := e.allocate(key)
	a.send(&protocol.Started{Header: protocol.Header{ID: 7}, Build: b.Build,
		Hardware: protocol.Hardware{Cores: 3, MemoryBytes: 2 << 30, FreeDiskBytes: 5 << 30, Load1: 0.25}})
	a.expectAck(7)

	r := e.run(e.reader, "events")
	if r.code != 0 {
		t.Fatalf("events: %d %s", r.code, r.stderr)
	}
	es := decodeEvents(t, r.stdout)
	var types []string
	for _, ev := range es {
		types = append(types, string(ev.Type))
	}
	if got := strings.Join(types, ","); got != "agent-connected,submitted,allocated,started" {
		t.Fatalf("event types %s", got)
	}
	if es[0].Agent != agentID || es[3].Build != b.Build || es[3].Attempt != 1 || es[3].Derivation == "" {
		t.Errorf("events: %+v", es)
	}
	r = e.run(e.reader, "events --type allocated --type started,submitted --since "+jsonInt(es[1].ID))
	if got := decodeEvents(t, r.stdout); len(got) != 2 || got[0].Type != db.EventAllocated || got[1].Type != db.EventStarted {
		t.Errorf("filtered events: %s", r.stdout)
	}
	if r := e.run(e.reader, "events --type nonsense"); r.code != 2 {
		t.Errorf("events --type nonsense: exit %d", r.code)
	}

	r = e.run(e.reader, "build show --json "+b.Build)
	var show struct {
		Attempts []struct {
			Hardware *db.Hardware `json:"hardware"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &show); err != nil {
		t.Fatal(err)
	}
	if len(show.Attempts) != 1 || show.Attempts[0].Hardware == nil ||
		*show.Attempts[0].Hardware != (db.Hardware{Cores: 3, MemoryBytes: 2 << 30, FreeDiskBytes: 5 << 30, Load1: 0.25, Backend: "nix"}) {
		t.Errorf("build show hardware: %s", r.stdout)
	}
	if r := e.run(e.reader, "build show "+b.Build); !strings.Contains(r.stdout, "cores=3 memory=2.0GiB") {
		t.Errorf("build show text lacks hardware:\n%s", r.stdout)
	}

	// --follow from the last id: prints the failure as it happens.
	c, err := e.dial(e.reader)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := sess.StdoutPipe()
	if err := sess.Start("events --follow --since " + jsonInt(es[len(es)-1].ID)); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	a.send(&protocol.Failed{Header: protocol.Header{ID: 8}, Build: b.Build, Reason: protocol.ReasonBuild, ExitCode: 3})
	a.expectAck(8)
	select {
	case l := <-lines:
		got := decodeEvents(t, l)
		if got[0].Type != db.EventFailed || got[0].ExitCode != 3 || got[0].Build != b.Build {
			t.Errorf("followed event: %s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("events --follow printed nothing")
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestEventsAfterPrune: resuming below the pruned range says on stderr
// how far the log was pruned instead of returning a silent gap; stdout
// still holds only events; resuming above it says nothing.
func TestEventsAfterPrune(t *testing.T) {
	e := newEnv(t, 0)
	ctx := t.Context()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []int64
	for i := range 5 {
		id, err := e.store.AppendEvent(ctx, db.Event{Type: db.EventAgentConnected, At: base.Add(time.Duration(i) * time.Hour), Agent: "a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if r, err := e.store.PruneEvents(ctx, base.Add(150*time.Minute), nil, 100); err != nil || r.PrunedThrough != ids[2] {
		t.Fatalf("prune: %+v %v", r, err)
	}
	for _, c := range []struct {
		cmd, note string
	}{
		{"events --since " + jsonInt(ids[0]), "events: pruned through id " + jsonInt(ids[2]) + ": the events after id " + jsonInt(ids[0])},
		{"events", "events: pruned through id " + jsonInt(ids[2]) + ": older events were deleted"},
		{"events --type agent-connected --since " + jsonInt(ids[2]), ""},
	} {
		r := e.run(e.reader, c.cmd)
		if r.code != 0 {
			t.Fatalf("%s: exit %d %s", c.cmd, r.code, r.stderr)
		}
		if got := decodeEvents(t, r.stdout); len(got) != 2 || got[0].ID != ids[3] || got[1].ID != ids[4] {
			t.Errorf("%s: stdout %s", c.cmd, r.stdout)
		}
		if c.note == "" && r.stderr != "" || !strings.HasPrefix(r.stderr, c.note) || strings.Count(r.stderr, "\n") > 1 {
			t.Errorf("%s: stderr %q, want it to start with %q", c.cmd, r.stderr, c.note)
		}
	}
}

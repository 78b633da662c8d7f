package sshd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/protocol"
)

// TestHostileAgentText: a hello with control characters or overlong
// fields is refused with an error naming the field, and text an agent
// does get stored (a failure message) is printed escaped by the text
// output of build show and build --wait, while --json keeps it exact.
func TestHostileAgentText(t *testing.T) {
	e := newEnv(t, 0)
	_, key := e.newAgent()
	base := protocol.Hello{Header: protocol.Header{ID: 1}, ProtocolVersion: protocol.Version,
		Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"}
	for _, c := range []struct {
		name string
		mod  func(h *protocol.Hello)
		want string
	}{
		{"ESC in name", func(h *protocol.Hello) { h.Name = "ok\x1b[2J" }, "hello: name"},
		{"newline in a system", func(h *protocol.Hello) { h.Systems = []string{"x86_64-linux\nfake-agent"} }, "hello: systems[0]"},
		{"CR in a feature", func(h *protocol.Hello) { h.Features = []string{"kvm\r"} }, "hello: features[0]"},
		{"C1 in backend_version", func(h *protocol.Hello) { h.BackendVersion = "2.8\u009b" }, "hello: backend_version"},
		{"DEL in agent_version", func(h *protocol.Hello) { h.AgentVersion = "1\x7f" }, "hello: agent_version"},
		{"name over 200 bytes", func(h *protocol.Hello) { h.Name = strings.Repeat("n", 201) }, "name is 201 bytes, limit 200"},
		{"too many features", func(h *protocol.Hello) { h.Features = make([]string, 257) }, "features has 257 entries"},
	} {
		a := e.agentSession(key)
		h := base
		c.mod(&h)
		a.send(&h)
		a.expectError(1, c.want)
	}
	if r := e.run(e.reader, "status"); r.code != 0 || strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stdout, "fake-agent") {
		t.Fatalf("status after refused hellos: exit %d %q", r.code, r.stdout)
	}

	a, b := e.allocate(key)
	hostile := "boom\x1b]0;owned\x07\nbuild 00000000 succeeded (on agent x)"
	a.send(&protocol.Failed{Header: protocol.Header{ID: 5}, Build: b.Build, Reason: protocol.ReasonBuild, Message: hostile})
	a.expectAck(5)
	r := e.run(e.reader, "build show "+b.Build)
	if r.code != 0 {
		t.Fatalf("build show: %d %s", r.code, r.stderr)
	}
	if strings.ContainsAny(r.stdout, "\x1b\x07") || strings.Contains(r.stdout, "\nbuild 00000000") {
		t.Fatalf("build show printed the agent's control characters raw:\n%q", r.stdout)
	}
	if !strings.Contains(r.stdout, `boom\x1b]0;owned\x07\nbuild 00000000`) {
		t.Fatalf("build show does not show the escaped message:\n%s", r.stdout)
	}
	r = e.run(e.reader, "build show --json "+b.Build)
	var j struct {
		FailureReason string `json:"failure_reason"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || !strings.HasSuffix(j.FailureReason, hostile) {
		t.Fatalf("build show --json: %v, failure_reason %q", err, j.FailureReason)
	}
}

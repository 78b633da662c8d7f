package sshd

import (
	"strings"
	"testing"
)

// An unknown id is said once, with where to find the right one.
func TestUnknownIDsSaidOnce(t *testing.T) {
	e := newEnv(t, 0)
	_, key := e.newAgent()
	taken := keyLine(key, "taken")
	for _, c := range []struct{ cmd, want string }{
		{"build cancel nonsense", `build cancel: no build "nonsense" ('builds' lists the build ids)`},
		{"build show nonsense", `build show: no build "nonsense" ('builds' lists the build ids)`},
		{"build priority nonsense 3", `build priority: no build "nonsense" ('builds' lists the build ids)`},
		{"log nonsense", `log: no build "nonsense" ('builds' lists the build ids)`},
		{"agent nonsense deactivate", `agent AGENT-ID deactivate: no agent "nonsense" ('agents' lists the agent ids)`},
		{"agent nonsense key add '" + taken + "'", `agent AGENT-ID key add: no agent "nonsense" ('agents' lists the agent ids)`},
		{"key remove nonsense", `key remove: no key "nonsense" ('keys' lists the fingerprints)`},
	} {
		r := e.run(e.admin, c.cmd)
		if r.code != 1 || strings.TrimSpace(r.stderr) != c.want {
			t.Errorf("%s: exit %d stderr %q, want %q", c.cmd, r.code, r.stderr, c.want)
		}
	}
	// A key line split into words, and a key that is already taken.
	r := e.run(e.admin, "key add --role reader "+keyLine(newSigner(t), "split"))
	if r.code != 2 || !strings.Contains(r.stderr, "the key line is one argument, got ") || !strings.Contains(r.stderr, "quote it") {
		t.Errorf("unquoted key add: exit %d stderr %q", r.code, r.stderr)
	}
	r = e.run(e.admin, "agent new --name dup --key '"+taken+"'")
	if r.code != 1 || !strings.Contains(r.stderr, "is already registered to agent ") || !strings.Contains(r.stderr, "no agent was created") {
		t.Errorf("duplicate agent key: exit %d stderr %q", r.code, r.stderr)
	}
	if as, _ := e.store.Agents(t.Context()); len(as) != 1 {
		t.Errorf("%d agents after a refused agent new, want 1", len(as))
	}
}

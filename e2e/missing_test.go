package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestPermissiveWaitsForMissingInputs: with --allocation-strategy
// permissive, only the top of the chain a ← b ← c is submitted. The agent
// (its own empty store, substituting through its SSH connection) cannot
// substitute c's input and reports it missing; the coordinator submits b
// (needed-by=c) and c waits for it; b in turn is missing a, which is
// submitted (needed-by=b). Everything ends succeeded: no build used up its
// setup-failure attempts, whatever the hook's timing.
func TestPermissiveWaitsForMissingInputs(t *testing.T) {
	requireNamespaces(t)
	dirs := mkdirs(t, "coord", "one")
	coordNix, oneNix := dirs[0], dirs[1]
	nonce := "missing-" + time.Now().Format("150405.000000000")
	drv := map[string]string{}
	for _, attr := range []string{"a", "b", "c"} {
		drv[attr] = nsRun(t, coordNix, "nix-instantiate", "testdata/chain.nix", "--argstr", "nonce", nonce, "-A", attr)
	}
	f, _ := newNSFarm(t, coordNix, "--allocation-strategy", "permissive")
	one := f.addNSAgent(oneNix, "agent-one")

	r := f.ssh(f.admin, "build --wait "+drv["c"])
	if r.Code != 0 {
		t.Fatalf("build c: exit %d\n%s\n%s\nagent:\n%s\ncoordinator:\n%s", r.Code, r.Stdout, r.Stderr, one.log.String(), f.coord.log.String())
	}
	cID := lines(r.Stdout)[0]

	var all []struct {
		buildJSON
		Tags []string `json:"tags"`
	}
	if err := jsonUnmarshal(f.mustSSH("builds --json --limit 0"), &all); err != nil {
		t.Fatal(err)
	}
	// b is needed by c, a by b: each was submitted for the build that
	// found it missing.
	ids := map[string]string{"c": cID}
	for _, attr := range []string{"b", "a"} {
		neededBy := map[string]string{"b": "c", "a": "b"}[attr]
		for _, b := range all {
			if b.Derivation != drv[attr] {
				continue
			}
			if want := "needed-by=" + ids[neededBy]; len(b.Tags) != 1 || b.Tags[0] != want {
				t.Fatalf("build of %s has tags %v, want %s", attr, b.Tags, want)
			}
			ids[attr] = b.ID
		}
		if ids[attr] == "" {
			t.Fatalf("no build of %s was submitted: %+v", attr, all)
		}
	}
	if len(all) != 3 {
		t.Fatalf("want one build each of a, b, c; got %+v", all)
	}
	for _, attr := range []string{"a", "b", "c"} {
		b := f.waitState(ids[attr], time.Minute, "succeeded")
		waited := 0
		for _, a := range b.Attempts[:len(b.Attempts)-1] {
			if a.Outcome != "requeued" || !strings.HasPrefix(a.Reason, "waiting for inputs: setup-failure: ") {
				t.Fatalf("%s: attempt %+v, want requeued waiting for inputs", attr, a)
			}
			waited++
		}
		if want := map[string]int{"a": 0, "b": 1, "c": 1}[attr]; waited != want {
			t.Fatalf("%s: %d setup failures waiting for inputs, want %d: %+v", attr, waited, want, b.Attempts)
		}
	}
	if !strings.Contains(f.coord.log.String(), "build requeued to wait for its inputs") {
		t.Fatalf("coordinator did not log the wait:\n%s", f.coord.log.String())
	}
}

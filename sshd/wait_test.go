package sshd

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/derivation"
)

// syncBuffer is a bytes.Buffer the SSH session writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls (bounded) until out contains want.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	for range 500 {
		if strings.Contains(out.String(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("stderr does not say %q:\n%s", want, out.String())
}

// build --wait says at once why a build will not run, and again when the
// reason changes while it waits.
func TestBuildWaitSaysWhyNot(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	e := newEnvWith(t, func(c *Config) { c.Clock = clk })
	out := e.storePath("arm")
	d := &derivation.Derivation{
		Outputs: []derivation.Output{{Name: "out", Path: out}},
		System:  "aarch64-linux", Builder: "/bin/sh", Args: []string{"-c", "true"},
		Env: []derivation.EnvVar{{Key: "out", Value: out}},
	}
	drv := e.storePath("arm.drv")
	if err := os.WriteFile(drv, d.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	c, err := e.dial(e.operator)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, _ := c.NewSession()
	var stdout, stderr syncBuffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if err := sess.Start("build --wait " + drv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, &stderr, ": no agent has connected since the coordinator started\n")
	id := strings.TrimSpace(stdout.String())

	_, key := e.newAgent()
	e.agentSession(key).hello() // x86_64-linux only
	// The wait's timer may not be set yet: step until it has fired.
	want := "build " + id + ": no agent builds system aarch64-linux (the agents build x86_64-linux)\n"
	for i := 0; i < 200 && !strings.Contains(stderr.String(), want); i++ {
		clk.Advance(explainEvery)
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, &stderr, want)
	if n := strings.Count(stderr.String(), "no agent builds"); n != 1 {
		t.Fatalf("said %d times, want once:\n%s", n, stderr.String())
	}

	if r := e.run(e.operator, "build cancel "+id); r.code != 0 {
		t.Fatalf("cancel: %+v", r)
	}
	if err := sess.Wait(); err == nil {
		t.Fatal("build --wait of a canceled build exited 0")
	}
	if !strings.Contains(stdout.String(), "build "+id+" canceled") {
		t.Fatalf("stdout %q", stdout.String())
	}
}

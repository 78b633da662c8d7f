package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/protocol"
)

// protoAgent is a gbc-agent-v1 session opened with the Go SSH client, for
// saying what a real agent never would.
type protoAgent struct {
	c *gossh.Client
	w *protocol.Writer
	r *protocol.Reader
}

func dialAgent(t *testing.T, f *farm, key sshKey) *protoAgent {
	t.Helper()
	pem, err := os.ReadFile(key.Path)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	c, err := gossh.Dial("tcp", f.addr, &gossh.ClientConfig{User: "agent", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: func(string, net.Addr, gossh.PublicKey) error { return nil }, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	if err := s.RequestSubsystem(protocol.Subsystem); err != nil {
		t.Fatal(err)
	}
	return &protoAgent{c: c, w: protocol.NewWriter(in, 0), r: protocol.NewReader(out, 0)}
}

// read returns the next message, failing the test after a minute.
func (a *protoAgent) read(t *testing.T) protocol.Message {
	t.Helper()
	type res struct {
		m   protocol.Message
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := a.r.Read(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.m
	case <-time.After(time.Minute):
		t.Fatal("no message from the coordinator within a minute")
		return nil
	}
}

// TestHostileAgentTextOverSSH: a hello with terminal control sequences in
// its name or systems is refused with an error naming the field, and the
// real ssh client's status and agents show nothing of it; a failure
// message full of control characters reaches build show escaped, and
// build show --json exact.
func TestHostileAgentTextOverSSH(t *testing.T) {
	f := newFarm(t)
	key := newKey(t, f.dir, "hostile")
	f.mustSSH(fmt.Sprintf("agent new --name hostile --key '%s'", key.Pub))
	hello := func(mod func(*protocol.Hello)) protocol.Message {
		a := dialAgent(t, f, key)
		h := &protocol.Hello{Header: protocol.Header{ID: 1}, ProtocolVersion: protocol.Version, Name: "hostile",
			Systems: []string{"x86_64-linux"}, MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"}
		mod(h)
		if err := a.w.Write(h); err != nil {
			t.Fatal(err)
		}
		return a.read(t)
	}
	for field, mod := range map[string]func(*protocol.Hello){
		"name":              func(h *protocol.Hello) { h.Name = "x\x1b[2J\x1b[H\r\nfake-agent" },
		"systems[0]":        func(h *protocol.Hello) { h.Systems = []string{"x86_64-linux\nfake-system"} },
		"name is 300 bytes": func(h *protocol.Hello) { h.Name = strings.Repeat("n", 300) },
	} {
		m := hello(mod)
		if e, ok := m.(*protocol.Error); !ok || !strings.Contains(e.Message, "hello: "+field) {
			t.Errorf("hello with a bad %s: got %T %+v", field, m, m)
		}
	}
	for _, cmd := range []string{"status", "agents"} {
		out := f.mustSSH(cmd)
		if strings.ContainsAny(out, "\x1b\r") || strings.Contains(out, "fake-") {
			t.Errorf("%s shows a refused hello's text: %q", cmd, out)
		}
	}

	// A clean hello, then a failure message meant for the operator's terminal.
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	a := dialAgent(t, f, key)
	if err := a.w.Write(&protocol.Hello{Header: protocol.Header{ID: 1}, ProtocolVersion: protocol.Version, Name: "hostile",
		Systems:           []string{strings.Trim(run(t, "nix-instantiate", "--eval", "--expr", "builtins.currentSystem"), `"`)},
		MaxParallelBuilds: 1, StoreDir: "/nix/store", Backend: "nix"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.read(t).(*protocol.Welcome); !ok {
		t.Fatal("clean hello not welcomed")
	}
	// An operator waits for it with build --wait over real ssh.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wait := f.sshCmd(ctx, f.admin, "build --wait "+drv)
	var waitOut, waitErr syncBuf
	wait.Stdout, wait.Stderr = &waitOut, &waitErr
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	b, ok := a.read(t).(*protocol.Build)
	if !ok {
		t.Fatalf("no build pushed: %T %+v", b, b)
	}
	id := b.Build
	hostile := "oops\x1b]0;owned\x07\x1b[2J\nbuild " + id + " succeeded (on agent x)"
	if err := a.w.Write(&protocol.Failed{Header: protocol.Header{ID: 2}, Build: id, Reason: protocol.ReasonBuild, Message: hostile}); err != nil {
		t.Fatal(err)
	}
	if m := a.read(t); m.MessageType() != protocol.TypeAck {
		t.Fatalf("failed not acknowledged: %T %+v", m, m)
	}
	if err := wait.Wait(); err == nil {
		t.Fatalf("build --wait of a failed build exited 0:\n%s", waitOut.String())
	}
	if all := waitOut.String() + waitErr.String(); strings.ContainsAny(all, "\x1b\x07") || strings.Contains(all, "\nbuild "+id+" succeeded") {
		t.Errorf("build --wait prints the agent's control characters raw: %q", all)
	}
	if !strings.Contains(waitErr.String(), `oops\x1b]0;owned\x07\x1b[2J\nbuild `) || !strings.Contains(waitOut.String(), "build "+id+" failed") {
		t.Errorf("build --wait does not say the build failed with the message escaped: stdout %q stderr %q", waitOut.String(), waitErr.String())
	}
	show := f.mustSSH("build show " + id)
	if strings.ContainsAny(show, "\x1b\x07") || strings.Contains(show, "\nbuild "+id+" succeeded") {
		t.Errorf("build show prints the agent's control characters raw: %q", show)
	}
	if !strings.Contains(show, `oops\x1b]0;owned\x07\x1b[2J\nbuild `) {
		t.Errorf("build show does not show the message escaped: %q", show)
	}
	if js := f.mustSSH("build show --json " + id); !strings.Contains(js, `oops\u001b]0;owned\u0007\u001b[2J\nbuild `) {
		t.Errorf("build show --json does not carry the message exactly: %s", js)
	}
}

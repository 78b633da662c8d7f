package sshd

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/protocol"
)

// dialFrom opens a raw TCP connection to addr from a chosen loopback
// address (every 127.0.0.0/8 address is local on Linux).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greeted reports whether the server sent its SSH version line on c (an
// admitted connection) or closed it without one (refused).
func greeted(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err == nil {
		if !strings.HasPrefix(line, "SSH-2.0-gbc") {
			t.Fatalf("unexpected greeting %q", line)
		}
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
		return false
	}
	t.Fatalf("read greeting: %v", err)
	return false
}

func (e *env) dialFrom(src string, s gossh.Signer) (*gossh.Client, error) {
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}).Dial("tcp", e.addr)
	if err != nil {
		return nil, err
	}
	cc, chans, reqs, err := gossh.NewClientConn(c, e.addr, &gossh.ClientConfig{
		User: "anyone", Auth: []gossh.AuthMethod{gossh.PublicKeys(s)},
		HostKeyCallback: gossh.FixedHostKey(e.hostKey), Timeout: 5 * time.Second,
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return gossh.NewClient(cc, chans, reqs), nil
}

// TestUnauthenticatedFloodIsCapped: connections that never finish the
// handshake are admitted only up to the per-source and total caps; the
// rest are closed at accept. An agent connected before the flood keeps
// its session, and an operator from another address still gets in.
func TestUnauthenticatedFloodIsCapped(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0)) // the handshake deadline never fires
	e := newEnvWith(t, func(c *Config) {
		c.Clock = fake
		c.MaxUnauthenticated = 6
		c.MaxUnauthenticatedPerSource = 4
	})
	_, agentKey := e.newAgent()
	a := e.agentSession(agentKey)
	a.hello()

	const perSource = 40 // bounded: 80 connections in all
	var flood []net.Conn
	count := func(src string) int {
		n := 0
		for range perSource {
			c := dialFrom(t, src, e.addr)
			flood = append(flood, c)
			if greeted(t, c) {
				n++
			}
		}
		return n
	}
	if n := count("127.0.0.2"); n != 4 {
		t.Fatalf("127.0.0.2: %d connections admitted, want the per-source cap 4", n)
	}
	if n := count("127.0.0.3"); n != 2 {
		t.Fatalf("127.0.0.3: %d connections admitted, want 2 (the total cap 6 minus 4)", n)
	}
	if got := e.srv.conns.inHandshake(); got != 6 {
		t.Fatalf("%d connections in the handshake, want 6", got)
	}
	// The agent, authenticated before the flood, is not affected.
	a.send(&protocol.Heartbeat{Header: protocol.Header{ID: 7}})
	a.expectAck(7)
	// The total cap holds new clients off while the flood lasts...
	if _, err := e.dialFrom("127.0.0.4", e.reader); err == nil {
		t.Fatal("a new connection got in with the total cap reached")
	}
	// ...and frees as soon as flood connections go.
	for _, c := range flood {
		c.Close()
	}
	for i := 0; i < 500 && e.srv.conns.inHandshake() > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	c, err := e.dialFrom("127.0.0.4", e.reader)
	if err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("status")
	if err != nil || !strings.Contains(string(out), "agents") {
		t.Fatalf("status after the flood: %v\n%s", err, out)
	}
}

// TestHandshakeDeadline: a connection that does not authenticate within
// the handshake timeout is closed; an authenticated one is not.
func TestHandshakeDeadline(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	e := newEnvWith(t, func(c *Config) {
		c.Clock = fake
		c.HandshakeTimeout = time.Minute
	})
	idle := dialFrom(t, "127.0.0.1", e.addr)
	if !greeted(t, idle) {
		t.Fatal("idle connection refused at accept")
	}
	authed, err := e.dial(e.reader)
	if err != nil {
		t.Fatal(err)
	}
	defer authed.Close()
	// The deadline timer starts in its own goroutine: advance until the
	// idle connection is closed (bounded number of steps).
	closed := false
	buf := make([]byte, 1)
	for i := 0; i < 200 && !closed; i++ {
		fake.Advance(time.Minute)
		idle.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := idle.Read(buf); err != nil {
			var ne net.Error
			closed = !(errors.As(err, &ne) && ne.Timeout())
		}
	}
	if !closed {
		t.Fatal("connection without authentication still open after the handshake timeout")
	}
	if got := e.srv.conns.inHandshake(); got != 0 {
		t.Fatalf("%d connections still counted in the handshake", got)
	}
	sess, err := authed.NewSession()
	if err != nil {
		t.Fatalf("authenticated connection closed by the handshake deadline: %v", err)
	}
	if out, err := sess.Output("status"); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
}

// TestLongCommandLineSaysWhatToDo: a command line over MaxCommandBytes
// (but under the SSH layer's 256 KiB) is answered with what to do, and
// build --stdin takes the paths instead.
func TestLongCommandLineSaysWhatToDo(t *testing.T) {
	e := newEnv(t, 0)
	long := "build" + strings.Repeat(" /nix/store/00000000000000000000000000000000-x.drv", (MaxCommandBytes+1024)/50)
	r := e.run(e.operator, long)
	if r.code != 2 || !strings.Contains(r.stderr, "limit") || !strings.Contains(r.stderr, "build --stdin") {
		t.Fatalf("long command line: exit %d, stderr %q", r.code, r.stderr)
	}
	drvs := []string{e.drv("a"), e.drv("b"), e.drv("c")}
	c, err := e.dial(e.operator)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess.Stdin = strings.NewReader(strings.Join(drvs[1:], "\n") + "\n")
	out, err := sess.Output("build --stdin " + drvs[0])
	if err != nil {
		t.Fatalf("build --stdin: %v\n%s", err, out)
	}
	if ids := strings.Fields(string(out)); len(ids) != 3 {
		t.Fatalf("build --stdin printed %q, want 3 build ids", out)
	}
}

package keepalive

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/clock"
)

// pair connects an SSH client to a server on 127.0.0.1; answer says whether
// the server replies to global requests. Each request the server sees is
// sent on the returned channel.
func pair(t *testing.T, answer bool) (*ssh.Client, <-chan struct{}) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	seen := make(chan struct{}, 100)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		cfg := &ssh.ServerConfig{NoClientAuth: true}
		cfg.AddHostKey(signer)
		sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
		if err != nil {
			nc.Close()
			return
		}
		t.Cleanup(func() { sc.Close() })
		go func() {
			for ch := range chans {
				ch.Reject(ssh.Prohibited, "no channels")
			}
		}()
		for req := range reqs {
			if answer {
				req.Reply(false, nil) // a refusal is an answer too
			}
			seen <- struct{}{}
		}
	}()
	c, err := ssh.Dial("tcp", l.Addr().String(), &ssh.ClientConfig{
		User:            "x",
		HostKeyCallback: ssh.FixedHostKey(signer.PublicKey()),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, seen
}

// step advances clk by d until f reports true, a bounded number of times:
// Run registers its timers asynchronously, so one Advance may come early.
func step(t *testing.T, clk *clock.Fake, d time.Duration, f func() bool) {
	t.Helper()
	for range 2000 {
		if f() {
			return
		}
		clk.Advance(d)
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestAnsweredProbesKeepTheConnection(t *testing.T) {
	c, seen := pair(t, true)
	clk := clock.NewFake(time.Unix(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, clk, c, 15*time.Second, 30*time.Second) }()
	n := 0
	step(t, clk, 15*time.Second, func() bool {
		for {
			select {
			case <-seen:
				n++
				continue
			default:
			}
			return n >= 3
		}
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v, want nil", err)
	}
	// The connection is still open: a request gets its (refusing) reply.
	if _, _, err := c.SendRequest("still-there", true, nil); err != nil {
		t.Fatalf("connection closed by answered keepalives: %v", err)
	}
}

func TestUnansweredProbeClosesTheConnection(t *testing.T) {
	c, seen := pair(t, false)
	clk := clock.NewFake(time.Unix(0, 0))
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), clk, c, 15*time.Second, 30*time.Second) }()
	var err error
	got := false
	step(t, clk, 15*time.Second, func() bool {
		select {
		case err = <-done:
			got = true
		default:
		}
		return got
	})
	if !errors.Is(err, ErrUnanswered) {
		t.Fatalf("Run = %v, want ErrUnanswered", err)
	}
	select {
	case <-seen:
	default:
		t.Fatal("Run gave up without the server seeing a probe")
	}
	// Run closed the client: it waits no more.
	if werr := c.Wait(); werr == nil {
		t.Fatal("client connection still open")
	}
}

func TestFailedProbeClosesTheConnection(t *testing.T) {
	c, _ := pair(t, true)
	c.Close() // the probe's send fails at once
	clk := clock.NewFake(time.Unix(0, 0))
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), clk, c, time.Second, time.Minute) }()
	var err error
	got := false
	step(t, clk, time.Second, func() bool {
		select {
		case err = <-done:
			got = true
		default:
		}
		return got
	})
	if err == nil || errors.Is(err, ErrUnanswered) {
		t.Fatalf("Run = %v, want the send error", err)
	}
}

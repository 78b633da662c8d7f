// Package keepalive probes an SSH connection the way OpenSSH's
// ServerAliveInterval and ClientAliveInterval do, for the agent's side and
// the coordinator's side alike: a vanished peer is noticed even while no
// traffic flows and TCP reports nothing.
package keepalive

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/clock"
)

// ErrUnanswered is returned by Run when a probe got no reply in time.
var ErrUnanswered = errors.New("keepalive unanswered")

// Request is the global request sent as a probe. Any reply, even a
// refusal, proves the peer is alive.
const Request = "keepalive@openssh.com"

// Run sends a probe on c every interval, as clk measures time, and closes c
// when a probe fails or gets no reply within timeout. It returns nil when
// ctx ends, and otherwise, after closing c, ErrUnanswered or the error of
// the failed probe.
func Run(ctx context.Context, clk clock.Clock, c ssh.Conn, interval, timeout time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(interval):
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := c.SendRequest(Request, true, nil)
			res <- err
		}()
		select {
		case <-ctx.Done():
			return nil
		case err := <-res:
			if err != nil {
				c.Close()
				return fmt.Errorf("keepalive to %s: %w", c.RemoteAddr(), err)
			}
		case <-clk.After(timeout):
			c.Close()
			return fmt.Errorf("%w by %s within %s", ErrUnanswered, c.RemoteAddr(), timeout)
		}
	}
}

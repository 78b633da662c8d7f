package e2e

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUnauthenticatedFlood: a bounded flood of TCP connections that never
// start the SSH handshake, from one loopback address, fills only that
// address's share; while it lasts `status` answers over real ssh and a
// real agent builds.
func TestUnauthenticatedFlood(t *testing.T) {
	f := newFarmWith(t, "--max-unauthenticated", "64", "--max-unauthenticated-per-source", "8")
	f.addAgent("flood-agent")
	f.coord.log.waitFor(t, regexp.MustCompile(`agent connected`), 30*time.Second)

	const n = 300 // bounded in count; each dial is bounded in time
	admitted := 0
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", f.addr)
		if err != nil {
			t.Fatalf("flood dial: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "SSH-2.0-") {
			admitted++
		}
	}
	if admitted != 8 {
		t.Fatalf("%d of %d flood connections got an SSH greeting, want the per-source cap 8", admitted, n)
	}
	f.coord.log.waitFor(t, regexp.MustCompile(`connections refused: too many still in the SSH handshake`), 10*time.Second)

	// The flood connections are still open: operators and agents work.
	if out := f.mustSSH("status"); !strings.Contains(out, "flood-agent") {
		t.Fatalf("status during the flood does not list the agent:\n%s", out)
	}
	drv := instantiate(t, fmt.Sprint(time.Now().UnixNano()), "base")
	r := f.ssh(f.admin, "build --wait "+drv)
	if r.Code != 0 || !strings.Contains(r.Stdout, "succeeded") {
		t.Fatalf("build during the flood: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
}

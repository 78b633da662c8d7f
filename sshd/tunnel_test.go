package sshd

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/protocol"
)

// newTunnelEnv is newEnv with a cache handler that answers every path with
// the path itself.
func newTunnelEnv(t *testing.T) *env {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cache says "+r.URL.Path) })
	return newEnvWith(t, func(c *Config) { c.Cache = h })
}

func tunnelGet(client *gossh.Client, path string) (string, error) {
	return hostGet(client, protocol.CacheAddress, path)
}

// hostGet fetches path from a virtual host through the SSH connection.
func hostGet(client *gossh.Client, addr, path string) (string, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return client.Dial("tcp", addr)
		},
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestCacheTunnel(t *testing.T) {
	e := newTunnelEnv(t)
	_, agentKey := e.newAgent()
	for name, s := range map[string]gossh.Signer{"agent": agentKey, "reader": e.reader} {
		client, err := e.dial(s)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		// Several requests on one channel (keep-alive), then a new channel.
		for _, p := range []string{"/nix-cache-info", "/x.narinfo", "/nix-cache-info"} {
			got, err := tunnelGet(client, p)
			if err != nil || got != "cache says "+p {
				t.Fatalf("%s: GET %s through the tunnel: %q, %v", name, p, got, err)
			}
		}
		// Nothing but the cache address can be reached.
		for _, dest := range []string{e.addr, "cache.gbc:81", "localhost:80"} {
			if c, err := client.Dial("tcp", dest); err == nil {
				c.Close()
				t.Fatalf("%s: forward to %s was accepted", name, dest)
			} else if !strings.Contains(err.Error(), "prohibited") {
				t.Fatalf("%s: forward to %s: %v", name, dest, err)
			}
		}
	}
}

// TestWebTunnel: the web interface is one more row of the virtual host
// table: reader and above reach it, agent keys do not (they still reach
// the cache), and each host answers with its own handler.
func TestWebTunnel(t *testing.T) {
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web says "+r.URL.Path) })
	cacheH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cache says "+r.URL.Path) })
	e := newEnvWith(t, func(c *Config) { c.Cache, c.Web = cacheH, web })
	_, agentKey := e.newAgent()
	for name, s := range map[string]gossh.Signer{"reader": e.reader, "operator": e.operator, "admin": e.admin} {
		client, err := e.dial(s)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		for _, p := range []string{"/", "/builds", "/"} {
			if got, err := hostGet(client, WebAddress, p); err != nil || got != "web says "+p {
				t.Fatalf("%s: GET %s from %s: %q, %v", name, p, WebAddress, got, err)
			}
		}
		if got, err := tunnelGet(client, "/nix-cache-info"); err != nil || got != "cache says /nix-cache-info" {
			t.Fatalf("%s: cache next to the web interface: %q, %v", name, got, err)
		}
	}
	client, err := e.dial(agentKey)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if c, err := client.Dial("tcp", WebAddress); err == nil {
		c.Close()
		t.Fatal("an agent key reached the web interface")
	} else if !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("agent forward to %s: %v", WebAddress, err)
	}
	if got, err := tunnelGet(client, "/nix-cache-info"); err != nil || got != "cache says /nix-cache-info" {
		t.Fatalf("agent: cache: %q, %v", got, err)
	}
	// An address outside the table is refused, naming what is reachable.
	if c, err := client.Dial("tcp", "web.gbc:81"); err == nil {
		c.Close()
		t.Fatal("forward to web.gbc:81 was accepted")
	} else if !strings.Contains(err.Error(), WebAddress) || !strings.Contains(err.Error(), protocol.CacheAddress) {
		t.Fatalf("forward to web.gbc:81: %v does not name the reachable hosts", err)
	}
}

// TestMetricsTunnel: reader and above reach the metrics, agent keys do
// not (they still reach the cache).
func TestMetricsTunnel(t *testing.T) {
	answer := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name+" says "+r.URL.Path) })
	}
	e := newEnvWith(t, func(c *Config) { c.Cache, c.Web, c.Metrics = answer("cache"), answer("web"), answer("metrics") })
	_, agentKey := e.newAgent()
	for name, s := range map[string]gossh.Signer{"reader": e.reader, "operator": e.operator, "admin": e.admin, "agent": agentKey} {
		client, err := e.dial(s)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		got, err := hostGet(client, MetricsAddress, "/metrics")
		switch {
		case name == "agent" && (err == nil || !strings.Contains(err.Error(), "permission denied")):
			t.Fatalf("agent: GET /metrics through %s: %q, %v; want refused", MetricsAddress, got, err)
		case name != "agent" && (err != nil || got != "metrics says /metrics"):
			t.Fatalf("%s: GET /metrics through %s: %q, %v", name, MetricsAddress, got, err)
		}
		if got, err := tunnelGet(client, "/nix-cache-info"); err != nil || got != "cache says /nix-cache-info" {
			t.Fatalf("%s: cache next to the metrics: %q, %v", name, got, err)
		}
	}
	client, err := e.dial(e.reader)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if c, err := client.Dial("tcp", "metrics.gbc:9100"); err == nil {
		c.Close()
		t.Fatal("forward to metrics.gbc:9100 was accepted")
	} else if !strings.Contains(err.Error(), MetricsAddress) {
		t.Fatalf("forward to metrics.gbc:9100: %v does not name %s", err, MetricsAddress)
	}
}

func TestProbeReadsStdin(t *testing.T) {
	e := newEnv(t, 0)
	for _, cmd := range []string{"probe", "probe --write"} {
		c, err := e.dial(e.admin)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		sess.Stdout = &out
		sess.Stdin = strings.NewReader(strings.Repeat("x", 1_000_000))
		if err := sess.Run(cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		c.Close()
		if !strings.HasPrefix(out.String(), "1000000 bytes in ") {
			t.Fatalf("%s printed %q", cmd, out.String())
		}
	}
	if r := e.run(e.operator, "probe"); r.code != 1 || !strings.Contains(r.stderr, "needs role admin") {
		t.Fatalf("operator probe: %+v", r)
	}
}

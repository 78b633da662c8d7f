package sshd

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
)

// Tunnels: a local forward (ssh -L, or the agent's own forwarder) opens a
// direct-tcpip channel to one of a few reserved virtual host addresses;
// the channel carries plain HTTP/1.1 to that host's handler. Nothing else
// can be forwarded, and no TCP connection is ever made on the
// coordinator's side. Who may reach each host is decided in the one table,
// virtualHosts.

// WebAddress is the reserved host:port of the read-only web interface
// (ssh -L 8080:web.gbc:80 COORDINATOR).
const WebAddress = "web.gbc:80"

// MetricsAddress is the reserved host:port of the Prometheus metrics
// (ssh -L 9100:metrics.gbc:80 COORDINATOR).
const MetricsAddress = "metrics.gbc:80"

// directTCPIP is the payload of a direct-tcpip channel open (RFC 4254 §7.2).
type directTCPIP struct {
	DestAddr   string
	DestPort   uint32
	OriginAddr string
	OriginPort uint32
}

// virtualHost is one address reachable through the SSH port.
type virtualHost struct {
	addr    string
	what    string // for people: "the binary cache"
	handler http.Handler
	// allowed decides who may open a channel to it.
	allowed func(principal) bool
}

// virtualHosts is the table of addresses a forward may reach and who may
// reach each; a row without a handler (not configured) is left out.
func virtualHosts(cfg Config) []virtualHost {
	rows := []virtualHost{
		{protocol.CacheAddress, "the binary cache", cfg.Cache, agentOrReader},
		{WebAddress, "the web interface", cfg.Web, readerOrAbove},
		{MetricsAddress, "the Prometheus metrics", cfg.Metrics, readerOrAbove},
	}
	out := rows[:0]
	for _, r := range rows {
		if r.handler != nil {
			out = append(out, r)
		}
	}
	return out
}

// agentOrReader: agents (which substitute inputs from the cache), and
// operator roles from reader up (for debugging with ssh -L).
func agentOrReader(p principal) bool {
	if p.Role == coordinator.RoleAgent {
		return p.AgentID != ""
	}
	return allowed(p.Role, coordinator.RoleReader)
}

// readerOrAbove: operator roles from reader up; never an agent key.
func readerOrAbove(p principal) bool {
	return p.Role != coordinator.RoleAgent && allowed(p.Role, coordinator.RoleReader)
}

// hostTunnel is a virtual host with the server that serves its channels.
type hostTunnel struct {
	virtualHost
	t *tunnel
}

func (s *Server) handleDirectTCPIP(_ *ssh.Server, conn *gossh.ServerConn, nc gossh.NewChannel, ctx ssh.Context) {
	var d directTCPIP
	if err := gossh.Unmarshal(nc.ExtraData(), &d); err != nil {
		nc.Reject(gossh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	dest := net.JoinHostPort(d.DestAddr, strconv.FormatUint(uint64(d.DestPort), 10))
	h, ok := s.hosts[dest]
	if !ok {
		s.log.Info("forward refused", "dest", text.Truncate(dest, 200), "remote", conn.RemoteAddr().String())
		nc.Reject(gossh.Prohibited, "only "+s.reachable+" can be reached here")
		return
	}
	pub, _ := ctx.Value(ssh.ContextKeyPublicKey).(ssh.PublicKey)
	who, err := s.whoamiKey(ctx, pub)
	if err != nil || !h.allowed(who) {
		s.log.Warn("tunnel refused", "dest", dest, "fingerprint", who.Fingerprint, "role", who.Role, "err", err)
		nc.Reject(gossh.Prohibited, "permission denied")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	go gossh.DiscardRequests(reqs)
	h.t.serve(pipeChannel(ch))
}

// tunnel is one http.Server fed with channel connections.
type tunnel struct {
	ln  *chanListener
	srv *http.Server
}

func newTunnel(h http.Handler, log *slog.Logger) *tunnel {
	t := &tunnel{
		ln: &chanListener{conns: make(chan net.Conn), done: make(chan struct{})},
		srv: &http.Server{
			Handler:  h,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
	}
	go t.srv.Serve(t.ln) //nolint:errcheck // returns when closed
	return t
}

func (t *tunnel) serve(c net.Conn) {
	select {
	case t.ln.conns <- c:
	case <-t.ln.done:
		c.Close()
	}
}

func (t *tunnel) close() { t.srv.Close() }

// chanListener hands channel connections to http.Server.Serve.
type chanListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return tunnelAddr{} }

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "ssh-direct-tcpip" }
func (tunnelAddr) String() string  { return "ssh-direct-tcpip" }

// pipeChannel gives http.Server one end of a net.Pipe (which supports the
// deadlines it uses to abort background reads) and copies between the other
// end and the channel.
func pipeChannel(ch gossh.Channel) net.Conn {
	srvEnd, ours := net.Pipe()
	go func() {
		io.Copy(ch, ours) //nolint:errcheck // ends when either side closes
		ch.CloseWrite()
		ch.Close()
	}()
	go func() {
		io.Copy(ours, ch) //nolint:errcheck
		ours.Close()
	}()
	return srvEnd
}

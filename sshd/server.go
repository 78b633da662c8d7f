// Package sshd is the coordinator's one SSH port: a command router for
// operators, the gbc-agent-v1 subsystem and a virtual SFTP upload tree for
// agents. Authentication only asks "is this key known"; what a session may
// do is decided per request from the key it proved, in roles.go.
//
// router.go holds the command table and runs one command line; each noun's
// commands live in a file of their own (status.go, agents.go, keys.go,
// builds.go, submit.go, log.go, events.go, import.go, probe.go, help.go).
package sshd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gliderlabs/ssh"
	"github.com/prometheus/client_golang/prometheus"
	gossh "golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/keepalive"
	"github.com/gbc-farm/gbc/keys"
	"github.com/gbc-farm/gbc/protocol"
)

// DefaultMaxUploadBytes bounds one uploaded file (64 GiB).
const DefaultMaxUploadBytes = 64 << 30

// Config wires a Server.
type Config struct {
	Coordinator *coordinator.Coordinator
	HostKey     gossh.Signer
	Logger      *slog.Logger
	Clock       clock.Clock
	// MaxUploadBytes bounds one uploaded file.
	MaxUploadBytes int64
	// MaxAgentUploadBytes bounds one agent's uploads that are not yet
	// verified, all its builds together (budget.go).
	MaxAgentUploadBytes int64
	// KeepAlive is how often agent connections are probed; a probe left
	// unanswered for two intervals closes the connection.
	KeepAlive time.Duration
	// MaxLineBytes bounds agent protocol lines.
	MaxLineBytes int
	// Cache, when set, is served over HTTP inside direct-tcpip channels
	// to protocol.CacheAddress (the cache tunnel, tunnel.go).
	Cache http.Handler
	// Web, when set, is the read-only web interface, served the same way
	// at WebAddress to keys with the reader role or above.
	Web http.Handler
	// Metrics, when set, is the Prometheus /metrics handler, served the
	// same way at MetricsAddress to keys with the reader role or above.
	Metrics http.Handler
	// HandshakeTimeout is how long a connection may take from TCP accept
	// to a verified key (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxUnauthenticated caps the connections still in the handshake;
	// more are closed at accept (default DefaultMaxUnauthenticated).
	MaxUnauthenticated int
	// MaxUnauthenticatedPerSource is the same cap per source IP address
	// (default DefaultMaxUnauthenticatedPerSource).
	MaxUnauthenticatedPerSource int
}

// Server serves the SSH port.
type Server struct {
	cfg   Config
	coord *coordinator.Coordinator
	log   *slog.Logger
	srv   *ssh.Server
	// hosts are the virtual hosts direct-tcpip channels may reach, by
	// address (tunnel.go); reachable lists them for refusals.
	hosts     map[string]hostTunnel
	reachable string
	// conns is every live connection: handshake limits, and by key for
	// revocation.
	conns *conns

	budgetMu sync.Mutex
	budgets  map[string]*uploadBudget // by agent id

	// uploaded counts the bytes agents wrote into upload files.
	uploaded *prometheus.CounterVec
}

// Collector returns the SSH port's metrics for a prometheus.Registry.
func (s *Server) Collector() prometheus.Collector { return s.uploaded }

// ctxKey names the values this package keeps in an ssh.Context.
type ctxKey int

// liveConnKey holds a connection's *liveConn.
const liveConnKey ctxKey = 0

// New builds a server; call Serve with a listener.
func New(cfg Config) (*Server, error) {
	if cfg.Coordinator == nil || cfg.HostKey == nil {
		return nil, errors.New("sshd: coordinator and host key are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.MaxAgentUploadBytes <= 0 {
		cfg.MaxAgentUploadBytes = DefaultMaxAgentUploadBytes
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = protocol.DefaultMaxLineBytes
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if cfg.MaxUnauthenticatedPerSource <= 0 {
		cfg.MaxUnauthenticatedPerSource = DefaultMaxUnauthenticatedPerSource
	}
	s := &Server{cfg: cfg, coord: cfg.Coordinator, log: cfg.Logger,
		budgets: map[string]*uploadBudget{},
		uploaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gbc_uploaded_bytes_total",
			Help: "Bytes agents wrote into upload files over SFTP (resent ranges count again), by agent id.",
		}, []string{"agent"}),
		conns: newConns(cfg.Logger, cfg.Clock, cfg.HandshakeTimeout, cfg.MaxUnauthenticated, cfg.MaxUnauthenticatedPerSource)}
	s.srv = &ssh.Server{
		Handler:              s.handleExec,
		PublicKeyHandler:     s.knownKey,
		ConnCallback:         s.accept,
		ServerConfigCallback: s.serverConfig,
		SubsystemHandlers: map[string]ssh.SubsystemHandler{
			protocol.Subsystem: s.handleAgent,
			"sftp":             s.handleSFTP,
		},
		// Refuse everything not listed: no port forwarding (except the
		// cache address, tunnel.go), no agent or X11 forwarding
		// (gliderlabs denies those unless handlers are set).
		Version: "gbc",
		ChannelHandlers: map[string]ssh.ChannelHandler{
			"session": ssh.DefaultSessionHandler,
		},
	}
	if hosts := virtualHosts(cfg); len(hosts) > 0 {
		s.hosts = map[string]hostTunnel{}
		var names []string
		for _, h := range hosts {
			s.hosts[h.addr] = hostTunnel{h, newTunnel(h.handler, cfg.Logger)}
			names = append(names, h.addr+" ("+h.what+")")
		}
		s.reachable = strings.Join(names, ", ")
		s.srv.ChannelHandlers["direct-tcpip"] = s.handleDirectTCPIP
	}
	s.srv.AddHostKey(cfg.HostKey)
	cfg.Coordinator.OnRevocation(s.revoke)
	return s, nil
}

// revoke closes every connection of the revoked keys: agent sessions,
// uploads, cache tunnels and operators' commands (events --follow) end
// at once.
func (s *Server) revoke(r coordinator.Revocation) {
	for _, fp := range r.Fingerprints {
		n := s.conns.closeKey(fp)
		s.log.Warn("connections of a revoked key closed", "fingerprint", fp, "connections", n, "reason", r.Reason)
	}
}

// Serve accepts connections until Close.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, ssh.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops listening and closes every connection.
func (s *Server) Close() error {
	for _, h := range s.hosts {
		h.t.close()
	}
	return s.srv.Close()
}

// accept admits a new TCP connection into the registry (nil: refused,
// a handshake cap is reached).
func (s *Server) accept(ctx ssh.Context, c net.Conn) net.Conn {
	lc := s.conns.admit(c)
	if lc == nil {
		return nil
	}
	ctx.SetValue(liveConnKey, lc)
	return lc
}

// serverConfig is the per-connection SSH configuration: it learns which
// key a connection verified, to file the connection under it.
func (s *Server) serverConfig(ctx ssh.Context) *gossh.ServerConfig {
	lc, _ := ctx.Value(liveConnKey).(*liveConn)
	return &gossh.ServerConfig{
		VerifiedPublicKeyCallback: func(_ gossh.ConnMetadata, key gossh.PublicKey, perms *gossh.Permissions, _ string) (*gossh.Permissions, error) {
			return s.verified(ctx, lc, key, perms)
		},
	}
}

// verified runs once a client proved it holds key: the connection is
// filed under the key first and the key checked after, so a revocation
// racing with the login either is seen here or finds the connection.
func (s *Server) verified(ctx ssh.Context, lc *liveConn, key gossh.PublicKey, perms *gossh.Permissions) (*gossh.Permissions, error) {
	if lc == nil {
		return nil, errors.New("connection not registered")
	}
	fp := keys.Fingerprint(key)
	if !s.conns.bind(lc, fp) {
		return nil, errors.New("connection closed during authentication")
	}
	if _, err := s.liveKey(ctx, fp); err != nil {
		s.conns.unbind(lc)
		s.log.Info("key refused after verification", "fingerprint", fp, "remote", lc.RemoteAddr().String(), "err", err)
		return nil, err
	}
	// Sessions derive the principal from this key: the one verified.
	ctx.SetValue(ssh.ContextKeyPublicKey, key)
	s.conns.authenticated(lc)
	return perms, nil
}

// liveKey is the one check that a key may be used now: it is registered
// and, for an agent key, bound to an agent that is active. Every
// authentication and every session, channel and command asks it.
func (s *Server) liveKey(ctx context.Context, fp string) (coordinator.Key, error) {
	k, err := s.coord.Key(ctx, fp)
	if err != nil {
		return coordinator.Key{}, fmt.Errorf("key %s: %w", fp, err)
	}
	if k.Fingerprint != fp {
		return coordinator.Key{}, fmt.Errorf("key %s: stored key does not match", fp)
	}
	if k.Role == coordinator.RoleAgent {
		if k.AgentID == "" {
			return coordinator.Key{}, fmt.Errorf("agent key %s is not bound to an agent", fp)
		}
		a, err := s.coord.Agent(ctx, k.AgentID)
		if err != nil {
			return coordinator.Key{}, fmt.Errorf("agent %s of key %s: %w", k.AgentID, fp, err)
		}
		if !a.Active {
			return coordinator.Key{}, fmt.Errorf("agent %s of key %s is deactivated", k.AgentID, fp)
		}
	}
	return k, nil
}

// knownKey is the authentication callback: yes if the key may be used.
// Nothing is remembered from here; sessions re-derive the principal.
func (s *Server) knownKey(ctx ssh.Context, key ssh.PublicKey) bool {
	fp := keys.Fingerprint(key)
	if _, err := s.liveKey(ctx, fp); err != nil {
		if !errors.Is(err, coordinator.ErrNotFound) {
			s.log.Info("key refused", "fingerprint", fp, "remote", ctx.RemoteAddr().String(), "err", err)
			return false
		}
		s.log.Info("unknown key refused", "fingerprint", fp, "remote", ctx.RemoteAddr().String())
		return false
	}
	return true
}

// principal is who a session is: the stored key matching the public key
// the session proved.
type principal struct {
	Fingerprint string
	Role        coordinator.Role
	AgentID     string
}

// whoami re-derives the principal from the key the session authenticated
// with (x/crypto guarantees the last key passed to the callback is the one
// that authenticated). Any doubt is an error: fail closed.
func (s *Server) whoami(ctx context.Context, sess ssh.Session) (principal, error) {
	return s.whoamiKey(ctx, sess.PublicKey())
}

// whoamiKey is whoami for requests that are not sessions (channels other
// than "session"): pub is the key the connection authenticated with.
func (s *Server) whoamiKey(ctx context.Context, pub ssh.PublicKey) (principal, error) {
	if pub == nil {
		return principal{}, errors.New("no public key on this session")
	}
	fp := keys.Fingerprint(pub)
	k, err := s.liveKey(ctx, fp)
	if err != nil {
		return principal{}, err
	}
	stored, err := keys.ParseAuthorizedKey(k.AuthorizedKey)
	if err != nil || stored.Fingerprint != fp {
		return principal{}, fmt.Errorf("key %s: stored key does not match", fp)
	}
	return principal{Fingerprint: fp, Role: k.Role, AgentID: k.AgentID}, nil
}

// keepAlive probes the connection and closes it when probes go
// unanswered, so a vanished agent is noticed even without TCP errors.
func (s *Server) keepAlive(ctx context.Context, sess ssh.Session) {
	conn, ok := sess.Context().Value(ssh.ContextKeyConn).(gossh.Conn)
	if !ok {
		return
	}
	if err := keepalive.Run(ctx, s.cfg.Clock, conn, s.cfg.KeepAlive, 2*s.cfg.KeepAlive); errors.Is(err, keepalive.ErrUnanswered) {
		s.log.Warn("keepalive unanswered; closing connection", "remote", conn.RemoteAddr().String())
	}
}

func (s *Server) now() time.Time { return s.cfg.Clock.Now() }

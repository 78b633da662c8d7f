package sshd

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/clock"
)

// Defaults for connections that have not authenticated yet.
const (
	// DefaultHandshakeTimeout is how long a TCP connection may take to
	// finish the SSH handshake and authenticate.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultMaxUnauthenticated caps connections still in the handshake.
	DefaultMaxUnauthenticated = 1024
	// DefaultMaxUnauthenticatedPerSource caps them per source address.
	DefaultMaxUnauthenticatedPerSource = 64
)

// conns is the registry of the server's live TCP connections. Before
// authentication it enforces the handshake deadline and the caps on
// connections still in the handshake (so a flood of idle connections
// cannot use up file descriptors); after it, it indexes connections by
// the fingerprint of the key they authenticated with, so revoking a key
// closes every connection that uses it.
type conns struct {
	log          *slog.Logger
	clk          clock.Clock
	timeout      time.Duration
	maxTotal     int
	maxPerSource int

	mu       sync.Mutex
	pending  int            // connections in the handshake
	bySource map[string]int // the same, per source address
	byKey    map[string]map[*liveConn]bool
	// refused counts connections refused since the last log line about
	// it, so a flood logs a few lines, not one per connection.
	refused    int
	refusedLog time.Time
}

func newConns(log *slog.Logger, clk clock.Clock, timeout time.Duration, maxTotal, maxPerSource int) *conns {
	return &conns{
		log: log, clk: clk, timeout: timeout, maxTotal: maxTotal, maxPerSource: maxPerSource,
		bySource: map[string]int{},
		byKey:    map[string]map[*liveConn]bool{},
	}
}

// liveConn is one accepted TCP connection.
type liveConn struct {
	net.Conn
	reg    *conns
	source string

	// Guarded by reg.mu.
	inHandshake bool
	fingerprint string // set once a key is verified
	closed      bool

	handshakeOver chan struct{} // closed when it authenticates or closes
	closeOnce     sync.Once
}

// sourceOf is the address a connection is counted under: its IP, so the
// ports of one host share one budget.
func sourceOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// admit registers a new connection and starts its handshake deadline, or
// returns nil when a cap is reached (the caller closes the connection).
func (r *conns) admit(c net.Conn) *liveConn {
	src := sourceOf(c.RemoteAddr())
	r.mu.Lock()
	if r.pending >= r.maxTotal || r.bySource[src] >= r.maxPerSource {
		total, fromSrc := r.pending, r.bySource[src]
		r.refused++
		now := r.clk.Now()
		logIt := r.refusedLog.IsZero() || now.Sub(r.refusedLog) >= 10*time.Second
		refused := r.refused
		if logIt {
			r.refusedLog, r.refused = now, 0
		}
		r.mu.Unlock()
		if logIt {
			r.log.Warn("connections refused: too many still in the SSH handshake",
				"refused", refused, "in_handshake", total, "limit", r.maxTotal,
				"source", src, "from_source", fromSrc, "limit_per_source", r.maxPerSource)
		}
		return nil
	}
	r.pending++
	r.bySource[src]++
	lc := &liveConn{Conn: c, reg: r, source: src, inHandshake: true, handshakeOver: make(chan struct{})}
	r.mu.Unlock()
	go lc.deadline()
	return lc
}

// deadline closes the connection if it has not authenticated in time.
func (lc *liveConn) deadline() {
	select {
	case <-lc.handshakeOver:
		return
	case <-lc.reg.clk.After(lc.reg.timeout):
	}
	lc.reg.mu.Lock()
	late := lc.inHandshake
	lc.reg.mu.Unlock()
	if late {
		lc.reg.log.Info("connection closed: no SSH authentication within the handshake timeout",
			"remote", lc.RemoteAddr().String(), "timeout", lc.reg.timeout)
		lc.Close()
	}
}

// leaveHandshakeLocked takes the connection out of the handshake counts.
func (r *conns) leaveHandshakeLocked(lc *liveConn) {
	if !lc.inHandshake {
		return
	}
	lc.inHandshake = false
	r.pending--
	if r.bySource[lc.source]--; r.bySource[lc.source] <= 0 {
		delete(r.bySource, lc.source)
	}
	close(lc.handshakeOver)
}

// bind files the connection under the key it is authenticating with,
// before the key is checked for the last time, so a revocation between
// that check and the end of authentication still finds it. It reports
// false when the connection is already closed.
func (r *conns) bind(lc *liveConn, fingerprint string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lc.closed {
		return false
	}
	r.unbindLocked(lc)
	lc.fingerprint = fingerprint
	set := r.byKey[fingerprint]
	if set == nil {
		set = map[*liveConn]bool{}
		r.byKey[fingerprint] = set
	}
	set[lc] = true
	return true
}

func (r *conns) unbind(lc *liveConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unbindLocked(lc)
}

func (r *conns) unbindLocked(lc *liveConn) {
	if lc.fingerprint == "" {
		return
	}
	if set := r.byKey[lc.fingerprint]; set != nil {
		delete(set, lc)
		if len(set) == 0 {
			delete(r.byKey, lc.fingerprint)
		}
	}
	lc.fingerprint = ""
}

// authenticated ends the connection's handshake: its deadline stops and
// it no longer counts against the caps.
func (r *conns) authenticated(lc *liveConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leaveHandshakeLocked(lc)
}

// closeKey closes every connection authenticated (or authenticating)
// with the key and returns how many there were.
func (r *conns) closeKey(fingerprint string) int {
	r.mu.Lock()
	var victims []*liveConn
	for lc := range r.byKey[fingerprint] {
		victims = append(victims, lc)
	}
	r.mu.Unlock()
	for _, lc := range victims {
		lc.Close()
	}
	return len(victims)
}

// inHandshake is the number of connections not yet authenticated.
func (r *conns) inHandshake() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending
}

// Close closes the TCP connection and forgets it.
func (lc *liveConn) Close() error {
	var err error
	lc.closeOnce.Do(func() {
		r := lc.reg
		r.mu.Lock()
		lc.closed = true
		r.leaveHandshakeLocked(lc)
		r.unbindLocked(lc)
		r.mu.Unlock()
		err = lc.Conn.Close()
	})
	return err
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
	"github.com/gbc-farm/gbc/scheduler"
)

// Session is one connected agent. The coordinator pushes Build and Cancel
// messages into it; the transport drains them with Next.
type Session struct {
	c           *Coordinator
	agentID     string
	name        string
	systems     []string
	features    map[string]bool
	requireTags []string
	maxParallel int
	connectedAt time.Time
	backend     string
	backendVer  string
	sched       scheduler.Agent

	// hw is what the agent last reported of its machine (hello,
	// heartbeats); guarded by c.mu.
	hw protocol.Hardware

	// Guarded by c.mu.
	// holds are the builds allocated to this session, each with the id of
	// the build message that gave it (0: continued from the hello).
	holds map[string]uint64
	// cancels are the cancel messages pushed for builds this session no
	// longer holds, by build, until a heartbeat shows them handled.
	cancels  map[string]uint64
	lastSeen time.Time
	gone     bool
	inactive bool // deactivated: gets no new builds

	// resultMu is held (read) while a result is recorded and (write) to
	// revoke the session; revoked refuses every later result.
	resultMu sync.RWMutex
	revoked  bool

	outMu  sync.Mutex
	out    []protocol.Message
	wake   chan struct{} // closed and replaced when out grows or the session ends
	closed bool
	nextID uint64
}

// AgentID is the agent this session belongs to.
func (s *Session) AgentID() string { return s.agentID }

// Connect registers a session for an agent that said hello. agentID comes
// from the key the transport authenticated, never from the hello. The
// returned Welcome lists which of the builds the agent reported running
// it should continue and which it should abort. A previous session of the
// same agent is replaced.
func (c *Coordinator) Connect(ctx context.Context, agentID string, h *protocol.Hello) (*Session, protocol.Welcome, error) {
	if h.ProtocolVersion != protocol.Version {
		return nil, protocol.Welcome{}, fmt.Errorf("hello: protocol_version %d not supported (want %d)", h.ProtocolVersion, protocol.Version)
	}
	if len(h.Systems) == 0 {
		return nil, protocol.Welcome{}, errors.New("hello: systems is empty")
	}
	if err := checkHello(h); err != nil {
		return nil, protocol.Welcome{}, err
	}
	if h.MaxParallelBuilds < 1 || h.MaxParallelBuilds > 1024 {
		return nil, protocol.Welcome{}, fmt.Errorf("hello: max_parallel_builds %d out of range 1..1024", h.MaxParallelBuilds)
	}
	for _, t := range h.RequireTags {
		if !strings.Contains(t, "=") {
			return nil, protocol.Welcome{}, fmt.Errorf("hello: require_tags entry %q is not K=V", t)
		}
	}
	if n := len(h.Running) + len(h.Results); n > maxListedBuilds {
		return nil, protocol.Welcome{}, fmt.Errorf("hello: running and results list %d builds, at most %d", n, maxListedBuilds)
	}
	a, err := c.store.Agent(ctx, agentID)
	if err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("agent %s: %w", agentID, err)
	}
	if !a.Active {
		return nil, protocol.Welcome{}, fmt.Errorf("agent %s is deactivated ('agent %s activate' lets it in again): %w", agentID, agentID, ErrUnknownAgent)
	}
	onAgent, err := c.store.BuildsOnAgent(ctx, agentID)
	if err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("builds on agent %s: %w", agentID, err)
	}
	now := c.clk.Now()
	if err := c.store.TouchAgent(ctx, agentID, now); err != nil {
		c.log.Warn("touch agent", "agent", agentID, "err", err)
	}
	s := &Session{
		c:           c,
		agentID:     agentID,
		name:        a.Name,
		systems:     slices.Clone(h.Systems),
		features:    map[string]bool{},
		requireTags: slices.Clone(h.RequireTags),
		maxParallel: h.MaxParallelBuilds,
		connectedAt: now,
		backend:     h.Backend,
		backendVer:  h.BackendVersion,
		holds:       map[string]uint64{},
		cancels:     map[string]uint64{},
		lastSeen:    now,
		inactive:    !a.Active,
		wake:        make(chan struct{}),
		hw:          h.Hardware,
	}
	for _, f := range h.Features {
		s.features[f] = true
	}
	s.sched = s.schedAgent()
	running, results := idSet(h.Running), idSet(h.Results)
	w := protocol.Welcome{
		ProtocolVersion:  protocol.Version,
		AgentID:          agentID,
		MaxLineBytes:     protocol.DefaultMaxLineBytes,
		HeartbeatSeconds: int(c.cfg.Heartbeat / time.Second),
		UploadRoot:       "/uploads",
	}
	if c.cfg.Cache != nil && c.cfg.CacheAddress != "" {
		w.CacheAddress = c.cfg.CacheAddress
		w.CachePublicKey = c.cfg.Cache.PublicKey().String()
	}
	// What the store gives this agent is settled now, from the hello: a
	// build it still runs continues, one whose result it is about to
	// resend stays with it, and any other it has lost (a restart, a
	// cancel that crossed a disconnect) goes back to the queue at once.
	var lost []string
	for _, b := range onAgent {
		switch {
		case running[b.ID]:
			s.holds[b.ID] = 0
			w.Continue = append(w.Continue, b.ID)
		case results[b.ID]:
			s.holds[b.ID] = 0
		default:
			lost = append(lost, b.ID)
		}
	}
	for id := range running {
		if _, ok := s.holds[id]; !ok {
			w.Abort = append(w.Abort, id)
		}
	}
	sort.Strings(w.Continue)
	sort.Strings(w.Abort)

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, protocol.Welcome{}, ErrSessionClosed
	}
	old := c.sessions[agentID]
	if old != nil {
		old.gone = true
	}
	c.sessions[agentID] = s
	delete(c.departed, agentID)
	c.noteAgentLocked(agentID, func(m *agentMeta) { m.name, m.active, m.lastSeen = a.Name, a.Active, now })
	c.mu.Unlock()
	if old != nil {
		c.log.Info("agent session replaced", "agent", agentID)
		old.closeOutbox()
	}
	if h.Name != "" && h.Name != a.Name {
		// The registered name is the agent's name everywhere; the host
		// name an agent reports by default is only logged.
		c.log.Info("agent reports another name than it was registered with", "agent", agentID, "name", a.Name, "reported", h.Name)
	}
	c.log.Info("agent connected", "agent", agentID, "name", a.Name, "systems", h.Systems,
		"features", h.Features, "max_parallel", h.MaxParallelBuilds, "continue", len(w.Continue), "abort", len(w.Abort), "lost", len(lost))
	c.agentEvent(ctx, db.EventAgentConnected, agentID, "")

	if c.spawn() {
		go c.watchHeartbeats(s)
	}
	c.mu.Lock()
	for _, id := range lost {
		// A result of the previous session still being verified settles
		// the build itself.
		if !c.verifying[id] {
			c.requeueLocked(ctx, id, agentID, db.KindInfrastructure, "agent reconnected without the build", "")
		}
	}
	c.dispatchLocked(ctx)
	c.mu.Unlock()
	return s, w, nil
}

// maxListedBuilds bounds the running and results lists of a hello or
// heartbeat (an agent runs at most 1024 builds at once).
const maxListedBuilds = 4096

func idSet(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// Heartbeat records that the agent is alive and settles any difference
// between what the agent says it holds and what this session holds.
func (s *Session) Heartbeat(ctx context.Context, hb *protocol.Heartbeat) {
	c := s.c
	now := c.clk.Now()
	c.mu.Lock()
	s.lastSeen = now
	s.hw = hb.Hardware
	if n := len(hb.Running) + len(hb.Results); n > maxListedBuilds {
		c.log.Warn("heartbeat lists too many builds; not reconciled", "agent", s.agentID, "builds", n, "max", maxListedBuilds)
	} else {
		c.reconcileLocked(ctx, s, hb)
	}
	c.mu.Unlock()
	if err := c.store.TouchAgent(ctx, s.agentID, now); err != nil {
		c.log.Warn("touch agent", "agent", s.agentID, "err", err)
	}
}

// reconcileLocked compares a heartbeat with the session: a build the
// session holds, pushed at or before hb.Handled, that the agent neither
// runs nor has a result for is lost and goes back to the queue (not
// counted against the build or the agent); a build the agent runs that
// the session does not hold is canceled there. Builds pushed after
// hb.Handled are left alone: the agent listed its builds before it read
// them.
func (c *Coordinator) reconcileLocked(ctx context.Context, s *Session, hb *protocol.Heartbeat) {
	if s.gone || c.closed || c.sessions[s.agentID] != s {
		return
	}
	has := idSet(hb.Running)
	for _, id := range hb.Results {
		has[id] = true
	}
	var lost []string
	for id, pushed := range s.holds {
		if pushed <= hb.Handled && !has[id] && !c.verifying[id] {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	for _, id := range lost {
		c.log.Warn("agent does not hold a build allocated to it; requeueing", "build", id, "agent", s.agentID)
		c.requeueLocked(ctx, id, s.agentID, db.KindInfrastructure, "agent does not hold the build", "")
	}
	for id, pushed := range s.cancels {
		if pushed <= hb.Handled {
			delete(s.cancels, id)
		}
	}
	for _, id := range hb.Running {
		if _, held := s.holds[id]; held {
			continue
		}
		if _, pending := s.cancels[id]; pending {
			continue
		}
		c.log.Warn("agent runs a build not allocated to it; canceling it there", "build", id, "agent", s.agentID)
		s.cancels[id] = s.push(&protocol.Cancel{Build: id})
	}
	if len(lost) > 0 {
		c.dispatchLocked(ctx)
	}
}

// Seen records that a line arrived from the agent; any traffic counts
// as a sign of life for the heartbeat watchdog.
func (s *Session) Seen() {
	now := s.c.clk.Now()
	s.c.mu.Lock()
	s.lastSeen = now
	s.c.mu.Unlock()
}

// Ack notes the agent's acknowledgement of a pushed message.
func (s *Session) Ack(id uint64) {
	s.c.log.Debug("agent ack", "agent", s.agentID, "id", id)
}

// Close ends the session because the transport went away. The agent's
// builds go back to the queue after the grace period unless it reconnects.
func (s *Session) Close() {
	c := s.c
	c.mu.Lock()
	current := c.sessions[s.agentID] == s
	if current {
		delete(c.sessions, s.agentID)
		c.departed[s.agentID] = s
		c.noteAgentLocked(s.agentID, func(m *agentMeta) { m.lastSeen = s.lastSeen })
	}
	already := s.gone
	s.gone = true
	closed := c.closed
	c.mu.Unlock()
	s.closeOutbox()
	if !current || already || closed {
		return
	}
	c.log.Info("agent disconnected", "agent", s.agentID, "grace", c.cfg.DisconnectGrace)
	c.agentEvent(c.life, db.EventAgentAbsent, s.agentID, "session ended")
	c.reconcileAfterGrace(s.agentID)
}

// Next blocks until there is a message to send to the agent, the session
// ends (ErrSessionClosed) or ctx is done.
func (s *Session) Next(ctx context.Context) (protocol.Message, error) {
	for {
		s.outMu.Lock()
		if len(s.out) > 0 {
			m := s.out[0]
			s.out[0] = nil
			s.out = s.out[1:]
			s.outMu.Unlock()
			return m, nil
		}
		if s.closed {
			s.outMu.Unlock()
			return nil, ErrSessionClosed
		}
		wake := s.wake
		s.outMu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// push queues a message for the agent and returns its id (0 once the
// session is closed); it never blocks, so the coordinator can push while
// holding its lock.
func (s *Session) push(m protocol.Message) uint64 {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.closed {
		return 0
	}
	s.nextID++
	switch m := m.(type) {
	case *protocol.Build:
		m.ID = s.nextID
	case *protocol.Cancel:
		m.ID = s.nextID
	}
	s.out = append(s.out, m)
	close(s.wake)
	s.wake = make(chan struct{})
	return s.nextID
}

func (s *Session) closeOutbox() {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.wake)
}

func (s *Session) statusLocked() AgentStatus {
	st := AgentStatus{
		ID: s.agentID, Name: s.name, Systems: s.systems, MaxParallel: s.maxParallel,
		ConnectedAt: s.connectedAt, LastSeen: s.lastSeen, Running: []string{}, Features: []string{},
		Active: !s.inactive,
	}
	for f := range s.features {
		st.Features = append(st.Features, f)
	}
	sort.Strings(st.Features)
	for id := range s.holds {
		st.Running = append(st.Running, id)
	}
	sort.Strings(st.Running)
	return st
}

// spawn registers a background goroutine unless the coordinator is closing,
// so Close can wait for all of them.
func (c *Coordinator) spawn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// watchHeartbeats ends a session whose agent stopped sending heartbeats
// (three missed intervals), in case the transport did not notice.
func (c *Coordinator) watchHeartbeats(s *Session) {
	defer c.wg.Done()
	for {
		select {
		case <-c.clk.After(c.cfg.Heartbeat):
		case <-c.done:
			return
		}
		c.mu.Lock()
		gone := s.gone
		silent := c.clk.Now().Sub(s.lastSeen)
		c.mu.Unlock()
		if gone {
			return
		}
		if silent > 3*c.cfg.Heartbeat {
			c.log.Warn("agent missed heartbeats; ending session", "agent", s.agentID, "silent", silent)
			s.Close()
			return
		}
	}
}

// reconcileAfterGrace requeues, after the grace period, every build the
// store gives to the agent that no live session of it holds (whether the
// agent stayed away or came back without some of them).
func (c *Coordinator) reconcileAfterGrace(agentID string) {
	if !c.spawn() {
		return
	}
	go func() {
		defer c.wg.Done()
		select {
		case <-c.clk.After(c.cfg.DisconnectGrace):
		case <-c.done:
			return
		}
		ctx := c.life
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed {
			return
		}
		cur := c.sessions[agentID]
		bs, err := c.store.BuildsOnAgent(ctx, agentID)
		if err != nil {
			c.log.Error("reconcile agent builds", "agent", agentID, "err", err)
			return
		}
		for _, b := range bs {
			if _, held := cur.holdsBuild(b.ID); held {
				continue
			}
			if c.verifying[b.ID] {
				continue
			}
			reason := "agent disconnected"
			if cur != nil {
				reason = "agent reconnected without the build"
			}
			c.requeueLocked(ctx, b.ID, agentID, db.KindInfrastructure, reason, "")
		}
		c.dispatchLocked(ctx)
	}()
}

// requeueLocked sends a held build back to the queue, recording the
// attempt's kind (what, if anything, it counts toward: attemptLimit);
// avoid, if set, is an agent the build should go to only when no other
// can take it.
func (c *Coordinator) requeueLocked(ctx context.Context, buildID, agentID string, kind db.AttemptKind, reason, avoid string) {
	now := c.clk.Now()
	if err := c.store.RequeueBuild(ctx, buildID, agentID, now, kind, reason); err != nil {
		c.log.Error("requeue build", "build", buildID, "agent", agentID, "reason", reason, "err", err)
		return
	}
	if kind == db.KindInfrastructure {
		// Setup and verification failures are counted by
		// infraFailureLocked, which requeues some through here.
		c.countFailureLocked(agentID, kind)
	}
	c.releaseLocked(buildID, agentID)
	c.sched.Requeue(buildID, avoid)
	c.log.Info("build requeued", "build", buildID, "agent", agentID, "reason", reason)
}

// releaseLocked frees the agent's slot and its upload area for the build.
func (c *Coordinator) releaseLocked(buildID, agentID string) {
	if s := c.sessions[agentID]; s != nil {
		delete(s.holds, buildID)
	}
	delete(c.space.refused, buildID)
	c.closePhasesLocked(buildID)
	c.checkReleasedLocked(buildID)
	c.releaseIngests(agentID, buildID)
	c.directReleasedLocked(buildID)
	if err := os.RemoveAll(c.uploadDir(agentID, buildID)); err != nil {
		c.log.Warn("remove upload dir", "build", buildID, "agent", agentID, "err", err)
	}
	c.finishLogsLocked(buildID)
}

func cutKV(kv string) (k, v string, ok bool) { return strings.Cut(kv, "=") }

// agentEvent records an agent's arrival or departure. These are not build
// transitions, so the event is its own row; a failure to write it is
// logged and does not stop the session.
func (c *Coordinator) agentEvent(ctx context.Context, typ db.EventType, agentID, reason string) {
	if _, err := c.store.AppendEvent(ctx, db.Event{Type: typ, At: c.clk.Now(), Agent: agentID, Reason: reason}); err != nil {
		c.log.Error("record agent event", "type", typ, "agent", agentID, "err", err)
	}
}

// holdsBuild reports whether the session (nil: none) holds the build.
// The caller holds c.mu.
func (s *Session) holdsBuild(id string) (uint64, bool) {
	if s == nil {
		return 0, false
	}
	p, ok := s.holds[id]
	return p, ok
}

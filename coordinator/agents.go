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

	// Guarded by c.mu.
	holds    map[string]bool // builds allocated to this session
	lastSeen time.Time
	gone     bool
	inactive bool // deactivated: keeps its builds, gets no new ones

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
	if h.MaxParallelBuilds < 1 || h.MaxParallelBuilds > 1024 {
		return nil, protocol.Welcome{}, fmt.Errorf("hello: max_parallel_builds %d out of range 1..1024", h.MaxParallelBuilds)
	}
	for _, t := range h.RequireTags {
		if !strings.Contains(t, "=") {
			return nil, protocol.Welcome{}, fmt.Errorf("hello: require_tags entry %q is not K=V", t)
		}
	}
	a, err := c.store.Agent(ctx, agentID)
	if err != nil {
		return nil, protocol.Welcome{}, fmt.Errorf("agent %s: %w", agentID, err)
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
		name:        h.Name,
		systems:     slices.Clone(h.Systems),
		features:    map[string]bool{},
		requireTags: slices.Clone(h.RequireTags),
		maxParallel: h.MaxParallelBuilds,
		connectedAt: now,
		backend:     h.Backend,
		backendVer:  h.BackendVersion,
		holds:       map[string]bool{},
		lastSeen:    now,
		inactive:    !a.Active,
		wake:        make(chan struct{}),
	}
	for _, f := range h.Features {
		s.features[f] = true
	}
	s.sched = s.schedAgent()
	running := map[string]bool{}
	for _, id := range h.Running {
		running[id] = true
	}
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
	for _, b := range onAgent {
		if running[b.ID] {
			s.holds[b.ID] = true
			w.Continue = append(w.Continue, b.ID)
		}
	}
	for id := range running {
		if !s.holds[id] {
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
	c.mu.Unlock()
	if old != nil {
		c.log.Info("agent session replaced", "agent", agentID)
		old.closeOutbox()
	}
	c.log.Info("agent connected", "agent", agentID, "name", h.Name, "systems", h.Systems,
		"features", h.Features, "max_parallel", h.MaxParallelBuilds, "continue", len(w.Continue), "abort", len(w.Abort))
	c.agentEvent(ctx, db.EventAgentConnected, agentID, "")

	// Builds the store gives to this agent but that it no longer runs may
	// still have a result in flight (resent after the reconnect); give them
	// a grace period before requeueing.
	if len(onAgent) > len(w.Continue) || old != nil {
		c.reconcileAfterGrace(agentID)
	}
	if c.spawn() {
		go c.watchHeartbeats(s)
	}
	c.mu.Lock()
	c.dispatchLocked(ctx)
	c.mu.Unlock()
	return s, w, nil
}

// Heartbeat records that the agent is alive.
func (s *Session) Heartbeat(ctx context.Context, hb *protocol.Heartbeat) {
	c := s.c
	now := c.clk.Now()
	c.mu.Lock()
	s.lastSeen = now
	c.mu.Unlock()
	if err := c.store.TouchAgent(ctx, s.agentID, now); err != nil {
		c.log.Warn("touch agent", "agent", s.agentID, "err", err)
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
	c.agentEvent(context.Background(), db.EventAgentAbsent, s.agentID, "session ended")
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

// push queues a message for the agent; it never blocks, so the coordinator
// can push while holding its lock.
func (s *Session) push(m protocol.Message) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.closed {
		return
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
		ctx := context.Background()
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
			if cur != nil && cur.holds[b.ID] {
				continue
			}
			if c.verifying[b.ID] {
				continue
			}
			reason := "agent disconnected"
			if cur != nil {
				reason = "agent reconnected without the build"
			}
			c.requeueLocked(ctx, b.ID, agentID, reason, "")
		}
		c.dispatchLocked(ctx)
	}()
}

// requeueLocked sends a held build back to the queue (infrastructure
// failure, not counted against the build); avoid, if set, is an agent the
// build should go to only when no other can take it.
func (c *Coordinator) requeueLocked(ctx context.Context, buildID, agentID, reason, avoid string) {
	now := c.clk.Now()
	if err := c.store.RequeueBuild(ctx, buildID, agentID, now, reason); err != nil {
		c.log.Error("requeue build", "build", buildID, "agent", agentID, "reason", reason, "err", err)
		return
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
	if err := os.RemoveAll(c.uploadDir(agentID, buildID)); err != nil {
		c.log.Warn("remove upload dir", "build", buildID, "agent", agentID, "err", err)
	}
	c.finishLogsLocked(buildID)
}

// SetAgentActive activates or deactivates an agent. A deactivated agent
// keeps running what it holds but gets no new builds (also after a
// reconnect); activating it hands it work at once.
func (c *Coordinator) SetAgentActive(ctx context.Context, agentID string, active bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.store.SetAgentActive(ctx, agentID, active); err != nil {
		return fmt.Errorf("set agent %s active=%v: %w", agentID, active, err)
	}
	if s := c.sessions[agentID]; s != nil {
		s.inactive = !active
	}
	c.log.Info("agent activation changed", "agent", agentID, "active", active)
	if active {
		c.dispatchLocked(ctx)
	}
	return nil
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

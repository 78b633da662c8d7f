package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/gbc-farm/gbc/agent/upload"
	"github.com/gbc-farm/gbc/clock"
	"github.com/gbc-farm/gbc/internal/keepalive"
	"github.com/gbc-farm/gbc/protocol"
)

// helloID is the id of hello on every connection (docs/agent-protocol.md).
const helloID = 1

// session runs one connection from dial to drop. welcomed reports whether
// the coordinator accepted the hello, which resets the reconnect backoff.
func (a *Agent) session(ctx context.Context) (welcomed bool, err error) {
	client, err := a.cfg.Dialer.Dial(ctx)
	if err != nil {
		return false, err
	}
	defer client.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the client unblocks every read below when ctx ends.
	stop := context.AfterFunc(cctx, func() { client.Close() })
	defer stop()

	w, r, err := openProtocol(client)
	if err != nil {
		return false, err
	}
	sc, err := sftp.NewClient(client, upload.ClientOptions()...)
	if err != nil {
		return false, fmt.Errorf("open sftp subsystem: %w", err)
	}
	defer sc.Close()

	welcome, err := a.handshake(cctx, client, w, r)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	a.agentID = welcome.AgentID
	a.directOff.Store(false)
	a.mu.Unlock()
	a.maxLine.Store(int64(welcome.MaxLineBytes))
	if welcome.MaxLineBytes > 0 {
		w = &writer{Writer: protocol.NewWriter(w.raw, welcome.MaxLineBytes), raw: w.raw}
	}
	a.log.Info("connected to coordinator", "agent_id", welcome.AgentID, "heartbeat_seconds", welcome.HeartbeatSeconds,
		"continue", welcome.Continue, "abort", welcome.Abort)
	for _, id := range welcome.Abort {
		a.cancelBuild(id, "coordinator asked to abort it after reconnect")
	}

	if a.fwd != nil {
		a.fwd.set(client, welcome.CacheAddress, welcome.CachePublicKey)
		defer a.fwd.set(nil, "", "")
	}
	a.setConn(&conn{w: w.Writer, sftp: sc})
	defer a.setConn(nil)
	a.replayLogs()
	a.resendPending()

	go keepalive.Run(cctx, clock.Real{}, client, a.cfg.KeepaliveInterval, a.cfg.KeepaliveInterval)
	hb := time.Duration(welcome.HeartbeatSeconds) * time.Second
	if hb <= 0 {
		hb = 10 * time.Second
	}
	// handled is the id of the last build or cancel of this session that
	// readLoop handled; heartbeats report it with the builds held then.
	var handled atomic.Uint64
	go a.heartbeats(cctx, hb, &handled)

	return true, a.readLoop(ctx, w, r, &handled)
}

// openProtocol opens the gbc-agent-v1 subsystem channel.
func openProtocol(client *ssh.Client) (*writer, *protocol.Reader, error) {
	s, err := client.NewSession()
	if err != nil {
		return nil, nil, fmt.Errorf("open session channel: %w", err)
	}
	in, err := s.StdinPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("session stdin: %w", err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("session stdout: %w", err)
	}
	if err := s.RequestSubsystem(protocol.Subsystem); err != nil {
		return nil, nil, fmt.Errorf("request subsystem %s: %w", protocol.Subsystem, err)
	}
	return &writer{Writer: protocol.NewWriter(in, 0), raw: in}, protocol.NewReader(out, 0), nil
}

// writer remembers the raw stream so the line limit can change after
// welcome.
type writer struct {
	*protocol.Writer
	raw io.Writer
}

// handshake sends hello and waits for welcome.
func (a *Agent) handshake(ctx context.Context, client *ssh.Client, w *writer, r *protocol.Reader) (*protocol.Welcome, error) {
	hello := &protocol.Hello{
		Header:            protocol.Header{ID: helloID},
		ProtocolVersion:   protocol.Version,
		Name:              a.cfg.Name,
		AgentVersion:      Version,
		Systems:           a.cfg.Systems,
		Features:          a.cfg.Features,
		RequireTags:       a.cfg.RequireTags,
		MaxParallelBuilds: a.cfg.MaxParallelBuilds,
		StoreDir:          a.cfg.Backend.StoreDir(),
		Backend:           a.cfg.Backend.Name(),
		BackendVersion:    a.backendVersion,
		Hardware:          hardware(a.cfg.WorkDir),
		Running:           a.runningIDs(),
		Results:           a.resultIDs(),
	}
	if err := w.Write(hello); err != nil {
		return nil, err
	}
	t := time.AfterFunc(a.cfg.WelcomeTimeout, func() { client.Close() })
	defer t.Stop()
	for {
		m, err := r.Read()
		if err != nil {
			if ctx.Err() == nil && !t.Stop() {
				return nil, fmt.Errorf("no welcome within %s", a.cfg.WelcomeTimeout)
			}
			return nil, fmt.Errorf("waiting for welcome: %w", err)
		}
		switch m := m.(type) {
		case *protocol.Welcome:
			if m.ID != helloID {
				return nil, fmt.Errorf("welcome has id %d, want %d", m.ID, helloID)
			}
			if m.ProtocolVersion != 0 && m.ProtocolVersion != protocol.Version {
				return nil, fmt.Errorf("coordinator speaks protocol version %d, this agent %d", m.ProtocolVersion, protocol.Version)
			}
			return m, nil
		case *protocol.Error:
			return nil, fmt.Errorf("coordinator refused hello: %s", m.Message)
		default:
			return nil, fmt.Errorf("coordinator sent %s before welcome", m.MessageType())
		}
	}
}

// readLoop handles the coordinator's messages until the stream ends.
func (a *Agent) readLoop(ctx context.Context, w *writer, r *protocol.Reader, handled *atomic.Uint64) error {
	reply := func(id uint64, msg string) {
		if err := w.Write(&protocol.Error{Header: protocol.Header{ID: id}, Message: msg}); err != nil {
			a.log.Warn("send error reply", "err", err)
		}
	}
	for {
		m, err := r.Read()
		if err != nil {
			var ute *protocol.UnknownTypeError
			var me *protocol.MalformedError
			switch {
			case errors.As(err, &ute):
				reply(ute.ID, err.Error())
				continue
			case errors.As(err, &me):
				reply(me.ID, err.Error())
				continue
			case errors.Is(err, protocol.ErrLineTooLong):
				reply(0, err.Error())
				continue
			}
			if errors.Is(err, io.EOF) {
				return errors.New("coordinator closed the agent channel")
			}
			return fmt.Errorf("read from coordinator: %w", err)
		}
		switch m := m.(type) {
		case *protocol.Build:
			err := a.startBuild(ctx, m)
			handled.Store(m.ID)
			if err != nil {
				a.log.Warn("refused build", "build", m.Build, "err", err)
				reply(m.ID, err.Error())
				continue
			}
			if err := w.Write(&protocol.Ack{Header: protocol.Header{ID: m.ID}}); err != nil {
				return err
			}
		case *protocol.Cancel:
			a.cancelBuild(m.Build, "canceled by the coordinator")
			handled.Store(m.ID)
			if m.ID != 0 {
				if err := w.Write(&protocol.Ack{Header: protocol.Header{ID: m.ID}}); err != nil {
					return err
				}
			}
		case *protocol.UploadTarget:
			if !a.deliver(m.ID, m) {
				a.log.Debug("upload target nobody waits for", "id", m.ID)
			}
		case *protocol.Ack:
			a.answered(m.ID, "")
		case *protocol.Error:
			if m.ID != 0 && a.deliver(m.ID, m) {
				continue
			}
			msg := m.Message
			if msg == "" {
				msg = "(no message)"
			}
			a.answered(m.ID, msg)
		default:
			reply(protocol.IDOf(m), fmt.Sprintf("agent does not accept %q messages", m.MessageType()))
		}
	}
}

// heartbeats sends a heartbeat every interval with the builds held: the
// handled id is read before the lists, so every message up to it is
// reflected in them (docs/agent-protocol.md).
func (a *Agent) heartbeats(ctx context.Context, every time.Duration, handled *atomic.Uint64) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := handled.Load()
		hb := &protocol.Heartbeat{Hardware: hardware(a.cfg.WorkDir), Handled: h, Running: a.runningIDs(), Results: a.resultIDs()}
		if err := a.send(hb); err != nil {
			return
		}
	}
}

// replayLogs resends running builds' logs from the start on a new
// session, since the old one may have lost chunks in flight.
func (a *Agent) replayLogs() {
	a.mu.Lock()
	var ls []*logStream
	for _, r := range a.runs {
		if r.log != nil && !r.finished {
			ls = append(ls, r.log)
		}
	}
	a.mu.Unlock()
	for _, l := range ls {
		l.Rewind()
	}
}

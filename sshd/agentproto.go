package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gliderlabs/ssh"

	"github.com/gbc-farm/gbc/coordinator"
	"github.com/gbc-farm/gbc/internal/text"
	"github.com/gbc-farm/gbc/protocol"
)

// handleAgent adapts the gbc-agent-v1 line protocol onto a coordinator
// session: hello → welcome, pushed builds and cancels out, results in.
func (s *Server) handleAgent(sess ssh.Session) {
	ctx, cancel := context.WithCancel(sess.Context())
	defer cancel()
	who, err := s.whoami(ctx, sess)
	if err != nil || !subsystemAllowed(who, protocol.Subsystem) {
		s.log.Warn("agent subsystem refused", "role", who.Role, "err", err)
		fmt.Fprintln(sess.Stderr(), "permission denied: gbc-agent-v1 is for agent keys")
		sess.Exit(1)
		return
	}
	log := s.log.With("agent", who.AgentID, "remote", sess.RemoteAddr().String())
	r := protocol.NewReader(sess, s.cfg.MaxLineBytes)
	w := protocol.NewWriter(sess, s.cfg.MaxLineBytes)
	reply := func(id uint64, err error) {
		var m protocol.Message = &protocol.Ack{Header: protocol.Header{ID: id}}
		if err != nil {
			m = &protocol.Error{Header: protocol.Header{ID: id}, Message: err.Error()}
		}
		if werr := w.Write(m); werr != nil {
			log.Debug("write reply", "err", werr)
		}
	}

	// The first line must be a valid hello; anything else ends the channel.
	first, err := r.Read()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			reply(errID(err), fmt.Errorf("expected hello: %w", err))
		}
		sess.Exit(1)
		return
	}
	hello, ok := first.(*protocol.Hello)
	if !ok {
		reply(protocol.IDOf(first), fmt.Errorf("expected hello, got %q", first.MessageType()))
		sess.Exit(1)
		return
	}
	cs, welcome, err := s.coord.Connect(ctx, who.AgentID, hello)
	if err != nil {
		log.Warn("hello refused", "err", err)
		reply(hello.ID, err)
		sess.Exit(1)
		return
	}
	defer cs.Close()
	welcome.ID = hello.ID
	if err := w.Write(&welcome); err != nil {
		log.Info("write welcome", "err", err)
		return
	}
	go s.keepAlive(ctx, sess)

	// Pushes from the coordinator. When the coordinator ends the session
	// (replaced by a newer connection, missed heartbeats, shutdown), the
	// channel is closed too.
	go func() {
		defer cancel()
		for {
			m, err := cs.Next(ctx)
			if err != nil {
				if errors.Is(err, coordinator.ErrSessionClosed) {
					sess.Close()
				}
				return
			}
			if err := w.Write(m); err != nil {
				log.Info("push to agent", "err", err)
				sess.Close()
				return
			}
		}
	}()

	// Results are handled in order, off the read loop, so a long upload
	// verification does not hold up heartbeats and logs.
	results := make(chan protocol.Message, 64)
	resultsDone := make(chan struct{})
	go func() {
		defer close(resultsDone)
		dropped := false
		for m := range results {
			if dropped {
				continue // neither ack nor refuse: the agent resends after reconnecting
			}
			var err error
			switch m := m.(type) {
			case *protocol.Started:
				err = cs.Started(ctx, m)
			case *protocol.Phase:
				// In order with the results, so a phase is never
				// handled before the start that came ahead of it.
				if err = cs.Phase(ctx, m); err != nil {
					log.Debug("phase refused", "build", text.Truncate(m.Build, 64), "err", err)
				}
				if m.ID != 0 || err != nil {
					reply(m.ID, err)
				}
				continue
			case *protocol.Failed:
				err = cs.Failed(ctx, m)
			case *protocol.SetupFailure:
				err = cs.SetupFailure(ctx, m)
			case *protocol.Succeeded:
				err = cs.Succeeded(ctx, m)
			}
			if errors.Is(err, coordinator.ErrRevoked) {
				// The key or the agent was revoked: nothing more from
				// this session is recorded, and its connection is
				// being closed.
				log.Warn("result refused: session revoked", "type", m.MessageType(), "id", protocol.IDOf(m))
				dropped = true
				sess.Close()
				continue
			}
			if errors.Is(err, coordinator.ErrUnavailable) {
				// Not recorded, and not the agent's fault: an error reply
				// would make the agent drop the result, an ack would lose
				// it. Ending the session makes the agent reconnect and
				// resend everything unacknowledged.
				log.Warn("result not recorded; closing the session so the agent resends it",
					"type", m.MessageType(), "id", protocol.IDOf(m), "err", err)
				dropped = true
				sess.Close()
				continue
			}
			if err != nil {
				log.Warn("result refused", "type", m.MessageType(), "id", protocol.IDOf(m), "err", err)
			}
			reply(protocol.IDOf(m), err)
		}
	}()
	defer func() {
		close(results)
		<-resultsDone
	}()

	for {
		m, err := r.Read()
		if err != nil {
			var mal *protocol.MalformedError
			var unk *protocol.UnknownTypeError
			switch {
			case errors.Is(err, protocol.ErrLineTooLong), errors.As(err, &mal), errors.As(err, &unk):
				log.Warn("bad protocol line", "err", err)
				reply(errID(err), err)
				continue
			case errors.Is(err, io.EOF), ctx.Err() != nil:
				log.Info("agent channel closed")
			default:
				log.Info("agent channel read", "err", err)
			}
			return
		}
		cs.Seen()
		switch m := m.(type) {
		case *protocol.Heartbeat:
			cs.Heartbeat(ctx, m)
			if m.ID != 0 {
				reply(m.ID, nil)
			}
		case *protocol.Log:
			err := cs.Log(ctx, m)
			if m.ID != 0 || err != nil {
				reply(m.ID, err)
			}
		case *protocol.UploadURL:
			// Answered at once (a read of the build and a local
			// signature), not behind results being verified.
			t, err := cs.UploadURL(ctx, m)
			if errors.Is(err, coordinator.ErrDirectUploadOff) {
				reply(m.ID, err) // the agent stops asking
				continue
			}
			if err != nil {
				log.Info("upload URL refused", "build", text.Truncate(m.Build, 64), "err", err)
				t = &protocol.UploadTarget{Header: protocol.Header{ID: m.ID}, Build: m.Build, Upload: m.Upload,
					Refused: text.Truncate(err.Error(), 1000)}
			}
			if err := w.Write(t); err != nil {
				log.Debug("write upload target", "err", err)
			}
		case *protocol.Ack:
			cs.Ack(m.ID)
		case *protocol.Error:
			log.Warn("agent reported an error", "id", m.ID, "message", text.Truncate(m.Message, 500))
		case *protocol.Started, *protocol.Phase, *protocol.Failed, *protocol.SetupFailure, *protocol.Succeeded:
			select {
			case results <- m:
			case <-ctx.Done():
				return
			}
		default:
			reply(protocol.IDOf(m), fmt.Errorf("unexpected message type %q from an agent", m.MessageType()))
		}
	}
}

// errID is the id of the offending line when the codec could read it.
func errID(err error) uint64 {
	var mal *protocol.MalformedError
	var unk *protocol.UnknownTypeError
	switch {
	case errors.As(err, &mal):
		return mal.ID
	case errors.As(err, &unk):
		return unk.ID
	}
	return 0
}

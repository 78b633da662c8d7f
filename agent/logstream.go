package agent

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/gbc-farm/gbc/protocol"
)

const (
	// maxLogChunk is the most log data per message; logChunkFor shrinks
	// it when the coordinator's line limit is small.
	maxLogChunk = 32 << 10
	// maxLogBytes bounds what one build may write to the work dir.
	maxLogBytes   = 64 << 20
	logFlushEvery = 250 * time.Millisecond
)

// logChunkFor is how much log fits in one line of maxLine bytes after
// base64 (4/3) and the JSON framing around it.
func logChunkFor(maxLine int) int {
	if maxLine <= 0 {
		return maxLogChunk
	}
	return max(min(maxLogChunk, (maxLine-1024)*3/4), 256)
}

// logStream spools one build's log to a file in the work dir and forwards
// it as protocol.Log messages at byte offsets. Because the file keeps
// everything, a reconnect can replay the log from offset 0; the
// coordinator treats a repeated chunk as harmless.
type logStream struct {
	build string
	send  func(protocol.Message) error
	chunk func() int // bytes of log per message
	max   int64      // spool limit

	flushMu   sync.Mutex // one flush at a time; taken before mu
	mu        sync.Mutex
	f         *os.File
	size      int64
	sent      int64
	truncated bool
	closed    bool

	kick chan struct{}
	done chan struct{}
}

func newLogStream(build, file string, send func(protocol.Message) error, chunk func() int) (*logStream, error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build %s: create log spool: %w", build, err)
	}
	l := &logStream{build: build, send: send, chunk: chunk, max: maxLogBytes, f: f, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go l.loop()
	return l, nil
}

// Write never fails the build: a full spool drops the rest of the log
// with a note, since the build itself matters more than its log.
func (l *logStream) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.truncated || l.f == nil {
		return len(p), nil
	}
	q := p
	if room := l.max - l.size; int64(len(q)) > room {
		q = append(q[:room:room], fmt.Sprintf("\n[gbc agent: log truncated at %d bytes]\n", l.max)...)
		l.truncated = true
	}
	n, err := l.f.WriteAt(q, l.size)
	l.size += int64(n)
	if err != nil {
		l.truncated = true
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Rewind makes the next flush start from offset 0 (after a reconnect).
func (l *logStream) Rewind() {
	l.mu.Lock()
	l.sent = 0
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Flush sends what has not been sent yet; it stops at the first send
// error and leaves the rest for the next flush or the replay. The spool
// lock is not held while sending, so a slow network never blocks the
// builder's output pipe.
func (l *logStream) Flush() error {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	buf := make([]byte, l.chunk())
	for {
		l.mu.Lock()
		f, sent, size := l.f, l.sent, l.size
		l.mu.Unlock()
		if f == nil || sent >= size {
			return nil
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-sent)], sent)
		if err != nil && err != io.EOF {
			return fmt.Errorf("build %s: read log spool at %d: %w", l.build, sent, err)
		}
		if err := l.send(&protocol.Log{Build: l.build, Offset: sent, Data: buf[:n]}); err != nil {
			return err
		}
		l.mu.Lock()
		if l.sent == sent { // else a Rewind came in; it wins
			l.sent = sent + int64(n)
		}
		l.mu.Unlock()
	}
}

func (l *logStream) loop() {
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		case <-l.kick:
			// Coalesce bursts of small writes into fewer messages.
			select {
			case <-l.done:
				return
			case <-time.After(logFlushEvery / 5):
			}
		}
		_ = l.Flush()
	}
}

// Close flushes what it can, stops forwarding and removes nothing: the
// spool lives in the build's directory, which the agent removes later.
func (l *logStream) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.done)
	err := l.Flush()
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

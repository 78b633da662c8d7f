package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gbc-farm/gbc/compression"
	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// Build logs, one per attempt, live in StateDir/log:
//
//	<build>-<attempt>.log      while the attempt runs (chunks written at their offsets)
//	<build>-<attempt>.log.zst  once it ended (compressed, the .log removed)
//
// Chunks carry offsets and are written with WriteAt, so a chunk the agent
// resends after a reconnect lands on the same bytes: nothing is lost or
// doubled. When an attempt ends its log is compressed; when the build ends
// (succeeded or failed) the log is also handed to Config.LogCache, which
// publishes it as log/<drv basename> for `nix log`.

// LogCache publishes finished logs (cache.Cache implements it).
type LogCache interface {
	WriteLog(ctx context.Context, drvPath string, r io.Reader) error
}

// logFollowPoll is how often a follower looks for new bytes.
const logFollowPoll = 200 * time.Millisecond

func (c *Coordinator) attemptLog(buildID string, attempt int) string {
	return filepath.Join(c.cfg.StateDir, "log", fmt.Sprintf("%s-%d.log", buildID, attempt))
}

// Log stores a chunk of the build log of the agent's current attempt at
// its offset.
func (s *Session) Log(ctx context.Context, m *protocol.Log) error {
	if m.Offset < 0 || m.Offset+int64(len(m.Data)) > s.c.cfg.MaxLogBytes {
		return fmt.Errorf("log chunk at offset %d (+%d bytes) is outside 0..%d", m.Offset, len(m.Data), s.c.cfg.MaxLogBytes)
	}
	b, _, err := s.holding(ctx, m.Build, "")
	if err != nil {
		return err
	}
	if len(b.Attempts) == 0 {
		return fmt.Errorf("build %s has no attempt: %w", m.Build, ErrNotYourBuild)
	}
	n := b.Attempts[len(b.Attempts)-1].Number
	path := s.c.attemptLog(b.ID, n)
	// logMu orders writes against finishing: a chunk that arrives after
	// the attempt's log was compressed is dropped instead of starting a
	// new, partial .log that a later sweep would take for the whole log.
	s.c.logMu.Lock()
	defer s.c.logMu.Unlock()
	if _, err := os.Stat(path + ".zst"); err == nil {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", m.Build, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(m.Data, m.Offset); err != nil {
		return fmt.Errorf("write log of %s: %w", m.Build, err)
	}
	return nil
}

// finishLogs compresses the logs of the build's ended attempts and, when
// the build itself ended, publishes the latest attempt's log in the cache.
// It runs after the state change is committed, in the background; a crash
// before it finishes is repaired by the sweep at the next start.
// The caller holds c.mu.
func (c *Coordinator) finishLogsLocked(buildID string) {
	if c.closed {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.finishLogsNow(c.life, buildID); err != nil {
			c.log.Error("finish build log", "build", buildID, "err", err)
		}
	}()
}

func (c *Coordinator) finishLogsNow(ctx context.Context, buildID string) error {
	b, err := c.store.Build(ctx, buildID)
	if err != nil {
		return err
	}
	for _, a := range b.Attempts {
		if a.EndedAt.IsZero() {
			continue
		}
		raw := c.attemptLog(b.ID, a.Number)
		if _, err := os.Stat(raw); err != nil {
			continue // no log, or already finished
		}
		if err := c.compressLog(raw); err != nil {
			return err
		}
		last := a.Number == b.Attempts[len(b.Attempts)-1].Number
		if last && (b.State == db.StateSucceeded || b.State == db.StateFailed) && c.cfg.LogCache != nil {
			if err := c.publishLog(ctx, b.Derivation, raw+".zst"); err != nil {
				c.log.Error("publish build log in the cache", "build", b.ID, "derivation", b.Derivation, "err", err)
			}
		}
	}
	return nil
}

// compressLog turns raw into raw.zst (written to a temp file, synced,
// renamed) and removes raw.
func (c *Coordinator) compressLog(raw string) error {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	in, err := os.Open(raw)
	if err != nil {
		return fmt.Errorf("open log %s: %w", raw, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(raw), ".tmp-log-")
	if err != nil {
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	defer os.Remove(tmp.Name())
	zw, err := compression.NewWriter(tmp, "zstd")
	if err != nil {
		tmp.Close()
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if _, err := io.Copy(zw, in); err != nil {
		tmp.Close()
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if err := zw.Close(); err != nil {
		tmp.Close()
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if err := os.Rename(tmp.Name(), raw+".zst"); err != nil {
		return fmt.Errorf("compress log %s: %w", raw, err)
	}
	if err := os.Remove(raw); err != nil {
		return fmt.Errorf("remove log %s: %w", raw, err)
	}
	return nil
}

func (c *Coordinator) publishLog(ctx context.Context, drv, zst string) error {
	f, err := os.Open(zst)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := compression.NewReader(f, "zstd")
	if err != nil {
		return fmt.Errorf("read %s: %w", zst, err)
	}
	defer r.Close()
	return c.cfg.LogCache.WriteLog(ctx, drv, r)
}

// sweepLogs finishes the logs of attempts that ended while the
// coordinator was down or before their log was compressed.
func (c *Coordinator) sweepLogs(ctx context.Context) {
	entries, err := os.ReadDir(filepath.Join(c.cfg.StateDir, "log"))
	if err != nil {
		c.log.Warn("sweep build logs", "err", err)
		return
	}
	builds := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-log-") {
			os.Remove(filepath.Join(c.cfg.StateDir, "log", name))
			continue
		}
		if id, _, ok := parseLogName(name); ok {
			builds[id] = true
		}
	}
	for id := range builds {
		if err := c.finishLogsNow(ctx, id); err != nil && !errors.Is(err, db.ErrNotFound) {
			c.log.Warn("finish build log", "build", id, "err", err)
		}
	}
}

// parseLogName reads "<build>-<attempt>.log".
func parseLogName(name string) (string, int, bool) {
	base, ok := strings.CutSuffix(name, ".log")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(base[i+1:])
	if err != nil || n <= 0 {
		return "", 0, false
	}
	return base[:i], n, true
}

// ErrNoLog: the attempt has no log (yet).
var ErrNoLog = errors.New("no log")

// CopyLog writes the log of one attempt of a build (0: the latest) to w.
// With follow it keeps writing what arrives until the attempt ends (or
// ctx is done), then writes the rest and returns.
func (c *Coordinator) CopyLog(ctx context.Context, w io.Writer, buildID string, attempt int, follow bool) error {
	var off int64
	for {
		b, err := c.Build(ctx, buildID)
		if err != nil {
			return err
		}
		n := attempt
		if n == 0 {
			if len(b.Attempts) == 0 {
				if !follow {
					return fmt.Errorf("build %s has not been allocated yet: %w", buildID, ErrNoLog)
				}
				if b.State.Terminal() {
					return fmt.Errorf("build %s ended (%s) without running: %w", buildID, b.State, ErrNoLog)
				}
				if err := sleepCtx(ctx, logFollowPoll); err != nil {
					return nil
				}
				continue
			}
			n = b.Attempts[len(b.Attempts)-1].Number
		}
		if n > len(b.Attempts) || n < 1 {
			return fmt.Errorf("build %s has %d attempt(s), not %d", buildID, len(b.Attempts), n)
		}
		ended := !b.Attempts[n-1].EndedAt.IsZero()
		raw := c.attemptLog(b.ID, n)
		done, err := c.copyFrom(w, raw, &off)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if ended {
			// Read once more: the file may have been finished between
			// our state read and the copy.
			if done, err = c.copyFrom(w, raw, &off); err != nil || done {
				return err
			}
			if off == 0 {
				return fmt.Errorf("build %s attempt %d: %w", buildID, n, ErrNoLog)
			}
			return nil
		}
		if !follow {
			if off == 0 {
				return fmt.Errorf("build %s attempt %d: %w yet", buildID, n, ErrNoLog)
			}
			return nil
		}
		if err := sleepCtx(ctx, logFollowPoll); err != nil {
			return nil
		}
	}
}

// copyFrom copies the log at raw from *off to w. done reports that it
// read the finished (compressed) log to its end.
func (c *Coordinator) copyFrom(w io.Writer, raw string, off *int64) (done bool, err error) {
	if f, err := os.Open(raw + ".zst"); err == nil {
		defer f.Close()
		r, err := compression.NewReader(f, "zstd")
		if err != nil {
			return false, fmt.Errorf("read log %s: %w", raw, err)
		}
		defer r.Close()
		if _, err := io.CopyN(io.Discard, r, *off); err != nil && err != io.EOF {
			return false, fmt.Errorf("read log %s: %w", raw, err)
		}
		n, err := io.Copy(w, r)
		*off += n
		return true, err
	}
	f, err := os.Open(raw)
	if errors.Is(err, iofs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(*off, io.SeekStart); err != nil {
		return false, fmt.Errorf("read log: %w", err)
	}
	n, err := io.Copy(w, f)
	*off += n
	return false, err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

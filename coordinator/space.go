package coordinator

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// The coordinator's own disk. While the state directory's free space is
// under Config.MinFreeSpace (or a write there failed with ENOSPC) the
// coordinator pauses: it allocates nothing and refuses upload writes. Its
// trouble is never charged to a build or an agent: a build whose upload
// was refused, or whose publish failed, goes back to the queue with
// db.KindCoordinator, which counts toward no limit and avoids no agent.
// Free space is read every SpaceCheckInterval (a statfs, not a check per
// byte written); allocation resumes at the first reading over the reserve.

// DefaultSpaceCheckInterval is how often free space is read.
const DefaultSpaceCheckInterval = 2 * time.Second

// FreeSpaceFunc returns the bytes available to the coordinator in dir.
type FreeSpaceFunc func(dir string) (uint64, error)

// StatfsFree is the FreeSpaceFunc of a real filesystem: the blocks
// available to an unprivileged user, as df shows them.
func StatfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// LowSpaceError refuses an upload while the coordinator is short of
// space. Its message is what the agent's SFTP client shows.
type LowSpaceError struct {
	Free, Reserve uint64
	Full          bool // a write failed with ENOSPC
}

func (e *LowSpaceError) Error() string {
	if e.Full {
		return "the coordinator's disk is full; uploads and new builds are paused until space returns (not this build's or this agent's fault)"
	}
	return fmt.Sprintf("the coordinator's free space (%d bytes) is under its reserve (--min-free-space %d bytes); "+
		"uploads and new builds are paused until space returns (not this build's or this agent's fault)", e.Free, e.Reserve)
}

// spaceState is guarded by c.mu.
type spaceState struct {
	free    uint64
	checked bool // free has been read at least once
	low     bool
	full    bool   // low because a write failed with ENOSPC
	fullAt  uint64 // free space read when full was set
	// refused are the builds whose upload the coordinator refused or
	// could not take (short of space; its cache store failing a streamed
	// upload), with why: their setup failure is the coordinator's.
	refused map[string]string
}

// SpaceStatus is the disk part of Status.
type SpaceStatus struct {
	Paused  bool   `json:"allocation_paused"`
	Free    uint64 `json:"free_bytes"`
	Reserve uint64 `json:"reserve_bytes"`
	Full    bool   `json:"disk_full"`
}

// checkSpace reads free space once and pauses or resumes.
func (c *Coordinator) checkSpace(ctx context.Context) {
	free, err := c.cfg.FreeSpace(c.cfg.StateDir)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.log.Warn("read free space", "dir", c.cfg.StateDir, "err", err)
		return
	}
	c.space.free, c.space.checked = free, true
	low := free < c.cfg.MinFreeSpace
	if c.space.full && !low && free > c.space.fullAt {
		// Something was freed since the write that failed.
		c.space.full = false
	}
	low = low || c.space.full
	switch {
	case low && !c.space.low:
		c.log.Warn("free space under the reserve: allocation and uploads paused", "free", free, "reserve", c.cfg.MinFreeSpace, "full", c.space.full)
	case !low && c.space.low:
		c.log.Info("free space back over the reserve: allocation resumes", "free", free, "reserve", c.cfg.MinFreeSpace)
	}
	was := c.space.low
	c.space.low = low
	if was && !low {
		c.dispatchLocked(ctx)
	}
}

// watchSpace reads free space every SpaceCheckInterval.
func (c *Coordinator) watchSpace() {
	defer c.wg.Done()
	for {
		select {
		case <-c.clk.After(c.cfg.SpaceCheckInterval):
		case <-c.done:
			return
		}
		c.checkSpace(c.life)
	}
}

// UploadSpace is asked before an agent writes an upload of the build: it
// returns a *LowSpaceError while the coordinator is short of space (and
// notes that this build's upload was refused for it), else nil. It reads
// the state the watcher keeps; it costs no system call.
func (c *Coordinator) UploadSpace(agentID, buildID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.space.low {
		return nil
	}
	c.space.refused[buildID] = "coordinator short of disk space: upload refused"
	return &LowSpaceError{Free: c.space.free, Reserve: c.cfg.MinFreeSpace, Full: c.space.full}
}

// UploadFailed is told of an upload write that failed. ENOSPC pauses the
// coordinator at once (until more space is free than now) and is
// returned as a *LowSpaceError; any other error is returned as it is.
func (c *Coordinator) UploadFailed(agentID, buildID string, err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	c.noteFullLocked(true)
	return c.UploadSpace(agentID, buildID)
}

// noteFullLocked pauses the coordinator after ENOSPC. lock: take c.mu.
func (c *Coordinator) noteFullLocked(lock bool) {
	if lock {
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	if !c.space.full {
		c.log.Warn("the state directory's disk is full: allocation and uploads paused", "dir", c.cfg.StateDir)
	}
	c.space.full, c.space.low = true, true
	c.space.fullAt = c.space.free
	if free, err := c.cfg.FreeSpace(c.cfg.StateDir); err == nil {
		c.space.free, c.space.fullAt = free, free
	}
}

// coordinatorTroubleLocked sends a build the coordinator could not take
// (its upload refused for space, its publish failed) back to the queue,
// charged to nobody.
func (c *Coordinator) coordinatorTroubleLocked(ctx context.Context, buildID, agentID, reason string) {
	delete(c.space.refused, buildID)
	c.requeueLocked(ctx, buildID, agentID, db.KindCoordinator, reason, "")
}

// spaceStatusLocked is the disk part of Status.
func (c *Coordinator) spaceStatusLocked() SpaceStatus {
	return SpaceStatus{Paused: c.space.low, Free: c.space.free, Reserve: c.cfg.MinFreeSpace, Full: c.space.full}
}

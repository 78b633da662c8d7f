package sshd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// DefaultMaxAgentUploadBytes bounds what one agent may have uploaded and
// not yet verified, all its builds together (128 GiB).
const DefaultMaxAgentUploadBytes = 128 << 30

// reserveChunk is how far ahead of the written end a file's reservation
// reaches, so the agent's area is counted once per chunk, not per write.
const reserveChunk = 64 << 20

// uploadBudget is one agent's in-flight upload budget, shared by all its
// sessions. What counts is what is on disk under its upload area (every
// build it holds) plus, for files open for writing, what they reserved:
// a reservation is granted under the lock against a fresh count, so
// parallel uploads cannot overshoot the limit together.
type uploadBudget struct {
	dir   string // uploads/<agent-id>
	limit int64

	mu   sync.Mutex
	open map[string]*reservation // by path on disk
}

type reservation struct {
	n       int64 // bytes reserved (≥ the file's written end)
	handles int
}

// budget returns the agent's budget, created on first use.
func (s *Server) budget(agentID, dir string) *uploadBudget {
	s.budgetMu.Lock()
	defer s.budgetMu.Unlock()
	b := s.budgets[agentID]
	if b == nil {
		b = &uploadBudget{dir: dir, limit: s.cfg.MaxAgentUploadBytes, open: map[string]*reservation{}}
		s.budgets[agentID] = b
	}
	return b
}

// opened registers a handle on path.
func (u *uploadBudget) opened(path string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.open[path]
	if r == nil {
		r = &reservation{}
		u.open[path] = r
	}
	r.handles++
}

// closed drops a handle; with the last one the file counts by its size on disk.
func (u *uploadBudget) closed(path string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r := u.open[path]; r != nil {
		if r.handles--; r.handles <= 0 {
			delete(u.open, path)
		}
	}
}

// reserve makes room for path to reach end bytes, or says why not.
func (u *uploadBudget) reserve(path string, end int64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.open[path]
	if r == nil {
		return errors.New("upload budget: file is not open")
	}
	if end <= r.n {
		return nil
	}
	used, err := u.usedExcept(path)
	if err != nil {
		return fmt.Errorf("count this agent's in-flight uploads: %w", err)
	}
	if used+end > u.limit {
		return refusal{fmt.Errorf("upload refused: this agent's unverified uploads would take %d bytes, over its budget of %d (coordinator --max-agent-upload-bytes)",
			used+end, u.limit)}
	}
	r.n = min(end+reserveChunk, u.limit-used)
	return nil
}

// usedExcept sums the agent's upload area without path: each file's size
// on disk, or its reservation when open and larger.
func (u *uploadBudget) usedExcept(path string) (int64, error) {
	builds, err := os.ReadDir(u.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var used int64
	for _, b := range builds {
		if !b.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(u.dir, b.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // released meanwhile
			}
			return 0, err
		}
		for _, f := range files {
			p := filepath.Join(u.dir, b.Name(), f.Name())
			if p == path {
				continue
			}
			var n int64
			if fi, err := f.Info(); err == nil {
				n = fi.Size()
			}
			if r := u.open[p]; r != nil {
				n = max(n, r.n)
			}
			used += n
		}
	}
	return used, nil
}

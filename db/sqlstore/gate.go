package sqlstore

import (
	"context"
	"sync"
	"time"
)

// writeGate lets background batches (FailDependencies) step aside for
// the writes an agent or operator is waiting on. On SQLite there is one
// writer, and on PostgreSQL every event-writing transaction takes the
// same advisory lock, so a 99-build failed-dependency batch used to hold
// up the next build's success and allocation for its whole length (the
// dispatch benchmark's tail). A background batch now starts only when no
// foreground write is waiting or running, or after maxYield, so it is
// delayed but never starved.
type writeGate struct {
	mu   sync.Mutex
	fg   int           // foreground writes waiting or running
	idle chan struct{} // closed while fg == 0
}

// maxYield bounds how long one background batch waits for a quiet
// moment: under a constant stream of foreground writes it then competes
// like any other writer.
const maxYield = 20 * time.Millisecond

func newWriteGate() *writeGate {
	g := &writeGate{idle: make(chan struct{})}
	close(g.idle)
	return g
}

func (g *writeGate) enter() {
	g.mu.Lock()
	if g.fg == 0 {
		g.idle = make(chan struct{})
	}
	g.fg++
	g.mu.Unlock()
}

func (g *writeGate) leave() {
	g.mu.Lock()
	g.fg--
	if g.fg == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// yield waits until no foreground write is in flight, at most maxYield.
func (g *writeGate) yield(ctx context.Context) {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return
	default:
	}
	t := time.NewTimer(maxYield)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}

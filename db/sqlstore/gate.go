package sqlstore

import (
	"context"
	"sync"
	"time"
)

// writeLock orders this process's writers. On SQLite there is one writer
// connection, and on PostgreSQL every event-writing transaction takes the
// same advisory lock, so writes queue either way; the order they queue in
// decides dispatch latency. Three classes:
//
//   - urgent: transitions the coordinator makes while holding the lock
//     every agent report and dispatch waits for (allocate, requeue,
//     cancel, setup failure). They go first.
//   - normal: everything else a caller is waiting on (a success, a
//     submission, a key), first come first served.
//   - background: batches nobody waits on (failed-dependency marking,
//     event pruning). One starts only when no other write is waiting or
//     running, or after maxYield, so it is delayed but never starved.
//
// With a single-writer dialect the lock also serialises the writers
// themselves (database/sql hands its one connection to a random waiter);
// otherwise it only counts them, for background batches to yield.
type writeLock struct {
	exclusive bool

	mu      sync.Mutex
	held    bool
	waiting [2][]chan struct{} // urgent, normal; FIFO
	busy    int                // writes waiting or running
	idle    chan struct{}      // closed while busy == 0
}

const (
	urgent = iota
	normal
)

// maxYield bounds how long one background batch waits for a quiet
// moment: under a constant stream of writes it then queues like a normal
// one.
const maxYield = 20 * time.Millisecond

func newWriteLock(exclusive bool) *writeLock {
	l := &writeLock{exclusive: exclusive, idle: make(chan struct{})}
	close(l.idle)
	return l
}

func (l *writeLock) lock(ctx context.Context, class int) error {
	l.mu.Lock()
	if l.busy == 0 {
		l.idle = make(chan struct{})
	}
	l.busy++
	if !l.exclusive || !l.held {
		l.held = l.exclusive
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiting[class] = append(l.waiting[class], ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	for i, w := range l.waiting[class] {
		if w == ch {
			l.waiting[class] = append(l.waiting[class][:i], l.waiting[class][i+1:]...)
			l.doneLocked()
			l.mu.Unlock()
			return ctx.Err()
		}
	}
	l.mu.Unlock()
	// Granted while giving up: pass it on.
	l.unlock()
	return ctx.Err()
}

func (l *writeLock) unlock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.doneLocked()
	if !l.exclusive {
		return
	}
	for c := range l.waiting {
		if len(l.waiting[c]) > 0 {
			ch := l.waiting[c][0]
			l.waiting[c] = l.waiting[c][1:]
			close(ch) // held passes to it
			return
		}
	}
	l.held = false
}

func (l *writeLock) doneLocked() {
	l.busy--
	if l.busy == 0 {
		close(l.idle)
	}
}

// yield waits until no write is waiting or running, at most maxYield.
func (l *writeLock) yield(ctx context.Context) {
	l.mu.Lock()
	idle := l.idle
	l.mu.Unlock()
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

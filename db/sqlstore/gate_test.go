package sqlstore

import (
	"context"
	"testing"
	"time"
)

// queued waits (bounded) until n writers wait for the lock.
func queued(t *testing.T, l *writeLock, n int) {
	t.Helper()
	for range 5000 {
		l.mu.Lock()
		got := len(l.waiting[urgent]) + len(l.waiting[normal])
		l.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d writers never queued", n)
}

// TestWriteLockOrder: while the lock is held, waiters are granted urgent
// first, then normal in arrival order; a waiter whose context ends leaves
// the queue without taking the lock, and background batches wait for
// the queue to drain.
func TestWriteLockOrder(t *testing.T) {
	l := newWriteLock(true)
	ctx := t.Context()
	if err := l.lock(ctx, normal); err != nil {
		t.Fatal(err)
	}
	granted := make(chan string, 8)
	wait := func(name string, class int) {
		go func() {
			if err := l.lock(ctx, class); err != nil {
				granted <- name + ": " + err.Error()
				return
			}
			granted <- name
		}()
	}
	wait("normal-1", normal)
	queued(t, l, 1)
	wait("normal-2", normal)
	queued(t, l, 2)
	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- l.lock(cctx, urgent) }()
	queued(t, l, 3)
	wait("urgent", urgent)
	queued(t, l, 4)
	cancel()
	if err := <-gaveUp; err == nil {
		t.Fatal("a canceled waiter got the lock")
	}
	queued(t, l, 3)

	yielded := make(chan struct{})
	go func() { l.yield(ctx); close(yielded) }()

	for _, want := range []string{"urgent", "normal-1", "normal-2"} {
		l.unlock()
		select {
		case got := <-granted:
			if got != want {
				t.Fatalf("granted %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never granted", want)
		}
	}
	select {
	case <-yielded:
		// maxYield may have passed on a slow machine; that is allowed.
	default:
	}
	l.unlock()
	select {
	case <-yielded:
	case <-time.After(5 * time.Second):
		t.Fatal("background yield did not end once the lock was free")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held || l.busy != 0 {
		t.Errorf("at rest: held %v, busy %d", l.held, l.busy)
	}
}

// TestWriteLockShared: a multi-writer dialect never blocks, but still
// counts writers for background batches.
func TestWriteLockShared(t *testing.T) {
	l := newWriteLock(false)
	ctx := t.Context()
	for range 3 {
		if err := l.lock(ctx, normal); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-l.idle:
		t.Fatal("idle while writes run")
	default:
	}
	for range 3 {
		l.unlock()
	}
	select {
	case <-l.idle:
	default:
		t.Fatal("not idle after all writes ended")
	}
}

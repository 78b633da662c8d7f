package coordinator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

// spaceHarness is a harness whose state directory reports free bytes.
func spaceHarness(t *testing.T, reserve uint64) (*harness, *atomic.Uint64) {
	free := &atomic.Uint64{}
	free.Store(reserve * 4)
	h := newHarnessWith(t, func(c *Config) {
		c.MinFreeSpace = reserve
		c.SpaceCheckInterval = time.Second
		c.FreeSpace = func(string) (uint64, error) { return free.Load(), nil }
	})
	return h, free
}

// Under the reserve the coordinator allocates nothing and refuses
// uploads; the agent's setup failures after a refused upload go back to
// the queue charged to nobody, however many there are; when space returns
// the build is allocated again and succeeds.
func TestLowSpacePausesAndChargesNobody(t *testing.T) {
	const reserve = 1 << 30
	h, free := spaceHarness(t, reserve)
	ctx := context.Background()
	id := h.submit(0, h.drv("space", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	a.next()

	free.Store(reserve / 2)
	h.eventually(time.Second, func() bool { return h.c.Status().Space.Paused })
	if sp := h.c.Status().Space; sp.Free != reserve/2 || sp.Reserve != reserve || sp.Full {
		t.Fatalf("status %+v", sp)
	}
	queued := h.submit(0, h.drv("space-queued", "x86_64-linux"))[0]
	other := h.agent("b", protocol.Hello{})
	other.idle() // nothing is allocated while paused
	if bl, _ := h.c.Blockage(queued); bl.NoAgent == nil || bl.NoAgent.Kind != NoAgentSpace {
		t.Fatalf("queued while paused: %+v, want %s", bl.NoAgent, NoAgentSpace)
	}

	for i := range DefaultMaxSetupFailures + 2 {
		err := h.c.UploadSpace(a.id, id)
		var low *LowSpaceError
		if !errors.As(err, &low) || low.Free != reserve/2 || low.Reserve != reserve {
			t.Fatalf("upload while low: %v", err)
		}
		if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: id, Reason: "upload: " + err.Error()}); err != nil {
			t.Fatal(err)
		}
		got := h.build(id)
		last := got.Attempts[len(got.Attempts)-1]
		if got.State != db.StateScheduled || last.Kind != db.KindCoordinator || last.Outcome != db.OutcomeRequeued {
			t.Fatalf("round %d: state %s, attempt %+v", i, got.State, last)
		}
		if h.avoided(id, a.id) {
			t.Fatal("agent put on the build's avoid list for the coordinator's disk")
		}
		if i == DefaultMaxSetupFailures+1 {
			break
		}
		// Give it back to a as if space had come and gone (the fake
		// agent holds it again), to count rounds past the setup limit.
		h.c.mu.Lock()
		h.c.space.low = false
		h.c.dispatchLocked(ctx)
		h.c.space.low = true
		h.c.mu.Unlock()
		switch {
		case tryNext(a) == id:
		case tryNext(other) == id:
			a, other = other, a
		default:
			t.Fatalf("round %d: build not allocated again", i)
		}
	}

	free.Store(reserve * 2)
	h.eventually(time.Second, func() bool { return !h.c.Status().Space.Paused })
	got := map[string]bool{}
	for _, ag := range []*fakeAgent{a, other} {
		if x := tryNext(ag); x != "" {
			got[x] = true
		}
	}
	if !got[id] || !got[queued] {
		t.Fatalf("after space returned, pushed %v, want %s and %s", got, id, queued)
	}
}

// tryNext returns the next pushed build's id, or "" when none comes soon.
func tryNext(a *fakeAgent) string {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	m, err := a.s.Next(ctx)
	if err != nil {
		return ""
	}
	if b, ok := m.(*protocol.Build); ok {
		return b.Build
	}
	return ""
}

// A write failing with ENOSPC pauses the coordinator at once, even with
// no reserve, until more space is free than when it failed.
func TestUploadENOSPCPauses(t *testing.T) {
	h, free := spaceHarness(t, 0)
	free.Store(100)
	h.eventually(time.Second, func() bool { return h.c.Status().Space.Free == 100 })
	err := h.c.UploadFailed("a", "b", &os.PathError{Op: "write", Path: "x", Err: errNoSpace})
	var low *LowSpaceError
	if !errors.As(err, &low) || !low.Full {
		t.Fatalf("got %v, want a full-disk LowSpaceError", err)
	}
	if sp := h.c.Status().Space; !sp.Paused || !sp.Full {
		t.Fatalf("status %+v", sp)
	}
	h.clk.Advance(2 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if !h.c.Status().Space.Paused {
		t.Fatal("resumed with no more space than when the write failed")
	}
	free.Store(200)
	h.eventually(time.Second, func() bool { return !h.c.Status().Space.Paused })
	if err := h.c.UploadFailed("a", "b", os.ErrPermission); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("other errors pass through: %v", err)
	}
}

// Verified outputs the coordinator cannot publish send the build back to
// the queue charged to nobody, and the agent's result is refused.
func TestPublishFailureChargesNobody(t *testing.T) {
	h := newHarness(t)
	id := h.submit(0, h.drv("publish", "x86_64-linux"))[0]
	a := h.agent("a", protocol.Hello{})
	b := a.next()
	out := a.upload(b, "content")
	// The cache's NAR directory replaced by a file: the move fails.
	nar := filepath.Join(h.dir, "state", "cache", "nar")
	if err := os.RemoveAll(nar); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nar, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.succeed(b, out); err == nil {
		t.Fatal("result acknowledged although publishing failed")
	}
	got := h.build(id)
	first := got.Attempts[0]
	if first.Kind != db.KindCoordinator || first.Outcome != db.OutcomeRequeued {
		t.Fatalf("attempt %+v", first)
	}
	if h.avoided(id, a.id) {
		t.Fatal("agent avoided for the coordinator's publish failure")
	}
	// Requeued and, with the slot free, given again.
	if again := a.next(); again.Build != id {
		t.Fatalf("pushed %s", again.Build)
	}
}

var errNoSpace = syscall.ENOSPC

func (h *harness) avoided(build, agent string) bool {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.c.avoid[build][agent]
}

package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
)

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "gbc.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func appendEvents(t *testing.T, st *sqlite.Store, typ db.EventType, n int) []int64 {
	t.Helper()
	var ids []int64
	for i := 0; i < n; i++ {
		id, err := st.AppendEvent(context.Background(), db.Event{Type: typ, At: time.Now(), Agent: "a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// start runs a runner in the background; stop cancels it and waits.
func start(t *testing.T, st Store, hooks ...Hook) (stop func()) {
	t.Helper()
	r, err := New(Config{Store: st, Hooks: hooks, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type recorder struct {
	mu      sync.Mutex
	seen    []int64
	running atomic.Int32
	maxRun  atomic.Int32
}

func (r *recorder) handler(delay time.Duration) Handler {
	return func(ctx context.Context, e db.Event) error {
		n := r.running.Add(1)
		defer r.running.Add(-1)
		for {
			m := r.maxRun.Load()
			if n <= m || r.maxRun.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(delay)
		r.mu.Lock()
		r.seen = append(r.seen, e.ID)
		r.mu.Unlock()
		return nil
	}
}

func (r *recorder) ids() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := slices.Clone(r.seen)
	slices.Sort(s)
	return s
}

// TestEachEventOnceWithBoundedParallelism: a new hook skips history, then
// handles every matching event once, never more than Parallel at a time,
// and a restarted runner does not repeat finished events.
func TestEachEventOnceWithBoundedParallelism(t *testing.T) {
	st := openStore(t)
	appendEvents(t, st, db.EventAgentConnected, 3) // history before the hook exists
	rec := &recorder{}
	h := Hook{Name: "h", Types: []db.EventType{db.EventAgentAbsent}, Handler: rec.handler(20 * time.Millisecond), Parallel: 3}
	stop := start(t, st, h)
	waitUntil(t, "registration", func() bool {
		p, _ := st.HookProgress(context.Background(), "h")
		return p.Registered
	})
	var want []int64
	for i := 0; i < 4; i++ {
		want = append(want, appendEvents(t, st, db.EventAgentAbsent, 3)...)
		appendEvents(t, st, db.EventAgentConnected, 1) // other types are skipped
	}
	waitUntil(t, "all events", func() bool { return len(rec.ids()) == len(want) })
	stop()
	if got := rec.ids(); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	if m := rec.maxRun.Load(); m > 3 || m < 2 {
		t.Errorf("max concurrent handlers %d, want 2..3", m)
	}
	p, _ := st.HookProgress(context.Background(), "h")
	if p.Cursor != want[len(want)-1] || len(p.Done) != 0 {
		t.Errorf("progress %+v, want cursor %d", p, want[len(want)-1])
	}
	rec2 := &recorder{}
	h.Handler = rec2.handler(0)
	stop = start(t, st, h)
	more := appendEvents(t, st, db.EventAgentAbsent, 1)
	waitUntil(t, "new event after restart", func() bool { return len(rec2.ids()) == 1 })
	stop()
	if got := rec2.ids(); !slices.Equal(got, more) {
		t.Errorf("after restart handled %v, want only %v", got, more)
	}
}

// TestUnfinishedEventRunsAgain: a handler interrupted by a crash (here:
// the runner's context canceled while it blocks) leaves its event
// unfinished; the next runner handles it, and the events finished out of
// order beyond it are not repeated.
func TestUnfinishedEventRunsAgain(t *testing.T) {
	st := openStore(t)
	rec := &recorder{}
	var first atomic.Int64
	release := make(chan struct{})
	h := Hook{Name: "crashy", Types: []db.EventType{db.EventAgentAbsent}, Parallel: 4,
		Handler: func(ctx context.Context, e db.Event) error {
			if e.ID == first.Load() {
				select { // blocks until the "crash"
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return rec.handler(0)(ctx, e)
		}}
	stop := start(t, st, h)
	waitUntil(t, "registration", func() bool {
		p, _ := st.HookProgress(context.Background(), "crashy")
		return p.Registered
	})
	// The first event's id is the next one after the last.
	last, _ := st.AppendEvent(context.Background(), db.Event{Type: db.EventAgentConnected, At: time.Now()})
	first.Store(last + 1)
	ids := appendEvents(t, st, db.EventAgentAbsent, 3)
	if ids[0] != last+1 {
		t.Fatalf("ids not consecutive: %d after %d", ids[0], last)
	}
	waitUntil(t, "the later events", func() bool { return len(rec.ids()) == 2 })
	time.Sleep(50 * time.Millisecond) // let the progress writes land
	stop()
	p, _ := st.HookProgress(context.Background(), "crashy")
	if p.Cursor >= ids[0] || !slices.Equal(p.Done, ids[1:]) {
		t.Fatalf("progress after crash %+v, want cursor < %d and done %v", p, ids[0], ids[1:])
	}
	close(release)
	rec2 := &recorder{}
	h.Handler = rec2.handler(0)
	start(t, st, h)
	waitUntil(t, "the unfinished event", func() bool { return len(rec2.ids()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if got := rec2.ids(); !slices.Equal(got, ids[:1]) {
		t.Fatalf("after restart handled %v, want %v", got, ids[:1])
	}
}

// TestFailingHookRetriedThenReported: MaxTries tries with backoff, then a
// hook-failed event naming the hook and event; a permanent error is
// reported after one try.
func TestFailingHookRetriedThenReported(t *testing.T) {
	st := openStore(t)
	var tries, permTries atomic.Int32
	var times []time.Time
	var mu sync.Mutex
	start(t, st,
		Hook{Name: "flaky", Types: []db.EventType{db.EventAgentAbsent}, MaxTries: 3, Backoff: 20 * time.Millisecond,
			Handler: func(ctx context.Context, e db.Event) error {
				tries.Add(1)
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
				return errors.New("exit status 1")
			}},
		Hook{Name: "perm", Types: []db.EventType{db.EventAgentAbsent}, MaxTries: 3, Backoff: time.Millisecond,
			Handler: func(ctx context.Context, e db.Event) error {
				permTries.Add(1)
				return Permanent(errors.New("no such derivation"))
			}})
	waitUntil(t, "registration", func() bool {
		a, _ := st.HookProgress(context.Background(), "flaky")
		b, _ := st.HookProgress(context.Background(), "perm")
		return a.Registered && b.Registered
	})
	id := appendEvents(t, st, db.EventAgentAbsent, 1)[0]
	var reports []db.Event
	waitUntil(t, "two hook-failed events", func() bool {
		reports, _ = st.Events(context.Background(), db.EventFilter{Types: []db.EventType{db.EventHookFailed}})
		return len(reports) == 2
	})
	if n := tries.Load(); n != 3 {
		t.Errorf("flaky hook tried %d times, want 3", n)
	}
	if n := permTries.Load(); n != 1 {
		t.Errorf("permanent failure tried %d times, want 1", n)
	}
	mu.Lock()
	if d := times[2].Sub(times[1]); d < 35*time.Millisecond {
		t.Errorf("second backoff %v, want about 40ms (doubling)", d)
	}
	mu.Unlock()
	hooksSeen := map[string]bool{}
	for _, r := range reports {
		hooksSeen[r.Hook] = true
		if r.EventID != id || r.Agent != "a" || r.Reason == "" {
			t.Errorf("report %+v", r)
		}
	}
	if !hooksSeen["flaky"] || !hooksSeen["perm"] {
		t.Errorf("reports name hooks %v", hooksSeen)
	}
}

// TestExecHook: the program gets the event JSON on stdin and the
// environment; a non-zero exit is an error; the timeout kills it.
func TestExecHook(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ncat > "+dir+"/stdin\necho \"$GBC_EVENT $GBC_EVENT_ID $GBC_BUILD_ID\" > "+dir+"/env\necho hello from the hook\n[ \"$GBC_BUILD_ID\" != fail ]\n"), 0o755)
	h := Exec(script, discardLogger())
	e := db.Event{ID: 42, Type: db.EventSucceeded, Build: "b1", Outputs: []db.EventOutput{{Name: "out", Path: "/nix/store/x-out"}}}
	if err := h(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	in, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if !strings.Contains(string(in), `"type":"succeeded"`) || !strings.Contains(string(in), `"path":"/nix/store/x-out"`) {
		t.Errorf("stdin %s", in)
	}
	if strings.TrimSpace(string(env)) != "succeeded 42 b1" {
		t.Errorf("env %q", env)
	}
	e.Build = "fail"
	if err := h(context.Background(), e); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("failing program: %v", err)
	}
	slow := filepath.Join(dir, "slow.sh")
	os.WriteFile(slow, []byte("#!/bin/sh\nsleep 30 &\nwait\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := Exec(slow, discardLogger())(ctx, e); err == nil || time.Since(t0) > 5*time.Second {
		t.Errorf("timeout: %v after %v", err, time.Since(t0))
	}
}

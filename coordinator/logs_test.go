package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/protocol"
)

type fakeLogCache struct {
	mu   sync.Mutex
	logs map[string]string
}

func (f *fakeLogCache) WriteLog(ctx context.Context, drv string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs[drv] = string(b)
	return nil
}

func (f *fakeLogCache) get(drv string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.logs[drv]
	return s, ok
}

// syncBuffer is written by CopyLog in one goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogChunksFollowFinish: chunks resent after a reconnect (repeated,
// out of order) give the exact log; a follower sees lines before the
// build ends and returns once it ends; the finished log is compressed,
// readable per attempt, and published to the cache under the derivation.
func TestLogChunksFollowFinish(t *testing.T) {
	h := newHarness(t)
	lc := &fakeLogCache{logs: map[string]string{}}
	h.c.cfg.LogCache = lc
	ctx := context.Background()
	a := h.agent("a", protocol.Hello{})
	drv := h.drv("logged", "x86_64-linux")
	id := h.submit(0, drv)[0]
	b := a.next()
	if err := a.s.Started(ctx, &protocol.Started{Build: id}); err != nil {
		t.Fatal(err)
	}
	chunk := func(off int64, data string) {
		t.Helper()
		if err := a.s.Log(ctx, &protocol.Log{Build: id, Offset: off, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	chunk(0, "line one\n")

	followed := &syncBuffer{}
	followDone := make(chan error, 1)
	go func() { followDone <- h.c.CopyLog(ctx, followed, id, 0, true) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(followed.String(), "line one") {
		if time.Now().After(deadline) {
			t.Fatalf("follower saw %q", followed.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	chunk(9, "line two\n")
	chunk(0, "line one\n")             // replay after a reconnect
	chunk(18, "line three\n")          // next chunk
	chunk(9, "line two\nline three\n") // a replay spanning two chunks
	select {
	case err := <-followDone:
		t.Fatalf("follow returned before the build ended: %v", err)
	case <-time.After(3 * logFollowPoll):
	}
	want := "line one\nline two\nline three\n"
	if err := a.s.Failed(ctx, &protocol.Failed{Build: b.Build, Reason: protocol.ReasonBuild, ExitCode: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-followDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not return after the build ended")
	}
	if got := followed.String(); got != want {
		t.Errorf("followed log %q, want %q", got, want)
	}
	// A straggler chunk after the end is dropped, not a new partial log.
	_ = a.s.Log(ctx, &protocol.Log{Build: id, Offset: 0, Data: []byte("late")})
	h.eventually(time.Millisecond, func() bool {
		_, ok := lc.get(drv)
		return ok
	})
	if got, _ := lc.get(drv); got != want {
		t.Errorf("cache log %q, want %q", got, want)
	}
	raw := h.c.attemptLog(id, 1)
	if _, err := os.Stat(raw); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("raw log still there after finishing: %v", err)
	}
	if _, err := os.Stat(raw + ".zst"); err != nil {
		t.Errorf("no compressed log: %v", err)
	}
	var out bytes.Buffer
	if err := h.c.CopyLog(ctx, &out, id, 1, false); err != nil || out.String() != want {
		t.Errorf("CopyLog attempt 1: %q, %v", out.String(), err)
	}
	if err := h.c.CopyLog(ctx, io.Discard, id, 2, false); err == nil {
		t.Error("CopyLog of a missing attempt succeeded")
	}
}

// TestLogSweepAfterCrash: a log left uncompressed by a crash is finished
// at the next start; per-attempt logs stay apart.
func TestLogSweepAfterCrash(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.agent("a", protocol.Hello{})
	id := h.submit(0, h.drv("swept", "x86_64-linux"))[0]
	a.next()
	if err := a.s.Log(ctx, &protocol.Log{Build: id, Data: []byte("first attempt\n")}); err != nil {
		t.Fatal(err)
	}
	if err := a.s.SetupFailure(ctx, &protocol.SetupFailure{Build: id, Reason: "disk full"}); err != nil {
		t.Fatal(err)
	}
	h.eventually(time.Millisecond, func() bool {
		_, err := os.Stat(h.c.attemptLog(id, 1) + ".zst")
		return err == nil
	})
	// Simulate a crash before the second attempt's log was finished:
	// write the raw log of an ended attempt directly.
	b2 := a.next()
	if err := a.s.Log(ctx, &protocol.Log{Build: b2.Build, Data: []byte("second attempt\n")}); err != nil {
		t.Fatal(err)
	}
	h.c.Close()
	if err := h.store.FailBuild(ctx, id, a.id, h.clk.Now(), db.KindBuild, "build", 1); err != nil {
		t.Fatal(err)
	}
	h.start()
	var out bytes.Buffer
	if err := h.c.CopyLog(ctx, &out, id, 0, false); err != nil || out.String() != "second attempt\n" {
		t.Errorf("latest attempt after restart: %q, %v", out.String(), err)
	}
	if _, err := os.Stat(h.c.attemptLog(id, 2) + ".zst"); err != nil {
		t.Errorf("sweep did not compress attempt 2: %v", err)
	}
	out.Reset()
	if err := h.c.CopyLog(ctx, &out, id, 1, false); err != nil || out.String() != "first attempt\n" {
		t.Errorf("attempt 1: %q, %v", out.String(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(h.dir, "state", "log", ".tmp-*")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
}

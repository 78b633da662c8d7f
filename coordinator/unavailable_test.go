package coordinator

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/protocol"
)

// flakyStore fails SucceedBuild as a lost database connection would,
// before or after committing.
type flakyStore struct {
	*sqlite.Store
	fail        atomic.Int32 // calls left that fail
	afterCommit bool         // commit, then report the failure (a lost COMMIT reply)
}

func (f *flakyStore) SucceedBuild(ctx context.Context, id, agentID string, at time.Time, rs []db.OutputResult) error {
	if f.fail.Add(-1) >= 0 {
		if f.afterCommit {
			if err := f.Store.SucceedBuild(ctx, id, agentID, at, rs); err != nil {
				return err
			}
		}
		return errors.New("commit: unexpected EOF")
	}
	return f.Store.SucceedBuild(ctx, id, agentID, at, rs)
}

// TestResultNotAckedWhileStoreDown: a success the store could not record
// is reported as ErrUnavailable (sshd then neither acks nor refuses it and
// ends the session); the agent's resend — its upload already moved into
// the cache — is verified against the cache and recorded, whether or not
// the first attempt had in fact committed.
func TestResultNotAckedWhileStoreDown(t *testing.T) {
	for _, afterCommit := range []bool{false, true} {
		t.Run(map[bool]string{false: "not committed", true: "commit reply lost"}[afterCommit], func(t *testing.T) {
			h := newHarness(t)
			h.c.Close()
			fs := &flakyStore{Store: h.store, afterCommit: afterCommit}
			fs.fail.Store(1)
			c, err := New(context.Background(), Config{
				StateDir: h.dir + "/state", Store: fs, Clock: h.clk, StoreDirs: []string{h.storeDir},
				DisconnectGrace: grace, Heartbeat: time.Hour,
			})
			if err != nil {
				t.Fatal(err)
			}
			h.c = c
			id := h.submit(0, h.drv("ok", "x86_64-linux"))[0]
			a := h.agent("a", protocol.Hello{})
			b := a.next()
			out := a.upload(b, "hello world")
			err = a.succeed(b, out)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("first report: %v, want ErrUnavailable (no ack)", err)
			}
			// The agent resends only the unacknowledged result.
			if err := a.s.Succeeded(context.Background(), &protocol.Succeeded{Build: b.Build, Outputs: []protocol.OutputResult{out}}); err != nil {
				t.Fatalf("resent report: %v", err)
			}
			got := h.build(id)
			if got.State != db.StateSucceeded || len(got.Results) != 1 || got.Results[0].NarHash != out.NarHash {
				t.Fatalf("after resend: state %s, results %+v", got.State, got.Results)
			}
		})
	}
}

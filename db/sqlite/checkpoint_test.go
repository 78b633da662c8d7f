package sqlite

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
)

// TestCheckpointOffTheWritePath: the writer never checkpoints (even on a
// WAL well past SQLite's 1,000-page default), and the background
// checkpoint copies every frame no reader holds.
func TestCheckpointOffTheWritePath(t *testing.T) {
	ctx := t.Context()
	// No background round during the test: it calls checkpoint itself.
	s, err := open(ctx, filepath.Join(t.TempDir(), "gbc.db"), nil, time.Hour, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var auto int
	if err := s.DB().QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("writer wal_autocheckpoint = %d, %v; want 0", auto, err)
	}
	for i := range 40 {
		bs := make([]db.NewBuild, 100)
		for j := range bs {
			id := fmt.Sprintf("b%02d-%03d-%s", i, j, "padding-to-make-rows-and-index-entries-bigger-padding")
			bs[j] = db.NewBuild{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux",
				Outputs: []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + id}}}
		}
		if err := s.CreateBuilds(ctx, bs); err != nil {
			t.Fatal(err)
		}
	}
	frames, done, err := s.ckpt.checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if frames <= 1000 || done != frames {
		t.Errorf("checkpoint: %d of %d WAL frames copied; want all, and more than 1,000 (no automatic checkpoint ran)", done, frames)
	}
	// Writes keep coming while checkpoints run: a checkpoint beside them
	// never reaches the WAL's end, so a long WAL is finished between
	// writes and the next write starts it over instead of growing it.
	s.ckpt.restartAt = 100
	more := func(round int) {
		t.Helper()
		bs := make([]db.NewBuild, 100)
		for j := range bs {
			id := fmt.Sprintf("m%02d-%03d", round, j)
			bs[j] = db.NewBuild{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux"}
		}
		if err := s.CreateBuilds(ctx, bs); err != nil {
			t.Fatal(err)
		}
	}
	more(0)
	before, _, err := s.ckpt.checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	frames, done, err = s.ckpt.round(ctx)
	if err != nil || done != frames {
		t.Fatalf("round: %d of %d frames, %v", done, frames, err)
	}
	more(1)
	after, _, err := s.ckpt.checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after >= before {
		t.Errorf("WAL not started over: %d frames after a finished round and one write, %d before", after, before)
	}
	var limit int64
	if err := s.DB().QueryRowContext(ctx, "PRAGMA journal_size_limit").Scan(&limit); err != nil || limit != walSizeLimit {
		t.Errorf("writer journal_size_limit = %d, %v; want %d", limit, err, walSizeLimit)
	}
	// The data is readable through a fresh store after the checkpoint.
	bs, err := s.Builds(ctx, db.BuildFilter{Limit: 5000})
	if err != nil || len(bs) != 4200 {
		t.Fatalf("Builds: %d, %v", len(bs), err)
	}
}

// TestWALBoundedUnderSteadyWrites: with a writer that never pauses, a
// checkpoint beside it never sees the WAL's end and the WAL only grows; a
// round that finishes the tail between writes lets the next write start
// it over, so its length stays near what one round's interval of writes
// takes. Compared, not timed: the same writes run in both cases. The
// median round is compared, not the longest: on a loaded machine a round
// or two may find no quiet moment, which the next one makes up for.
func TestWALBoundedUnderSteadyWrites(t *testing.T) {
	median := func(t *testing.T, restartAt int) int {
		ctx := t.Context()
		s, err := open(ctx, filepath.Join(t.TempDir(), "gbc.db"), nil, time.Hour, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.ckpt.restartAt = restartAt
		stop := make(chan struct{})
		wrote := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					wrote <- nil
					return
				default:
				}
				id := fmt.Sprintf("w%06d-padding-padding-padding-padding-padding", i)
				err := s.CreateBuilds(ctx, []db.NewBuild{{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux"}})
				if err != nil {
					wrote <- err
					return
				}
			}
		}()
		var seen []int
		for range 40 {
			time.Sleep(5 * time.Millisecond)
			frames, _, err := s.ckpt.round(ctx)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, frames)
		}
		close(stop)
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		slices.Sort(seen)
		t.Logf("restart at %d: WAL frames per round %v", restartAt, seen)
		return seen[len(seen)/2]
	}
	bounded := median(t, 200)
	unbounded := median(t, 1<<30)
	t.Logf("median WAL: %d frames finishing between writes, %d beside writes only", bounded, unbounded)
	if bounded*4 > unbounded {
		t.Errorf("finishing rounds between writes kept the WAL at %d frames, beside writes only %d: it was not started over", bounded, unbounded)
	}
}

package sqlite

import (
	"fmt"
	"path/filepath"
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
	s, err := open(ctx, filepath.Join(t.TempDir(), "gbc.db"), nil, time.Hour)
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
	// The data is readable through a fresh store after the checkpoint.
	bs, err := s.Builds(ctx, db.BuildFilter{Limit: 5000})
	if err != nil || len(bs) != 4000 {
		t.Fatalf("Builds: %d, %v", len(bs), err)
	}
}

package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/migrate"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
	"github.com/gbc-farm/gbc/db/sqlite"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Populate fills s with a small farm touching every table: keys of every
// role, agents, builds in every state with tags, features and outputs,
// attempts (requeued, hardware), results with references, events and hook
// progress. Exported through the test so the e2e and command tests can
// reuse the shape if they need to.
func populate(t *testing.T, s db.Store) {
	ctx := t.Context()
	must(t, "admin key", s.PutKey(ctx, db.Key{Fingerprint: "SHA256:admin", AuthorizedKey: "ssh-ed25519 AAAAadmin", Role: db.RoleAdmin, Comment: "root", CreatedAt: at(0)}))
	must(t, "reader key", s.PutKey(ctx, db.Key{Fingerprint: "SHA256:reader", AuthorizedKey: "ssh-ed25519 AAAAreader", Role: db.RoleReader}))
	for i, id := range []string{"agent-a", "agent-b"} {
		must(t, "agent", s.CreateAgent(ctx, db.Agent{ID: id, Name: "n-" + id, Active: i == 0, CreatedAt: at(i)},
			db.Key{Fingerprint: "SHA256:" + id, AuthorizedKey: "ssh-ed25519 AAAA" + id, Role: db.RoleAgent, CreatedAt: at(i)}))
	}
	must(t, "touch", s.TouchAgent(ctx, "agent-a", at(50)))
	var builds []db.NewBuild
	for i := range 2500 { // more than one insert batch
		id := fmt.Sprintf("b%04d", i)
		builds = append(builds, db.NewBuild{
			ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux", Priority: i % 3,
			Tags:             []db.Tag{{Key: "job", Value: id}, {Key: "set", Value: "main"}},
			RequiredFeatures: []string{"kvm"},
			Outputs:          []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + id}, {Name: "dev", Path: "/nix/store/" + id + "-dev"}},
			CreatedAt:        at(i / 10), TimeoutSeconds: i % 7, DeferUntil: at(i % 2 * 1000),
		})
	}
	must(t, "CreateBuilds", s.CreateBuilds(ctx, builds))
	must(t, "alloc", allocate(ctx, s, "b0000", "agent-a", at(100)))
	must(t, "start", s.StartBuildWith(ctx, "b0000", "agent-a", at(101), db.Hardware{Cores: 8, Backend: "nix"}))
	must(t, "succeed", s.SucceedBuild(ctx, "b0000", "agent-a", at(102), []db.OutputResult{
		{Name: "out", Path: "/nix/store/b0000", NarHash: "sha256:aaa", NarSize: 1 << 40, FileHash: "sha256:bbb", FileSize: 99, Compression: "zstd", References: []string{"/nix/store/x", "/nix/store/y"}, File: "nar/bbb.nar.zst"},
		{Name: "dev", Path: "/nix/store/b0000-dev", NarHash: "sha256:ccc", NarSize: 5, FileHash: "sha256:ddd", FileSize: 4, Compression: "none", File: "nar/ddd.nar"},
	}))
	must(t, "alloc1", allocate(ctx, s, "b0001", "agent-b", at(110)))
	must(t, "requeue1", s.RequeueBuild(ctx, "b0001", "agent-b", at(111), db.KindInfrastructure, "agent absent"))
	must(t, "alloc1b", allocate(ctx, s, "b0001", "agent-a", at(112)))
	must(t, "fail1", s.FailBuild(ctx, "b0001", "agent-a", at(113), db.KindBuild, "build", 2))
	must(t, "cancel2", s.CancelBuild(ctx, "b0002", at(120)))
	must(t, "faildep3", s.FailDependency(ctx, at(121), db.DependencyFailure{ID: "b0003", FailedInput: "/nix/store/b0001-x.drv", FailedBuild: "b0001"}))
	must(t, "alloc4", allocate(ctx, s, "b0004", "agent-b", at(130)))
	must(t, "setupfail4", s.SetupFailBuild(ctx, "b0004", "agent-b", at(131), db.KindSetup, "missing input", []string{"/nix/store/q.drv"}, false))
	must(t, "alloc5", allocate(ctx, s, "b0005", "agent-a", at(140))) // left held
	must(t, "priority", s.SetBuildPriority(ctx, "b0006", 9))
	_, err := s.AppendEvent(ctx, db.Event{Type: db.EventAgentConnected, At: at(150), Agent: "agent-a"})
	must(t, "event", err)
	must(t, "hook", s.MarkHookDone(ctx, "notify", 3, 2))
	must(t, "hook", s.MarkHookDone(ctx, "notify", 7, 2))
}

type snapshot struct {
	Keys   []db.Key
	Agents []db.Agent
	Builds []db.Build
	Events []db.Event
	Hook   db.HookProgress
}

func snap(t *testing.T, s db.Store) snapshot {
	ctx := t.Context()
	var sn snapshot
	var err error
	sn.Keys, err = s.Keys(ctx)
	must(t, "Keys", err)
	sn.Agents, err = s.Agents(ctx)
	must(t, "Agents", err)
	list, err := s.Builds(ctx, db.BuildFilter{})
	must(t, "Builds", err)
	for _, b := range list {
		full, err := s.Build(ctx, b.ID)
		must(t, "Build", err)
		sn.Builds = append(sn.Builds, full)
	}
	sn.Events, err = s.Events(ctx, db.EventFilter{})
	must(t, "Events", err)
	sn.Hook, err = s.HookProgress(ctx, "notify")
	must(t, "HookProgress", err)
	return sn
}

// TestRoundTrip: a farm copied from SQLite to PostgreSQL reads back
// identically through db.Store, and the copy keeps working (new builds and
// events get fresh, higher seq and ids).
func TestRoundTrip(t *testing.T) {
	dsn := pgtest.Schema(t)
	ctx := t.Context()
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "gbc.db"), nil)
	must(t, "open sqlite", err)
	defer src.Close()
	dst, err := postgres.Open(ctx, dsn, nil)
	must(t, "open postgres", err)
	defer dst.Close()
	populate(t, src)

	rep, err := migrate.SQLiteToPostgres(ctx, src.DB(), dst.DB(), nil)
	must(t, "copy", err)
	if rep.Rows() == 0 {
		t.Fatalf("report: nothing copied: %+v", rep)
	}
	for _, tc := range rep.Tables {
		if tc.Source != tc.Copied {
			t.Errorf("%s: %d source rows, %d copied", tc.Table, tc.Source, tc.Copied)
		}
	}
	want, got := snap(t, src), snap(t, dst)
	if len(want.Builds) != 2500 || len(want.Events) < 2500 {
		t.Fatalf("populate: %d builds, %d events", len(want.Builds), len(want.Events))
	}
	if !reflect.DeepEqual(want.Keys, got.Keys) || !reflect.DeepEqual(want.Agents, got.Agents) {
		t.Errorf("keys or agents differ:\nsqlite   %+v %+v\npostgres %+v %+v", want.Keys, want.Agents, got.Keys, got.Agents)
	}
	for i := range want.Builds {
		if !reflect.DeepEqual(want.Builds[i], got.Builds[i]) {
			t.Fatalf("build %d differs:\nsqlite   %+v\npostgres %+v", i, want.Builds[i], got.Builds[i])
		}
	}
	if !reflect.DeepEqual(want.Events, got.Events) {
		t.Errorf("events differ (%d vs %d)", len(want.Events), len(got.Events))
	}
	if !reflect.DeepEqual(want.Hook, got.Hook) {
		t.Errorf("hook progress: sqlite %+v, postgres %+v", want.Hook, got.Hook)
	}

	// Sequences continue after the copied values.
	must(t, "new build", dst.CreateBuilds(ctx, []db.NewBuild{{ID: "after", Derivation: "/nix/store/after.drv", System: "x86_64-linux", CreatedAt: at(999999)}}))
	bs, err := dst.Builds(ctx, db.BuildFilter{Limit: 1})
	must(t, "Builds", err)
	if len(bs) != 1 || bs[0].ID != "after" {
		t.Errorf("newest build after the copy: %+v", bs)
	}
	es, err := dst.Events(ctx, db.EventFilter{AfterID: want.Events[len(want.Events)-1].ID})
	must(t, "Events", err)
	if len(es) != 1 || es[0].Build != "after" {
		t.Errorf("events after the copied ones: %+v", es)
	}

	// A second copy into the now non-empty destination is refused.
	if _, err := migrate.SQLiteToPostgres(ctx, src.DB(), dst.DB(), nil); !errors.Is(err, migrate.ErrNotEmpty) {
		t.Errorf("copy into a non-empty database: %v, want ErrNotEmpty", err)
	}
}

// allocate allocates a build where the test needs only the transition.
func allocate(ctx context.Context, s db.Store, id, agentID string, at time.Time) error {
	_, err := s.AllocateBuildFor(ctx, id, agentID, at)
	return err
}

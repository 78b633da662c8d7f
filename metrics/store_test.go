package metrics_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
	"github.com/gbc-farm/gbc/db/sqlite"
	"github.com/gbc-farm/gbc/internal/promtest"
	"github.com/gbc-farm/gbc/metrics"
)

// TestStoreObserved: a store opened with metrics.Store counts the events
// each committed transaction wrote (none of a failed one) and times every
// transaction, on both backends (PostgreSQL inserts submissions in bulk
// through its own statement).
func TestStoreObserved(t *testing.T) {
	backends := map[string]func(t *testing.T, obs db.Observer) db.Store{
		"sqlite": func(t *testing.T, obs db.Observer) db.Store {
			s, err := sqlite.OpenWith(context.Background(), filepath.Join(t.TempDir(), "gbc.db"), nil, sqlite.Options{Observer: obs})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		"postgres": func(t *testing.T, obs db.Observer) db.Store {
			s, err := postgres.OpenWith(context.Background(), pgtest.Schema(t), nil, postgres.Options{Observer: obs})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			m := metrics.NewStore()
			st := open(t, m)
			defer st.Close()
			ctx := context.Background()
			now := time.Unix(1_700_000_000, 0)
			var bs []db.NewBuild
			for _, id := range []string{"b1", "b2", "b3"} {
				bs = append(bs, db.NewBuild{ID: id, Derivation: "/nix/store/" + id + ".drv", System: "x86_64-linux", CreatedAt: now,
					Outputs: []db.DerivationOutput{{Name: "out", Path: "/nix/store/" + id}}})
			}
			if err := st.CreateBuilds(ctx, bs); err != nil {
				t.Fatal(err)
			}
			if err := st.CreateAgent(ctx, db.Agent{ID: "a1", Name: "a1", Active: true, CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.AppendEvent(ctx, db.Event{Type: db.EventAgentConnected, At: now, Agent: "a1"}); err != nil {
				t.Fatal(err)
			}
			// A transaction that fails writes nothing and counts no event.
			if err := st.CreateBuilds(ctx, bs[:1]); err == nil {
				t.Fatal("a build id stored twice was accepted")
			}
			if _, err := st.Events(ctx, db.EventFilter{}); err != nil {
				t.Fatal(err)
			}
			r, err := metrics.NewRegistry(m)
			if err != nil {
				t.Fatal(err)
			}
			for typ, want := range map[db.EventType]float64{db.EventSubmitted: 3, db.EventAgentConnected: 1, db.EventFailed: 0} {
				if got, ok := promtest.Sample(t, r, "gbc_events_written_total", "type", string(typ)); !ok || got != want {
					t.Errorf("events written of type %s: %v (present %v), want %v", typ, got, ok, want)
				}
			}
			if got, _ := promtest.Sample(t, r, "gbc_db_transaction_duration_seconds", "kind", "write", "result", "error"); got != 1 {
				t.Errorf("failed write transactions: %v, want 1", got)
			}
			if got, _ := promtest.Sample(t, r, "gbc_db_transaction_duration_seconds", "kind", "write", "result", "ok"); got < 3 {
				t.Errorf("committed write transactions: %v, want at least 3", got)
			}
			if got, _ := promtest.Sample(t, r, "gbc_db_transaction_duration_seconds", "kind", "read", "result", "ok"); got < 1 {
				t.Errorf("read transactions: %v, want at least 1", got)
			}
		})
	}
}

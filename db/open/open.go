// Package open turns a --database URL into a db.Store, so callers never
// name a backend: "sqlite:PATH" (or a bare path) is SQLite, "postgres://…"
// and "postgresql://…" are PostgreSQL.
package open

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gbc-farm/gbc/db"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/sqlite"
)

// Backend names a store implementation.
type Backend string

const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// Target is a parsed --database value.
type Target struct {
	Backend Backend
	// Path for SQLite, the connection URL for PostgreSQL.
	Location string
}

// String is the target for messages, without a password.
func (t Target) String() string {
	if t.Backend == Postgres {
		return postgres.Redact(t.Location)
	}
	return "sqlite:" + t.Location
}

// Parse reads a --database value.
func Parse(spec string) (Target, error) {
	switch {
	case spec == "":
		return Target{}, fmt.Errorf("database: empty URL (want sqlite:PATH or postgres://…)")
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return Target{Backend: Postgres, Location: spec}, nil
	case strings.HasPrefix(spec, "sqlite://"):
		return sqlitePath(spec, strings.TrimPrefix(spec, "sqlite://"))
	case strings.HasPrefix(spec, "sqlite:"):
		return sqlitePath(spec, strings.TrimPrefix(spec, "sqlite:"))
	case strings.Contains(spec, "://"):
		scheme, _, _ := strings.Cut(spec, "://")
		return Target{}, fmt.Errorf("database %q: unknown scheme %q (want sqlite:PATH or postgres://…)", spec, scheme)
	}
	return sqlitePath(spec, spec)
}

func sqlitePath(spec, path string) (Target, error) {
	if path == "" {
		return Target{}, fmt.Errorf("database %q: sqlite needs a file path", spec)
	}
	return Target{Backend: SQLite, Location: path}, nil
}

// Store opens (and migrates) the store spec names.
func Store(ctx context.Context, spec string, logger *slog.Logger) (db.Store, error) {
	t, err := Parse(spec)
	if err != nil {
		return nil, err
	}
	return t.Open(ctx, logger)
}

// Open opens (and migrates) the target's store.
func (t Target) Open(ctx context.Context, logger *slog.Logger) (db.Store, error) {
	return t.OpenObserved(ctx, logger, nil)
}

// OpenObserved is Open with an Observer told of every transaction and of
// the events committed (the coordinator's metrics); nil: none.
func (t Target) OpenObserved(ctx context.Context, logger *slog.Logger, obs db.Observer) (db.Store, error) {
	switch t.Backend {
	case Postgres:
		return postgres.OpenWith(ctx, t.Location, logger, postgres.Options{Observer: obs})
	case SQLite:
		return sqlite.OpenWith(ctx, t.Location, logger, sqlite.Options{Observer: obs})
	}
	return nil, fmt.Errorf("database: unknown backend %q", t.Backend)
}

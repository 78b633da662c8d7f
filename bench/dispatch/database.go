package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver, for CREATE/DROP DATABASE

	"github.com/gbc-farm/gbc/db/postgres"
)

// isPostgres reports whether a -database value names a PostgreSQL server.
func isPostgres(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// checkDatabaseFlag refuses what -database cannot be: the SQLite run needs
// no URL (its file goes in the state directory, as the coordinator's
// default does), so anything but a postgres:// URL is a mistake.
func checkDatabaseFlag(u string) error {
	if u == "" || isPostgres(u) {
		return nil
	}
	return fmt.Errorf("-database %q: want a postgres:// URL (leave it out for SQLite)", u)
}

// benchDBName is how every database this bench creates is named, so one
// left behind by a killed run is recognisable and a name that reaches SQL
// unquoted can only be this.
var benchDBName = regexp.MustCompile(`^gbc_bench_[0-9a-f]{12}$`)

// withDatabase returns the postgres:// URL u naming database name instead
// of its own, keeping user, password, host and parameters (sslmode,
// synchronous_commit, …), so the coordinator connects as the bench did.
func withDatabase(u, name string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("-database: parsing the URL: %w", err)
	}
	if pu.Scheme != "postgres" && pu.Scheme != "postgresql" {
		return "", fmt.Errorf("-database: scheme %q, want postgres://", pu.Scheme)
	}
	if pu.Host == "" {
		return "", fmt.Errorf("-database %s: no host (the bench connects over TCP)", postgres.Redact(u))
	}
	pu.Path, pu.RawPath = "/"+name, ""
	return pu.String(), nil
}

// pgDatabase is a throw-away database on the -database server, owned by the
// URL's role (which needs CREATEDB), created fresh for one coordinator run.
type pgDatabase struct {
	server *sql.DB // connected to the URL's own database, to create and drop
	name   string
	url    string // the URL naming the new database
}

func createPGDatabase(ctx context.Context, serverURL string) (*pgDatabase, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	name := "gbc_bench_" + hex.EncodeToString(b[:])
	u, err := withDatabase(serverURL, name)
	if err != nil {
		return nil, err
	}
	server, err := sql.Open("pgx", serverURL)
	if err != nil {
		return nil, fmt.Errorf("-database %s: %w", postgres.Redact(serverURL), err)
	}
	// name matches benchDBName: safe unquoted (identifiers cannot be bound).
	if _, err := server.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		server.Close()
		return nil, fmt.Errorf("-database %s: creating database %s (the role needs CREATEDB): %w",
			postgres.Redact(serverURL), name, err)
	}
	return &pgDatabase{server: server, name: name, url: u}, nil
}

// drop removes the database; the coordinator must have stopped, but a
// connection it left behind is terminated rather than waited for.
func (p *pgDatabase) drop() error {
	defer p.server.Close()
	if !benchDBName.MatchString(p.name) {
		return fmt.Errorf("refusing to drop %q: not a bench database", p.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.server.ExecContext(ctx, "DROP DATABASE IF EXISTS "+p.name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", p.name, err)
	}
	return nil
}

// size is the database's size on disk as PostgreSQL reports it.
func (p *pgDatabase) size(ctx context.Context) (int64, error) {
	var n int64
	err := p.server.QueryRowContext(ctx, "SELECT pg_database_size($1)", p.name).Scan(&n)
	return n, err
}

package main

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/postgres/pgtest"
)

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "postgres://gbc:gbc@127.0.0.1/gbc_test?sslmode=disable",
			want: "postgres://gbc:gbc@127.0.0.1/gbc_bench_0123456789ab?sslmode=disable"},
		{in: "postgresql://gbc:p%40ss@db.example:5433/x?sslmode=disable&synchronous_commit=off",
			want: "postgresql://gbc:p%40ss@db.example:5433/gbc_bench_0123456789ab?sslmode=disable&synchronous_commit=off"},
		{in: "postgres://gbc@127.0.0.1", want: "postgres://gbc@127.0.0.1/gbc_bench_0123456789ab"},
		{in: "postgres:///gbc?host=/run/postgresql", err: "no host"},
		{in: "mysql://x@y/z", err: "scheme"},
	} {
		got, err := withDatabase(tc.in, "gbc_bench_0123456789ab")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("withDatabase(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCheckDatabaseFlag(t *testing.T) {
	for in, ok := range map[string]bool{
		"": true, "postgres://a@b/c": true, "postgresql://a@b/c": true,
		"sqlite:/tmp/x.db": false, "/tmp/x.db": false,
	} {
		if err := checkDatabaseFlag(in); (err == nil) != ok {
			t.Errorf("checkDatabaseFlag(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}

// TestPGDatabase creates a bench database, migrates it as the bench's queue
// writer does, and drops it, on GBC_TEST_POSTGRES's server. It skips when
// that role cannot create databases: tests elsewhere need only schemas.
func TestPGDatabase(t *testing.T) {
	base := pgtest.URL(t)
	pgtest.Shared(t) // not while a test restarts the server
	ctx := context.Background()
	srv, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var can bool
	if err := srv.QueryRowContext(ctx, "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&can); err != nil {
		t.Fatal(err)
	}
	if !can {
		t.Skip("the role in " + pgtest.Env + " has no CREATEDB (ALTER ROLE … CREATEDB to run this)")
	}
	p, err := createPGDatabase(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if !benchDBName.MatchString(p.name) {
		t.Errorf("name %q does not match %v", p.name, benchDBName)
	}
	st, err := postgres.Open(ctx, p.url, nil)
	if err != nil {
		p.drop()
		t.Fatal(err)
	}
	// A connection still open when the bench drops the database (a
	// coordinator that did not exit) must not make the drop fail.
	defer st.Close()
	if n, err := p.size(ctx); err != nil || n <= 0 {
		t.Errorf("size = %d, %v", n, err)
	}
	if err := p.drop(); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := srv.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", p.name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after drop", p.name)
	}
}

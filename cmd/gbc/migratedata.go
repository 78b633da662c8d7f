package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/gbc-farm/gbc/db/migrate"
	"github.com/gbc-farm/gbc/db/open"
	"github.com/gbc-farm/gbc/db/postgres"
	"github.com/gbc-farm/gbc/db/sqlite"
)

const migrateDataUsage = `usage: gbc coordinator migrate-data --from sqlite:PATH --to postgres://…

Copies a farm from its SQLite file into an empty PostgreSQL database. Stop
the coordinator first.

flags:
`

// runMigrateData is `gbc coordinator migrate-data`: copy a farm from its
// SQLite file into an empty PostgreSQL database. Stop the coordinator
// first; the copy reads the source in one write-locked transaction, so a
// coordinator still running would only wait.
func runMigrateData(ctx context.Context, e env, args []string) error {
	fs := pflag.NewFlagSet("coordinator migrate-data", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "source database, sqlite:PATH (required)")
	to := fs.String("to", "", "destination database, postgres://… (required; must be empty)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(e.stdout, migrateDataUsage+fs.FlagUsages())
			return nil
		}
		return usageError{fmt.Sprintf("%v; run 'gbc coordinator migrate-data --help' for the flags", err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	src, err := open.Parse(*from)
	if err != nil || src.Backend != open.SQLite {
		return usageError{fmt.Sprintf("--from %q: want sqlite:PATH", *from)}
	}
	dst, err := open.Parse(*to)
	if err != nil || dst.Backend != open.Postgres {
		return usageError{fmt.Sprintf("--to %q: want postgres://…", *to)}
	}
	// sqlite.Open would create a missing file; an empty copy is never
	// what the operator meant.
	if _, err := os.Stat(src.Location); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	s, err := sqlite.Open(ctx, src.Location, e.log)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	defer s.Close()
	d, err := postgres.Open(ctx, dst.Location, e.log)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer d.Close()
	rep, err := migrate.SQLiteToPostgres(ctx, s.DB(), d.DB(), e.log)
	if err != nil {
		return fmt.Errorf("migrate-data %s → %s: %w", src, dst, err)
	}
	fmt.Fprintf(e.stdout, "%-20s %10s %10s\n", "table", "source", "copied")
	for _, t := range rep.Tables {
		fmt.Fprintf(e.stdout, "%-20s %10d %10d\n", t.Table, t.Source, t.Copied)
	}
	fmt.Fprintf(e.stdout, "copied %d rows from %s to %s; counts verified\n", rep.Rows(), src, dst)
	return nil
}

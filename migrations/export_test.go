package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
)

// ApplyThrough brings db up to version, for tests of a migration's data
// changes on rows written before it.
func ApplyThrough(ctx context.Context, db *sql.DB, d Dialect, version int, logger *slog.Logger) error {
	ms, err := List(d)
	if err != nil {
		return err
	}
	if version > len(ms) {
		return fmt.Errorf("no migration %d", version)
	}
	return apply(ctx, db, d, ms[:version], logger)
}

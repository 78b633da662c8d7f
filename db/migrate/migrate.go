// Package migrate copies a farm's state from a SQLite database into an
// empty PostgreSQL one (gbc coordinator migrate-data), table by table, in
// one destination transaction, and verifies the row counts afterwards.
//
// It works below db.Store on purpose: the Store API cannot recreate
// history (attempts, events, ids and submission order) and must not grow
// methods for it. Both sides are first opened through their Store, so both
// are migrated to the schema this binary knows and have the same tables.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// order lists tables parents first, so foreign keys hold at every insert.
// Tables not listed (added by a later migration and not yet named here)
// are copied after these, in name order; a table the destination lacks is
// an error, never silently skipped.
var order = []string{
	"agents", "keys", "builds", "build_tags", "build_features", "build_outputs",
	"attempts", "results", "result_references", "events", "hook_cursors", "hook_done",
	"checks", "check_sides", "check_outputs",
}

// skipped are bookkeeping tables each side keeps for itself.
var skipped = map[string]bool{"schema_migrations": true, "sqlite_sequence": true}

// TableCount is one table's row count on both sides after the copy.
type TableCount struct {
	Table          string
	Source, Copied int64
}

// Report says what was copied.
type Report struct {
	Tables []TableCount
}

// Rows is the total number of rows copied.
func (r Report) Rows() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.Copied
	}
	return n
}

// ErrNotEmpty: the destination already holds data.
var ErrNotEmpty = errors.New("destination database is not empty")

// batchRows bounds one multi-row INSERT (PostgreSQL allows 65535
// parameters; the widest table, builds, has 18 columns).
const batchRows = 1000

// SQLiteToPostgres copies every row of src (a SQLite database) into dst (an
// empty PostgreSQL database with the same schema version). The source is
// read in one transaction (a consistent snapshot); the destination is
// written in one, so a failed copy leaves it empty. Counts are compared
// after the commit; a mismatch is an error.
func SQLiteToPostgres(ctx context.Context, src, dst *sql.DB, logger *slog.Logger) (Report, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var rep Report
	sv, err := version(ctx, src)
	if err != nil {
		return rep, fmt.Errorf("source: %w", err)
	}
	dv, err := version(ctx, dst)
	if err != nil {
		return rep, fmt.Errorf("destination: %w", err)
	}
	if sv != dv {
		return rep, fmt.Errorf("source schema version %d, destination %d: open both with the same gbc first", sv, dv)
	}
	tables, err := sqliteTables(ctx, src)
	if err != nil {
		return rep, err
	}
	stx, err := src.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("source: begin: %w", err)
	}
	defer stx.Rollback()
	dtx, err := dst.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("destination: begin: %w", err)
	}
	defer dtx.Rollback()
	for _, table := range tables {
		var n int64
		if err := dtx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quote(table)).Scan(&n); err != nil {
			return rep, fmt.Errorf("destination table %s: %w", table, err)
		}
		if n > 0 {
			return rep, fmt.Errorf("destination table %s has %d rows: %w", table, n, ErrNotEmpty)
		}
	}
	for _, table := range tables {
		n, err := copyTable(ctx, stx, dtx, table)
		if err != nil {
			return rep, fmt.Errorf("copying %s: %w", table, err)
		}
		logger.InfoContext(ctx, "table copied", "table", table, "rows", n)
	}
	if err := resetIdentities(ctx, dtx); err != nil {
		return rep, err
	}
	if err := dtx.Commit(); err != nil {
		return rep, fmt.Errorf("destination: commit: %w", err)
	}
	var mismatch []string
	for _, table := range tables {
		tc := TableCount{Table: table}
		if err := stx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quote(table)).Scan(&tc.Source); err != nil {
			return rep, fmt.Errorf("verifying: source table %s: %w", table, err)
		}
		if err := dst.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quote(table)).Scan(&tc.Copied); err != nil {
			return rep, fmt.Errorf("verifying: destination table %s: %w", table, err)
		}
		if tc.Source != tc.Copied {
			mismatch = append(mismatch, fmt.Sprintf("%s: %d rows in the source, %d copied", table, tc.Source, tc.Copied))
		}
		rep.Tables = append(rep.Tables, tc)
	}
	if len(mismatch) > 0 {
		return rep, fmt.Errorf("verifying counts: %s", strings.Join(mismatch, "; "))
	}
	return rep, nil
}

func version(ctx context.Context, d *sql.DB) (int, error) {
	var v sql.NullInt64
	if err := d.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return int(v.Int64), nil
}

// sqliteTables lists the source's tables in copy order.
func sqliteTables(ctx context.Context, src *sql.DB) ([]string, error) {
	rows, err := src.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("source: listing tables: %w", err)
	}
	defer rows.Close()
	var extra []string
	have := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("source: listing tables: %w", err)
		}
		if skipped[name] {
			continue
		}
		have[name] = true
		if !slices.Contains(order, name) {
			extra = append(extra, name)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: listing tables: %w", err)
	}
	var tables []string
	for _, t := range order {
		if have[t] {
			tables = append(tables, t)
		}
	}
	return append(tables, extra...), nil
}

func quote(ident string) string { return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"` }

// column is a destination column and how to convert a source value for it.
type column struct {
	name    string
	boolean bool // SQLite keeps booleans as 0/1
}

func copyTable(ctx context.Context, stx, dtx *sql.Tx, table string) (int64, error) {
	srcCols, err := sqliteColumns(ctx, stx, table)
	if err != nil {
		return 0, err
	}
	dstTypes, err := pgColumns(ctx, dtx, table)
	if err != nil {
		return 0, err
	}
	cols := make([]column, 0, len(srcCols))
	names := make([]string, 0, len(srcCols))
	for _, c := range srcCols {
		typ, ok := dstTypes[c]
		if !ok {
			return 0, fmt.Errorf("column %s is missing in the destination", c)
		}
		cols = append(cols, column{name: c, boolean: typ == "boolean"})
		names = append(names, quote(c))
	}
	rows, err := stx.QueryContext(ctx, `SELECT `+strings.Join(names, ", ")+` FROM `+quote(table)+` ORDER BY rowid`)
	if err != nil {
		return 0, fmt.Errorf("reading: %w", err)
	}
	defer rows.Close()
	var (
		n     int64
		batch []any
		inRow int
	)
	flush := func() error {
		if inRow == 0 {
			return nil
		}
		var q strings.Builder
		fmt.Fprintf(&q, "INSERT INTO %s (%s) VALUES ", quote(table), strings.Join(names, ", "))
		p := 0
		for r := range inRow {
			if r > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(")
			for c := range cols {
				if c > 0 {
					q.WriteString(", ")
				}
				p++
				fmt.Fprintf(&q, "$%d", p)
			}
			q.WriteString(")")
		}
		if _, err := dtx.ExecContext(ctx, q.String(), batch...); err != nil {
			return fmt.Errorf("inserting rows %d-%d: %w", n-int64(inRow)+1, n, err)
		}
		batch, inRow = batch[:0], 0
		return nil
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("reading row %d: %w", n+1, err)
		}
		for i, c := range cols {
			v, err := convert(vals[i], c)
			if err != nil {
				return n, fmt.Errorf("row %d column %s: %w", n+1, c.name, err)
			}
			batch = append(batch, v)
		}
		n++
		inRow++
		if inRow == batchRows {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("reading: %w", err)
	}
	return n, flush()
}

func convert(v any, c column) (any, error) {
	switch x := v.(type) {
	case []byte:
		return string(x), nil
	case int64:
		if c.boolean {
			return x != 0, nil
		}
	case bool:
		return x, nil
	}
	return v, nil
}

func sqliteColumns(ctx context.Context, tx *sql.Tx, table string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
	if err != nil {
		return nil, fmt.Errorf("source columns: %w", err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("source columns: %w", err)
		}
		cols = append(cols, c)
	}
	return cols, rows.Err()
}

func pgColumns(ctx context.Context, tx *sql.Tx, table string) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, table)
	if err != nil {
		return nil, fmt.Errorf("destination columns: %w", err)
	}
	defer rows.Close()
	cols := map[string]string{}
	for rows.Next() {
		var c, t string
		if err := rows.Scan(&c, &t); err != nil {
			return nil, fmt.Errorf("destination columns: %w", err)
		}
		cols[c] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("destination columns: %w", err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s does not exist in the destination", table)
	}
	return cols, nil
}

// resetIdentities moves every identity column's sequence past the copied
// values, so the next build or event gets a fresh seq or id.
func resetIdentities(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		return fmt.Errorf("listing identity columns: %w", err)
	}
	type tc struct{ table, col string }
	var ids []tc
	for rows.Next() {
		var x tc
		if err := rows.Scan(&x.table, &x.col); err != nil {
			rows.Close()
			return fmt.Errorf("listing identity columns: %w", err)
		}
		ids = append(ids, x)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing identity columns: %w", err)
	}
	for _, x := range ids {
		q := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX(%s), 1), MAX(%s) IS NOT NULL) FROM %s`,
			quote(x.col), quote(x.col), quote(x.table))
		if _, err := tx.ExecContext(ctx, q, quote(x.table), x.col); err != nil {
			return fmt.Errorf("resetting the sequence of %s.%s: %w", x.table, x.col, err)
		}
	}
	return nil
}

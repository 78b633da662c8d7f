package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gbc-farm/gbc/db/sqlstore"
)

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT 1":                        "SELECT 1",
		"a = ? AND b IN (?, ?)":           "a = $1 AND b IN ($2, $3)",
		"UPDATE x SET a = ? WHERE id = ?": "UPDATE x SET a = $1 WHERE id = $2",
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRetryable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"starting up", fmt.Errorf("begin: %w", &pgconn.PgError{Code: "57P03"}), true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"plain error", errors.New("state conflict"), false},
		{"ambiguous commit", sqlstore.CommitError{Err: &pgconn.PgError{Code: "08006"}}, false},
	}
	for _, c := range cases {
		if got := Retryable(c.err); got != c.want {
			t.Errorf("%s: Retryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

package main

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRaiseFileLimit(t *testing.T) {
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 256 {
		t.Skipf("hard open-file limit %d is too low to test with", orig.Max)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &orig) })
	low := unix.Rlimit{Cur: 128, Max: orig.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	got, capped, err := raiseFileLimit(slog.New(slog.DiscardHandler), 64)
	if err != nil || capped != 64 {
		t.Fatalf("cap %d, err %v", capped, err)
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != orig.Max || now.Cur != orig.Max {
		t.Fatalf("soft limit %d (reported %d), want the hard limit %d", now.Cur, got, orig.Max)
	}
	if orig.Max < 1<<40 {
		_, capped, err := raiseFileLimit(slog.New(slog.DiscardHandler), int(orig.Max))
		if err != nil || uint64(capped) != orig.Max/4 {
			t.Fatalf("a cap of the whole limit %d: lowered to %d (err %v), want a quarter", orig.Max, capped, err)
		}
	}
}

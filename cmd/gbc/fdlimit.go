package main

import (
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// raiseFileLimit raises the soft limit on open files to the hard limit
// (each connection, upload and database file is a descriptor) and makes
// sure the handshake cap leaves room for authenticated connections: a
// flood that fills the cap must not use up the descriptors agents and
// operators need. A cap over a quarter of the limit is lowered to that,
// with a warning. It returns the soft limit and the cap to use.
func raiseFileLimit(log *slog.Logger, maxUnauthenticated int) (limit uint64, capped int, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		was := lim.Cur
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return 0, 0, fmt.Errorf("raise the open-file limit from %d to %d: %w", was, lim.Max, err)
		}
		log.Info("open-file limit raised", "from", was, "to", lim.Cur)
	}
	capped = maxUnauthenticated
	if quarter := lim.Cur / 4; uint64(capped) > quarter {
		capped = int(max(quarter, 1))
		log.Warn("--max-unauthenticated lowered to a quarter of the open-file limit, so a flood leaves descriptors for agents and operators (raise the hard limit, ulimit -Hn, to allow more)",
			"asked", maxUnauthenticated, "using", capped, "open_file_limit", lim.Cur)
	}
	return lim.Cur, capped, nil
}

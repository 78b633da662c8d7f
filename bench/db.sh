#!/bin/sh
# The two db.Store backends side by side (bench/dbstore): CreateBuilds rate,
# allocation rate and p50/p99 with the table full, the paged queue rebuild
# at start and database size. Prints a table. Not part of make test.
#
#   GBC_TEST_POSTGRES=postgres://gbc:gbc@127.0.0.1/gbc_test bench/db.sh          # 1,000,000 builds
#   bench/db.sh -n 100000 -allocs 5000 -pg postgres://…                          # quicker
#
# Without a PostgreSQL URL only SQLite is measured. Start the cluster first
# (pg_ctlcluster 15 main start) and use a role that may create schemas.
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/dbstore)
"$prog" "$@"

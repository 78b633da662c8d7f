#!/bin/sh
# Web interface page render times with 1,000,000 queued builds against a
# farm of 1,000, in the same run (SQLite; the coordinator rebuilds its
# queue from the database, the pages are served in process). Prints a
# table; not part of `make test`. Takes a few minutes with the defaults.
#
#   bench/web.sh                     # defaults (see -h)
#   bench/web.sh -n 100000 -rounds 10   # quicker
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/webbench)
"$prog" "$@"

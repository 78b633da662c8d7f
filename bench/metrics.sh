#!/bin/sh
# Prometheus scrape times of the coordinator's /metrics with 1,000,000
# queued builds against an empty coordinator, in the same run (SQLite; the
# coordinator rebuilds its queue from the database, the handler is served
# in process). Prints a table; not part of `make test`. Takes several
# minutes with the defaults (recording the builds).
#
#   bench/metrics.sh                       # defaults (see -h)
#   bench/metrics.sh -n 100000 -rounds 20  # quicker
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/metricsbench)
"$prog" "$@"

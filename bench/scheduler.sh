#!/bin/sh
# Scheduler figures at farm scale: submission rate of a 1,000,000-build fan-in
# graph, Allocate latency with 1,000,000 queued and 50 agents, completion →
# allocation latency, heap bytes per queued build. Prints a table.
#
#   bench/scheduler.sh                  # defaults: -n 1000000 -agents 50 -events 200000
#   bench/scheduler.sh -n 100000        # quicker
#   GOBENCH=1 bench/scheduler.sh        # also run the Go benchmarks in scheduler/
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/scheduler)
"$prog" "$@"
if [ "${GOBENCH:-0}" = 1 ]; then
	echo
	"$GO" test -run '^$' -bench . -benchmem ./scheduler
fi

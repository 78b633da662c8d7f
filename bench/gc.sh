#!/bin/sh
# cache gc --dry-run over generated caches: every narinfo read and parsed,
# every build record, pins and last accesses read, the retention plan made
# (coordinator.CollectCache), in a fresh process per size for its own peak
# RSS. Prints a table with ratios against the first (baseline) size.
#
#   bench/gc.sh                    # 100,000 (baseline) and 1,000,000 narinfos
#   bench/gc.sh -n 10000,100000    # quicker
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/gcbench)
"$prog" "$@"

#!/bin/sh
# Binary cache figures: Publish rate (NAR move + signed narinfo, fsynced) and
# narinfo GET rate over cache.Handler on a real 127.0.0.1 listener with many
# concurrent clients, against http.FileServer on the same directory in the
# same run (alternating rounds). Prints a table.
#
#   bench/cache.sh                      # defaults: -n 10000 -c 64 -d 4s -rounds 2
#   bench/cache.sh -n 2000 -d 2s        # quicker
. "$(dirname "$0")/internal/lib.sh"
prog=$(bench_build ./bench/cachebench)
"$prog" "$@"

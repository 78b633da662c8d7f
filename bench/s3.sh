#!/bin/sh
# The cache on a directory (file:) against the same cache on a bucket of a
# real S3 server (SeaweedFS `weed server -s3` on loopback, started by the
# benchmark; scripts/install-weed.sh builds it), in one run: Publish of
# agents' uploads (small NARs with 4 publishers, large ones multipart) and
# narinfo GETs through cache.Handler, plus GETs from the bucket's own
# endpoint. Prints a table with s3:/file: ratios.
#
#   bench/s3.sh                          # defaults: -n 2000 -large 4 -large-mib 64 -c 32 -d 3s -rounds 2
#   bench/s3.sh -n 500 -large 2 -d 2s    # quicker
. "$(dirname "$0")/internal/lib.sh"
command -v weed >/dev/null 2>&1 || scripts/install-weed.sh
prog=$(bench_build ./bench/s3bench)
"$prog" "$@"

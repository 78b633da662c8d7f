#!/bin/sh
# Agents' uploads end to end (upload start to the ack of `succeeded`,
# narinfo published) on four real coordinators in one run, alternating:
# a file: cache store with --stream-uploads off (the baseline) and on, an
# s3:// store (SeaweedFS on loopback, started by the benchmark;
# scripts/install-weed.sh builds it) off and on. Small outputs (per-output
# overhead) and large ones (throughput); ms per output, MiB/s, the
# coordinator's disk writes and CPU per output, ratios to the baseline.
#
#   bench/stream.sh                                 # defaults: -small 200 -small-kib 4 -large 4 -large-mib 16 -rounds 2
#                                                   # (the test S3 server holds ~1 GiB: large × large-mib × rounds ≤ 128)
#   bench/stream.sh -small 50 -large 2 -large-mib 8 -rounds 1   # quick
. "$(dirname "$0")/internal/lib.sh"
command -v weed >/dev/null 2>&1 || scripts/install-weed.sh
gbc=$(bench_build ./cmd/gbc)
prog=$(bench_build ./bench/streambench)
"$prog" -gbc "$gbc" "$@"

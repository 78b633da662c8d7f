#!/bin/sh
# Agents' uploads to a coordinator whose cache is in a bucket of a real S3
# server (SeaweedFS on loopback, started by the benchmark;
# scripts/install-weed.sh builds it), over SFTP against PUT straight into
# the bucket (--cache-direct-upload), alternating in one run: time per
# output and the coordinator's CPU seconds, as direct/sftp ratios.
#
#   bench/direct.sh                      # defaults: -n 4 -mib 8 -rounds 2
#   bench/direct.sh -n 2 -mib 4          # quicker
. "$(dirname "$0")/internal/lib.sh"
command -v weed >/dev/null 2>&1 || scripts/install-weed.sh
gbc=$(bench_build ./cmd/gbc)
prog=$(bench_build ./bench/directbench)
"$prog" -gbc "$gbc" "$@"

#!/bin/sh
# Coordinator figures through the product paths (a real `gbc coordinator`
# process, SSH, SQLite, the signed cache): submit rate of a 100,000-derivation
# fan-in graph over SSH (x/crypto/ssh and OpenSSH, one .drv per command and
# many), dispatch latency with 1,000,000 builds queued and 50 simulated
# gbc-agent-v1 agents (prerequisite `succeeded` with a verified upload →
# dependent `build` received, p50/p99), coordinator VmRSS/VmHWM. Also prints
# the in-process Coordinator.Submit rate (no SSH, no cache) as a baseline.
# Prints a table; not part of `make test`. Takes ~20 min with the defaults.
#
#   bench/dispatch.sh                                   # defaults (see -h)
#   bench/dispatch.sh -submit 5000 -queue 50000 -rounds 200   # quicker
#   bench/dispatch.sh -pprof /tmp/prof                  # also CPU profiles
. "$(dirname "$0")/internal/lib.sh"
gbc=$(bench_build ./cmd/gbc)
prog=$(bench_build ./bench/dispatch)
"$prog" -gbc "$gbc" "$@"
echo
echo "baseline, in-process Coordinator.Submit (no SSH, no cache):"
GBC_BENCH_SUBMIT=${BASELINE_N:-100000} "$GO" test -count=1 -run '^TestSubmitRate$' -v ./coordinator | grep '^|'

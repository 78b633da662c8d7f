#!/bin/sh
# One build through gbc against Nix alone, same machine, same run, every
# store empty at the start: one `nix-store --realise` process per
# derivation, Nix remote builds (ssh-ng:// through an OpenSSH server on a
# loopback port, with a ControlMaster), and a gbc coordinator with one
# agent. 50 independent trivial derivations on one slot, then chains of 20
# and 50 over 2 slots; for gbc, where a build's time goes. Needs root
# (mount namespaces) and sshd (scripts/install-deps.sh bench).
#
#   bench/agent.sh                                    # agent on exec:nix-daemon --stdio
#   bench/agent.sh -n 10 -chains 5                    # quicker
. "$(dirname "$0")/internal/lib.sh"
gbc=$(bench_build ./cmd/gbc)
prog=$(bench_build ./bench/agentbench)
NIX_CONFIG=$bench_nix_config "$prog" -gbc "$gbc" "$@"

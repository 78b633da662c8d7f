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
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GOFLAGS=${GOFLAGS:--mod=mod} "$GO" build -o "$out/gbc" ./cmd/gbc
GOFLAGS=${GOFLAGS:--mod=mod} "$GO" build -o "$out/agentbench" ./bench/agentbench
NIX_CONFIG="build-users-group =
substituters =
sandbox = false" "$out/agentbench" -gbc "$out/gbc" "$@"

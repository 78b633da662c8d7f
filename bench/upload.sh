#!/bin/sh
# Upload and cache-serving figures against a real `gbc coordinator`:
# SFTP upload (the agent's code, concurrent writes) of one large output,
# incompressible and text, against the same bytes through one raw SSH
# channel to the same server, alternating in one run; and narinfo fetch
# rate over --http-listen and through the SSH cache tunnel. Needs nix-store
# and nix-instantiate (one trivial .drv is instantiated in the host store).
#
#   bench/upload.sh                     # defaults: -mib 512 -rounds 2
#   bench/upload.sh -mib 128 -rounds 1  # quicker
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
GOFLAGS=${GOFLAGS:--mod=mod} "$GO" build -o "$out/gbc" ./cmd/gbc
GOFLAGS=${GOFLAGS:--mod=mod} "$GO" build -o "$out/uploadbench" ./bench/uploadbench
NIX_CONFIG="build-users-group =
substituters =
sandbox = false" "$out/uploadbench" -gbc "$out/gbc" "$@"

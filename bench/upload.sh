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
. "$(dirname "$0")/internal/lib.sh"
gbc=$(bench_build ./cmd/gbc)
prog=$(bench_build ./bench/uploadbench)
NIX_CONFIG=$bench_nix_config "$prog" -gbc "$gbc" "$@"

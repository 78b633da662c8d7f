#!/usr/bin/env bash
# make abuse: replay every attack docs/security.md defends against, against
# a real coordinator started for the run, with the real ssh and sftp
# clients (and the Go SSH client for protocol messages no agent sends):
# unknown keys, every command × role, long command lines and protocol
# lines, deep JSON, forwarding, hostile hellos, other agents' builds, SFTP
# traversal/symlink/rename/foreign names, the upload budget, references
# outside a build's closure, FIFO and /dev/zero derivations, an
# unauthenticated flood, and revoked keys' live sessions. Prints one row
# per attack (attack, expected, result) and exits non-zero on any
# regression. Bounded: about a minute on 2 cores, every wait at most one.
# The test is TestAbuse in e2e/abuse_test.go (skipped by `make test`, which
# runs the attacks' own regression tests).
set -euo pipefail
cd "$(dirname "$0")/.."
GBC_ABUSE=1 ${GO:-go} test ./e2e -run '^TestAbuse$' -count=1 -v -timeout 10m | grep -v '^=== '

#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3-compatible object store the cache's S3
# tests run against) from its Go module and installs it as
# ${WEED_BIN:-/usr/local/bin/weed}, only when it is missing.
# The module's go.mod has replace directives, so it is built inside a
# writable copy of the downloaded module rather than with `go install`.
set -euo pipefail
VERSION=v0.0.0-20261109003541-7506e5f91cd6
bin=${WEED_BIN:-/usr/local/bin/weed}
if [ -x "$bin" ]; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "install-weed: go is not installed" >&2; exit 1; }
start=$(date +%s)
dir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir/weed" ]; then
  echo "install-weed: go mod download gave no module directory" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/src"
chmod -R u+w "$work/src"
echo "install-weed: building weed $VERSION"
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -o "$work/weed" ./weed)
install -m 0755 "$work/weed" "$bin"
echo "install-weed: installed $bin in $(( $(date +%s) - start ))s"

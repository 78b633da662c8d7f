#!/usr/bin/env bash
# make fuzz: run every Fuzz* target in the tree for $1 (default 60s) each.
# New interesting inputs land in the Go fuzz cache; crashers are written to
# the package's testdata/fuzz/<FuzzName>/ and make this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-60s}
status=0
while IFS= read -r line; do
  file=${line%%:*}
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"${line#*:}")
  pkg=./$(dirname "$file")
  echo "== $pkg $name ($time)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" "$pkg"; then
    status=1
  fi
done < <(git grep -n -E '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go' | sed -E 's/^([^:]*):[0-9]+:/\1:/')
exit $status

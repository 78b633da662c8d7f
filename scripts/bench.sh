#!/usr/bin/env bash
# make bench: every benchmark script under bench/, each printing its own table.
# Figures are ratios against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in bench/*.sh; do
  [ -e "$s" ] || continue
  echo "== $s"
  bash "$s"
  echo
done

#!/usr/bin/env bash
# Compares `gbc nar hash` with `nix-store --dump PATH | sha256sum` on a large
# mixed tree built in a temp dir (default ~500 MB: 20000 small files in 200
# directories + 10 large files). Not part of `make test`.
#
#   bench/nar.sh [SIZE_MB]      (builds gbc into the temp dir)
set -euo pipefail

size_mb=${1:-500}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/gbc-nar-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/gbc" ./cmd/gbc
gbc=$tmp/gbc
export NIX_CONFIG=$'build-users-group =\nsubstituters =\nsandbox = false'
tree=$tmp/tree

# Small files take ~30% of the bytes, like a typical package output.
python3 - "$tree" "$size_mb" <<'PY'
import os, random, sys
root, size_mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
total = size_mb << 20
small_budget, n_small = total * 3 // 10, 20000
avg = max(1, small_budget // n_small)
os.makedirs(root)
for d in range(200):
    dd = os.path.join(root, "d%03d" % d, "sub")
    os.makedirs(dd)
    for f in range(n_small // 200):
        n = rnd.randint(0, 2 * avg)
        with open(os.path.join(dd, "f%03d" % f), "wb") as fh:
            fh.write(os.urandom(n))
    os.symlink("../d000", os.path.join(root, "d%03d" % d, "link"))
big = (total - small_budget) // 10
for i in range(10):
    p = os.path.join(root, "big%d" % i)
    with open(p, "wb") as fh:
        left = big
        while left:
            k = min(left, 8 << 20)
            fh.write(os.urandom(k))
            left -= k
    if i % 2:
        os.chmod(p, 0o755)
PY

now() { date +%s.%N; }

# Correctness first (also warms the page cache for both tools).
nar_size=$(nix-store --dump "$tree" | wc -c)
want=$(nix-hash --type sha256 --base32 "$tree")
got=$("$gbc" nar hash "$tree")
if [ "$got" != "sha256:$want" ]; then
  echo "MISMATCH: gbc $got, nix-hash sha256:$want" >&2
  exit 1
fi

runs=3
best() { sort -n | head -1; }
t_gbc=$(for _ in $(seq $runs); do s=$(now); "$gbc" nar hash "$tree" >/dev/null; e=$(now); awk "BEGIN{print $e - $s}"; done | best)
t_nix=$(for _ in $(seq $runs); do s=$(now); nix-store --dump "$tree" | sha256sum >/dev/null; e=$(now); awk "BEGIN{print $e - $s}"; done | best)
t_dump=$(for _ in $(seq $runs); do s=$(now); "$gbc" nar dump "$tree" | sha256sum >/dev/null; e=$(now); awk "BEGIN{print $e - $s}"; done | best)

mb=$(awk "BEGIN{print $nar_size / 1048576}")
files=$(find "$tree" -type f | wc -l)
printf 'tree: %d files, NAR %.1f MiB, hash %s (matches nix-hash); best of %d runs, warm cache, %d CPUs\n' \
  "$files" "$mb" "$got" "$runs" "$(nproc)"
printf '%-42s %9s %10s %8s\n' "command" "seconds" "MiB/s" "vs nix"
row() { printf '%-42s %9.3f %10.1f %8.2f\n' "$1" "$2" "$(awk "BEGIN{print $mb / $2}")" "$(awk "BEGIN{print $t_nix / $2}")"; }
row "gbc nar hash PATH" "$t_gbc"
row "gbc nar dump PATH | sha256sum" "$t_dump"
row "nix-store --dump PATH | sha256sum" "$t_nix"

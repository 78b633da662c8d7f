#!/usr/bin/env bash
# bench/drv.sh: .drv parse rate of gbc against `nix show-derivation` on the
# same files in the same run. Instantiates N (default 400) small derivations
# into the local Nix store (a chain with inputs, FODs, escapes), then times
#   nix show-derivation F...   vs   gbc drv show F...   (one process each, best of R)
# and prints the in-process Go parse rate (BenchmarkParse) for reference.
# Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-400}
R=${R:-5}
export NIX_CONFIG=$'build-users-group =\nsubstituters =\nsandbox = false'
export GOFLAGS=${GOFLAGS:--mod=mod}
command -v nix >/dev/null || { echo "nix not installed; skipping" >&2; exit 0; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/gbc" ./cmd/gbc

# The salt keeps each run's derivations distinct from earlier runs' only when
# asked (SALT=...); by default they are reused, which is fine for timing.
cat >"$work/gen.nix" <<NIX
let
  sys = "x86_64-linux";
  mk = i: prev: derivation ({
    name = "gbc-bench-\${toString i}";
    system = sys;
    builder = "/bin/sh";
    args = [ "-c" "echo \${toString i} \${if prev == null then "" else prev} > \$out" ];
    weird = "q\" b\\\\ n\n t\t é \${toString i} ${SALT:-}";
    outputs = if i - (i / 3) * 3 == 0 then [ "out" "dev" ] else [ "out" ];
  } // (if i - (i / 10) * 10 == 0 then {
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputs = [ "out" ];
    outputHash = builtins.hashString "sha256" (toString i);
  } else {}));
  go = i: prev: if i > $N then [] else let d = mk i prev; in [ d ] ++ go (i + 1) d;
in go 1 null
NIX
nix-instantiate "$work/gen.nix" 2>/dev/null >"$work/drvs"
mapfile -t drvs <"$work/drvs"
n=${#drvs[@]}
bytes=$(cat "${drvs[@]}" | wc -c)

best() { # best wall time in seconds of R runs of "$@"
  local b=999999 s e t
  for _ in $(seq "$R"); do
    s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
  done
  echo "$b"
}
nixcmd() { nix --extra-experimental-features nix-command show-derivation "${drvs[@]}"; }
# Same JSON, or the comparison is meaningless.
cmp <(nixcmd | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))') \
    <("$work/gbc" drv show "${drvs[@]}" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))') \
  || { echo "gbc and nix disagree on the JSON" >&2; exit 1; }

tn=$(best nixcmd)
tg=$(best "$work/gbc" drv show "${drvs[@]}")
gobench=$(go test -run '^$' -bench '^BenchmarkParse$' -benchtime 2s ./derivation | awk '/^BenchmarkParse/ {for (i=1;i<=NF;i++) {if ($(i+1)=="MB/s") mb=$i; if ($(i+1)=="files/s") fs=$i}} END {print fs, mb}')

printf '%d .drv files, %d bytes total, best of %d runs\n\n' "$n" "$bytes" "$R"
printf '%-44s %10s %12s %10s %8s\n' "what" "seconds" "files/s" "MB/s" "vs nix"
row() { printf '%-44s %10.4f %12.0f %10.2f %7.1fx\n' "$1" "$2" "$(echo "$n / $2" | bc -l)" "$(echo "$bytes / $2 / 1000000" | bc -l)" "$(echo "$tn / $2" | bc -l)"; }
row "nix show-derivation (baseline)" "$tn"
row "gbc drv show (process, JSON out)" "$tg"
read -r gfs gmb <<<"$gobench"
printf '%-44s %10s %12.0f %10.2f %8s\n' "derivation.Parse in-process (vectors)" "-" "$gfs" "$gmb" "-"

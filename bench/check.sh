#!/usr/bin/env bash
# A reproducibility check of N trivial derivations (default 100) on a farm of
# two agents, against building them once on the same farm. The coordinator
# and each agent run in a mount namespace of their own with an empty store
# bind-mounted on /nix (as in e2e/checks_test.go), so every side really
# builds. Rows (each on derivations no agent has built):
#   build once:                   build --wait DRV…             (N builds)
#   check, 2 agents:              check --wait DRV…             (2N builds, one per agent each)
#   check --against-cache, 1 agent: check --wait --against-cache --agents 1
#                                 on the derivations of the first row (N builds,
#                                 each on the agent that did not publish it)
# Needs root (mount namespaces). Not part of `make test`.
#
#   bench/check.sh [N]
set -euo pipefail

n=${1:-100}
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d /tmp/gbc-check-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
go build -o "$tmp/gbc" ./cmd/gbc
gbc=$tmp/gbc
export NIX_CONFIG=$'build-users-group =\nsubstituters =\nsandbox = false'
ns='mount --bind "$0" /nix && export XDG_CACHE_HOME="$0/xdg-cache" && exec "$@"'
inns() { local dir=$1; shift; unshare -m --propagation private sh -c "$ns" "$dir" "$@"; }
mkdir -p "$tmp/coord" "$tmp/one" "$tmp/two"

ssh-keygen -q -t ed25519 -N '' -f "$tmp/admin"
# Started directly (not through a function, which would fork a subshell),
# so $! is the process itself and the trap stops it.
unshare -m --propagation private sh -c "$ns" "$tmp/coord" "$gbc" coordinator --state-dir "$tmp/state" --listen 127.0.0.1:0 \
  --admin-key "$tmp/admin.pub" 2>"$tmp/coord.log" &
pids+=($!)
for _ in $(seq 300); do grep -q 'coordinator listening' "$tmp/coord.log" && break; sleep 0.1; done
port=$(sed -nE 's/.*coordinator listening" addr=127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/coord.log" | head -1)
echo "[127.0.0.1]:$port $(cat "$tmp/state/ssh_host_ed25519_key.pub")" >"$tmp/known_hosts"
cssh() {
  ssh -p "$port" -i "$tmp/admin" -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile="$tmp/known_hosts" \
    -o StrictHostKeyChecking=yes -o LogLevel=ERROR -F /dev/null admin@127.0.0.1 "$@"
}
for a in one two; do
  ssh-keygen -q -t ed25519 -N '' -f "$tmp/agent-$a"
  cssh agent new --name "agent-$a" --key "'$(cat "$tmp/agent-$a.pub")'" >/dev/null
  unshare -m --propagation private sh -c "$ns" "$tmp/$a" "$gbc" agent --coordinator "127.0.0.1:$port" --identity "$tmp/agent-$a" \
    --known-hosts "$tmp/known_hosts" --backend nix --daemon 'exec:nix-daemon --stdio' --name "agent-$a" \
    --work-dir "$tmp/$a-work" 2>"$tmp/agent-$a.log" &
  pids+=($!)
done
for _ in $(seq 300); do [ "$(grep -c 'agent connected' "$tmp/coord.log")" -ge 2 ] && break; sleep 0.1; done

drvs() { inns "$tmp/coord" nix-instantiate "$root/e2e/testdata/check.nix" --argstr nonce "$1" --argstr n "$2" -A many 2>/dev/null; }
timed() { local s e; s=$(date +%s.%N); "$@" >"$tmp/out" 2>"$tmp/err" || true; e=$(date +%s.%N); echo "$e - $s" | bc; }

# Warm up both agents (daemon start, first connection) before timing.
cssh check --wait $(drvs "warm-$$-$(date +%s)" 2) >/dev/null 2>&1
once=$(drvs "once-$$-$(date +%s)" "$n")
checked=$(drvs "check-$$-$(date +%s)" "$n")
t_build=$(timed cssh build --wait $once)
ok_build=$(grep -c ' succeeded ' "$tmp/out" || true)
t_check=$(timed cssh check --wait $checked)
ok_check=$(grep -c ' reproducible$' "$tmp/out" || true)
t_cache=$(timed cssh check --wait --against-cache --agents 1 $once)
ok_cache=$(grep -c ' reproducible$' "$tmp/out" || true)

printf '%s derivations, 2 agents (1 slot each), each in its own empty store\n\n' "$n"
printf '| what | builds | verdicts ok | time | ratio |\n|---|--:|--:|--:|--:|\n'
printf '| build once (`build --wait`) | %d | %d succeeded | %.1f s | 1.00× |\n' "$n" "$ok_build" "$t_build"
printf '| check, 2 agents (`check --wait`) | %d | %d reproducible | %.1f s | %.2f× |\n' "$((2 * n))" "$ok_check" "$t_check" "$(echo "$t_check / $t_build" | bc -l)"
printf '| check against the cache, 1 agent (`check --wait --against-cache --agents 1`) | %d | %d reproducible | %.1f s | %.2f× |\n' "$n" "$ok_cache" "$t_cache" "$(echo "$t_cache / $t_build" | bc -l)"

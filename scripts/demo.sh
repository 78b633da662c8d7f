#!/usr/bin/env bash
# make demo: a coordinator on SQLite and two local agents in a temp dir, a
# sample derivation graph (examples/graph.nix) built through real OpenSSH.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
gbc=$top/bin/gbc
export NIX_CONFIG=$'build-users-group =\nsubstituters =\nsandbox = false'

work=$(mktemp -d /tmp/gbc-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "keys and coordinator in $work"
ssh-keygen -q -t ed25519 -N '' -C demo-admin -f "$work/admin"
for a in 1 2; do ssh-keygen -q -t ed25519 -N '' -C "demo-agent-$a" -f "$work/agent$a"; done
"$gbc" coordinator --state-dir "$work/state" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --admin-key "$work/admin.pub" 2>"$work/coordinator.log" &
pids+=($!)
addr=
for _ in $(seq 100); do
  addr=$(grep -o 'addr=127\.0\.0\.1:[0-9]*' "$work/coordinator.log" | head -n1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "coordinator did not start:"; cat "$work/coordinator.log"; exit 1; }
port=${addr##*:}
http=$(grep -o 'http=127\.0\.0\.1:[0-9]*' "$work/coordinator.log" | head -n1 | cut -d= -f2 || true)
echo "[127.0.0.1]:$port $(cat "$work/state/ssh_host_ed25519_key.pub")" >"$work/known_hosts"
gssh() {
  ssh -p "$port" -i "$work/admin" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes \
    -o LogLevel=ERROR operator@127.0.0.1 "$@"
}
echo "coordinator listening on $addr"

say "registering two agents"
for a in 1 2; do
  id=$(gssh agent new --name "demo-agent-$a" --key "'$(cat "$work/agent$a.pub")'")
  echo "demo-agent-$a: $id"
  "$gbc" agent --coordinator "$addr" --identity "$work/agent$a" \
    --known-hosts "$work/known_hosts" --backend nix --daemon 'exec:nix-daemon --stdio' --max-parallel-builds 2 \
    --name "demo-agent-$a" --work-dir "$work/agent$a-work" 2>"$work/agent$a.log" &
  pids+=($!)
done
gssh agents

say "instantiating examples/graph.nix"
nonce=$(date +%s%N)
drvs=()
for attr in base left right top broken; do
  drvs+=("$(nix-instantiate "$top/examples/graph.nix" --argstr nonce "$nonce" -A "$attr" 2>/dev/null)")
done
printf '%s\n' "${drvs[@]}"

say "ssh coordinator build --wait (gbc-demo-broken fails on purpose)"
gssh build --wait "${drvs[@]}" | tee "$work/build.out" || true
topid=$(sed -n 4p "$work/build.out")

say "ssh coordinator builds"
gssh builds --limit 10

say "ssh coordinator build show <top> --json"
gssh build show "$topid" --json | tee "$work/top.json"

say "a Nix client substitutes top's output from the coordinator's signed cache"
topout=$(grep -o '"path": *"[^"]*"' "$work/top.json" | head -n1 | sed 's/.*"\(\/[^"]*\)"$/\1/')
echo "cache: http://$http  key: $(cat "$work/state/signing-key.pub")"
curl -fsS "http://$http/$(basename "$topout" | cut -c1-32).narinfo" 2>/dev/null || true
NIX_CONFIG="$NIX_CONFIG"$'\nrequire-sigs = true\ntrusted-public-keys = '"$(cat "$work/state/signing-key.pub")" \
  nix --extra-experimental-features nix-command copy --from "http://$http" \
  --to "local?root=$work/client-store" "$topout"
echo "valid in the empty client store ($work/client-store):"
nix-store --store "local?root=$work/client-store" --verify-path "$topout" && echo "  $topout (signature and NarHash checked)"

say "try it yourself (while this shell waits; Ctrl-C to stop the demo)"
cat <<TXT
  ssh -p $port -i $work/admin -o UserKnownHostsFile=$work/known_hosts 127.0.0.1 help
  ssh -p $port -i $work/admin -o UserKnownHostsFile=$work/known_hosts 127.0.0.1 \\
      build --wait --ensure-all-related-derivation-outputs-have-successful-builds \$(nix-instantiate $top/examples/graph.nix --argstr nonce \$RANDOM -A top)
Logs: $work/coordinator.log $work/agent1.log $work/agent2.log
TXT
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  read -r -p "Press Enter to stop the demo… " _ || true
fi

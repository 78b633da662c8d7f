#!/usr/bin/env bash
# Installs the Debian packages gbc's tests and demo need, only when missing.
# Runs as root (CI and the demo machine); prints what it does.
# `install-deps.sh bench` also installs what only `make bench` needs.
set -euo pipefail
need=()
if [ "${1:-}" = bench ]; then
  # bench/agent.sh runs an OpenSSH server on a loopback port as a Nix
  # remote builder (ssh-ng://); tests never need one.
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
fi
command -v nix-store >/dev/null 2>&1 || need+=(nix-bin)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v sftp >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)   # e2e: one store per process (mount namespaces)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v gcc >/dev/null 2>&1 || need+=(gcc)   # cgo for go-sqlite3
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v curl >/dev/null 2>&1 || need+=(curl)   # make demo fetches a narinfo
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v lzip >/dev/null 2>&1 || need+=(lzip)   # compression tests read real lzip output
# e2e/web_test.go drives the web interface in headless Chromium (with a font
# for its screenshots)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# check show --diffoscope runs diffoscope on two restored trees (the minimal
# package, without recommends: three packages)
command -v diffoscope >/dev/null 2>&1 || need+=(diffoscope-minimal)
# PostgreSQL backend tests (.ci/run starts the cluster; make test skips them without it)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
# promtool checks the metrics output; e2e runs a real Prometheus server scraping a coordinator
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The cache's S3 tests run against SeaweedFS, built from its Go module
# (a few minutes on two idle cores; install-weed.sh prints how long).
command -v weed >/dev/null 2>&1 || "$(dirname "$0")/install-weed.sh" || echo "install-deps: weed not built; the S3 tests skip (fail under CI=true)" >&2
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${need[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

# Sourced by the bench/*.sh that build and run a Go program: run from the
# repository's root, with a temporary directory for the binaries that is
# removed on exit.
#
#   . "$(dirname "$0")/internal/lib.sh"
#   prog=$(bench_build ./bench/NAME)    # builds it into $bench_out
#   NIX_CONFIG=$bench_nix_config "$prog" "$@"
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GOFLAGS="${GOFLAGS:--mod=mod}"
bench_out=$(mktemp -d)
trap 'rm -rf "$bench_out"' EXIT

# The Nix settings a benchmark's own stores run with (as root, no
# substituters, no sandbox), one per line.
bench_nix_config='build-users-group =
substituters =
sandbox = false'

# bench_build PACKAGE builds the package's binary into $bench_out and
# prints its path.
bench_build() {
	bench_bin="$bench_out/$(basename "$1")"
	"$GO" build -o "$bench_bin" "$1"
	echo "$bench_bin"
}

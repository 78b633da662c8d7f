#!/bin/sh
# The cost of the output reference scan on the coordinator's verification
# pass over an uploaded NAR: nar.Validate (parse + SHA-256) alone, the
# baseline, against the same pass teed through a storepath.Scanner looking
# for 10, 1000 or 10000 candidate store paths (a build's input closure).
# NAR sizes 1, 16 and 64 MiB; contents random bytes and text made only of
# base32 characters (the scanner's worst case, with references in it).
# Times are CPU time per pass (the pass runs on one goroutine, so this is
# its cost even when the machine is busy and wall time is mostly waiting),
# the least of COUNT runs (default 5) of BENCHTIME (5x); ratios are
# against hashing alone in the same run.
#
#   bench/refscan.sh
#   COUNT=3 BENCHTIME=3x bench/refscan.sh     # quicker
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
"$GO" test ./storepath -timeout 60m -run '^$' -bench '^BenchmarkVerifyNAR$' -benchtime "${BENCHTIME:-5x}" -count "${COUNT:-5}" |
awk '
/^BenchmarkVerifyNAR\// {
	split($1, f, "/")
	size = substr(f[2], 6); sub(/MiB$/, "", size); content = substr(f[3], 9); c = f[4]; sub(/^candidates=/, "", c); sub(/-[0-9]+$/, "", c)
	key = size SUBSEP content SUBSEP c
	cpu = ""
	for (i = 2; i < NF; i++) if ($(i+1) == "cpu-ns/op") cpu = $i
	if (cpu == "") next
	if (!(key in best) || cpu + 0 < best[key] + 0) best[key] = cpu
	if (!(size SUBSEP content in seen)) { seen[size SUBSEP content] = 1; order[++n] = size SUBSEP content }
	if (!(c in cseen)) { cseen[c] = 1; cands[++m] = c }
}
END {
	printf "%-8s %-8s %10s %10s %10s %12s\n", "NAR", "content", "candidates", "cpu ms", "MB/s", "vs hashing"
	for (i = 1; i <= n; i++) {
		split(order[i], sc, SUBSEP)
		base = best[order[i] SUBSEP "0"]
		for (j = 1; j <= m; j++) {
			k = order[i] SUBSEP cands[j]
			if (!(k in best)) continue
			mb = sc[1] * 1048576
			printf "%-8s %-8s %10s %10.1f %10.0f %11.2fx\n", sc[1] "MiB", sc[2], (cands[j] == "0" ? "0 (hash)" : cands[j]), best[k] / 1e6, mb / (best[k] / 1e9) / 1e6, best[k] / base
		}
	}
}'

#!/usr/bin/env bash
# Counts the instructions the incremental engine retires per update, by
# kind, at one cluster size (S, M, L or XL), under valgrind's callgrind:
# only the timed updates of the perf bench's table 3a are collected. An
# instruction count does not move with the machine's load, so the ratio
# between two sizes tells the work an update does apart from the time
# its memory accesses take. Needs valgrind and a release build of the
# benches (`cargo build --release --benches`). XL takes about 10 minutes.
#
#   scripts/calc-instructions.sh M
#
# Prints: size, update kind, updates timed, mean instructions per update.
set -euo pipefail

size=${1:?usage: $0 S|M|L|XL}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cd "$(dirname "$0")/.."
bench=$(ls -t target/release/deps/perf-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -n "$bench" ] || { echo "no bench binary: run cargo build --release --benches first" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One run per group of kinds; a dump after every Bench::time call holds one
# kind's updates (kinds that TORTIE_CALC_ONLY leaves out dump almost nothing).
count() {
    local only=$1 tag=$2
    TORTIE_CALC_ONLY="$only" valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect='*Bench::time*' --dump-after='perf::perf_calc::Bench::time' \
        --callgrind-out-file="$out/$tag.cg" "$bench" --child-calc "$size" \
        >"$out/$tag.out" 2>"$out/$tag.err"
    grep -P '^update\t' "$out/$tag.out" | cut -f2,5 >"$out/$tag.kinds"
    for d in $(ls "$out/$tag.cg".* | sort -V); do
        grep -h '^totals' "$d" | cut -d' ' -f2
    done >"$out/$tag.totals"
    if [ "$tag" = pods ]; then
        # The six pod kinds are timed first, in order.
        paste "$out/$tag.kinds" <(head -6 "$out/$tag.totals") |
            awk -F'\t' -v s="$size" '{ printf "%s\t%s\t%d\t%.0f\n", s, $1, $2, $3 / $2 }'
    else
        local most n
        most=$(sort -n "$out/$tag.totals" | tail -1)
        n=$(cut -f2 "$out/$tag.kinds")
        printf '%s\t%s\t%d\t%d\n' "$size" "$(cut -f1 "$out/$tag.kinds")" "$n" $((most / n))
    fi
}

count "pod" pods
count "namespace relabel" ns
count "host endpoint edit" hep
count "network set edit" set
count "policy edit (a port; selects local" policy

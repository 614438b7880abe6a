#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike CPU time, the count
# does not move with what else the machine is doing, so small differences between clients
# (or before and after a change) show.
#
# Each client runs twice in its own process against the bench's mock provider, with N1 and
# N3 requests; the difference of the two totals over N3 - N1 is the cost of one request,
# without the process's start and end.
#
#   crates/chatstack-bench/instructions.sh                  # unary and stream, every client
#   MODES=unary CLIENTS="transport stack" crates/chatstack-bench/instructions.sh
#   STACK_WITHOUT=retry,trace crates/chatstack-bench/instructions.sh
#
# Needs valgrind (Debian: valgrind). Takes a few minutes.
set -euo pipefail
# A failing command inside $(...) fails the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

CLIENTS=${CLIENTS:-"floor transport stack async-openai"}
MODES=${MODES:-"unary stream"}
STACK_WITHOUT=${STACK_WITHOUT:-}
OUT=$(mktemp -d -t chatstack-instructions-XXXXXX)
MOCK_PID=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    if [ -n "$MOCK_PID" ]; then kill "$MOCK_PID" 2>/dev/null || true; fi
    rm -rf "$OUT"
}
trap cleanup EXIT

cargo build --quiet --profile profiling -p chatstack-bench
BENCH=target/profiling/chatstack-bench

# The mock serves until its stdin closes: hold it open with a pipe this script owns.
exec 3> >("$BENCH" mock > "$OUT/mock-url")
MOCK_PID=$!
for _ in $(seq 100); do
    [ -s "$OUT/mock-url" ] && break
    sleep 0.1
done
URL=$(head -n 1 "$OUT/mock-url")
if [ -z "$URL" ]; then
    echo "instructions.sh: the mock provider did not start" >&2
    exit 1
fi

total() {
    local client=$1 mode=$2 requests=$3 file="$OUT/$1.$2.$3.out"
    local extra=()
    if [ "$client" = stack ] && [ -n "$STACK_WITHOUT" ]; then
        extra=(--stack-without "$STACK_WITHOUT")
    fi
    # valgrind passes the client's exit status on; a client that fails stops the script,
    # with its error, instead of printing a count.
    if ! valgrind --tool=callgrind --callgrind-out-file="$file" "$BENCH" client \
        --kind "$client" --mode "$mode" --url "$URL" --requests "$requests" --concurrency 64 \
        ${extra[@]+"${extra[@]}"} > /dev/null 2> "$OUT/valgrind.log"; then
        echo "instructions.sh: $client ($mode) failed:" >&2
        grep -v '^==' "$OUT/valgrind.log" >&2 || true
        return 1
    fi
    awk '/^summary:/ { print $2 }' "$file"
}

printf '%-8s %-14s %14s\n' mode client instr/request
for mode in $MODES; do
    if [ "$mode" = stream ]; then n1=100 n3=300; else n1=1000 n3=3000; fi
    for client in $CLIENTS; do
        small=$(total "$client" "$mode" "$n1")
        large=$(total "$client" "$mode" "$n3")
        printf '%-8s %-14s %14d\n' "$mode" "$client" $(((large - small) / (n3 - n1)))
    done
done

#!/usr/bin/env bash
# Instructions of tether's recording work per streamed chunk, per
# non-streamed answer and per chat request read, without the network: bench-record-cost under valgrind's
# callgrind for two counts, the difference divided by the extra items.
#
#   bench/record_cost.sh            # per chunk, and per request of a 21st turn
#   EARLIER=0 bench/record_cost.sh  # per request of a two-message chat
#
# Needs valgrind; run `cargo build --release -p bench` first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/bench-record-cost
EARLIER=${EARLIER:-20}
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 \
        | grep Collected | awk '{print $NF}'
}
per() { # what, low count, high count, args after the count
    local what=$1 low=$2 high=$3
    shift 3
    local a b
    a=$(count "$what" "$low" "$@")
    b=$(count "$what" "$high" "$@")
    echo $(( (b - a) / (high - low) ))
}
echo "per streamed chunk (fold and SSE framing): $(per chunks 1000 11000) instructions"
echo "per non-streamed answer assembled: $(per body 1000 11000) instructions"
echo "per request read, a chat's turn after $EARLIER turns: $(per request 100 1100 "$EARLIER") instructions"
echo "the same as an Anthropic Messages request: $(per anthropic 100 1100 "$EARLIER") instructions"
echo "the same as a Responses request: $(per responses 100 1100 "$EARLIER") instructions"

#!/usr/bin/env bash
# Instructions per request of tether (and of the bare pass-through), counted
# by valgrind's callgrind: the same total for the same binary and inputs
# whatever else the machine is doing, unlike CPU time on shared cores.
#
#   bench/callgrind.sh                 # tether-off, tether-mem, bare; non-streamed
#   SUBJECTS="redis" bench/callgrind.sh  # tether recording into a redis-server of its own
#   bench/callgrind.sh stream          # the same with 50-chunk streams (per chunk)
#   TETHER=/path/to/tether bench/callgrind.sh   # another build of tether
#   EARLIER=20 bench/callgrind.sh      # each request the 21st turn of a chat
#   CONC=16 bench/callgrind.sh         # 16 connections at once: the history
#                                      # writer's batches as under load (counts
#                                      # then vary a little from run to run)
#   SUBJECTS="redis" REDIS_COUNTED=1 bench/callgrind.sh
#                                      # also counts redis-server's instructions
#                                      # per request (it runs under callgrind too,
#                                      # a new one for each run, with --hz 1 so
#                                      # that its timers add little; slowed down,
#                                      # it makes tether batch more turns a call)
#
# Each subject runs under callgrind twice, for WARM and WARM+COUNT requests sent
# one after another on one keep-alive connection, each in a new session; the
# difference over COUNT is the cost per request, start-up and warm-up left out.
# Needs valgrind and python3; builds nothing (run `cargo build --release
# --workspace` first). Profiles stay in target/callgrind/ for callgrind_annotate.
set -euo pipefail

MODE=${1:-non-stream}
WARM=${WARM:-100}
COUNT=${COUNT:-1000}
[ "$MODE" = stream ] && { WARM=20; COUNT=${COUNT_STREAMS:-200}; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
TETHER=${TETHER:-$BIN/tether}
OUT=$ROOT/target/callgrind
mkdir -p "$OUT"
UP_PORT=${UP_PORT:-18181}
PORT=${PORT:-18182}
REDIS_PORT=${REDIS_PORT:-18183}
SUBJECTS=${SUBJECTS:-bare off mem}
EARLIER=${EARLIER:-0}
CONC=${CONC:-1}
REDIS_COUNTED=${REDIS_COUNTED:-0}

drive() { # requests
    python3 - "$PORT" "$1" "$MODE" "$EARLIER" "$CONC" <<'EOF'
import http.client, json, sys, threading
port, n, stream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stream"
conc = int(sys.argv[5])
# EARLIER turns of conversation before the new question: what a client
# sends on the n-th turn of a chat (the whole conversation every time).
earlier = [m for k in range(int(sys.argv[4])) for m in (
    {"role": "user", "content": f"Question {k}: tell me about topic {k}, briefly please."},
    {"role": "assistant", "content": f"Topic {k} is a broad one. " * 12})]
body = json.dumps({"model": "bench-model", "stream": stream, "messages": [
    {"role": "system", "content": "You are a benchmark."}, *earlier,
    {"role": "user", "content": "Say something short."}]}, separators=(",", ":"))
failed = []
def client(first):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(first, n, conc):
        conn.request("POST", "/v1/chat/completions", body=body, headers={
            "authorization": "Bearer bench-key", "content-type": "application/json",
            "x-session-id": f"cg-{n}-{i}"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            failed.append((response.status, data))
clients = [threading.Thread(target=client, args=(k,)) for k in range(conc)]
for c in clients: c.start()
for c in clients: c.join()
assert not failed, failed[:3]
EOF
}

wait_up() {
    for _ in $(seq 150); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return
        sleep 0.2
    done
    echo "subject did not start" >&2
    exit 1
}

# Instructions for $1 requests through subject $2 (off | mem | redis | bare).
count() {
    local n=$1 subject=$2 file="$OUT/$2.$MODE.$1.out" pid redis_pid=
    if [ "$subject" = redis ] && [ "$REDIS_COUNTED" = 1 ]; then
        rm -rf "$OUT/redis-dir" && mkdir -p "$OUT/redis-dir"
        valgrind --tool=callgrind --callgrind-out-file="$OUT/redis-server.$MODE.$n.out" \
            redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --hz 1 \
            --dir "$OUT/redis-dir" \
            >/dev/null 2>"$OUT/redis-server.$MODE.$n.out.log" &
        redis_pid=$!
        for _ in $(seq 100); do
            redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
            sleep 0.2
        done
    fi
    case $subject in
        bare) valgrind --tool=callgrind --callgrind-out-file="$file" \
                "$BIN/bench-passthrough" --listen "127.0.0.1:$PORT" \
                --upstream "http://127.0.0.1:$UP_PORT" >/dev/null 2>"$file.log" & ;;
        *) TETHER_RECORD__ENABLED=$([ "$subject" = off ] && echo false || echo true) \
           TETHER_LOG__LEVEL=info valgrind --tool=callgrind --callgrind-out-file="$file" \
                "$TETHER" --listen "127.0.0.1:$PORT" \
                --upstream "http://127.0.0.1:$UP_PORT" \
                $([ "$subject" = redis ] && echo --redis-url "redis://127.0.0.1:$REDIS_PORT/") \
                >/dev/null 2>"$file.log" & ;;
    esac
    pid=$!
    wait_up
    drive "$n"
    sleep 1
    kill -INT "$pid"
    sleep 1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    if [ -n "$redis_pid" ]; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$redis_pid"
        wait "$redis_pid" || true
        echo "$(grep -h "Collected" "$OUT/redis-server.$MODE.$n.out.log" | awk '{print $NF}')" \
            >"$OUT/redis-server.$MODE.$n.total"
    fi
    grep -h "Collected" "$file.log" | awk '{print $NF}'
}

"$BIN/bench-upstream" --listen "127.0.0.1:$UP_PORT" >/dev/null 2>&1 &
UPSTREAM=$!
REDIS=
if [[ " $SUBJECTS " == *" redis "* ]] && [ "$REDIS_COUNTED" != 1 ]; then
    mkdir -p "$OUT/redis-dir"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$OUT/redis-dir" >/dev/null &
    REDIS=$!
fi
trap 'kill $UPSTREAM $REDIS 2>/dev/null || true' EXIT

per=$([ "$MODE" = stream ] && echo "per chunk (50 a stream)" || echo "per request")
for subject in $SUBJECTS; do
    low=$(count "$WARM" "$subject")
    high=$(count $((WARM + COUNT)) "$subject")
    chunks=$([ "$MODE" = stream ] && echo 50 || echo 1)
    echo "$subject: $(( (high - low) / COUNT / chunks )) instructions $per"
    if [ "$subject" = redis ] && [ "$REDIS_COUNTED" = 1 ]; then
        low=$(cat "$OUT/redis-server.$MODE.$WARM.total")
        high=$(cat "$OUT/redis-server.$MODE.$((WARM + COUNT)).total")
        echo "redis-server: $(( (high - low) / COUNT / chunks )) instructions $per"
    fi
done

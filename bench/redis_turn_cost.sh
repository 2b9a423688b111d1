#!/usr/bin/env bash
# Instructions redis-server spends on one history turn, counted by valgrind's
# callgrind (repeatable whatever else the machine does). The turns are sent as
# tether's history writer sends them: EVALSHA of the turn script from
# src/store/redis.rs, 8 turns a call, then one ZADD GT per session index; each
# turn a session's system prompt, question and answer.
#
#   bench/redis_turn_cost.sh              # new sessions, the turn script
#   TURNS=10 bench/redis_turn_cost.sh     # 10 turns a session (averaged)
#   PLAIN=1 bench/redis_turn_cost.sh      # the same writes as plain commands
#                                         # (HMGET, RPUSH, EXPIRE, HSET, EXPIRE):
#                                         # what the script's Lua costs on top
#   SCRIPT=file.lua bench/redis_turn_cost.sh   # another script, same arguments
#
# redis-server runs twice, for 200 and 2,200 sessions; the difference over
# 2,000 sessions is the cost a turn. `--hz 1` keeps its timers out of the count.
# Needs valgrind, redis-server, redis-cli and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/callgrind
mkdir -p "$OUT"
PORT=${PORT:-18399}
TURNS=${TURNS:-1}
SCRIPT_FILE=${SCRIPT:-$OUT/turn-script.lua}
if [ -z "${SCRIPT:-}" ]; then
    # The script as tether loads it: the raw string in APPEND_TURNS.
    python3 - "$ROOT/src/store/redis.rs" "$SCRIPT_FILE" <<'EOF'
import sys
text = open(sys.argv[1]).read()
start = text.index('redis::Script::new(\n        r"') + len('redis::Script::new(\n        r"')
open(sys.argv[2], "w").write(text[start:text.index('",\n    )', start)])
EOF
fi

drive() { # sessions
    python3 - "$PORT" "$1" "$SCRIPT_FILE" "$TURNS" "${PLAIN:-0}" <<'EOF'
import hashlib, json, socket, sys, time
port, sessions, script = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read()
turns, plain = int(sys.argv[4]), sys.argv[5] == "1"
PER = 8  # turns a call, as a busy writer's batches
def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
conn = socket.create_connection(("127.0.0.1", port))
replies = conn.makefile("rb")
def reply():
    line = replies.readline()
    if line[:1] == b"$" and int(line[1:]) >= 0:
        replies.read(int(line[1:]) + 2)
    elif line[:1] == b"*":
        for _ in range(int(line[1:])):
            reply()
    elif line[:1] == b"-":
        sys.exit(line.decode())
compact = lambda v: json.dumps(v, separators=(",", ":"))
stamp = "2026-12-07T14:00:00.000000Z"
system = compact({"role": "system", "content": "You are a benchmark."})
user = compact({"role": "user", "content": "Say something short.", "timestamp": stamp})
answer = compact({"role": "assistant", "content": "Something short, as asked: " + "word " * 20,
                  "model": "bench-model", "timestamp": stamp,
                  "usage": {"prompt_tokens": 12, "completion_tokens": 25, "total_tokens": 37}})
conn.sendall(enc("SCRIPT", "LOAD", script)); reply()
sha = hashlib.sha1(script.encode()).hexdigest()
now = int(time.time() * 1000)
for turn in range(turns):
    for first in range(0, sessions, PER):
        ids = range(first, min(first + PER, sessions))
        keys = lambda i: (f"tether:{{s:t1:s{i}}}:messages", f"tether:{{s:t1:s{i}}}:meta")
        if plain:
            cmds = []
            for i in ids:
                messages, meta = keys(i)
                cmds += [enc("HMGET", meta, "recent_turns", "created_ms", "prompt_tokens",
                             "completion_tokens", "total_tokens", "model:bench-model", "ttl_ms"),
                         enc("RPUSH", messages, *([system] if turn == 0 else []), user, answer),
                         enc("EXPIRE", messages, 86400),
                         enc("HSET", meta, "last_message_ms", now, "recent_turns", f",{turn}{i:031d},",
                             "prompt_tokens", 12, "completion_tokens", 25, "total_tokens", 37,
                             "created_ms", now, "model:bench-model", now),
                         enc("EXPIRE", meta, 86400)]
        else:
            args = [86400, now, now - 60000]
            for i in ids:
                args += [now + i, 12, 25, 37, "bench-model", f"{turn:02d}{i:030d}", 1, 3,
                         system, user, answer]
            cmds = [enc("EVALSHA", sha, 2 * len(ids), *[k for i in ids for k in keys(i)], *args)]
        members = [x for i in ids for x in (now + i, f"s{i}")]
        cmds.append(enc("ZADD", "tether:{t:t1}:sessions", "GT", *members))
        cmds.append(enc("ZADD", "tether:all:sessions", "GT",
                        *[x if k % 2 == 0 else f"t1:{x}" for k, x in enumerate(members)]))
        conn.sendall(b"".join(cmds))
        for _ in cmds:
            reply()
EOF
}

count() { # sessions
    local file="$OUT/redis-turns.$1.out"
    # In an empty directory: a dump.rdb where it starts would be loaded, and
    # with it a replication backlog that every write then feeds.
    rm -rf "$OUT/redis-dir" && mkdir -p "$OUT/redis-dir"
    valgrind --tool=callgrind --callgrind-out-file="$file" redis-server --bind 127.0.0.1 \
        --port "$PORT" --save "" --appendonly no --hz 1 --dir "$OUT/redis-dir" \
        >/dev/null 2>"$file.log" &
    local pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    drive "$1"
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$pid"
    wait "$pid" || true
    grep -h "Collected" "$file.log" | awk '{print $NF}'
}

low=$(count 200)
high=$(count 2200)
what=$([ "${PLAIN:-0}" = 1 ] && echo "plain commands" || echo "turn script")
echo "redis-server: $(( (high - low) / 2000 / TURNS )) instructions a turn ($what, $TURNS a session)"

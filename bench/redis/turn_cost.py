#!/usr/bin/env python3
"""What one recorded turn costs redis-server, by how it is written.

    python3 bench/redis/turn_cost.py [TURNS] [BATCH]     (defaults 20000 16)
    python3 bench/redis/turn_cost.py --instructions [TURNS] [BATCH]  (5000 16)

Starts its own redis-server (no persistence) on a free port, writes TURNS
turns of new sessions (a system prompt, a user message, a reply: what the
benchmark's non-stream run records) in pipelines of BATCH turns, three rounds
of each way, and prints redis-server's CPU time per turn (`INFO cpu`, user +
sys, of the server process only). With `--instructions` it runs each way
once in a redis-server of its own under valgrind's callgrind and prints the
instructions it executed per turn, less those of a server that only started,
loaded the script and stopped: the same count for the same Redis build
whatever else the machine is doing (needs valgrind); then the same for
the 9th and the 21st turns of sessions.

  batch   tether's way on a standalone server: one EVALSHA of the turn
          script (src/store/redis.rs) for the whole pipeline, which appends
          each turn, sums usage, keeps the replay guard, and refreshes TTLs
          when a minute has passed since it last did (a session's turns
          here come 10 s apart); plus the two session-index ZADDs per batch.
  script  the same script called once a turn, as on a cluster.
  multi   the same bookkeeping as plain commands (RPUSH, HSETNX, HSET,
          HINCRBY, EXPIRE...) in one MULTI/EXEC per batch with a batch marker:
          no script, but also no replay guard and no "system prompt only
          when new" in one step.
  floor   only what any layout must do: push the messages, keep the system
          prompt once (HSETNX), and refresh two TTLs; no counts, no usage.

The point is the floor: with Redis on the same two cores as the proxy, what
redis-server spends per turn is taken from the proxy, whatever tether does.
"""
import hashlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """A pipelining RESP client: send many commands, then count the replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def call(self, data, replies):
        self.sock.sendall(data)
        got, last = 0, None
        while got < replies:
            end = self._reply(0)
            if end is None:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                self.buf += chunk
                continue
            last, self.buf = self.buf[:end], self.buf[end:]
            if last.startswith(b"-"):
                raise RuntimeError(last.decode(errors="replace"))
            got += 1
        return last

    def _reply(self, i):
        """The end of the reply at `i`, or None while it is incomplete."""
        j = self.buf.find(b"\r\n", i)
        if j < 0:
            return None
        kind, head = self.buf[i:i + 1], self.buf[i + 1:j]
        if kind in (b"+", b"-", b":"):
            return j + 2
        n = int(head)
        if kind == b"$":
            end = j + 2 + max(n, 0) + (2 if n >= 0 else 0)
            return end if end <= len(self.buf) else None
        k = j + 2
        for _ in range(max(n, 0)):
            k = self._reply(k)
            if k is None:
                return None
        return k

    def cpu_seconds(self):
        info = self.call(enc("INFO", "cpu"), 1).decode()
        fields = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
        return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def turn_script():
    source = (ROOT / "src/store/redis.rs").read_text()
    return re.search(r'Script::new\(\s*r"\n(.*?)\n\s*",\s*\)', source, re.S).group(1)


def message(role, text):
    return json.dumps({"role": role, "content": text, "model": "bench-model",
                       "timestamp": "2026-12-06T18:00:00.000000Z"}).encode()


SYSTEM = message("system", "You are a benchmark.")
USER = message("user", "Say something short.")
REPLY = json.dumps({"role": "assistant", "content": "Hello! This is a short answer.",
                    "model": "bench-model", "timestamp": "2026-12-06T18:00:00.000000Z",
                    "finish_reason": "stop", "usage": {"prompt_tokens": 20,
                    "completion_tokens": 12, "total_tokens": 32}, "api": "chat",
                    "complete": True}).encode()


# A session's turns come this far apart (a chat's pace): the script
# refreshes a session's TTLs when a minute has passed since it last did.
TURN_GAP_MS = 10_000
TTL_REFRESH_MS = 60_000


def clock(n, first, size):
    """The script's time now and the time before which TTLs are stale, for
    the batch of turns `n` of sessions `first`.."""
    now = 1765000000000 + n * TURN_GAP_MS + first + size
    return now, now - TTL_REFRESH_MS


def batch(way, sha, tag, first, size, n=0):
    """One pipeline of `size` turns written `way` (each session's turn `n`);
    its bytes and reply count."""
    parts, members = [], []
    if way not in ("script", "batch"):
        parts.append(enc("MULTI"))
    keys, args = [], []
    for i in range(first, first + size):
        sid = f"{tag}-{i}"
        messages, meta = f"tether:{{s:t:{sid}}}:messages", f"tether:{{s:t:{sid}}}:meta"
        at = 1765000000000 + n * TURN_GAP_MS + i
        # The script's arguments for one turn (see APPEND_TURNS).
        # A turn id as long as tether's own (32 hex digits).
        turn_id = hashlib.md5(f"{sid}-{n}".encode()).hexdigest()
        turn = [at, 20, 12, 32, "bench-model", turn_id, 1, 3, SYSTEM, USER, REPLY]
        if way == "script":
            parts.append(enc("EVALSHA", sha, 2, messages, meta, 86400, *clock(n, first, size),
                             *turn))
        elif way == "batch":
            keys += [messages, meta]
            args += turn
        else:
            parts += [enc("RPUSH", messages, USER, REPLY), enc("EXPIRE", messages, 86400),
                      enc("HSETNX", meta, "first", b"[" + SYSTEM + b"]")]
            if way == "multi":
                parts += [enc("HSET", meta, "last_message_ms", at),
                          enc("HSETNX", meta, "created_ms", at),
                          enc("HSETNX", meta, "model:bench-model", at),
                          enc("HINCRBY", meta, "prompt_tokens", 20),
                          enc("HINCRBY", meta, "completion_tokens", 12),
                          enc("HINCRBY", meta, "total_tokens", 32)]
            parts.append(enc("EXPIRE", meta, 86400))
        members += [at, sid]
    if way == "batch":
        parts.append(enc("EVALSHA", sha, len(keys), *keys, 86400, *clock(n, first, size), *args))
    parts.append(enc("ZADD", "tether:{t:t}:sessions", *members))
    parts.append(enc("ZADD", "tether:{all}:sessions",
                     *[m if k % 2 == 0 else "t/" + m for k, m in enumerate(members)]))
    if way in ("script", "batch"):
        return b"".join(parts), len(parts)
    parts.append(enc("SET", f"tether:batch:{tag}:{first}", 1, "EX", 60))
    parts.append(enc("EXEC"))
    return b"".join(parts), len(parts)


WAYS = ("batch", "script", "multi", "floor")


def start_server(port, wrap=()):
    # A directory of its own: a dump.rdb left where this runs would be
    # loaded at start and change every count.
    server = subprocess.Popen([*wrap, "redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", tempfile.mkdtemp()],
                              stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            return server, Conn(port)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def load_script(conn):
    script = turn_script()
    conn.call(enc("SCRIPT", "LOAD", script), 1)
    return hashlib.sha1(script.encode()).hexdigest()


def write_turns(conn, way, sha, tag, turns, size, n=0):
    for first in range(0, turns, size):
        data, replies = batch(way, sha, tag, first, size, n)
        conn.call(data, replies)


def instructions(way, turns, size, log, earlier=0, measured=True):
    """Instructions redis-server executes, started, writing `earlier` turns
    to each of `turns` sessions and then (if `measured`) one more, `way`
    (nothing for `None`), and stopped."""
    port = free_port()
    server, conn = start_server(port, ("valgrind", "--tool=callgrind",
                                       "--callgrind-out-file=/dev/null", f"--log-file={log}"))
    sha = load_script(conn)
    if way:
        for n in range(earlier + (1 if measured else 0)):
            write_turns(conn, way, sha, way, turns, size, n)
    try:
        conn.call(enc("SHUTDOWN", "NOSAVE"), 1)
    except (ConnectionError, OSError):
        pass
    server.wait()
    collected = re.search(r"Collected : (\d+)", Path(log).read_text())
    return int(collected.group(1))


def main():
    args = [a for a in sys.argv[1:] if a != "--instructions"]
    count_instructions = len(args) < len(sys.argv) - 1
    turns = int(args[0]) if args else (5000 if count_instructions else 20000)
    size = int(args[1]) if len(args) > 1 else 16
    if count_instructions:
        log = "/tmp/turn_cost.callgrind.log"
        base = instructions(None, turns, size, log)
        print(f"redis-server instructions per turn, {turns} turns of new sessions, "
              f"{size} a pipeline:")
        for way in WAYS:
            spent = instructions(way, turns, size, log) - base
            print(f"  {way:6}  {spent / turns:9.0f}")
        for earlier in (8, 20):
            print(f"the same for turn {earlier + 1} of each session ({earlier} written before):")
            for way in ("batch", "script"):
                before = instructions(way, turns, size, log, earlier=earlier, measured=False)
                spent = instructions(way, turns, size, log, earlier=earlier) - before
                print(f"  {way:6}  {spent / turns:9.0f}")
        return
    port = free_port()
    server, conn = start_server(port)
    try:
        sha = load_script(conn)
        results = {}
        for round_ in range(3):
            for way in WAYS:
                before = conn.cpu_seconds()
                write_turns(conn, way, sha, f"{way}{round_}", turns, size)
                spent = conn.cpu_seconds() - before
                results.setdefault(way, []).append(spent / turns * 1e6)
        print(f"redis-server CPU per turn (µs), {turns} turns of new sessions, {size} a pipeline:")
        for way, runs in results.items():
            print(f"  {way:6}  " + "  ".join(f"{r:5.1f}" for r in runs))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()

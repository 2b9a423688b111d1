#!/usr/bin/env python3
"""What one recorded turn costs redis-server, by how it is written.

    python3 bench/redis/turn_cost.py [TURNS] [BATCH]     (defaults 20000 16)

Starts its own redis-server (no persistence) on a free port, writes TURNS
turns of new sessions (a system prompt, a user message, a reply: what the
benchmark's non-stream run records) in pipelines of BATCH turns, three rounds
of each way, and prints redis-server's CPU time per turn (`INFO cpu`, user +
sys, of the server process only):

  script  tether's way: one EVALSHA of the turn script (src/store/redis.rs),
          which appends, sums usage, keeps the replay guard, and refreshes
          TTLs; plus the two session-index ZADDs per batch.
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


def batch(way, sha, tag, first, size):
    """One pipeline of `size` turns written `way`; its bytes and reply count."""
    parts, members = [], []
    if way != "script":
        parts.append(enc("MULTI"))
    for i in range(first, first + size):
        sid = f"{tag}-{i}"
        messages, meta = f"tether:{{s:t:{sid}}}:messages", f"tether:{{s:t:{sid}}}:meta"
        at = 1765000000000 + i
        if way == "script":
            parts.append(enc("EVALSHA", sha, 2, messages, meta, 86400, at, 20, 12, 32,
                             "bench-model", f"turn-{sid}", 1, SYSTEM, USER, REPLY))
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
    parts.append(enc("ZADD", "tether:{t:t}:sessions", *members))
    parts.append(enc("ZADD", "tether:{all}:sessions",
                     *[m if k % 2 == 0 else "t/" + m for k, m in enumerate(members)]))
    if way == "script":
        return b"".join(parts), len(parts)
    parts.append(enc("SET", f"tether:batch:{tag}:{first}", 1, "EX", 60))
    parts.append(enc("EXEC"))
    return b"".join(parts), len(parts)


def main():
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                conn = Conn(port)
                break
            except OSError:
                time.sleep(0.05)
        script = turn_script()
        conn.call(enc("SCRIPT", "LOAD", script), 1)
        sha = hashlib.sha1(script.encode()).hexdigest()
        results = {}
        for round_ in range(3):
            for way in ("script", "multi", "floor"):
                before = conn.cpu_seconds()
                for first in range(0, turns, size):
                    data, replies = batch(way, sha, f"{way}{round_}", first, size)
                    conn.call(data, replies)
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

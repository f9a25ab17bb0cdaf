#!/usr/bin/env python3
"""Summarize a py-spy `--format raw` (collapsed stacks) profile of collab as plain text.

    profile_summary.py PROFILE.raw TITLE [THREAD_CPU_BEFORE THREAD_CPU_AFTER]

THREAD_CPU_* are "tid:comm:ticks,..." snapshots of /proc/<pid>/task/*/stat (bench/run.sh) taken
around the py-spy window: they give the real CPU split between the event-loop thread and the
aiosqlite worker thread, which py-spy's idle heuristics cannot (a thread blocked in
SimpleQueue.get may be sampled as busy).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter

# Frames worth reading on the receive -> store -> relay path (substring of the frame name).
KEY_FRAMES = [
    ("read path: Connection._read_loop", "Connection._read_loop"),
    ("  Room.handle", "Room.handle"),
    ("    Room.apply_client_update", "Room.apply_client_update"),
    ("      pycrdt Doc.apply_update", "Doc.apply_update"),
    ("      Room.persist_and_relay", "Room.persist_and_relay"),
    ("        Room.compact (full-state encode)", "Room.compact"),
    ("        pycrdt Doc.get_update", "Doc.get_update"),
    ("    Presence.apply", "Presence.apply"),
    ("  decode_message", "decode_message"),
    ("uvicorn ws receive (data_received/parse)", "WebSocketsSansIOProtocol.data_received"),
    ("store commit done -> relay: Room._relay_committed", "Room._relay_committed"),
    ("  Room.broadcast", "Room.broadcast"),
    ("  Connection.send (outbox append)", "Connection.send "),
    ("write path: Connection._write_loop", "Connection._write_loop"),
    ("  uvicorn WebSocketsSansIOProtocol.send", "WebSocketsSansIOProtocol.send "),
    ("  transport.write (socket send)", "_SelectorSocketTransport.write"),
    ("GroupCommitWriter._run (loop side)", "GroupCommitWriter._run"),
    ("SqliteStore._commit_batch (loop side)", "SqliteStore._commit_batch"),
    ("aiosqlite worker thread (all)", "_connection_worker_thread"),
    ("event loop select()", "EpollSelector.select"),
    ("prometheus metrics", "prometheus_client"),
    ("logging", "logging/__init__"),
]


def parse(path: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n_s = line.rpartition(" ")
            n = int(n_s)
            total += n
            frames = stack.split(";")
            self_[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
            threads["aiosqlite worker" if "_connection_worker_thread" in stack else "event loop (main)"] += n
    return total, inclusive, self_, threads


def func(frame: str) -> str:
    """'Room.handle (collab/room.py:98)' -> 'Room.handle (collab/room.py)': merge line numbers."""
    return re.sub(r":\d+\)$", ")", frame)


def thread_cpu(before: str, after: str) -> list[str]:
    def snap(s: str) -> dict[str, tuple[str, int]]:
        out = {}
        for item in s.split(","):
            if item.count(":") == 2:
                tid, comm, ticks = item.split(":")
                out[tid] = (comm, int(ticks))
        return out

    b, a = snap(before), snap(after)
    hz = os.sysconf("SC_CLK_TCK")
    rows = []
    for tid, (comm, ticks) in sorted(a.items(), key=lambda kv: -(kv[1][1] - b.get(kv[0], ("", 0))[1])):
        d = ticks - b.get(tid, (comm, 0))[1]
        if d > 0:
            rows.append(f"  thread {tid:>7} {comm:<16} {d / hz:6.2f} s CPU in the window ({d / hz / 15 * 100:5.1f} % of a core)")
    return rows


def main() -> None:
    path, title = sys.argv[1], sys.argv[2]
    total, inclusive, self_, threads = parse(path)
    if total == 0:
        print(f"# {title}: no samples")
        return
    pct = lambda n: 100.0 * n / total  # noqa: E731
    out = [f"# {title}", f"samples: {total}", ""]
    if len(sys.argv) >= 5:
        out += ["Real CPU per thread (/proc, same 15 s window):"] + thread_cpu(sys.argv[3], sys.argv[4]) + [""]
    out += ["Samples per thread:"] + [f"  {pct(n):5.1f} %  {t}" for t, n in threads.most_common()] + [""]
    out += ["Key frames, inclusive % of samples:"]
    for label, needle in KEY_FRAMES:
        n = 0
        with open(path) as f:
            for line in f:
                stack, _, n_s = line.rstrip("\n").rpartition(" ")
                if needle.strip() in stack and (not needle.endswith(" ") or needle in stack):
                    n += int(n_s)
        out.append(f"  {pct(n):5.1f} %  {label}")
    out.append("")
    merged_self: Counter[str] = Counter()
    for fr, n in self_.items():
        merged_self[func(fr)] += n
    out += ["Top 25 functions by self time (leaf frame, line numbers merged):"]
    out += [f"  {pct(n):5.1f} %  {fr}" for fr, n in merged_self.most_common(25)]
    out.append("")
    merged_inc: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, n_s = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            for fr in {func(x) for x in stack.split(";")}:
                merged_inc[fr] += int(n_s)
    out += ["Top 40 functions by inclusive time (line numbers merged):"]
    out += [f"  {pct(n):5.1f} %  {fr}" for fr, n in merged_inc.most_common(40)]
    print("\n".join(out))


if __name__ == "__main__":
    main()

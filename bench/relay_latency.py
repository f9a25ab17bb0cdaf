"""Server-side latency of the relay path, with the shared harness driving a real collab.

    .venv/bin/python bench/relay_latency.py [--checks 0|1] [--ymap 0|1] [--reps 1]

Runs collab in this process (uvloop, pinned to CPU 1; SQLite in a temporary directory) and the
shared harness's fan50 scenario (`bench/work/fanout.mjs`, set up by `bench/run.sh setup`) on
CPU 0. It times, inside the server, each client update from the moment the room starts applying
it to the moment its relay is handed to the connections (store commit included), and the gaps
of a 1 ms ticker on the event loop. The harness's own latency includes the time a single Node
process takes to decode everything 50 clients receive, and its event-loop stalls; this tells
the server's share apart. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import collab.live.room as room_module
from tests.conftest import make_settings, serving

HARNESS = Path(__file__).resolve().parent / "work" / "fanout.mjs"
arrivals: dict[int, float] = {}
relay_seconds: list[float] = []


def instrument() -> None:
    """Wrap two Room methods: the first client update of a batch starts the clock, its relay stops it."""
    apply, relay = room_module.Room.apply_client_update, room_module.Room._relay_committed

    def timed_apply(self: Any, conn: Any, update: bytes) -> None:
        arrivals.setdefault(id(self), time.perf_counter())
        apply(self, conn, update)

    def timed_relay(self: Any) -> None:
        if any(sender is not None for _u, sender in self._committed) and id(self) in arrivals:
            relay_seconds.append(time.perf_counter() - arrivals.pop(id(self)))
        relay(self)

    room_module.Room.apply_client_update = timed_apply  # type: ignore[method-assign]
    room_module.Room._relay_committed = timed_relay  # type: ignore[method-assign]


async def run(checks: bool, ymap: bool) -> dict[str, Any]:
    relay_seconds.clear()
    arrivals.clear()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    with tempfile.TemporaryDirectory() as data:
        settings = make_settings(Path(data), geometry_checks=checks, max_connections_per_user=500)
        async with serving(settings) as live:
            await live.register_slide("bench-0")
            token = live.token("admin", user="bench")
            tick = asyncio.create_task(ticker())
            harness = await asyncio.create_subprocess_exec(
                "taskset", "-c", "0", "node", str(HARNESS), "--url", live.ws_url + "/ws/slides",
                "--params", "token=" + token, "--room", "bench-0", "--clients", "50", "--writers", "1",
                "--rate", "20", "--vertices", "50", "--duration", "15", "--warmup", "3", "--quiet",
                "--json-out", "/dev/stdout",
                env={**os.environ, "BENCH_YMAP": "1" if ymap else "0"}, stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await harness.communicate()
            tick.cancel()
    result = json.loads(out.decode().strip().splitlines()[-1])
    relay = statistics.quantiles(relay_seconds[60:], n=100)  # after the harness's 3 s warm-up
    return {
        "checks": checks, "ymap": ymap,
        "harness_latency_ms": {k: result["latency_ms"][k] for k in ("p50", "p99", "max")},
        "harness_eventloop_delay_ms": result["harness_eventloop_delay_ms"],
        "server_relay_ms": {"p50": round(relay[49] * 1e3, 3), "p99": round(relay[98] * 1e3, 3),
                            "n": len(relay_seconds) - 60},
        "server_loop_gap_ms": {"p99": round(statistics.quantiles(gaps, n=100)[98] * 1e3, 2),
                               "max": round(max(gaps) * 1e3, 2)},
        "bytes_in_per_s": result["wire_per_s"]["in"]["bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=1)
    parser.add_argument("--ymap", type=int, default=0)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    if not HARNESS.exists():
        sys.exit(f"{HARNESS} missing: run `bench/run.sh setup` first")
    os.sched_setaffinity(0, {1})
    instrument()
    for _ in range(args.reps):
        print(json.dumps(uvloop.run(run(bool(args.checks), bool(args.ymap)))), flush=True)


if __name__ == "__main__":
    main()

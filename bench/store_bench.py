"""Commit latency and group-commit batch sizes: SQLite vs PostgreSQL, in the same run, interleaved.

    .venv/bin/python bench/store_bench.py [--runs 5] [--seconds 3] [--writers 50]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Two workloads per backend and run, through the real store (collab.store), on this machine:
- serial: one writer appending one 120-byte update at a time, each awaited (a lone editor);
- concurrent: `--writers` writers, one room each, each appending and awaiting in a closed loop
  (a busy server: appends arriving while a commit is in flight share the next one);
- paced: appends arriving at `--rate` per second whatever the commits do (10 every 10/rate s,
  spread over `--writers` rooms): batch sizes then follow commit time x arrival rate.
Latency is from `append()` to its future resolving (committed). Batch size is the number of
writes per committed transaction. Each run does both backends, alternating which goes first;
the table gives the median over runs and the range (min-max). PostgreSQL runs on a database of
its own, created and dropped here; SQLite on a file in a temporary directory (synchronous=normal,
the default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from collab.store import Store
from collab.store.postgres import PostgresStore
from collab.store.sqlite import SqliteStore

UPDATE = os.urandom(120)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_batches(store: Any) -> list[int]:
    """Record the size of every batch the store's writer commits (wraps its commit function)."""
    sizes: list[int] = []
    writer = store._writer
    commit = writer._commit

    async def counted(ops: list[Any]) -> None:
        await commit(ops)
        sizes.append(len(ops))

    writer._commit = counted
    return sizes


async def workload(store: Store, writers: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    appended = 0

    async def write(room: str) -> None:
        nonlocal appended
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await store.append(room, UPDATE)
            latencies.append((time.perf_counter() - started) * 1000)
            appended += 1

    async with asyncio.TaskGroup() as tg:
        for i in range(writers):
            tg.create_task(write(f"bench-{i}"))
    return latencies, appended


async def paced(store: Store, writers: int, seconds: float, rate: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    pending: list[asyncio.Future[int]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while loop.time() - started < seconds:
        due = int((loop.time() - started) * rate)
        while sent < due:
            at = time.perf_counter()
            future = store.append(f"bench-{sent % writers}", UPDATE)
            future.add_done_callback(lambda _f, at=at: latencies.append((time.perf_counter() - at) * 1000))
            pending.append(future)
            sent += 1
        await asyncio.sleep(10 / rate)
    await asyncio.gather(*pending)
    return latencies, sent


async def measure(
    open_store: Callable[[], Awaitable[Any]], writers: int, seconds: float, rate: float
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, n in (("serial", 1), ("concurrent", writers), ("paced", writers)):
        store = await open_store()
        sizes = count_batches(store)
        try:
            await workload(store, n, 0.3)  # warm up: pool connections, statement caches
            sizes.clear()
            if name == "paced":
                latencies, appended = await paced(store, n, seconds, rate)
            else:
                latencies, appended = await workload(store, n, seconds)
        finally:
            await store.close()
        out[name] = {
            "p50 ms": statistics.median(latencies),
            "p99 ms": percentile(latencies, 0.99),
            "appends/s": appended / seconds,
            "batch mean": statistics.fmean(sizes),
            "batch p50": statistics.median(sizes),
            "batch max": max(sizes),
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2000.0, help="appends per second of the paced workload")
    parser.add_argument("--pg", default=os.environ.get("COLLAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    admin = await asyncpg.connect(args.pg)
    database = f"collab_bench_{secrets.token_hex(4)}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    pg_url = f"{args.pg.rpartition('/')[0]}/{database}"
    results: dict[str, list[dict[str, dict[str, float]]]] = {"sqlite": [], "postgres": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):

                async def sqlite(run: int = run) -> SqliteStore:
                    store = SqliteStore(str(Path(tmp) / f"run{run}-{secrets.token_hex(2)}.sqlite3"))
                    await store.open()
                    return store

                async def postgres() -> PostgresStore:
                    store = PostgresStore(pg_url)
                    await store.open()
                    return store

                order = [("sqlite", sqlite), ("postgres", postgres)]
                if run % 2:
                    order.reverse()
                for name, opener in order:
                    results[name].append(await measure(opener, args.writers, args.seconds, args.rate))
                    print(f"run {run + 1}/{args.runs} {name}: {results[name][-1]}", flush=True)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()

    print(f"\n{args.runs} runs, {args.seconds:g} s each, {args.writers} rooms, paced at {args.rate:g}/s;"
          " median (min-max)\n")
    metrics = ["p50 ms", "p99 ms", "appends/s", "batch mean", "batch p50", "batch max"]
    print("| workload | backend | " + " | ".join(metrics) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in metrics) + " |")
    for workload_name in ("serial", "concurrent", "paced"):
        for backend in ("sqlite", "postgres"):
            cells = []
            for metric in metrics:
                values = [r[workload_name][metric] for r in results[backend]]
                fmt = "{:.0f}" if metric in ("appends/s", "batch max") else "{:.2f}"
                low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
                cells.append(f"{mid} ({low}-{high})")
            print(f"| {workload_name} | {backend} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    asyncio.run(main())

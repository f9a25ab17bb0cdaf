"""Benchmark the geometry check and the spatial index on a slide of 20,000 polygons.

    .venv/bin/python bench/spatial_bench.py [--n 20000] [--seed 1]

Polygons of 20 to 500 vertices (star-shaped, so valid) with radii from 50 to 1,500 px,
spread over a 100,000 x 80,000 px slide. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterable

import numpy as np
import shapely

from collab.annotations.geometry import check_geometry
from collab.annotations.spatial import SpatialIndex, build_tree

WIDTH, HEIGHT = 100_000, 80_000
VIEWPORTS = {"screen 2000x1200": (2000, 1200), "large 10000x6000": (10_000, 6000)}


def make_polygons(n: int, rng: np.random.Generator) -> list[dict]:
    out = []
    for _ in range(n):
        k = int(rng.integers(20, 501))
        r = math.exp(rng.uniform(math.log(50), math.log(1500)))
        cx, cy = rng.uniform(r, WIDTH - r), rng.uniform(r, HEIGHT - r)
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.6, 1.0, k)
        ring = np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)].tolist()
        ring.append(ring[0])
        out.append({"type": "Polygon", "coordinates": [ring]})
    return out


def timed(fn: Callable[..., object], calls: Iterable[tuple]) -> list[float]:
    """Duration of fn(*args) for each args, in ms."""
    out = []
    for args in calls:
        t0 = time.perf_counter_ns()
        fn(*args)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def boxes(rng: np.random.Generator, size: tuple[int, int], n: int) -> list[tuple[float, ...]]:
    w, h = size
    xs, ys = rng.uniform(0, WIDTH - w, n), rng.uniform(0, HEIGHT - h, n)
    return [(x, y, x + w, y + h) for x, y in zip(xs.tolist(), ys.tolist(), strict=True)]


async def loop_stall_during_refresh(index: SpatialIndex) -> float:
    """Longest gap (ms) seen by a 1 ms ticker while refresh() builds a tree in a thread."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, (now - last) * 1000)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    await index.refresh()
    done = True
    await task
    return worst


def brute_force(geoms: np.ndarray, *box: float) -> np.ndarray:
    """The baseline: one vectorised shapely.intersects over every annotation."""
    return np.nonzero(shapely.intersects(geoms, shapely.box(*box)))[0]


def p50_p99(values: list[float], digits: int = 3) -> str:
    return f"{pct(values, 50):.{digits}f} / {pct(values, 99):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(args.seed)
    rows: list[tuple[str, str]] = []

    geojson = make_polygons(n, rng)
    vertices = sum(len(g["coordinates"][0]) for g in geojson)
    rows.append(("annotations / vertices", f"{n:,} / {vertices:,}"))

    # The geometry check: what the server runs per changed annotation and per imported feature.
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    verdicts = [check_geometry(g, width=WIDTH, height=HEIGHT, mpp=0.25) for g in geojson]
    check_s = time.perf_counter() - t0
    assert all(v.status == "ok" for v in verdicts)
    items = [(f"a{i}", v.shape) for i, v in enumerate(verdicts)]
    gc.collect()
    rss_shapes = rss_mb()
    rows.append(
        ("check_geometry + measure, all (s)", f"{check_s:.2f} ({check_s / n * 1e6:.0f} us each)")
    )

    t0 = time.perf_counter()
    index = SpatialIndex(items)
    build_ms = (time.perf_counter() - t0) * 1000
    gc.collect()
    rss_index = rss_mb()
    tracemalloc.start()  # a second, throw-away build: tracemalloc slows allocations down
    traced_index = SpatialIndex(items)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced_index
    rows.append(("index build, synchronous (ms)", f"{build_ms:.1f}"))
    shapes_kib = (rss_shapes - rss0) * 1024 / n
    index_b = (rss_index - rss_shapes) * 2**20 / n
    rows.append(("memory per annotation: shapely shape (RSS)", f"{shapes_kib:.1f} KiB"))
    label = "memory per annotation: index (RSS / tracemalloc)"
    rows.append((label, f"{index_b:.0f} B / {traced / n:.0f} B"))

    geoms = np.array([s for _, s in items], dtype=object)
    envelopes = shapely.STRtree(geoms)  # the same tree, queried without the exact test
    for label, size in VIEWPORTS.items():
        qs = boxes(rng, size, 2000)
        index_ms = timed(index.query_bbox, qs)
        hits = statistics.mean(len(index.query_bbox(*q)) for q in qs[:200])
        brute_ms = timed(brute_force, [(geoms, *q) for q in qs[:300]])
        ratio = [pct(brute_ms, q) / pct(index_ms, q) for q in (50, 99)]
        speedup = f"{ratio[0]:.0f}x / {ratio[1]:.0f}x"
        rows.append(
            (f"bbox {label}: index p50 / p99 (ms)", f"{p50_p99(index_ms)} ({hits:.0f} hits)")
        )
        rows.append((f"bbox {label}: brute force p50 / p99 (ms)", p50_p99(brute_ms, 2)))
        rows.append((f"bbox {label}: speed-up p50 / p99", speedup))
        lookup_ms = timed(lambda *q: envelopes.query(shapely.box(*q)), qs)
        rows.append((f"bbox {label}: tree lookup alone, no exact test (ms)", p50_p99(lookup_ms)))
        stats_ms = timed(index.stats_bbox, [(*q, lambda k: "Tumor") for q in qs[:300]])
        rows.append((f"stats {label}: p50 / p99 (ms)", p50_p99(stats_ms)))

    points = [tuple(p) for p in rng.uniform((0, 0), (WIDTH, HEIGHT), (2000, 2)).tolist()]
    rows.append(("point query p50 / p99 (ms)", p50_p99(timed(index.query_point, points))))

    # Edits: move annotations. Each upsert is O(1); nothing rebuilds the tree here.
    moved = [(k, shapely.transform(s, lambda c: c + 5)) for k, s in items[: index.delta_limit]]
    edit_us = [t * 1000 for t in timed(index.upsert, moved[:-1])]
    rows.append(
        ("edit (upsert) p50 / p99 / max (us)", f"{p50_p99(edit_us, 1)} / {max(edit_us):.1f}")
    )
    qs = boxes(rng, VIEWPORTS["screen 2000x1200"], 2000)
    label = f"bbox screen with {index.delta_size} pending edits p50 / p99 (ms)"
    rows.append((label, p50_p99(timed(index.query_bbox, qs))))
    index.upsert(*moved[-1])
    rows.append((f"needs_rebuild after {index.delta_size} edits", str(index.needs_rebuild)))
    t0 = time.perf_counter()
    build_tree(*index.snapshot())
    rows.append(
        ("tree build off the loop (build_tree) (ms)", f"{(time.perf_counter() - t0) * 1000:.1f}")
    )
    stall = asyncio.run(loop_stall_during_refresh(index))
    rows.append(("longest event-loop gap during refresh() (ms)", f"{stall:.1f}"))
    rows.append(("pending edits after refresh()", str(index.delta_size)))

    print(f"| measure (n={n:,}, seed={args.seed}) | value |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()

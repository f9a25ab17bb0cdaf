"""Import of 10,000 features over HTTP while a live client watches (issue 4).

    .venv/bin/python bench/import_bench.py [--n 10000] [--vertices 40] [--reps 3]

Starts `collab serve` in a child process (fresh data dir), registers a slide, connects a
pycrdt client to the slide room, POSTs one GeoJSON FeatureCollection of N polygons and reports
the HTTP answer time and the time until the live client holds all N. Valid, tissue-like polygons
(star-shaped outlines), so the figure is the import path, not repairs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from collab.auth import TokenAuthenticator
from tests.conftest import SECRET, ServerProcess
from tests.yclient import YClient


def outline(rng: random.Random, vertices: int) -> list[list[float]]:
    cx, cy, r = rng.uniform(2000, 98000), rng.uniform(2000, 78000), rng.uniform(50, 800)
    pts = []
    for k in range(vertices):
        a = 2 * math.pi * k / vertices
        rr = r * rng.uniform(0.7, 1.0)
        pts.append([round(cx + rr * math.cos(a), 2), round(cy + rr * math.sin(a), 2)])
    pts.append(pts[0])
    return pts


def collection(n: int, vertices: int, seed: int) -> dict:
    rng = random.Random(seed)
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [outline(rng, vertices)]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}}
        for _ in range(n)
    ]}


async def run_once(n: int, vertices: int, seed: int) -> tuple[float, float]:
    auth = TokenAuthenticator(SECRET)
    admin = auth.mint(user="bench", name="Bench", site="Roubaix", role="admin", slides="*", ttl=3600)
    proc = ServerProcess(Path(tempfile.mkdtemp()) / "data").start()
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, headers={"Authorization": f"Bearer {admin}"},
                                     timeout=120) as http:
            r = await http.post("/api/slides", json={"id": "s", "width": 100000, "height": 80000, "mpp": 0.25})
            r.raise_for_status()
            # Encoded before the clock starts: the figure is the server's, not the client's JSON.
            body = orjson.dumps(collection(n, vertices, seed))
            async with YClient(f"{proc.ws_url}/ws/slides/s?token={admin}") as live:
                t0 = time.perf_counter()
                r = await http.post(
                    "/api/slides/s/annotations", content=body, headers={"Content-Type": "application/json"}
                )
                t_http = time.perf_counter() - t0
                r.raise_for_status()
                await live.wait_for(lambda: len(live.annotations) == n, timeout=120)
                t_live = time.perf_counter() - t0
        return t_http, t_live
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--vertices", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results = [asyncio.run(run_once(args.n, args.vertices, seed)) for seed in range(args.reps)]
    http_s = [r[0] for r in results]
    live_s = [r[1] for r in results]
    print(f"import of {args.n} polygons ({args.vertices} vertices) over HTTP, {args.reps} runs")
    print(f"  HTTP answer: median {statistics.median(http_s):.2f} s  ({', '.join(f'{x:.2f}' for x in http_s)})")
    runs = ", ".join(f"{x:.2f}" for x in live_s)
    print(f"  live client holds all: median {statistics.median(live_s):.2f} s  ({runs})")


if __name__ == "__main__":
    main()

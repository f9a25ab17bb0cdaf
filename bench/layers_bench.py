"""Detection layers (issue 15): import rate and memory, stored size, viewport queries, counts.

    .venv/bin/python bench/layers_bench.py [--cells 1000000] [--queries 300] [--counts 100]

Writes a QuPath cell export (8-vertex cell outline + 8-vertex nucleus, three classes, QuPath's
measurements; tests/test_layers_data.py) of N cells to a temporary file, starts `collab serve` in
a child process (fresh data dir), and measures:
- the import: `POST /api/slides/{id}/layers` streaming the file from disk (with --gzip, then
  again gzip-compressed, `Content-Encoding: gzip`, as a second layer); cells/s over the
  request's wall time, and per CPU-second of the server; the server's peak RSS growth (VmHWM,
  reset through /proc/PID/clear_refs just before, minus VmRSS then); the slowest `GET /healthz`
  answered meanwhile (a probe every 50 ms on another connection: does the event loop stall?);
- stored bytes per cell: the blobs and rows of the layer in `<data>/layers.sqlite3`, and the
  file itself (after a WAL checkpoint);
- viewport queries: random 1920 x 1080 px boxes inside the cells' area, as the browser asks
  (binary with outlines) and as GeoJSON; p50 / p99 of the HTTP round trip;
- counts: `POST .../count` with random 5,000-vertex outlines (radius 2,000-8,000 px), smooth
  (hand-drawn-like) and zigzag (the worst case: see `outline`); p50 / p99 of the HTTP round trip.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from collab.auth import TokenAuthenticator
from tests.conftest import SECRET, ServerProcess
from tests.test_layers_data import export_pieces

AREA = (5000.0, 5000.0, 45000.0, 45000.0)  # 40,000 px square: ~1,600 px² a cell at 1M cells


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def outline(rng: np.random.Generator, n: int, *, zigzag: bool) -> dict:
    """A region outline of n vertices, radius 2,000-8,000 px: smooth lobes with a little jitter,
    as a hand-drawn tumour outline; or (zigzag) every other vertex 10 % further in, so that the
    outline's edge is a band hundreds of pixels wide (the worst case for a centroid count)."""
    cx, cy = rng.uniform(AREA[0] + 8000, AREA[2] - 8000), rng.uniform(AREA[1] + 8000, AREA[3] - 8000)
    r = rng.uniform(2000, 8000)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, 3)
    radii = r * (1 + 0.2 * np.sin(angles * 3 + phase[0]) + 0.1 * np.sin(angles * 7 + phase[1])
                 + 0.05 * np.sin(angles * 17 + phase[2]))
    radii *= np.where(np.arange(n) % 2 == 0, 1.0, 0.9) if zigzag else rng.uniform(0.998, 1.002, n)
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).round(2).tolist()
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--counts", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--export", type=Path, default=None,
                    help="an export this script wrote before (same --cells), instead of writing it again")
    ap.add_argument("--gzip", action="store_true", help="also import the export gzip-compressed, as a second layer")
    args = ap.parse_args()
    results: dict = {"cells": args.cells}

    with tempfile.TemporaryDirectory() as tmp:
        export = args.export or Path(tmp) / "cells.geojson"
        t0 = time.perf_counter()
        if not args.export:
            with export.open("wb") as f:
                for piece in export_pieces(args.cells, box=AREA):
                    f.write(piece)
        size = export.stat().st_size
        print(f"export: {args.cells:,} cells, {size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s",
              flush=True)
        results["export_mb"] = round(size / 1e6, 1)

        server = ServerProcess(Path(tmp) / "data").start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            admin = TokenAuthenticator(SECRET).mint(user="bench", name="Bench", site="Roubaix", role="admin",
                                                    slides="*", ttl=7200)
            headers = {"Authorization": f"Bearer {admin}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=3600) as http:
                r = http.post("/api/slides", json={"id": "bench", "title": "bench", "width": 100_000,
                                                   "height": 80_000, "mpp": 0.25,
                                                   "tiles": "https://example.invalid/x.dzi"})
                r.raise_for_status()
                results.update(import_layer(http, server, pid, export))
                layer = results.pop("layer")
                results.update(stored(Path(tmp) / "data" / "layers.sqlite3", layer, results["count"]))
                if args.gzip:  # the same export again, gzip-compressed (level 1), as a second layer
                    zipped = Path(tmp) / "cells.geojson.gz"
                    with export.open("rb") as f, gzip.open(zipped, "wb", compresslevel=1) as out:
                        shutil.copyfileobj(f, out, 1024 * 1024)
                    answer = import_layer(http, server, pid, zipped, {"Content-Encoding": "gzip"})
                    answer.pop("layer")
                    results["gzip"] = {"mb": round(zipped.stat().st_size / 1e6, 1), **answer}
                results.update(viewports(http, layer, args.queries))
                results.update(counts(http, layer, args.counts))
        finally:
            server.stop()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def import_layer(http: httpx.Client, server: ServerProcess, pid: int, export: Path,
                 headers: dict[str, str] | None = None) -> dict:
    before = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    probes: list[tuple[float, float]] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.base_url, timeout=120) as c:
            while not done.is_set():
                t = time.perf_counter()
                c.get("/healthz").raise_for_status()
                probes.append((t, (time.perf_counter() - t) * 1000))
                done.wait(0.05)

    def body():
        with export.open("rb") as f:
            while piece := f.read(1024 * 1024):
                yield piece

    prober = threading.Thread(target=probe)
    prober.start()
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    try:
        r = http.post("/api/slides/bench/layers", params={"name": "bench"}, content=body(), headers=headers)
    finally:
        done.set()
        prober.join()
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    r.raise_for_status()
    answer = r.json()
    peak = status_kb(pid, "VmHWM")
    waits = [ms for _t, ms in probes]
    out = {
        "layer": answer["id"], "count": answer["count"], "skipped": answer["skipped"]["count"],
        "import_s": round(seconds, 1), "import_cells_per_s": round(answer["count"] / seconds),
        # The server's own CPU (all its threads): what a busy machine does not change much.
        "import_server_cpu_s": round(cpu, 1), "import_cells_per_server_cpu_s": round(answer["count"] / cpu),
        "rss_before_mb": round(before / 1024, 1), "peak_rss_growth_mb": round((peak - before) / 1024, 1),
        "healthz_ms_during_import": {"p50": round(pct(waits, 50), 1), "p99": round(pct(waits, 99), 1),
                                     "max": round(max(waits, default=0), 1), "n": len(waits)},
    }
    print(f"import: {out}", flush=True)
    return out


def stored(path: Path, layer: str, count: int) -> dict:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    blobs, rows = db.execute(
        "SELECT sum(length(points) + length(shapes)), count(*) FROM chunks WHERE layer_id = ?", (layer,)
    ).fetchone()
    db.close()
    file_bytes = path.stat().st_size
    out = {"chunks": rows, "blob_bytes_per_cell": round(blobs / count, 1),
           "file_bytes_per_cell": round(file_bytes / count, 1)}
    print(f"stored: {out}", flush=True)
    return out


def viewports(http: httpx.Client, layer: str, n: int) -> dict:
    rng = np.random.default_rng(3)
    url = f"/api/slides/bench/layers/{layer}/objects"
    http.get(url, params={"bbox": "0,0,10,10"}).raise_for_status()  # the index is loaded once
    out: dict = {}
    for name, extra in (("binary_outlines", {"format": "binary", "detail": "outlines"}), ("geojson", {})):
        times, sizes, objects = [], [], []
        for _ in range(n):
            x, y = rng.uniform(AREA[0], AREA[2] - 1920), rng.uniform(AREA[1], AREA[3] - 1080)
            t = time.perf_counter()
            r = http.get(url, params={"bbox": f"{x:.0f},{y:.0f},{x + 1920:.0f},{y + 1080:.0f}", **extra})
            times.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            sizes.append(len(r.content))
            if name == "geojson":
                objects.append(len(r.json()["features"]))
        out[f"viewport_{name}_ms"] = {"p50": round(pct(times, 50), 1), "p99": round(pct(times, 99), 1)}
        out[f"viewport_{name}_kb"] = round(statistics.mean(sizes) / 1024, 1)
        if objects:
            out["viewport_objects_mean"] = round(statistics.mean(objects))
    print(f"viewports: {out}", flush=True)
    return out


def counts(http: httpx.Client, layer: str, n: int) -> dict:
    url = f"/api/slides/bench/layers/{layer}/count"
    out: dict = {}
    for name, zigzag in (("smooth", False), ("zigzag", True)):
        rng = np.random.default_rng(4)
        times, totals = [], []
        for _ in range(n):
            body = {"geometry": outline(rng, 5000, zigzag=zigzag)}
            t = time.perf_counter()
            r = http.post(url, json=body)
            times.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            totals.append(r.json()["total"])
        out[f"count_5000_vertices_{name}_ms"] = {"p50": round(pct(times, 50), 1), "p99": round(pct(times, 99), 1)}
        out[f"count_{name}_cells_mean"] = round(statistics.mean(totals))
    print(f"counts: {out}", flush=True)
    return out


if __name__ == "__main__":
    main()

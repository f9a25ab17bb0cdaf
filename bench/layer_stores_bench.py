"""Detection layers in SQLite and in PostgreSQL, on the same export: import rate, bytes a cell on
disk, viewport queries and counts (issue 15: "in SQLite and in PostgreSQL alike").

    .venv/bin/python bench/layer_stores_bench.py [--cells 200000] [--runs 5] [--queries 200] [--counts 50]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--out bench/results/layer-stores.json]

Writes one QuPath cell export (tests/test_layers_data.py) to a temporary file, then for each run
and each store, interleaved (sqlite, postgres, sqlite, ...), starts a fresh `collab serve` child
(a fresh --data; for PostgreSQL a fresh database created beside the one --database-url names, and
dropped after) and measures, with bench/layers_bench.py's functions:
- the import: cells/s over the request's wall time (parse + store + regroup + index load);
- bytes a cell on disk: SQLite's layers.sqlite3 after a WAL checkpoint; PostgreSQL's
  pg_total_relation_size of `layer_chunks` and `layers` (heap, TOAST, indexes);
- viewport queries (binary with outlines, GeoJSON) and 5,000-vertex counts: p50 / p99.
Prints the median and range over the runs of each figure, per store, and the load average of
the machine before each run (other processes share its 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers_bench import AREA, counts, import_layer, stored, viewports

from collab.auth import TokenAuthenticator
from tests.conftest import SECRET, ServerProcess
from tests.test_layers_data import export_pieces


async def _admin(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def one_run(store: str, export: Path, tmp: Path, admin_url: str, queries: int, n_counts: int) -> dict[str, Any]:
    data = tmp / f"{store}-{secrets.token_hex(3)}" / "data"
    database = None
    extra: tuple[str, ...] = ()
    if store == "postgres":
        database = f"collab_bench_{secrets.token_hex(5)}"
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{database}"'))
        extra = ("--database-url", f"{admin_url.rpartition('/')[0]}/{database}")
    server = ServerProcess(data, *extra).start()
    try:
        assert server.proc is not None
        admin = TokenAuthenticator(SECRET).mint(user="bench", name="Bench", site="Roubaix", role="admin",
                                                slides="*", ttl=7200)
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin}"},
                          timeout=3600) as http:
            http.post("/api/slides", json={"id": "bench", "title": "bench", "width": 100_000, "height": 80_000,
                                           "mpp": 0.25, "tiles": "https://example.invalid/x.dzi"}).raise_for_status()
            out = import_layer(http, server, server.proc.pid, export)
            layer = out.pop("layer")
            if database is None:
                out.update(stored(data / "layers.sqlite3", layer, out["count"]))
            else:
                url = extra[1]
                relations = asyncio.run(_admin(url, "SELECT pg_total_relation_size('layer_chunks')"
                                                    " + pg_total_relation_size('layers')"))
                out["file_bytes_per_cell"] = round(relations / out["count"], 1)
            out.update(viewports(http, layer, queries))
            out.update(counts(http, layer, n_counts))
        return out
    finally:
        server.stop()
        if database is not None:
            asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


FIGURES = [
    ("import_cells_per_s", lambda r: r["import_cells_per_s"]),
    ("bytes_per_cell_on_disk", lambda r: r["file_bytes_per_cell"]),
    ("viewport_binary_p50_ms", lambda r: r["viewport_binary_outlines_ms"]["p50"]),
    ("viewport_binary_p99_ms", lambda r: r["viewport_binary_outlines_ms"]["p99"]),
    ("viewport_geojson_p50_ms", lambda r: r["viewport_geojson_ms"]["p50"]),
    ("viewport_geojson_p99_ms", lambda r: r["viewport_geojson_ms"]["p99"]),
    ("count_smooth_p50_ms", lambda r: r["count_5000_vertices_smooth_ms"]["p50"]),
    ("count_smooth_p99_ms", lambda r: r["count_5000_vertices_smooth_ms"]["p99"]),
    ("count_zigzag_p50_ms", lambda r: r["count_5000_vertices_zigzag_ms"]["p50"]),
    ("count_zigzag_p99_ms", lambda r: r["count_5000_vertices_zigzag_ms"]["p99"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--counts", type=int, default=50)
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="a database to connect to while creating and dropping one per run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
    loads: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "cells.geojson"
        with export.open("wb") as f:
            for piece in export_pieces(args.cells, box=AREA):
                f.write(piece)
        print(f"export: {args.cells:,} cells, {export.stat().st_size / 1e6:.0f} MB", flush=True)
        for run in range(args.runs):
            for store in ("sqlite", "postgres") if run % 2 == 0 else ("postgres", "sqlite"):
                load = Path("/proc/loadavg").read_text().split()[:3]
                loads.append(" ".join(load))
                t = time.perf_counter()
                result = one_run(store, export, Path(tmp), args.database_url, args.queries, args.counts)
                runs[store].append(result)
                print(f"run {run + 1} {store} (load {' '.join(load)}, {time.perf_counter() - t:.0f} s): "
                      f"{result['import_cells_per_s']} cells/s, {result['file_bytes_per_cell']} B/cell", flush=True)
    summary: dict[str, Any] = {"cells": args.cells, "runs": args.runs, "loadavg_before_runs": loads}
    for store, results in runs.items():
        summary[store] = {
            name: {"median": statistics.median(values), "min": min(values), "max": max(values)}
            for name, get in FIGURES for values in [[get(r) for r in results]]
        }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Cost of reading an update's structure before pycrdt applies it (issue 10): µs per update.

Every client update a room receives goes through `collab.live.updates.struct_ranges` (pure
Python: the client ids it writes for, and a well-formedness read of its structs and delete set)
before pycrdt applies it. This times that read alone, on exactly the updates a fan50 writer of the
shared harness sends (bench/fan50_updates.mjs: same seeded generator, 50-vertex polygons as plain
JSON values), next to what pycrdt's own `apply_update` of the same update costs, for scale.

    .venv/bin/python bench/update_read_bench.py [--updates 2000] [--vertices 50] [--runs 5]

Each run times every update once per call (perf_counter_ns around one call), after a warm-up
pass; the cyclic GC is left on, as in the server. Prints p50 / p99 / mean per run and the
median and range over runs, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from pycrdt import Doc

from collab.live.updates import struct_ranges

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"  # run.sh setup installs the harness (and yjs) here


def fan50_updates(n: int, vertices: int) -> list[bytes]:
    out = WORK / f"fan50-updates-{n}-{vertices}.bin"
    if not out.exists():
        if not (WORK / "node_modules" / "yjs").exists():
            sys.exit("yjs is not installed under bench/work: run `bench/run.sh setup` first")
        # ESM resolves 'yjs' next to the script, so it runs from a copy in bench/work.
        script = WORK / "fan50_updates.mjs"
        script.write_bytes((BENCH / "fan50_updates.mjs").read_bytes())
        subprocess.run(["node", str(script), str(n), str(vertices), str(out)], cwd=WORK, check=True)
    data, updates, i = out.read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack_from("<I", data, i)
        updates.append(data[i + 4:i + 4 + length])
        i += 4 + length
    return updates


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def time_each(fn, updates: list[bytes]) -> list[float]:
    """µs of one call per update."""
    out = []
    for u in updates:
        t0 = time.perf_counter_ns()
        fn(u)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--vertices", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    updates = fan50_updates(a.updates, a.vertices)
    sizes = [len(u) for u in updates]
    print(f"{len(updates)} updates, {statistics.mean(sizes):.0f} bytes mean ({min(sizes)}-{max(sizes)})")
    time_each(struct_ranges, updates)  # warm-up
    rows = []
    for run in range(1, a.runs + 1):
        read = time_each(struct_ranges, updates)
        doc = Doc()  # applies in order, as a room does: each update extends the writer's clock
        apply = time_each(doc.apply_update, updates)
        row = {"run": run,
               "struct_ranges_us": {"p50": pct(read, 0.5), "p99": pct(read, 0.99), "mean": statistics.mean(read)},
               "apply_update_us": {"p50": pct(apply, 0.5), "p99": pct(apply, 0.99), "mean": statistics.mean(apply)}}
        rows.append(row)
        r, p = row["struct_ranges_us"], row["apply_update_us"]
        print(f"run {run}: struct_ranges p50 {r['p50']:.1f} p99 {r['p99']:.1f} mean {r['mean']:.1f} µs; "
              f"pycrdt apply_update p50 {p['p50']:.1f} p99 {p['p99']:.1f} mean {p['mean']:.1f} µs")
    summary = {}
    for what in ("struct_ranges_us", "apply_update_us"):
        for q in ("p50", "p99", "mean"):
            vals = [row[what][q] for row in rows]
            summary[f"{what}.{q}"] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    for k, v in summary.items():
        print(f"{k}: {v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f})")
    print(json.dumps({"updates": len(updates), "bytes_mean": statistics.mean(sizes), "vertices": a.vertices,
                      "runs": rows, "summary": summary}))


if __name__ == "__main__":
    main()

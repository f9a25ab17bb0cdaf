"""Two commits of run.sh's experiments phase, side by side: medians, ranges and ratios (markdown).

    .venv/bin/python bench/commit_table.py RESULTS.jsonl OLD NEW [SCENARIO]

Rows: for each variant prefix (collab-, collab-nogeom-, ...) that both commits have, p50 and p99
latency, server CPU per delivery and CPU %, lost; median over reps and (min-max). The ratio
NEW/OLD is of the medians, and also the median of the per-rep ratios (each rep ran both commits
back to back, in alternating order).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

METRICS = [
    ("p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
    ("server CPU %", lambda r: r["server"]["cpu_pct"]),
    ("lost", lambda r: r["deliveries"]["lost"]),
    ("foreign CPU % (mean)", lambda r: r["bench_foreign_cpu_pct"]["mean"]),
]


def main() -> None:
    path, old, new = sys.argv[1:4]
    scenario = sys.argv[4] if len(sys.argv) > 4 else "fan50"
    by: dict[str, dict[int, dict]] = defaultdict(dict)
    for line in open(path):
        if line.startswith("{"):
            d = json.loads(line)
            name, sc, _ = d["label"].split(":", 2)
            if sc == scenario:
                by[name][d["bench_rep"]] = d
    prefixes = sorted({n[: -len(old)] for n in by if n.endswith(old)} & {n[: -len(new)] for n in by if n.endswith(new)})
    print(f"| variant | metric | {old}: median (range) | {new}: median (range) | {new}/{old} medians "
          f"| per-rep ratio median (range) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in prefixes:
        a, b = by[p + old], by[p + new]
        for label, fn in METRICS:
            va, vb = [fn(a[k]) for k in sorted(a)], [fn(b[k]) for k in sorted(b)]
            ma, mb = statistics.median(va), statistics.median(vb)
            ratio = f"{mb / ma:.2f}" if ma else "-"
            reps = [fn(b[k]) / fn(a[k]) for k in sorted(set(a) & set(b)) if fn(a[k])]
            per = "-"
            if reps and label != "lost":
                per = f"{statistics.median(reps):.2f} ({min(reps):.2f}-{max(reps):.2f})"
            print(f"| {p.rstrip('-')} | {label} | {ma:.2f} ({min(va):.2f}-{max(va):.2f}) "
                  f"| {mb:.2f} ({min(vb):.2f}-{max(vb):.2f}) | {ratio} | {per} |")
    print("\nreps: " + ", ".join(f"{n}: {len(v)}" for n, v in sorted(by.items())))


if __name__ == "__main__":
    main()

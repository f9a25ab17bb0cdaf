#!/usr/bin/env python3
"""Issue 14 tables: medians and ranges per variant from bench/run.sh experiments output.

    bench/issue14_table.py bench/results/issue14.jsonl [more.jsonl ...]

Rows: scenario x metric; columns: each variant's median [min-max] over its reps, then the
ratio of each collab variant's median to yws-mem's (yws-mem-ymap for the -ymap variants).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

METRICS = {
    "fan50": [("server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
              ("p50 ms", lambda r: r["latency_ms"]["p50"]), ("p99 ms", lambda r: r["latency_ms"]["p99"])],
    "aware30": [("server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
                ("p50 ms", lambda r: r["latency_ms"]["p50"]), ("p99 ms", lambda r: r["latency_ms"]["p99"])],
    "rooms200": [("server µs/write", lambda r: r["server"]["cpu_us_per_write"]),
                 ("server CPU %", lambda r: r["server"]["cpu_pct"]),
                 ("p50 ms", lambda r: r["latency_ms"]["p50"]), ("p99 ms", lambda r: r["latency_ms"]["p99"])],
    "cold5000": [("join after unload ms", lambda r: r["cold_join_after_unload"]["all_present_ms"]),
                 ("join p50 ms (loaded)", lambda r: r["cold_join"]["all_present_ms"]["p50"])],
}


def main() -> None:
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    foreign: dict[str, list[float]] = defaultdict(list)
    variants: list[str] = []
    for path in sys.argv[1:]:
        for line in open(path):
            r = json.loads(line)
            name, scenario = r["label"].split(":")[:2]
            if name not in variants:
                variants.append(name)
            foreign[scenario].append(r.get("bench_foreign_cpu_pct", {}).get("mean") or 0)
            for metric, get in METRICS.get(scenario, []):
                try:
                    values[(scenario, metric, name)].append(float(get(r)))
                except (KeyError, TypeError):
                    pass
    print("| scenario | metric | " + " | ".join(variants) + " | ratios to y-websocket |")
    print("| --- | --- |" + " --- |" * (len(variants) + 1))
    for scenario, metrics in METRICS.items():
        for metric, _get in metrics:
            cells, medians = [], {}
            for v in variants:
                xs = values.get((scenario, metric, v))
                if not xs:
                    cells.append("")
                    continue
                medians[v] = statistics.median(xs)
                cells.append(f"{medians[v]:.1f} [{min(xs):.1f}-{max(xs):.1f}] n={len(xs)}")
            if not medians:
                continue
            ratios = []
            for v, m in medians.items():
                if v.startswith("collab"):
                    peer = "yws-mem-ymap" if "-ymap" in v else "yws-mem"
                    if medians.get(peer):
                        ratios.append(f"{v}: {m / medians[peer]:.2f}x")
            print(f"| {scenario} | {metric} | " + " | ".join(cells) + " | " + "; ".join(ratios) + " |")
    for scenario, xs in foreign.items():
        print(f"\nforeign CPU during {scenario}: mean {statistics.mean(xs):.0f} % of a core (max of means {max(xs):.0f} %)", end="")
    print()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""collab / yws-mem ratios from bench/results/*.jsonl (run.sh output), as markdown.

    bench/ratios.py [--a collab] [--b yws-mem] [--max-foreign PCT] FILE.jsonl ...

Every repetition is listed with the CPU % of one core that processes outside the bench used during
it (other people's tests share the machine); the ratio is median(a) / median(b) over the reps whose
foreign CPU is at most --max-foreign (all reps when none qualify, marked with *).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

METRICS = [
    ("fan2", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("fan2", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("fan10", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("fan10", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("fan50", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("fan50", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("fan50", "server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
    ("fan50-np", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("fan50-np", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("fan50-np", "server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
    ("aware30", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("aware30", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("aware30", "frames/s into clients", lambda r: r["wire_per_s"]["in"]["msgs"]),
    ("thru", "writes/s", lambda r: r["writes"]["per_s"]),
    ("thru", "server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
    ("thru", "lost", lambda r: r["deliveries"]["lost"]),
    ("thru-closed", "writes/s", lambda r: r["writes"]["per_s"]),
    ("thru-closed", "p50 ms", lambda r: r["latency_ms"]["p50"]),
    ("thru-closed", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("thru-closed", "server CPU %", lambda r: r["server"]["cpu_pct"]),
    ("thru-closed", "server µs/delivery", lambda r: r["server"]["cpu_us_per_delivery"]),
    ("rooms200", "p99 ms", lambda r: r["latency_ms"]["p99"]),
    ("rooms200", "RSS idle MiB", lambda r: r["server"]["rss_kb_start"] / 1024),
    ("rooms200", "RSS after connect MiB", lambda r: r["server"]["rss_kb_after_connect"] / 1024),
    ("rooms200", "peak RSS MiB", lambda r: r["server"]["rss_kb_peak_sampled"] / 1024),
    ("cold5000", "join p50 ms (doc loaded)", lambda r: r["cold_join"]["all_present_ms"]["p50"]),
    ("cold5000", "join after unload ms", lambda r: r["cold_join_after_unload"]["all_present_ms"]),
    ("cold5000", "client-only apply ms", lambda r: r["preload"]["client_apply_only_ms"]),
    ("cold5000", "preload 5000 s", lambda r: r["preload"]["seconds"][0]),
]


def fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--a", default="collab")
    ap.add_argument("--b", default="yws-mem")
    ap.add_argument("--max-foreign", type=float, default=50.0)
    ap.add_argument("--scenarios", default="")
    a = ap.parse_args()
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in a.files:
        for line in open(path):
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            parts = d.get("label", "").split(":")
            if len(parts) >= 3:
                by[(parts[0], parts[1])].append(d)
    only = set(a.scenarios.split(",")) - {""}
    print(f"| scenario | metric | {a.a} (per rep) | {a.b} (per rep) | ratio {a.a}/{a.b} (medians) |")
    print("| --- | --- | --- | --- | --- |")
    for sc, name, fn in METRICS:
        if only and sc not in only:
            continue
        cols, meds, starred = [], [], False
        for peer in (a.a, a.b):
            rows = sorted(by.get((peer, sc), []), key=lambda r: r.get("bench_rep", 0))
            vals = []
            for r in rows:
                try:
                    v = float(fn(r))
                except (KeyError, TypeError, IndexError, ValueError):
                    continue
                fc = (r.get("bench_foreign_cpu_pct") or {}).get("mean")
                vals.append((v, fc))
            cols.append(" / ".join(f"{fmt(v)} [{fmt(fc) if fc is not None else '?'}]" for v, fc in vals) or "–")
            quiet = [v for v, fc in vals if fc is not None and fc <= a.max_foreign]
            if not quiet and vals:
                quiet, starred = [v for v, _ in vals], True
            meds.append(statistics.median(quiet) if quiet else None)
        if meds[0] is None and meds[1] is None:
            continue
        ratio = f"{meds[0] / meds[1]:.2f}" if meds[0] is not None and meds[1] else "–"
        print(f"| {sc} | {name} | {cols[0]} | {cols[1]} | {ratio}{' *' if starred else ''} |")
    print()
    print(f"[x] = CPU % of one core used by other processes during that rep. Ratio = median over reps with "
          f"[x] <= {a.max_foreign:.0f} (* = none qualified, all reps used).")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The web client's own writes under load: one reviewer's page in Chromium draws a rectangle
every 200 ms (5/s, with the mouse, as a pathologist does) while 20 viewers follow the slide.

    bench/web_writes_bench.py [--collab BIN] [--seconds 20] [--viewers 20] [--out FILE.jsonl] [--label L]

`--collab` is the `collab` executable to run (default: this checkout's .venv); e.g.
bench/work/venv-8f742ae/bin/collab for an earlier commit built by bench/run.sh setup, which also
serves that commit's web bundle. The viewers are pycrdt y-websocket clients (tests/yclient.py) in
this process. Reported per run (one JSON line): server CPU per write (utime + stime of the server
process over the drawing window), correcting transactions the server wrote (from
collab_corrections_total), and the latency from the page's `created` stamp to each viewer's
receipt of the annotation (p50/p99; same machine clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from collab.slides.demo import DEMO_ID  # noqa: E402
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT  # noqa: E402
from tests.yclient import YClient  # noqa: E402

SECRET = "web-writes-bench"
READY = "() => window.collab && window.collab.state().ready && window.collab.state().connection === 'connected'"


def token(collab: str, user: str, role: str) -> str:
    env = {**os.environ, "COLLAB_SECRET": SECRET}
    out = subprocess.run([collab, "token", "--user", user, "--name", user, "--site", "Roubaix", "--role", role,
                          "--slides", "*", "--ttl", "3600"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def corrections(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        found = re.search(r"^collab_corrections_total (\S+)$", r.read().decode(), re.M)
    return float(found.group(1)) if found else float("nan")  # nan: a commit without the metric


class Viewers:
    """`n` y-websocket clients on the slide, in an event loop of their own; each notes when
    every annotation id first appears."""

    def __init__(self, url: str, n: int) -> None:
        self.seen: list[dict[str, float]] = [{} for _ in range(n)]
        self._maps: list[object] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients = asyncio.run_coroutine_threadsafe(self._connect(url, n), self.loop).result(60)

    async def _connect(self, url: str, n: int) -> list[YClient]:
        clients = []
        for i in range(n):
            c = await YClient(url).connect()
            annotations = c.annotations
            annotations.observe(self._noter(self.seen[i]))
            self._maps.append(annotations)  # the subscription lives as long as this Map object
            clients.append(c)
        return clients

    @staticmethod
    def _noter(seen: dict[str, float]):
        def note(event) -> None:  # one parameter: pycrdt passes the event only
            now = time.time() * 1000
            for key in event.keys:
                seen.setdefault(str(key), now)
        return note

    def close(self) -> None:
        async def close_all() -> None:
            for c in self.clients:
                await c.close()
        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def run(collab: str, seconds: float, viewers: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="web-writes-"))
    env = {**os.environ, "COLLAB_SECRET": SECRET, "COLLAB_MAX_CONNECTIONS_PER_USER": "100"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([collab, "serve", "--demo", "--host", "127.0.0.1", "--port", str(port), "--data",
                               str(data), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    base = f"http://127.0.0.1:{port}"
    try:
        viewer_token = token(collab, "viewer", "viewer")
        group = Viewers(f"ws://127.0.0.1:{port}/ws/slides/{DEMO_ID}?token={viewer_token}", viewers)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.goto(f"{base}/app/?slide={DEMO_ID}&token={token(collab, 'reviewer', 'reviewer')}")
            page.wait_for_function(READY, timeout=60_000)
            box = page.locator("[data-testid=viewer]").bounding_box()
            page.click("[data-testid=tool-rectangle]")
            time.sleep(2)  # the page's own start-up work out of the window
            before_cpu, before_corr, started = cpu_ticks(server.pid), corrections(base), time.monotonic()
            n = 0
            while time.monotonic() - started < seconds:
                x = box["x"] + 40 + (n * 37) % (box["width"] - 120)
                y = box["y"] + 40 + (n * 53) % (box["height"] - 120)
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 40, y + 30, steps=4)
                page.mouse.up()
                n += 1
                time.sleep(max(0.0, started + n * 0.2 - time.monotonic()))
            page.wait_for_timeout(1500)  # the last writes reach everyone
            elapsed = time.monotonic() - started
            cpu = (cpu_ticks(server.pid) - before_cpu) / os.sysconf("SC_CLK_TCK")
            written = corrections(base) - before_corr
            created = page.evaluate("""() => Object.fromEntries(Object.entries(
                window.collab.doc.getMap('annotations').toJSON()).map(([id, a]) => [id, a.created]))""")
            browser.close()
        latencies = [seen[k] - c for seen in group.seen for k, c in created.items() if k in seen]
        group.close()
        latencies.sort()
        return {
            "writes": len(created), "drawn": n, "seconds": round(elapsed, 1), "viewers": viewers,
            "server_cpu_ms_per_write": round(cpu * 1000 / max(1, len(created)), 2),
            "server_cpu_pct": round(cpu / elapsed * 100, 1),
            "corrections": written,
            "deliveries": len(latencies), "expected_deliveries": len(created) * viewers,
            "latency_ms": {"p50": round(statistics.median(latencies), 1),
                           "p99": round(latencies[int(0.99 * (len(latencies) - 1))], 1)} if latencies else None,
        }
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collab", default=str(ROOT / ".venv" / "bin" / "collab"))
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--label", default="")
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"label": args.label or args.collab, **run(args.collab, args.seconds, args.viewers)}
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()

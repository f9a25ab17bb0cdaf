"""Detection layers in the browser (issue 15): frame times while panning over a 1M-cell layer.

    .venv/bin/python bench/layers_browser_bench.py [--cells 1000000] [--seconds 10] [--out FILE]

Starts `collab serve --demo` (fresh data dir), imports a generated QuPath cell export of N cells
(tests/test_layers_data.py: 8-vertex outline + nucleus, three classes) spread over the whole demo
slide (20,480 x 15,360 px), then opens the web client's real page in Debian's Chromium (headless,
`--disable-gpu`: software rendering, as the browser tests run it; Playwright with
executable_path) at 1280 x 720 and, for each scenario, pans the view programmatically every
animation frame for --seconds:
- low zoom: the whole slide in view (the layer's centroids, up to all N of them), panned by
  2 % of the view per frame;
- high zoom: 1 screen px per slide px (outlines), panned by 3 screen px per frame, over the cells.
It records the requestAnimationFrame intervals (what a user sees as smoothness) and the layer
canvas's own draw times (LayerView.draw, instrumented in the page), and reports p50 / p95 / max;
before the pan, the time of 5 full renders of the layer's cached bitmap (what a zoom step or a
pan past the bitmap's margin costs);
then the same pan with the layer hidden (the slide's tiles and the rest of the page alone).
The data the view needs is fetched first and the pan stays within what was fetched (the client
fetches half a view more on each side), so the figures are drawing, not network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from collab.auth import TokenAuthenticator
from collab.slides.demo import DEFAULT_HEIGHT, DEFAULT_WIDTH, DEMO_ID
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
from tests.conftest import SECRET, ServerProcess
from tests.test_layers_data import export_pieces

READY = ("() => window.collab && window.collab.state().ready"
         " && window.collab.state().connection === 'connected'")

# In the page: instrument LayerView.draw, then pan every animation frame for `ms` and collect
# the frame intervals. `step` is the pan per frame in slide px (x); the pan reverses at `span`.
PAN = """async ([ms, step, span]) => {
  const view = window.collab.view
  const lv = view.layers
  const viewport = view.viewer.viewport
  const item = view.item
  // A full render of the cached bitmap (what a zoom step, or a pan past its margin, costs).
  const renders = []
  for (let i = 0; i < 5; i++) {
    lv.version++
    const t = performance.now(); lv.draw(); renders.push(performance.now() - t)
  }
  const draws = []
  const draw = lv.draw
  lv.draw = function () { const t = performance.now(); draw.call(this); draws.push(performance.now() - t) }
  const frames = []
  let moved = 0; let dir = 1
  await new Promise((resolve) => {
    const start = performance.now(); let last = start
    const tick = (now) => {
      frames.push(now - last); last = now
      if (now - start >= ms) { resolve(); return }
      if (Math.abs(moved + dir * step) > span) dir = -dir
      moved += dir * step
      const a = item.imageToViewportCoordinates(0, 0); const b = item.imageToViewportCoordinates(dir * step, 0)
      const center = viewport.getCenter(true)
      center.x += b.x - a.x
      viewport.panTo(center, true)
      requestAnimationFrame(tick)
    }
    requestAnimationFrame(tick)
  })
  lv.draw = draw
  return { frames: frames.slice(1), draws, renders, drawn: Object.values(lv.stats.drawn).reduce((s, n) => s + n, 0),
           detail: lv.stats.detail, requests: lv.stats.requests }
}"""


SHOW = "on => { const lv = window.collab.view.layers; lv.setLayer(lv.layers[0].id, on) }"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": round(max(values, default=float("nan")), 1),
            "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict = {"cells": args.cells, "chromium": CHROMIUM, "chromium_args": CHROMIUM_ARGS, "viewport": VIEWPORT}
    auth = TokenAuthenticator(SECRET)
    admin = auth.mint(user="bench", name="Bench", site="Roubaix", role="admin", slides="*", ttl=7200)
    viewer = auth.mint(user="v", name="Viewer", site="Roubaix", role="viewer", slides=[DEMO_ID], ttl=7200)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", "--demo").start(timeout=300)
        try:
            with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {admin}"},
                              timeout=3600) as http:
                box = (0.0, 0.0, float(DEFAULT_WIDTH), float(DEFAULT_HEIGHT))
                t0 = time.perf_counter()
                r = http.post(f"/api/slides/{DEMO_ID}/layers", params={"name": "bench"},
                              content=export_pieces(args.cells, box=box))
                r.raise_for_status()
                results["import"] = {"count": r.json()["count"], "seconds": round(time.perf_counter() - t0, 1)}
                print(f"import: {results['import']}", flush=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    results["browser_version"] = browser.version
                    page = browser.new_context(viewport=VIEWPORT).new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"{server.base_url}/app/?slide={DEMO_ID}&token={viewer}")
                    page.wait_for_function(READY, timeout=60_000)
                    page.wait_for_function("() => window.collab.state().layers.layers.length === 1", timeout=60_000)
                    scenarios = {
                        # The whole slide; pans of 2 % of its width a frame, within a quarter of it.
                        "low_zoom_points": ({"x": 0, "y": 0, "width": DEFAULT_WIDTH, "height": DEFAULT_HEIGHT},
                                            DEFAULT_WIDTH * 0.02, DEFAULT_WIDTH * 0.25),
                        # 1280 x 720 slide px (scale 1) in the middle; 3 px a frame within 600 px.
                        "high_zoom_outlines": ({"x": 9600, "y": 7300, "width": 1280, "height": 720}, 3.0, 600.0),
                    }
                    for name, (vp, step, span) in scenarios.items():
                        page.evaluate("v => window.collab.view.setViewport({...v, rotation: 0}, {immediately: true})",
                                      vp)
                        # Everything the pan will show is fetched before it starts (see the docstring).
                        page.wait_for_function(
                            "() => { const s = window.collab.state().layers;"
                            " return s.loaded.length === 1 && Object.keys(s.drawn).length > 0 }", timeout=120_000)
                        page.wait_for_timeout(1500)
                        out = page.evaluate(PAN, [args.seconds * 1000, step, span])
                        # The same pan with the layer hidden: what the slide's tiles and the rest cost.
                        page.evaluate(SHOW, False)
                        page.wait_for_timeout(500)
                        bare = page.evaluate(PAN, [args.seconds * 1000, step, span])
                        page.evaluate(SHOW, True)
                        results[name] = {"frame_ms": summary(out["frames"]), "layer_draw_ms": summary(out["draws"]),
                                         "full_render_ms": summary(out["renders"]),
                                         "frame_ms_layer_hidden": summary(bare["frames"]),
                                         "cells_drawn": out["drawn"], "detail": out["detail"],
                                         "requests": out["requests"]}
                        print(f"{name}: {results[name]}", flush=True)
                    results["page_errors"] = errors
                finally:
                    browser.close()
        finally:
            server.stop()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

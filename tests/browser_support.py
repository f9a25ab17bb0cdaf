"""Shared by the browser tests: a `collab serve --demo` process and a Playwright Chromium.

Loaded as a pytest plugin (see conftest.py), so its fixtures are available to every test module.
Chromium is Debian's (`apt-get install chromium`; `.ci/run` installs it); set COLLAB_CHROMIUM to
use another binary. Without one the browser tests are skipped locally but fail under CI, where
a skip would hide that nothing was tested.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COLLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 720}
TILES = "() => window.collab.state().tilesLoaded"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `collab serve --demo` process (the demo slide is generated before it answers)."""
    assert (ROOT / "collab" / "static" / "app" / "index.html").is_file(), \
        "the web bundle is missing: cd web && npm ci && npm run build"
    proc = ServerProcess(tmp_path_factory.mktemp("browser") / "data", "--demo")
    try:
        proc.start(timeout=180)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


SESSION_READY = """() => {
    const c = window.collab
    if (!c || !c.session) return false
    const s = c.state()
    return s.session.synced && s.session.connection === 'connected' && s.ready
        && s.connection === 'connected' && s.slide && s.slide.id === s.session.viewSlide
}"""


class BrowserPage:
    """One user in one browser context, on a collab page opened at `path` (after the base URL)."""

    artifacts = ROOT / "test-artifacts" / "browser"  # where screenshots go
    settle_timeout = 15_000.0  # ms

    def __init__(self, browser: Any, server: ServerProcess, path: str, ready: str, name: str) -> None:
        self.name = name
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(f"{server.base_url}{path}")
        self.page.wait_for_function(ready, timeout=30_000)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("window.collab.state()")

    def js(self, expr: str, arg: Any = None) -> Any:
        return self.page.evaluate(expr, arg)

    def client_xy(self, x: float, y: float) -> tuple[float, float]:
        """Slide pixels -> page pixels."""
        cx, cy = self.js("([x, y]) => window.collab.imageToClient(x, y)", [x, y])
        return cx, cy

    def testid(self, testid: str) -> Any:
        return self.page.locator(f"[data-testid={testid}]")

    def drag(self, dx: float, dy: float, steps: int = 8) -> None:
        x, y = self.viewer_center()
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + dx, y + dy, steps=steps)
        self.page.mouse.up()

    def draw_rectangle(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8) -> None:
        """Draw a rectangle with the rectangle tool, from one page point to another."""
        self.page.click("[data-testid=tool-rectangle]")
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        self.page.mouse.move(x1, y1, steps=steps)
        self.page.mouse.up()

    def viewer_center(self) -> tuple[float, float]:
        box = self.page.locator("[data-testid=viewer]").bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def settle(self, timeout: float | None = None) -> None:
        """Wait until the view stopped moving and every tile on screen is drawn."""
        self.page.wait_for_function(TILES, timeout=timeout or self.settle_timeout)
        self.page.wait_for_timeout(300)

    def screenshot(self, name: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / name
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()


def viewport_close(a: dict[str, float] | None, b: dict[str, float] | None, tol: float = 0.02) -> bool:
    """Same center (within tol of the width), same size (within tol) and same rotation."""
    if not a or not b:
        return False
    ca = (a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    cb = (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    w = max(a["width"], b["width"])
    rot = abs(((a["rotation"] - b["rotation"]) + 180) % 360 - 180)
    return (math.dist(ca, cb) <= tol * w and abs(a["width"] - b["width"]) <= tol * w
            and abs(a["height"] - b["height"]) <= tol * max(a["height"], b["height"]) and rot < 0.5)


def wait_until(fn, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

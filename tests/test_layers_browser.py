"""Detection layers in the web client (real Chromium against a real `collab serve --demo`):
cells drawn for the viewport with per-class toggles, and the cell counts of a selected outline
following an edit made in another page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import shapely

from collab.auth import TokenAuthenticator
from collab.slides.demo import DEMO_ID
from tests.browser_support import BrowserPage
from tests.conftest import SECRET, ServerProcess
from tests.test_layers_data import cell_features, export_bytes

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

READY = ("() => window.collab && window.collab.state().ready"
         " && window.collab.state().connection === 'connected'")
CELLS_BOX = (8000, 6000, 12000, 9000)


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    auth = TokenAuthenticator(SECRET)
    mint = auth.mint
    return {
        "admin": mint(user="adm", name="Admin", site="Roubaix", role="admin", slides="*", ttl=3600),
        "reviewer": mint(user="dr-r", name="Dr R", site="Roubaix", role="reviewer", slides=[DEMO_ID], ttl=3600),
        "viewer": mint(user="tr-m", name="Trainee M", site="Mouscron", role="viewer", slides=[DEMO_ID], ttl=3600),
    }


@pytest.fixture(scope="module")
def layer(server: ServerProcess, tokens: dict[str, str]) -> dict[str, Any]:
    cells = cell_features(3000, seed=11, box=CELLS_BOX)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {tokens['admin']}"},
                      timeout=60) as http:
        r = http.post(f"/api/slides/{DEMO_ID}/layers", params={"name": "HoVer-Net"}, content=export_bytes(cells))
        assert r.status_code == 201, r.text
    shapes = [shapely.geometry.shape(f["geometry"]) for f in cells]
    xy = np.array([(s.centroid.x, s.centroid.y) for s in shapes], np.float32).astype(np.float64)
    return {"id": r.json()["id"], "x": xy[:, 0], "y": xy[:, 1]}


def brute_total(layer: dict[str, Any], geometry: dict[str, Any]) -> int:
    return int(shapely.contains_xy(shapely.geometry.shape(geometry), layer["x"], layer["y"]).sum())


@pytest.fixture
def pages(browser: Any, server: ServerProcess, tokens: dict[str, str], layer: dict[str, Any]) -> Iterator[Any]:
    opened = []
    try:
        for role in ("reviewer", "viewer"):
            opened.append(BrowserPage(browser, server, f"/app/?slide={DEMO_ID}&token={tokens[role]}", READY, role))
        yield opened
        for p in opened:
            assert not p.errors, p.errors
    finally:
        for p in opened:
            p.close()


def drawn(page: BrowserPage) -> dict[str, int]:
    return page.state()["layers"]["drawn"]


def test_cells_drawn_for_the_viewport_and_class_toggles_hide_them(pages: Any, layer: dict[str, Any]) -> None:
    _reviewer, viewer = pages
    page = viewer.page
    page.wait_for_function("() => window.collab.state().layers.layers.length === 1", timeout=10_000)
    assert page.locator("[data-testid=layer] strong").inner_text() == "HoVer-Net"
    # Whole slide: points.
    page.wait_for_function("() => Object.keys(window.collab.state().layers.drawn).length === 3", timeout=10_000)
    assert viewer.state()["layers"]["detail"] == "points"
    assert sum(drawn(viewer).values()) == 3000
    # Close up on a corner of the cells: outlines, and only those in view.
    page.evaluate("() => window.collab.view.setViewport({x: 8000, y: 6000, width: 1200, height: 700, rotation: 0},"
                  " {immediately: true})")
    page.wait_for_function("() => window.collab.state().layers.detail === 'outlines'"
                           " && Object.keys(window.collab.state().layers.drawn).length === 3", timeout=10_000)
    assert 0 < sum(drawn(viewer).values()) < 1000
    # Hiding Tumor hides its cells only.
    page.locator("[data-testid=layer-class][data-class=Tumor]").uncheck()
    page.wait_for_function("() => !('Tumor' in window.collab.state().layers.drawn)", timeout=5_000)
    assert set(drawn(viewer)) == {"Lymphocyte", "Stroma"}
    page.locator("[data-testid=layer-class][data-class=Tumor]").check()
    page.wait_for_function("() => 'Tumor' in window.collab.state().layers.drawn", timeout=5_000)
    # Hiding the layer hides them all.
    page.locator("[data-testid=layer-toggle]").uncheck()
    page.wait_for_function("() => Object.keys(window.collab.state().layers.drawn).length === 0", timeout=5_000)
    viewer.screenshot("layers-viewer.png")


def test_count_panel_follows_an_edit_in_another_page(pages: Any, layer: dict[str, Any]) -> None:
    reviewer, viewer = pages
    first = {"type": "Polygon", "coordinates": [[[8500, 6500], [10000, 6500], [10000, 7800], [8500, 7800],
                                                 [8500, 6500]]]}
    ann_id = reviewer.js("g => window.collab.view.createAnnotation(g)", first)
    assert ann_id
    viewer.page.wait_for_function("id => !!window.collab.annotation(id)", arg=ann_id, timeout=5_000)
    viewer.js("id => window.collab.view.select(id)", ann_id)
    total = brute_total(layer, first)
    assert total > 0
    selector = f"[data-testid=cell-layer][data-layer='{layer['id']}']"
    viewer.page.wait_for_function(
        "([sel, n]) => { const el = document.querySelector(sel); return el && el.dataset.total === String(n) }",
        arg=[selector, total], timeout=5_000)
    fractions = viewer.page.locator(f"{selector} [data-testid=cell-class]").all_inner_texts()
    assert len(fractions) == 3 and all("%" in f for f in fractions)
    # The reviewer moves the outline: the viewer's panel follows.
    reviewer.js("id => window.collab.view.moveAnnotation(id, 1500, 900)", ann_id)
    moved = {"type": "Polygon", "coordinates": [[[x + 1500, y + 900] for x, y in first["coordinates"][0]]]}
    new_total = brute_total(layer, moved)
    assert new_total != total
    viewer.page.wait_for_function(
        "([sel, n]) => { const el = document.querySelector(sel); return el && el.dataset.total === String(n) }",
        arg=[selector, new_total], timeout=5_000)
    viewer.screenshot("layers-counts-viewer.png")

"""The web client in Chromium over a slide served from a real DICOMweb archive (Orthanc)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collab.auth import TokenAuthenticator
from collab.slides.demo import ensure_demo_slide
from tests.browser_support import BrowserPage
from tests.conftest import SECRET, ServerProcess
from tests.orthanc import running_orthanc

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

SLIDE = "pacs-browser"
READY = (
    "() => window.collab && window.collab.state().ready"
    " && window.collab.state().connection === 'connected'"
)


@pytest.fixture(scope="module")
def dicomweb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("dicom-browser")
    slide = ensure_demo_slide(root / "slides", width=6000, height=4400)
    with running_orthanc(root / "orthanc") as orthanc:
        study, series = orthanc.dicomize(slide.path, mpp=slide.mpp, width=slide.width, height=slide.height)
        proc = ServerProcess(root / "data")
        try:
            proc.start(timeout=60)
            admin = TokenAuthenticator(SECRET).mint(user="admin", name="Admin", site="Roubaix", role="admin",
                                                    slides="*", ttl=600)
            r = httpx.post(f"{proc.base_url}/api/slides", headers={"Authorization": f"Bearer {admin}"},
                           json={"id": SLIDE, "title": "From the archive",
                                 "dicomweb": {"url": orthanc.dicomweb, "study": study, "series": series}},
                           timeout=60)
            assert r.status_code == 201, r.text
            yield proc
        finally:
            proc.stop()


def test_a_dicomweb_slide_in_the_browser_tiles_load_and_drawing_works(
    browser: Any, dicomweb_server: ServerProcess
) -> None:
    token = TokenAuthenticator(SECRET).mint(user="dr-lefebvre", name="Dr Lefebvre", site="Roubaix",
                                            role="reviewer", slides=[SLIDE], ttl=600)
    page = BrowserPage(browser, dicomweb_server, f"/app/?slide={SLIDE}&token={token}", READY, "reviewer")
    try:
        page.settle(timeout=30_000)
        tiles = page.js(
            """name => performance.getEntriesByType('resource')
                .filter(e => e.name.includes(`/slides/${name}_files/`)).map(e => e.responseStatus)""",
            SLIDE,
        )
        assert tiles and all(status == 200 for status in tiles), tiles
        slide = page.state()["slide"]
        assert (slide["width"], slide["height"]) == (6000, 4400)

        # Draw a polygon with the mouse (G, clicks, double click): the server stores and measures it.
        before = page.state()["annotationCount"]
        page.page.keyboard.press("g")
        cx, cy = slide["width"] / 2, slide["height"] / 2
        shape = [(cx - 900, cy - 600), (cx + 800, cy - 700), (cx + 1000, cy + 600), (cx - 600, cy + 700)]
        clicks = [page.client_xy(x, y) for x, y in shape]
        for x, y in clicks:
            page.page.mouse.click(x, y)
        page.page.mouse.dblclick(*clicks[-1])
        page.page.wait_for_function("n => window.collab.state().annotationCount === n + 1", arg=before,
                                    timeout=5_000)
        ann_id = page.state()["selected"]
        page.page.wait_for_function(
            "id => (window.collab.annotation(id).measurements || {}).area_um2 > 0", arg=ann_id, timeout=5_000)
        r = httpx.get(f"{dicomweb_server.base_url}/api/slides/{SLIDE}/annotations",
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert [f["id"] for f in r.json()["features"]] == [ann_id]
        assert not page.errors, page.errors
        page.screenshot("dicomweb-slide.png")
    finally:
        page.close()

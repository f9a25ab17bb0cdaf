"""Deep Zoom descriptors and tiles from real slide files (the generated demo slide)."""

import asyncio
import io
import shutil
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from collab.slides.demo import ensure_demo_slide
from collab.slides.tiles import SlideImages, SlideUnreadable, TileNotFound
from tests.conftest import make_settings, serving

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"
W, H = 3000, 2200  # not multiples of 254, so the last column and row are narrower


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return ensure_demo_slide(tmp_path_factory.mktemp("slides"), width=W, height=H).path


@pytest.fixture
def images():
    images = SlideImages()
    yield images
    images.close()


def _levels(width: int, height: int) -> list[tuple[int, int]]:
    """Deep Zoom level sizes, level 0 being 1x1."""
    sizes = [(width, height)]
    while sizes[-1] != (1, 1):
        w, h = sizes[-1]
        sizes.append((max(1, -(-w // 2)), max(1, -(-h // 2))))
    return sizes[::-1]


def _span(length: int, t: int, tile: int = 254, overlap: int = 1) -> int:
    """Pixels a tile covers along one axis: 254, plus the overlap on inner sides."""
    start = t * tile - (overlap if t > 0 else 0)
    return min(length, (t + 1) * tile + overlap) - start


async def test_dzi_descriptor(images, slide_path):
    root = ET.fromstring(await images.dzi(slide_path))
    assert root.tag == f"{DZ}Image"
    assert (root.get("Format"), root.get("TileSize"), root.get("Overlap")) == ("jpeg", "254", "1")
    size = root.find(f"{DZ}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (W, H)


@pytest.mark.parametrize("which", ["lowest", "middle", "highest"])
async def test_tiles_are_jpegs_of_the_right_size(images, slide_path, which):
    levels = _levels(W, H)
    level = {"lowest": 0, "middle": len(levels) // 2, "highest": len(levels) - 1}[which]
    lw, lh = levels[level]
    cols, rows = -(-lw // 254), -(-lh // 254)
    for col, row in {(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}:
        data = await images.tile(slide_path, level, col, row)
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (_span(lw, col), _span(lh, row)), (level, col, row)
        image.load()  # decodes fully
    if which == "highest":
        # Edge tiles are smaller; inner ones 254 plus an overlap pixel on both sides.
        assert _span(lw, cols - 1) < 254 < _span(lw, cols // 2) == 256


async def test_full_resolution_tile_shows_level0_pixels(images, slide_path):
    """limit_bounds is off: Deep Zoom pixels are level-0 slide pixels, as annotations are."""
    level = len(_levels(W, H)) - 1
    tile = Image.open(io.BytesIO(await images.tile(slide_path, level, 3, 2))).convert("RGB")
    with openslide.OpenSlide(slide_path) as slide:
        expected = slide.read_region((3 * 254 - 1, 2 * 254 - 1), 0, tile.size).convert("RGB")
    diff = np.abs(np.asarray(tile, np.int16) - np.asarray(expected, np.int16))
    assert diff.mean() < 4  # only the JPEG re-encoding differs


@pytest.mark.parametrize(
    ("level", "col", "row"),
    [(12, 12, 0), (12, 0, 9), (13, 0, 0), (-1, 0, 0), (12, -1, 0), (0, 1, 0), (5, 0, 1)],
)
async def test_out_of_range_tile(images, slide_path, level, col, row):
    # At level 12 (full size) the slide is 12 x 9 tiles; level 5 (1/128) is one 24 x 18 tile.
    with pytest.raises(TileNotFound) as err:
        await images.tile(slide_path, level, col, row)
    assert err.value.http_status == 404


async def test_unreadable_and_missing_files(images, tmp_path):
    junk = tmp_path / "junk.svs"
    junk.write_text("not a slide")
    for path in (junk, tmp_path / "missing.tiff"):
        with pytest.raises(SlideUnreadable) as err:
            await images.dzi(path)
        assert err.value.http_status == 400
        with pytest.raises(SlideUnreadable):
            await images.tile(path, 0, 0, 0)
        with pytest.raises(SlideUnreadable):
            images.probe(path)


def test_probe(images, slide_path, tmp_path):
    assert images.probe(slide_path) == {"width": W, "height": H, "mpp": 0.2527}
    # A tiled TIFF with no physical resolution: OpenSlide opens it, mpp is unknown.
    plain = tmp_path / "plain.tiff"
    tifffile.imwrite(plain, np.full((512, 768, 3), 200, np.uint8), tile=(256, 256))
    assert images.probe(plain) == {"width": 768, "height": 512, "mpp": None}


async def test_tile_is_made_off_the_event_loop(images, slide_path):
    await images.dzi(slide_path)  # opened and cached already
    task = asyncio.create_task(images.tile(slide_path, 12, 5, 5))
    await asyncio.sleep(0)  # the task has started; in a thread, it cannot have finished
    assert not task.done()
    assert len(await task) > 1000


async def test_concurrent_tiles_match_sequential_ones(images, slide_path):
    coords = [(level, 0, 0) for level in range(13)] + [
        (12, c, r) for c in range(4) for r in range(3)
    ]
    together = await asyncio.gather(*(images.tile(slide_path, *c) for c in coords))
    one_by_one = [await images.tile(slide_path, *c) for c in coords]
    assert together == one_by_one


async def test_open_slides_are_bounded_and_replaced_files_reopened(tmp_path, slide_path):
    images = SlideImages(max_open=2)
    try:
        copies = [shutil.copy(slide_path, tmp_path / f"copy{i}.tiff") for i in range(4)]
        for path in copies:
            await images.dzi(path)
        assert len(images._open) == 2
        assert await images.tile(copies[0], 0, 0, 0)  # evicted earlier, opens again

        small = ensure_demo_slide(tmp_path / "other", width=1024, height=768).path
        shutil.copy(small, copies[1])  # same path, new file
        size = ET.fromstring(await images.dzi(copies[1])).find(f"{DZ}Size")
        assert (size.get("Width"), size.get("Height")) == ("1024", "768")
    finally:
        images.close()
    with pytest.raises(RuntimeError):
        await images.dzi(slide_path)


async def test_the_apps_tile_routes(slide_path, tmp_path):
    """/slides/{id}.dzi and its tiles from a real server: Bearer or ?token=, JSON errors."""
    async with serving(make_settings(tmp_path / "data", slide_dirs=(str(slide_path.parent),))) as live:
        async with live.http("admin") as admin:
            r = await admin.post("/api/slides", json={"id": "demo-tissue", "title": "Demo", "path": str(slide_path)})
            assert r.status_code == 201, r.text
            assert r.json()["width"] == W and r.json()["height"] == H  # probed from the file
        async with live.http("viewer") as http:
            r = await http.get("/slides/demo-tissue.dzi")
            assert r.status_code == 200 and r.headers["content-type"] == "application/xml"
            assert ET.fromstring(r.text).find(f"{DZ}Size").get("Width") == str(W)
            r = await http.get("/slides/demo-tissue_files/12/11_8.jpeg")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.content)).size == (_span(W, 11), _span(H, 8))
            r = await http.get("/slides/demo-tissue_files/12/12_0.jpeg")
            assert r.status_code == 404 and "error" in r.json()
            assert (await http.get("/slides/nope.dzi")).status_code == 404
        async with httpx.AsyncClient(base_url=live.base_url) as anonymous:
            # OpenSeadragon carries the DZI's query string over to every tile URL.
            token = live.token("viewer", slides=["demo-tissue"])
            r = await anonymous.get(f"/slides/demo-tissue_files/0/0_0.jpeg?token={token}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert (await anonymous.get("/slides/demo-tissue.dzi")).status_code == 401
            other = live.token("viewer", slides=["another-slide"])
            r = await anonymous.get(f"/slides/demo-tissue.dzi?token={other}")
            assert r.status_code == 403 and "error" in r.json()

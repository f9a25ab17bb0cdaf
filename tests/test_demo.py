"""The generated demo slide: a pyramidal TIFF that OpenSlide opens, made once."""

import itertools
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openslide
import pytest

from collab.slides.demo import DEFAULT_MPP, DemoSlide, ensure_demo_slide
from collab.slides.tiles import SlideImages
from tests.conftest import ServerProcess


def test_small_demo_slide_is_a_pyramid_openslide_reads(tmp_path):
    demo = ensure_demo_slide(tmp_path, width=3000, height=2200)

    assert isinstance(demo, DemoSlide)
    assert (demo.id, demo.width, demo.height, demo.mpp) == ("demo-tissue", 3000, 2200, 0.2527)
    assert demo.path.parent == tmp_path and demo.path.is_file()
    assert openslide.OpenSlide.detect_format(demo.path) == "generic-tiff"
    with openslide.OpenSlide(demo.path) as slide:
        assert slide.dimensions == (3000, 2200)
        assert slide.level_dimensions == ((3000, 2200), (750, 550), (188, 138))
        assert slide.level_downsamples[1] == pytest.approx(4.0)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.2527)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.2527)
        thumb = np.asarray(slide.get_thumbnail((400, 400)).convert("RGB"), np.int16)
    # Tissue-like at a glance: some bare glass, some pink stroma, some purple nuclei.
    r, g, b = thumb[..., 0], thumb[..., 1], thumb[..., 2]
    glass = (thumb.min(axis=2) > 235).mean()
    pink = ((r > 200) & (g < 200) & (r - g > 40)).mean()
    purple = ((b > r) & (r < 180)).mean()
    assert 0.2 < glass < 0.8, glass
    assert pink > 0.1, pink
    assert purple > 0.002, purple
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_existing_slide_is_reused_and_a_broken_one_replaced(tmp_path):
    first = ensure_demo_slide(tmp_path, width=1024, height=768)
    mtime = first.path.stat().st_mtime_ns
    assert ensure_demo_slide(tmp_path, width=1024, height=768).path.stat().st_mtime_ns == mtime

    first.path.write_bytes(b"II*\x00 truncated")
    again = ensure_demo_slide(tmp_path, width=1024, height=768)
    with openslide.OpenSlide(again.path) as slide:
        assert slide.dimensions == (1024, 768)

    # A different size asked for: regenerated at that size.
    bigger = ensure_demo_slide(tmp_path, width=1536, height=1024)
    with openslide.OpenSlide(bigger.path) as slide:
        assert slide.dimensions == (1536, 1024)


def test_same_seed_same_pixels(tmp_path):
    a = ensure_demo_slide(tmp_path / "a", width=1024, height=768)
    b = ensure_demo_slide(tmp_path / "b", width=1024, height=768)
    with openslide.OpenSlide(a.path) as sa, openslide.OpenSlide(b.path) as sb:
        assert sa.read_region((300, 200), 0, (200, 200)) == sb.read_region(
            (300, 200), 0, (200, 200)
        )


def test_too_small_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        ensure_demo_slide(tmp_path, width=100, height=100)


async def test_default_demo_slide_full_size(tmp_path):
    """The real thing: at least 20,000 x 15,000, a pyramid, fast and small."""
    demo = ensure_demo_slide(tmp_path)

    assert demo.width >= 20_000 and demo.height >= 15_000
    assert demo.mpp == DEFAULT_MPP
    assert demo.path.stat().st_size < 50 * 2**20
    with openslide.OpenSlide(demo.path) as slide:
        assert slide.dimensions == (demo.width, demo.height)
        assert slide.level_count >= 4
        downsamples = slide.level_downsamples
        assert downsamples[0] == 1 and all(b > a for a, b in itertools.pairwise(downsamples))
        level0 = slide.read_region((demo.width // 2 - 128, demo.height // 2 - 128), 0, (256, 256))
        assert level0.size == (256, 256)

    images = SlideImages()
    try:
        assert images.probe(demo.path) == {
            "width": demo.width,
            "height": demo.height,
            "mpp": DEFAULT_MPP,
        }
        root = ET.fromstring(await images.dzi(demo.path))
        size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
        assert (int(size.get("Width")), int(size.get("Height"))) == (demo.width, demo.height)
    finally:
        images.close()


def test_generation_says_what_it_does_before_and_after(tmp_path):
    lines = []
    ensure_demo_slide(tmp_path, width=1024, height=768, report=lines.append)
    assert len(lines) == 2, lines
    assert lines[0].startswith("generating the demo slide (1024 x 768 px, once) in ")
    assert re.fullmatch(r"demo slide generated in \d+\.\d s", lines[1]), lines[1]
    ensure_demo_slide(tmp_path, width=1024, height=768, report=lines.append)
    assert len(lines) == 2  # reused: nothing to say


@pytest.mark.slow
def test_first_demo_start_is_not_silent(tmp_path):
    """A fresh `collab serve --demo` prints a line before generating the slide and one after,
    with the time, before the links (it took 13.6 s on a fresh machine with no output)."""
    server = ServerProcess(tmp_path / "data", "--demo")
    try:
        server.start(timeout=300)
        out = server.log_path.read_text()
    finally:
        server.stop()
    before = out.index("generating the demo slide (20480 x 15360 px, once)")
    after = re.search(r"demo slide generated in \d+\.\d s", out)
    assert after is not None, out[-2000:]
    assert before < after.start() < out.index("collab demo slide ready")


async def test_demo_tiles_are_served_with_a_relative_data_directory(tmp_path, monkeypatch):
    """The README's first command runs `collab serve --demo` with the default `--data ./data`:
    the demo slide's file was registered relative to the working directory and then looked up
    relative to the slide directory (400 for the DZI and every tile)."""
    from tests.conftest import make_settings, serving

    monkeypatch.chdir(tmp_path)
    async with serving(make_settings(Path("data"), demo=True)) as live:
        async with live.http("viewer", slides=["demo-tissue"]) as http:
            assert (await http.get("/slides/demo-tissue.dzi")).status_code == 200
            assert (await http.get("/slides/demo-tissue_files/0/0_0.jpeg")).status_code == 200

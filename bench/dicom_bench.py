"""DICOMweb (issue 16): tiles of a slide read from Orthanc vs the same slide as a local TIFF, and
the export of 10,000 annotations as DICOM Bulk Simple Annotations vs QuPath GeoJSON.

    .venv/bin/python bench/dicom_bench.py [--width 8192 --height 6144 --annotations 10000]

Starts its own Orthanc (tests/orthanc.py: free ports, storage under a temporary directory),
dicomizes the generated demo slide, and measures in one run:
- first tile, cold: a fresh reader opens the series (QIDO + metadata) and makes one tile; and
  the first tile alone once the series is open (frames not cached yet);
- warm tiles per second: every tile of the full-resolution Deep Zoom level, read once to warm
  the caches, then read again, one thread at a time and 8 at a time;
- export: records -> DICOM dataset -> bytes (and STOW-RS to Orthanc) vs -> GeoJSON bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from dicomweb_client.api import DICOMwebClient  # noqa: E402
from pydicom import dcmwrite  # noqa: E402

from collab.annotations.dicom import to_dicom  # noqa: E402
from collab.annotations.geojson import feature_collection  # noqa: E402
from collab.annotations.geometry import check_geometry  # noqa: E402
from collab.archive.api import _base_image  # noqa: E402
from collab.slides.demo import ensure_demo_slide  # noqa: E402
from collab.slides.dicomweb import DicomWebSlides, SeriesRef  # noqa: E402
from collab.slides.tiles import SlideImages  # noqa: E402
from tests.orthanc import running_orthanc  # noqa: E402


async def tiles(reader, key, level: int, cols: int, rows: int, concurrency: int, *, origin=(0, 0),
                repeat: int = 1) -> float:
    """Tiles per second over a `cols` x `rows` block of `level` from `origin`, `repeat` times."""
    coords = [(origin[0] + c, origin[1] + r) for c in range(cols) for r in range(rows)] * repeat
    queue = list(coords)
    started = time.perf_counter()

    async def worker() -> None:
        while queue:
            c, r = queue.pop()
            await reader.tile(key, level, c, r)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(coords) / (time.perf_counter() - started)


async def bench_tiles(tiff: Path, ref: SeriesRef, width: int, height: int, cache_bytes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    level = max(width, height).bit_length()  # the full-resolution Deep Zoom level
    if (1 << (level - 1)) == max(width, height):
        level -= 1
    cols, rows = -(-width // 254), -(-height // 254)
    mid = (cols // 2, rows // 2)

    archive = DicomWebSlides(cache_bytes=cache_bytes)
    t = time.perf_counter()
    await archive.probe(ref)
    out["dicomweb_open_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    await archive.tile(ref, level, *mid)
    out["dicomweb_first_tile_ms"] = (time.perf_counter() - t) * 1000
    cold = DicomWebSlides()
    t = time.perf_counter()
    await cold.tile(ref, level, 0, 0)
    out["dicomweb_open_plus_first_tile_ms"] = (time.perf_counter() - t) * 1000
    cold.close()

    images = SlideImages()
    t = time.perf_counter()
    await images.tile(str(tiff), level, *mid)
    out["tiff_open_plus_first_tile_ms"] = (time.perf_counter() - t) * 1000

    screen = (6, 4)  # the tiles of a 1280 x 720 viewer at full resolution, roughly
    corner = (mid[0] - 3, mid[1] - 2)
    for name, reader, key in (("dicomweb", archive, ref), ("tiff", images, str(tiff))):
        await tiles(reader, key, level, *screen, 8, origin=corner)  # warm the caches
        out[f"{name}_warm_screen_tiles_per_s_1"] = await tiles(reader, key, level, *screen, 1, origin=corner,
                                                               repeat=10)
        out[f"{name}_warm_screen_tiles_per_s_8"] = await tiles(reader, key, level, *screen, 8, origin=corner,
                                                               repeat=10)
        # Every tile of the level, twice: the second pass is warm only if the cache holds the level.
        await tiles(reader, key, level, cols, rows, 8)
        out[f"{name}_level_sweep_tiles_per_s_8"] = await tiles(reader, key, level, cols, rows, 8)
    archive.close()
    images.close()
    return out


def make_records(n: int, width: int, height: int, mpp: float) -> list[tuple[str, dict]]:
    rng = random.Random(16)
    classes = [{"name": name, "color": color} for name, color in
               (("Tumor", [200, 0, 0]), ("Stroma", [0, 150, 0]), ("Necrosis", [60, 60, 60]), (None, None))]
    records = []
    for i in range(n):
        cx, cy = rng.uniform(200, width - 200), rng.uniform(200, height - 200)
        kind = rng.random()
        if kind < 0.7:  # a cell-sized polygon of 24 vertices
            import math
            ring = [[cx + 40 * math.cos(a * math.pi / 12) * rng.uniform(0.8, 1.2),
                     cy + 40 * math.sin(a * math.pi / 12) * rng.uniform(0.8, 1.2)] for a in range(24)]
            geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
        elif kind < 0.9:
            geometry = {"type": "LineString", "coordinates": [[cx, cy], [cx + 100, cy + 30], [cx + 150, cy - 20]]}
        else:
            geometry = {"type": "Point", "coordinates": [cx, cy]}
        verdict = check_geometry(geometry, width=width, height=height, max_vertices=100_000, mpp=mpp)
        cls = classes[i % 4]
        records.append((f"a{i:05d}", {
            "geometry": geometry, "classification": cls if cls["name"] else None,
            "author": "dr-roubaix", "status": verdict.status, "measurements": verdict.measurements,
        }))
    return records


def bench_export(records, client: DICOMwebClient, ref: SeriesRef) -> dict[str, float]:
    source = _base_image(client, ref)
    out: dict[str, float] = {}
    import highdicom as hd
    t = time.perf_counter()
    to_dicom(records[:10], source, series_uid=hd.UID(), instance_uid=hd.UID(), creator="bench", site="Roubaix",
             description="warm-up")
    out["dicom_first_use_ms"] = (time.perf_counter() - t) * 1000  # highdicom loads its tables once
    t = time.perf_counter()
    dataset, count = to_dicom(records, source, series_uid=hd.UID(), instance_uid=hd.UID(),
                              creator="bench", site="Roubaix", description="bench")
    buf = io.BytesIO()
    dcmwrite(buf, dataset, enforce_file_format=True)
    out["dicom_build_and_encode_ms"] = (time.perf_counter() - t) * 1000
    out["dicom_bytes"] = len(buf.getvalue())
    out["dicom_annotations"] = count
    t = time.perf_counter()
    client.store_instances([dataset])
    out["dicom_stow_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    geojson = orjson.dumps(feature_collection(records))
    out["geojson_build_and_encode_ms"] = (time.perf_counter() - t) * 1000
    out["geojson_bytes"] = len(geojson)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--height", type=int, default=6144)
    parser.add_argument("--annotations", type=int, default=10_000)
    parser.add_argument("--cache-mib", type=int, default=256, help="COLLAB_DICOMWEB_CACHE_BYTES, in MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slide = ensure_demo_slide(root / "slides", width=args.width, height=args.height)
        with running_orthanc(root / "orthanc") as orthanc:
            study, series = orthanc.dicomize(slide.path, mpp=slide.mpp, width=slide.width, height=slide.height)
            ref = SeriesRef(orthanc.dicomweb, study, series)
            results = asyncio.run(bench_tiles(slide.path, ref, slide.width, slide.height, args.cache_mib * 2**20))
            records = make_records(args.annotations, slide.width, slide.height, slide.mpp)
            results |= bench_export(records, DICOMwebClient(orthanc.dicomweb), ref)
    print(f"slide {args.width} x {args.height}, {args.annotations} annotations, cache {args.cache_mib} MiB")
    for key, value in results.items():
        print(f"{key:40s} {value:12.1f}")


if __name__ == "__main__":
    main()

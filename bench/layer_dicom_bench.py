"""DICOMweb (issue 16): a detection layer of N cells exported to the archive as one Bulk Simple
Annotations instance, through the server's route.

    .venv/bin/python bench/layer_dicom_bench.py [--cells 100000]

Starts its own Orthanc (tests/orthanc.py) and a real server on a free port, dicomizes the demo
slide, imports N generated cells (tests/test_layers_data.py: 8-vertex outlines, three classes),
then times `POST /api/slides/{id}/layers/{layer}/export/dicom` (the series' metadata read, the
layer read and encoded, STOW-RS) and reads the instance back to give its size.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dicomweb_client.api import DICOMwebClient  # noqa: E402
from pydicom import dcmwrite  # noqa: E402

from collab.slides.demo import ensure_demo_slide  # noqa: E402
from tests.conftest import make_settings, serving  # noqa: E402
from tests.orthanc import running_orthanc  # noqa: E402
from tests.test_layers_data import export_pieces  # noqa: E402

W, H, MPP = 8192, 6144, 0.25


async def run(cells: int, root: Path) -> None:
    with running_orthanc(root / "orthanc") as orthanc:
        tiff = ensure_demo_slide(root / "slides", width=W, height=H, mpp=MPP).path
        study, series = orthanc.dicomize(tiff, mpp=MPP, width=W, height=H)
        async with serving(make_settings(root / "data")) as live, live.http("admin") as admin:
            admin.timeout = 600
            r = await admin.post("/api/slides", json={
                "id": "bench", "dicomweb": {"url": orthanc.dicomweb, "study": study, "series": series}})
            r.raise_for_status()
            body = b"".join(export_pieces(cells, box=(20, 20, W - 20, H - 20)))
            r = await admin.post("/api/slides/bench/layers", params={"name": "bench"}, content=body)
            r.raise_for_status()
            layer = r.json()
            started = time.perf_counter()
            r = await admin.post(f"/api/slides/bench/layers/{layer['id']}/export/dicom")
            seconds = time.perf_counter() - started
            r.raise_for_status()
            exported = r.json()
        dataset = DICOMwebClient(orthanc.dicomweb).retrieve_instance(study, exported["series"], exported["instance"])
        out = io.BytesIO()
        dcmwrite(out, dataset, enforce_file_format=True)
        size = len(out.getvalue())
        print(f"{exported['count']} cells ({layer['count']} in the layer): export {seconds:.2f} s, "
              f"instance {size / 1e6:.1f} MB ({size / exported['count']:.0f} bytes a cell)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.cells, Path(tmp)))


if __name__ == "__main__":
    main()

"""Slides from a real DICOMweb archive (Orthanc): registration, Deep Zoom tiles, archive down or slow."""

from __future__ import annotations

import asyncio
import io
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import orjson
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pycrdt import Map

from collab.slides.demo import ensure_demo_slide
from tests.conftest import make_settings, serving
from tests.orthanc import OrthancArchive, running_orthanc
from tests.waiting import wait_for_async

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"
W, H = 3000, 2200  # not multiples of the tile sizes: the last column and row are partial
MPP = 0.2527


@pytest.fixture(scope="module")
def demo_tiff(tmp_path_factory) -> Path:
    return ensure_demo_slide(tmp_path_factory.mktemp("slides"), width=W, height=H, mpp=MPP).path


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[OrthancArchive]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as archive:
        yield archive


@pytest.fixture(scope="module")
def dicom_slide(orthanc: OrthancArchive, demo_tiff: Path) -> tuple[str, str]:
    return orthanc.dicomize(demo_tiff, mpp=MPP, width=W, height=H)


def base_pixel_spacing(orthanc: OrthancArchive, study: str, series: str) -> float:
    """Column spacing (mm) of the series' largest level, as the archive's metadata says."""
    metadata = httpx.get(f"{orthanc.dicomweb}/studies/{study}/series/{series}/metadata", timeout=30).json()
    base = max(metadata, key=lambda m: m["00480006"]["Value"][0])
    shared = base["52009229"]["Value"][0]["00289110"]["Value"][0]
    return float(shared["00280030"]["Value"][1])


def _dzi(text: str) -> tuple[int, int, int, int]:
    root = ET.fromstring(text)
    size = root.find(f"{DZ}Size")
    return int(size.get("Width")), int(size.get("Height")), int(root.get("TileSize")), int(root.get("Overlap"))


def _levels(width: int, height: int) -> list[tuple[int, int]]:
    out = [(width, height)]
    while out[-1] != (1, 1):
        w, h = out[-1]
        out.append((max(1, (w + 1) // 2), max(1, (h + 1) // 2)))
    return out[::-1]


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)


async def test_a_slide_registered_from_orthanc_serves_the_same_tiles_as_its_tiff(
    orthanc, dicom_slide, demo_tiff, tmp_path
):
    study, series = dicom_slide
    settings = make_settings(tmp_path / "data", slide_dirs=(str(demo_tiff.parent),))
    async with serving(settings) as live, live.http("admin") as admin:
        r = await admin.post("/api/slides", json={
            "id": "pacs-1", "title": "From the archive",
            "dicomweb": {"url": orthanc.dicomweb, "study": study, "series": series},
        })
        assert r.status_code == 201, r.text
        r = await admin.post("/api/slides", json={"id": "tiff-1", "path": str(demo_tiff)})
        assert r.status_code == 201, r.text

        listed = {s["id"]: s for s in (await admin.get("/api/slides")).json()}
        pacs = listed["pacs-1"]
        assert (pacs["width"], pacs["height"]) == (W, H)  # the largest level's total pixel matrix
        assert pacs["tiles"] == "/slides/pacs-1.dzi"
        assert pacs["mpp"] == pytest.approx(base_pixel_spacing(orthanc, study, series) * 1000, rel=1e-6)
        assert pacs["mpp"] == pytest.approx(MPP, rel=1e-4)
        assert "dicomweb" not in pacs  # the archive's address stays on the server

        dzi = await admin.get("/slides/pacs-1.dzi")
        assert dzi.status_code == 200 and dzi.headers["content-type"] == "application/xml"
        assert _dzi(dzi.text) == _dzi((await admin.get("/slides/tiff-1.dzi")).text)
        width, height, tile, _overlap = _dzi(dzi.text)
        assert (width, height) == (W, H)

        levels = _levels(W, H)
        differences = []
        for level, (lw, lh) in enumerate(levels):
            cols, rows = -(-lw // tile), -(-lh // tile)
            for col in range(cols):
                for row in range(rows):
                    url = f"_files/{level}/{col}_{row}.jpeg"
                    got = await admin.get(f"/slides/pacs-1{url}")
                    want = await admin.get(f"/slides/tiff-1{url}")
                    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg", got.text
                    a, b = _pixels(got.content), _pixels(want.content)
                    assert a.shape == b.shape, (level, col, row)
                    differences.append((float(np.abs(a - b).mean()), level, col, row))
        worst = max(differences)
        # Both are JPEG re-encodings of the same JPEG tiles (the archive's at quality 90, the
        # lower levels resampled by two libraries): only codec noise differs.
        assert worst[0] < 4.0, worst
        r = await admin.get(f"/slides/pacs-1_files/{len(levels)}/0_0.jpeg")
        assert r.status_code == 404 and "error" in r.json()


async def test_registration_refuses_what_is_not_a_slide_of_an_allowed_archive(orthanc, dicom_slide, tmp_path):
    study, series = dicom_slide
    settings = make_settings(tmp_path / "data", dicomweb_archives=(orthanc.dicomweb,))
    async with serving(settings) as live, live.http("admin") as admin:
        def body(**ref):
            return {"id": "x", "dicomweb": {"url": orthanc.dicomweb, "study": study, "series": series} | ref}
        r = await admin.post("/api/slides", json=body(url="http://127.0.0.1:9/dicom-web"))
        assert r.status_code == 400 and "configured" in r.json()["error"]
        r = await admin.post("/api/slides", json=body(series="1.2.3.4"))
        assert r.status_code == 400 and "error" in r.json()
        r = await admin.post("/api/slides", json=body(study="not a uid"))
        assert r.status_code == 400 and "UID" in r.json()["error"]
        async with live.http("reviewer") as reviewer:
            assert (await reviewer.post("/api/slides", json=body())).status_code == 403


class SwitchableProxy:
    """A TCP proxy in front of the archive that can hold (slow) or drop (down) its connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "up"  # "up" | "slow" | "down"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> SwitchableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "down":
            for writer in list(self._writers):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "down":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, up_writer))
                tg.create_task(self._pipe(up_reader, writer))
        except* (OSError, asyncio.IncompleteReadError):
            pass  # a dropped connection is what "down" means
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _hold(self) -> None:
        # Hold the bytes (and the end of the stream: Orthanc drops idle connections after a
        # second) so the archive seems never to answer.
        while self.mode == "slow":  # noqa: ASYNC110 (a test's switch, polled)
            await asyncio.sleep(0.05)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._hold()
            if self.mode == "down":
                break
            writer.write(data)
            await writer.drain()
        await self._hold()
        writer.close()

    async def close(self) -> None:
        self.set_mode("down")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_archive_down_or_slow_tiles_answer_502_or_504_and_the_room_keeps_working(
    orthanc, dicom_slide, tmp_path
):
    study, series = dicom_slide
    proxy = await SwitchableProxy(int(orthanc.url.rsplit(":", 1)[1])).start()
    url = f"http://127.0.0.1:{proxy.port}/dicom-web"
    try:
        settings = make_settings(tmp_path / "data", dicomweb_timeout=1.0)
        async with serving(settings) as live, live.http("admin") as admin:
            r = await admin.post("/api/slides", json={"id": "pacs-2", "dicomweb": {
                "url": url, "study": study, "series": series}})
            assert r.status_code == 201, r.text

            proxy.set_mode("slow")
            r = await admin.get("/slides/pacs-2_files/12/3_3.jpeg")
            assert r.status_code == 504, r.text
            assert "did not answer in time" in r.json()["error"]

            proxy.set_mode("down")
            r = await admin.get("/slides/pacs-2_files/12/4_4.jpeg")
            assert r.status_code == 502, r.text
            assert "cannot be reached" in r.json()["error"]

            # The room and its annotations do not depend on the archive.
            async with live.client("pacs-2", "reviewer") as client:
                client.annotations["a1"] = Map({"geometry": {"type": "Point", "coordinates": [10, 20]}})

                async def stored() -> bool:
                    got = (await admin.get("/api/slides/pacs-2/annotations")).json()
                    return [f["id"] for f in got["features"]] == ["a1"]

                await wait_for_async(stored, what="the annotation served while the archive is down")

            proxy.set_mode("up")
            r = await admin.get("/slides/pacs-2_files/12/4_4.jpeg")
            assert r.status_code == 200, r.text
    finally:
        await proxy.close()


TUMOR = {"name": "Tumor", "color": [200, 0, 0]}
STROMA = {"name": "Stroma", "color": [0, 150, 0]}
DRAWN = {
    "p1": {"geometry": {"type": "Polygon", "coordinates": [[[100.25, 100.5], [900.75, 120], [850, 700.125],
                                                            [120, 650], [100.25, 100.5]]]},
           "classification": TUMOR},
    "p2": {"geometry": {"type": "Polygon", "coordinates": [[[1000, 1000], [1400, 1000], [1400, 1300],
                                                            [1000, 1000]]]},
           "classification": TUMOR},
    "l1": {"geometry": {"type": "LineString", "coordinates": [[10, 10], [2000.5, 1500.25], [2900, 100]]},
           "classification": STROMA},
    "pt": {"geometry": {"type": "Point", "coordinates": [1234.5, 876.25]}, "classification": None},
}


def _shape(feature: dict) -> tuple:
    geometry = feature["geometry"]
    coords = geometry["coordinates"]
    flat = coords if geometry["type"] == "Point" else coords if geometry["type"] == "LineString" else coords[0]
    return geometry["type"], np.asarray(flat, dtype=np.float64).reshape(-1, 2)


async def test_annotations_exported_to_the_archive_as_dicom_and_imported_back(orthanc, dicom_slide, tmp_path):
    study, series = dicom_slide
    ref = {"url": orthanc.dicomweb, "study": study, "series": series}
    async with serving(make_settings(tmp_path / "data")) as live, live.http("admin") as admin:
        for slide_id in ("pacs-a", "pacs-b"):
            r = await admin.post("/api/slides", json={"id": slide_id, "dicomweb": ref})
            assert r.status_code == 201, r.text
        async with live.client("pacs-a", "reviewer", user="dr-roubaix") as client:
            for key, value in DRAWN.items():
                client.annotations[key] = Map(value)

            async def measured() -> bool:
                got = (await admin.get("/api/slides/pacs-a/annotations")).json()["features"]
                return len(got) == 4 and all(f["properties"].get("measurements") for f in got if f["id"] != "pt")

            await wait_for_async(measured, what="the server's measurements")
        source = {f["id"]: f for f in (await admin.get("/api/slides/pacs-a/annotations")).json()["features"]}

        async with live.http("reviewer") as reviewer:
            r = await reviewer.post("/api/slides/pacs-a/export/dicom")
            assert r.status_code == 403 and "error" in r.json()
        async with live.http("presenter", site="Mouscron", user="dr-mouscron") as presenter:
            r = await presenter.post("/api/slides/pacs-a/export/dicom")
        assert r.status_code == 201, r.text
        exported = r.json()
        assert exported["study"] == study and exported["series"] != series

        # Found by QIDO-RS, and readable by highdicom.
        async with httpx.AsyncClient() as http:
            found = (await http.get(f"{orthanc.dicomweb}/instances",
                                    params={"SOPInstanceUID": exported["instance"]})).json()
        assert [f["0020000E"]["Value"][0] for f in found] == [exported["series"]]
        client = DICOMwebClient(orthanc.dicomweb)
        dataset = client.retrieve_instance(study, exported["series"], exported["instance"])
        annotations = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(dataset)
        groups = {(g.label, g.graphic_type.value): g.number_of_annotations for g in annotations.get_annotation_groups()}
        assert groups == {("Tumor", "POLYGON"): 2, ("Stroma", "POLYLINE"): 1, ("Unclassified", "POINT"): 1}
        assert dataset.InstitutionName == "Mouscron"
        assert "dr-roubaix" in annotations.get_annotation_groups()[0].AnnotationGroupDescription
        assert dataset.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"

        async with live.http("viewer") as viewer:
            r = await viewer.post("/api/slides/pacs-b/import/dicom", json={"instance": exported["instance"]})
            assert r.status_code == 403
        async with live.http("reviewer") as reviewer:
            r = await reviewer.post("/api/slides/pacs-b/import/dicom", json={"instance": exported["instance"]})
            assert r.status_code == 201, r.text
            assert len(r.json()["created"]) == 4
            r = await reviewer.post("/api/slides/pacs-b/import/dicom", json={"instance": "1.2.3.4.5"})
            assert r.status_code == 404 and "error" in r.json()
        back = (await admin.get("/api/slides/pacs-b/annotations")).json()["features"]

        def key(feature: dict) -> tuple:
            kind, points = _shape(feature)
            return kind, round(float(points[0][0]), 1)

        assert sorted(map(key, back)) == sorted(map(key, source.values()))
        by_key = {key(f): f for f in source.values()}
        for feature in back:
            original = by_key[key(feature)]
            assert feature["properties"].get("classification") == original["properties"].get("classification")
            _, points = _shape(feature)
            _, want = _shape(original)
            assert points.shape == want.shape
            assert np.allclose(points, want.astype(np.float32), rtol=0, atol=1e-3)
            for name, value in (original["properties"].get("measurements") or {}).items():
                assert feature["properties"]["measurements"][name] == pytest.approx(value, rel=1e-5)

        audit = (await admin.get("/api/slides/pacs-a/audit")).json()
        assert any(a["action"] == "exported-dicom" and a["detail"]["instance"] == exported["instance"]
                   for a in audit)


async def test_finding_slides_in_the_archive_by_route_and_cli(orthanc, dicom_slide, tmp_path):
    study, series = dicom_slide
    async with serving(make_settings(tmp_path / "data")) as live, live.http("admin") as admin:
        r = await admin.get("/api/archive/series", params={"url": orthanc.dicomweb})
        assert r.status_code == 200, r.text
        rows = {row["series"]: row for row in r.json()}
        row = rows[series]
        assert row["study"] == study and row["accession"] == "ACC-42"
        assert row["series_description"] == "demo tissue" and row["study_date"]
        assert (row["width"], row["height"]) == (W, H)
        assert "TEST" not in r.text and "atient" not in r.text  # nothing of the patient
        async with live.http("presenter") as presenter:
            assert (await presenter.get("/api/archive/series", params={"url": orthanc.dicomweb})).status_code == 403
        r = await admin.get("/api/archive/series", params={"url": "file:///etc"})
        assert r.status_code == 400 and "error" in r.json()
        # Registered by its UIDs, as listed.
        r = await admin.post("/api/slides", json={"id": "listed", "dicomweb": {
            "url": orthanc.dicomweb, "study": row["study"], "series": row["series"]}})
        assert r.status_code == 201 and r.json()["width"] == W

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collab", "archive", "list", "--url", orthanc.dicomweb, "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    listed = {row["series"]: row for row in orjson.loads(out)}
    assert listed[series]["accession"] == "ACC-42" and listed[series]["width"] == W
    assert b"TEST" not in out


async def test_archive_credentials_come_from_the_settings_and_go_nowhere_else(demo_tiff, tmp_path):
    secret = "s3cret-Pa55"
    with running_orthanc(tmp_path / "orthanc-auth", auth=("pacs", secret)) as archive:
        study, series = archive.dicomize(demo_tiff, mpp=MPP, width=W, height=H)
        body = {"id": "locked", "dicomweb": {"url": archive.dicomweb, "study": study, "series": series}}
        async with serving(make_settings(tmp_path / "without")) as live, live.http("admin") as admin:
            r = await admin.post("/api/slides", json=body)
            assert r.status_code == 502 and "HTTP 401" in r.json()["error"], r.text
        settings = make_settings(tmp_path / "with", dicomweb_auth=(f"{archive.dicomweb}=basic:pacs:{secret}",))
        async with serving(settings) as live, live.http("admin") as admin:
            r = await admin.post("/api/slides", json=body)
            assert r.status_code == 201, r.text
            seen = [r.text, (await admin.get("/api/slides")).text, (await admin.get("/slides/locked.dzi")).text]
            tile = await admin.get("/slides/locked_files/12/1_1.jpeg")
            assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
            async with live.http("presenter") as presenter:
                r = await presenter.post("/api/slides/locked/export/dicom")
                assert r.status_code == 400  # no annotations yet: nothing to store
                seen.append(r.text)
            assert not any(secret in text or "pacs:" in text for text in seen)


async def test_jpeg_2000_frames_are_decoded_too(orthanc, demo_tiff, tmp_path):
    """Frames the archive keeps in JPEG 2000 (and cannot transcode: Orthanc answers 500 to a
    request for JPEG baseline) are fetched as they are and decoded."""
    study, series = orthanc.dicomize(demo_tiff, mpp=MPP, width=W, height=H, compression="jpeg2000",
                                     description="demo tissue, JPEG 2000")
    async with httpx.AsyncClient(base_url=orthanc.url) as rest:
        instances = (await rest.get("/instances")).json()
        syntaxes = {(await rest.get(f"/instances/{i}/metadata/TransferSyntax")).text for i in instances}
    assert "1.2.840.10008.1.2.4.90" in syntaxes  # JPEG 2000 lossless
    settings = make_settings(tmp_path / "data", slide_dirs=(str(demo_tiff.parent),))
    async with serving(settings) as live, live.http("admin") as admin:
        r = await admin.post("/api/slides", json={"id": "j2k", "dicomweb": {
            "url": orthanc.dicomweb, "study": study, "series": series}})
        assert r.status_code == 201, r.text
        r = await admin.post("/api/slides", json={"id": "tiff", "path": str(demo_tiff)})
        assert r.status_code == 201, r.text
        # Re-encoding, the dicomizer also rebuilt the pyramid by halving (5 levels where the TIFF
        # has 3): the lower levels are Orthanc's resampling, not the TIFF's, hence more leeway.
        for url, leeway in (("12/0_0.jpeg", 4), ("12/5_4.jpeg", 4), ("12/11_8.jpeg", 4), ("11/2_2.jpeg", 12),
                            ("10/1_1.jpeg", 12), ("8/0_0.jpeg", 12)):
            got = await admin.get(f"/slides/j2k_files/{url}")
            want = await admin.get(f"/slides/tiff_files/{url}")
            assert got.status_code == 200, got.text
            a, b = _pixels(got.content), _pixels(want.content)
            assert a.shape == b.shape and float(np.abs(a - b).mean()) < leeway, url

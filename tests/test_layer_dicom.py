"""A detection layer exported to a real DICOMweb archive (Orthanc) as one Bulk Simple Annotations
instance, and read back with highdicom: classes, counts and vertices as the layer holds them."""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import orjson
import pytest
from dicomweb_client.api import DICOMwebClient

from collab.settings import Settings
from collab.slides.demo import ensure_demo_slide
from tests.conftest import make_settings, serving
from tests.orthanc import OrthancArchive, running_orthanc
from tests.pg import fresh_database
from tests.test_layers_data import cell_features

W, H = 3000, 2200
MPP = 0.2527
QUANTUM = 1 / 8  # the layer store keeps vertices to 1/8 px


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[OrthancArchive]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as archive:
        yield archive


@pytest.fixture(scope="module")
def dicom_slide(orthanc: OrthancArchive, tmp_path_factory) -> tuple[str, str]:
    tiff = ensure_demo_slide(tmp_path_factory.mktemp("slides"), width=W, height=H, mpp=MPP).path
    return orthanc.dicomize(tiff, mpp=MPP, width=W, height=H)


def _features() -> list[dict[str, Any]]:
    features = cell_features(700, seed=11, box=(40, 40, W - 40, H - 40))
    # A sliver whose first and last vertex are the same once kept to 1/8 px: not a DICOM polygon,
    # so it is exported as a POINT at its centroid.
    features.append({
        "type": "Feature", "id": "sliver",
        "geometry": {"type": "Polygon", "coordinates": [[[500, 500], [500, 500.3], [500.01, 500], [500, 500]]]},
        "properties": {"objectType": "detection", "classification": {"name": "Stroma", "color": [150, 200, 150]}},
    })
    return features


@contextlib.asynccontextmanager
async def layer_settings(store: str, data: Path) -> AsyncIterator[Settings]:
    """Layers in SQLite, or in PostgreSQL (read_chunks then reads in the export's worker thread)."""
    if store == "sqlite":
        yield make_settings(data)
        return
    async with fresh_database("collab_layers") as url:
        yield make_settings(data, database_url=url)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_a_layer_exported_to_the_archive_reads_back_with_its_classes_and_outlines(
    orthanc, dicom_slide, tmp_path: Path, store: str
) -> None:
    study, series = dicom_slide
    features = _features()
    async with (layer_settings(store, tmp_path / "data") as settings, serving(settings) as live,
                live.http("admin") as admin):
        r = await admin.post("/api/slides", json={
            "id": "pacs-cells", "dicomweb": {"url": orthanc.dicomweb, "study": study, "series": series}})
        assert r.status_code == 201, r.text
        await live.register_slide("plain")
        async with live.http("reviewer") as reviewer:
            for slide in ("pacs-cells", "plain"):
                r = await reviewer.post(f"/api/slides/{slide}/layers", params={"name": "HoVer-Net"},
                                        content=orjson.dumps({"type": "FeatureCollection", "features": features}))
                assert r.status_code == 201, r.text
            layer, plain_layer = (await reviewer.get("/api/slides/pacs-cells/layers")).json()[0], r.json()
            assert layer["count"] == len(features), layer
            # What the layer holds, as its own route gives it (the store's 1/8 px vertices).
            r = await reviewer.get(f"/api/slides/pacs-cells/layers/{layer['id']}/objects",
                                   params={"bbox": f"0,0,{W},{H}", "limit": 10_000})
            held = r.json()["features"]
            assert len(held) == len(features)
            r = await reviewer.post(f"/api/slides/pacs-cells/layers/{layer['id']}/export/dicom")
            assert r.status_code == 403 and "error" in r.json()
        async with live.http("viewer") as viewer:
            r = await viewer.post(f"/api/slides/pacs-cells/layers/{layer['id']}/export/dicom")
            assert r.status_code == 403 and "error" in r.json()
        async with live.http("presenter", site="Mouscron", user="dr-mouscron") as presenter:
            r = await presenter.post(f"/api/slides/plain/layers/{plain_layer['id']}/export/dicom")
            assert r.status_code == 400 and "DICOMweb" in r.json()["error"]
            r = await presenter.post("/api/slides/pacs-cells/layers/nope/export/dicom")
            assert r.status_code == 404 and "error" in r.json()
            r = await presenter.post(f"/api/slides/pacs-cells/layers/{layer['id']}/export/dicom")
        assert r.status_code == 201, r.text
        exported = r.json()
        assert exported["study"] == study and exported["series"] != series
        assert exported["count"] == len(features)

        async with httpx.AsyncClient() as http:
            found = (await http.get(f"{orthanc.dicomweb}/instances",
                                    params={"SOPInstanceUID": exported["instance"]})).json()
        assert [f["0020000E"]["Value"][0] for f in found] == [exported["series"]]
        dataset = DICOMwebClient(orthanc.dicomweb).retrieve_instance(study, exported["series"], exported["instance"])
        annotations = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(dataset)
        assert dataset.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
        assert dataset.InstitutionName == "Mouscron"

        # Groups: one per class (and a POINT group for the sliver), counts as the layer's.
        groups = annotations.get_annotation_groups()
        counts = Counter[str]()
        for group in groups:
            counts[group.label] += group.number_of_annotations
            assert group.algorithm_type.value == "AUTOMATIC"
        assert counts == Counter(layer["classes"])
        assert {(g.label, g.graphic_type.value) for g in groups if g.graphic_type.value == "POINT"} == {
            ("Stroma", "POINT")}

        # Vertices: each class's polygons, in the layer's order, equal its stored outlines (float32)
        # and the imported ones to 1/8 px.
        polygons = {g.label: g.get_graphic_data("2D") for g in groups if g.graphic_type.value == "POLYGON"}
        expected: dict[str, list[np.ndarray]] = defaultdict(list)
        imported: dict[str, list[np.ndarray]] = defaultdict(list)
        for feature in held:
            if feature["id"] == len(features) - 1:
                continue  # the sliver
            name = feature["properties"]["classification"]["name"]
            expected[name].append(np.array(feature["geometry"]["coordinates"][0][:-1]))
            imported[name].append(np.array(features[feature["id"]]["geometry"]["coordinates"][0][:-1]))
        assert set(polygons) == set(expected)
        for name, got in polygons.items():
            assert len(got) == len(expected[name])
            for ring, want, original in zip(got, expected[name], imported[name], strict=True):
                assert ring.shape == want.shape
                assert np.allclose(ring, want.astype(np.float32), rtol=0, atol=1e-3)
                assert np.abs(ring - original).max() <= QUANTUM / 2 + 1e-3
        (point,) = next(g for g in groups if g.graphic_type.value == "POINT").get_graphic_data("2D")
        assert np.abs(point[0] - [500.0, 500.1]).max() < 0.2

        audit = (await admin.get("/api/slides/pacs-cells/audit")).json()
        assert any(a["action"] == "layer_exported-dicom" and a["detail"]["instance"] == exported["instance"]
                   and a["detail"]["count"] == len(features) for a in audit)

"""Detection layers against a real server: import (plain, gzip, streamed), storage, box
queries, grids, the binary form, counts against a brute-force Shapely answer, live counts in
annotations, roles, and bounded memory on a large import.

Every test of a server runs twice: layers in SQLite (the embedded default) and in PostgreSQL
(COLLAB_DATABASE_URL, a fresh database; skipped when PostgreSQL does not answer, except in CI)."""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import shapely
from hypothesis import example, given
from hypothesis import strategies as st
from pycrdt import Array, Map

from collab.auth import TokenAuthenticator
from collab.layers import binary
from collab.layers.api import SelectedRings, _collection_json
from collab.layers.codec import Points, decode_points, decode_shapes, encode_points
from collab.layers.index import LayerIndex, Selection
from collab.layers.qupath import UNCLASSIFIED, Chunk, LayerParser, ParseError
from collab.layers.splitter import ArraySplitter
from collab.layers.store import LayerMeta, PointsRow
from collab.live.keys import RoomKey
from collab.settings import Settings
from tests.conftest import SECRET, LiveServer, ServerProcess, make_settings
from tests.pg import fresh_database
from tests.test_layers_data import cell_features, export_bytes, export_pieces, unusable_features

N_CELLS = 3000


@pytest.fixture(params=["sqlite", "postgres"])
async def server_settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    """The layer store follows the live store: SQLite under --data, or the PostgreSQL database."""
    if request.param == "sqlite":
        yield make_settings(tmp_path / "data")
        return
    async with fresh_database("collab_layers") as url:
        yield make_settings(tmp_path / "data", database_url=url)


@pytest.fixture(scope="module")
def cells() -> list[dict[str, Any]]:
    return cell_features(N_CELLS, seed=3)


@pytest.fixture(scope="module")
def centroids(cells: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The brute-force reference: Shapely's centroid of each outline, kept as float32 as the
    store keeps it; the object ids are the import order of the usable features."""
    shapes = [shapely.geometry.shape(f["geometry"]) for f in cells]
    xy = np.array([(s.centroid.x, s.centroid.y) for s in shapes], np.float32).astype(np.float64)
    classes = [f["properties"]["classification"]["name"] for f in cells]
    return xy[:, 0], xy[:, 1], classes


def brute_box(centroids: Any, x0: float, y0: float, x1: float, y1: float) -> set[int]:
    x, y, _ = centroids
    return set(np.nonzero((x >= x0) & (x < x1) & (y >= y0) & (y < y1))[0].tolist())


def brute_count(centroids: Any, geometry: dict[str, Any]) -> dict[str, Any]:
    x, y, classes = centroids
    inside = shapely.contains_xy(shapely.geometry.shape(geometry), x, y)
    counted = Counter(classes[i] for i in np.nonzero(inside)[0])
    return {"total": int(inside.sum()), "classes": dict(counted)}


async def import_layer(http: httpx.AsyncClient, slide: str, body: bytes, name: str = "cells",
                       **headers: str) -> httpx.Response:
    return await http.post(f"/api/slides/{slide}/layers", params={"name": name}, content=body,
                           headers={"Content-Type": "application/geo+json", **headers})


@pytest.fixture
async def layer(live: LiveServer, slide: str, cells: list[dict[str, Any]]) -> str:
    async with live.http("reviewer") as http:
        r = await import_layer(http, slide, export_bytes(cells))
        assert r.status_code == 201, r.text
        return r.json()["id"]


async def test_import_plain_and_gzip_counts_classes_and_skips(
    live: LiveServer, slide: str, cells: list[dict[str, Any]]
) -> None:
    bad, reasons = unusable_features()
    body = export_bytes(cells[:1000] + bad + cells[1000:])
    expected = Counter(f["properties"]["classification"]["name"] for f in cells)
    async with live.http("reviewer") as http:
        plain = await import_layer(http, slide, body, name="plain")
        zipped = await import_layer(http, slide, gzip.compress(body), name="zipped", **{"Content-Encoding": "gzip"})
        for r, name in ((plain, "plain"), (zipped, "zipped")):
            assert r.status_code == 201, r.text
            answer = r.json()
            assert answer["name"] == name
            assert answer["count"] == N_CELLS
            assert answer["classes"] == dict(expected)
            assert answer["skipped"] == {"count": len(bad), "reasons": reasons}
        assert plain.json()["id"] != zipped.json()["id"]
        listed = (await http.get(f"/api/slides/{slide}/layers")).json()
        assert [(layer["id"], layer["name"], layer["count"]) for layer in listed] == [
            (plain.json()["id"], "plain", N_CELLS), (zipped.json()["id"], "zipped", N_CELLS)
        ]
        assert listed[0]["colors"]["Tumor"] == [200, 0, 0]


async def test_layers_live_where_the_live_store_does(live: LiveServer, layer: str) -> None:
    """PostgreSQL named: the layer is in its tables, and no layers.sqlite3 is made under --data."""
    import asyncpg

    url = live.settings.database_url
    sqlite_file = live.settings.data / "layers.sqlite3"
    if url is None:
        assert sqlite_file.exists()
        return
    assert not sqlite_file.exists()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM layers WHERE id = $1", layer) == 1
        assert await conn.fetchval("SELECT sum(count) FROM layer_chunks WHERE layer_id = $1", layer) == N_CELLS
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"type": "FeatureCollection", "features": [{"type": "Feature"', {}),  # cut short
        (b"this is not json", {}),
        (b"", {}),
        (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
        (gzip.compress(b'{"type": "FeatureCollection", "features": []}')[:-8], {"Content-Encoding": "gzip"}),
        (b"{}", {"Content-Encoding": "br"}),
    ],
)
async def test_unusable_bodies_are_refused_with_json_and_leave_nothing(
    live: LiveServer, slide: str, body: bytes, headers: dict[str, str]
) -> None:
    async with live.http("reviewer") as http:
        r = await import_layer(http, slide, body, **headers)
        assert r.status_code == 400, r.text
        assert "error" in r.json()
        assert (await http.get(f"/api/slides/{slide}/layers")).json() == []


async def test_box_queries_equal_brute_force_and_grid_adds_up(
    live: LiveServer, slide: str, layer: str, centroids: Any
) -> None:
    rng = np.random.default_rng(5)
    boxes = [(0, 0, 100_000, 80_000), (5000, 5000, 5001, 5001), (1000.5, 2000.25, 7000.75, 9000.5)]
    boxes += [tuple(np.sort(rng.uniform(0, 21_000, 2)).tolist() + np.sort(rng.uniform(0, 17_000, 2)).tolist())
              for _ in range(8)]
    async with live.http("viewer") as http:
        for i, b in enumerate(boxes):
            x0, y0, x1, y1 = b if i < 3 else (b[0], b[2], b[1], b[3])
            bbox = f"{x0},{y0},{x1},{y1}"
            want = brute_box(centroids, x0, y0, x1, y1)
            r = await http.get(f"/api/slides/{slide}/layers/{layer}/objects",
                               params={"bbox": bbox, "limit": N_CELLS})
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["type"] == "FeatureCollection"
            assert {f["id"] for f in got["features"]} == want, bbox
            for feature in got["features"][:50]:
                assert feature["properties"]["classification"]["name"] in ("Tumor", "Lymphocyte", "Stroma")
                outline = shapely.geometry.shape(feature["geometry"])
                assert outline.is_valid and outline.area > 0
            # Past the limit: a grid whose counts add up to the same objects, class by class.
            r = await http.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": bbox, "limit": 0})
            grid = r.json()
            if not want:
                assert got["features"] == []
                continue
            assert grid["type"] == "grid"
            assert grid["cell"] >= 1
            summed: Counter[str] = Counter()
            for cell in grid["counts"]:
                assert x0 <= cell["x"] <= x1 and y0 <= cell["y"] <= y1
                summed.update(cell["classes"])
            classes = centroids[2]
            assert dict(summed) == dict(Counter(classes[i] for i in want))


async def test_outlines_keep_the_imported_vertices(
    live: LiveServer, slide: str, layer: str, cells: list[dict[str, Any]]
) -> None:
    async with live.http("viewer") as http:
        r = await http.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": "0,0,100000,80000"})
    features = {f["id"]: f for f in r.json()["features"]}
    for i in (0, 1, 10, 2999):
        ring = np.array(features[i]["geometry"]["coordinates"][0])
        np.testing.assert_allclose(ring, np.array(cells[i]["geometry"]["coordinates"][0]), atol=1 / 16)
        if "nucleusGeometry" in cells[i]:
            nucleus = np.array(features[i]["nucleusGeometry"]["coordinates"][0])
            np.testing.assert_allclose(nucleus, np.array(cells[i]["nucleusGeometry"]["coordinates"][0]), atol=1 / 16)
            assert features[i]["properties"]["objectType"] == "cell"
        else:
            assert "nucleusGeometry" not in features[i]


async def test_binary_form_decodes_to_the_geojson_objects(live: LiveServer, slide: str, layer: str) -> None:
    bbox = "2000,2000,9000,8000"
    async with live.http("viewer") as http:
        geo = (await http.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": bbox})).json()
        r = await http.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": bbox, "format": "binary"})
        assert r.headers["content-type"] == "application/octet-stream"
        decoded = binary.decode(r.content)
        points = binary.decode((await http.get(f"/api/slides/{slide}/layers/{layer}/objects",
                                               params={"bbox": bbox, "format": "binary", "detail": "points"})).content)
    assert decoded.outlines is not None and points.outlines is None
    assert sorted(name for name, _color in decoded.classes) == ["Lymphocyte", "Stroma", "Tumor"]
    names = [name for name, _ in decoded.classes]
    features = {f["id"]: f for f in geo["features"]}
    assert sorted(decoded.ids.tolist()) == sorted(features) and len(features) > 10
    assert points.ids.tolist() == decoded.ids.tolist()
    for i, object_id in enumerate(decoded.ids.tolist()):
        feature = features[object_id]
        assert names[decoded.class_index[i]] == feature["properties"]["classification"]["name"]
        ring = np.array(feature["geometry"]["coordinates"][0])[:-1]
        np.testing.assert_allclose(decoded.outlines[i], ring, atol=1e-3)
        centroid = shapely.geometry.shape(feature["geometry"]).centroid
        assert abs(decoded.xy[i][0] - centroid.x) < 0.2 and abs(decoded.xy[i][1] - centroid.y) < 0.2


CONCAVE = {"type": "Polygon", "coordinates": [[  # a U: the notch holds cells that must not count
    [2000, 2000], [12000, 2000], [12000, 12000], [9000, 12000], [9000, 5000], [5000, 5000], [5000, 12000],
    [2000, 12000], [2000, 2000]]]}
WITH_HOLE = {"type": "Polygon", "coordinates": [
    [[1000, 1000], [15000, 1000], [15000, 15000], [1000, 15000], [1000, 1000]],
    [[4000, 4000], [4000, 9000], [9000, 9000], [9000, 4000], [4000, 4000]]]}
MULTI = {"type": "MultiPolygon", "coordinates": [
    [[[1500, 1500], [3000, 1500], [3000, 3000], [1500, 3000], [1500, 1500]]],
    [[[16000, 9000], [19000, 9500], [17000, 14000], [16000, 9000]]]]}


def star(cx: float, cy: float, r: float, n: int) -> dict[str, Any]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = np.where(np.arange(n) % 2 == 0, r, r * 0.35)
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).tolist()
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


@pytest.mark.parametrize("geometry", [CONCAVE, WITH_HOLE, MULTI, star(10_000, 8000, 7000, 5000)],
                         ids=["concave", "hole", "multi", "star-5000"])
async def test_counts_equal_brute_force(
    live: LiveServer, slide: str, layer: str, centroids: Any, geometry: dict[str, Any]
) -> None:
    async with live.http("viewer") as http:
        r = await http.post(f"/api/slides/{slide}/layers/{layer}/count", json={"geometry": geometry})
    assert r.status_code == 200, r.text
    want = brute_count(centroids, geometry)
    assert want["total"] > 0
    assert r.json() == want


async def test_count_by_annotation_id(live: LiveServer, slide: str, layer: str, centroids: Any) -> None:
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "roi-1", "geometry": CONCAVE, "properties": {"objectType": "annotation"}}]}
    async with live.http("reviewer") as http:
        r = await http.post(f"/api/slides/{slide}/annotations", json=collection)
        assert r.status_code == 201, r.text
    async with live.http("viewer") as http:
        r = await http.post(f"/api/slides/{slide}/layers/{layer}/count", json={"annotation": "roi-1"})
        assert r.json() == brute_count(centroids, CONCAVE)
        r = await http.post(f"/api/slides/{slide}/layers/{layer}/count", json={"annotation": "nope"})
        assert r.status_code == 404 and "error" in r.json()
        r = await http.post(f"/api/slides/{slide}/layers/{layer}/count", json={"geometry": {"type": "Point"}})
        assert r.status_code == 400 and "error" in r.json()


async def test_roles(live: LiveServer, slide: str, layer: str) -> None:
    body = export_bytes(cell_features(10))
    async with live.http("viewer") as viewer, live.http("reviewer") as reviewer, live.http("admin") as admin:
        assert (await viewer.get(f"/api/slides/{slide}/layers")).status_code == 200
        r = await viewer.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": "0,0,10,10"})
        assert r.status_code == 200
        r = await viewer.post(f"/api/slides/{slide}/layers/{layer}/count", json={"geometry": CONCAVE})
        assert r.status_code == 200
        r = await import_layer(viewer, slide, body)
        assert r.status_code == 403 and "error" in r.json()
        assert (await viewer.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 403
        assert (await reviewer.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 403
        async with live.http("presenter") as presenter:
            assert (await import_layer(presenter, slide, body)).status_code == 201
        assert (await admin.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 200
        assert (await admin.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 404
        r = await viewer.get(f"/api/slides/{slide}/layers/{layer}/objects", params={"bbox": "0,0,10,10"})
        assert r.status_code == 404
        audit = (await admin.get(f"/api/slides/{slide}/audit")).json()
        assert [(a["action"], a["annotation"], a["user"]) for a in audit if a["action"] == "layer_deleted"] == [
            ("layer_deleted", layer, "admin-roubaix")]
        other = live.token("viewer", slides=["other"])
        r = await viewer.get(f"/api/slides/{slide}/layers", headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 403


def square(x: float, y: float, size: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def cells_of(client: Any, key: str) -> Any:
    value = client.annotations.get(key) if key in client.annotations else None
    measurements = value.get("measurements") if value is not None else None
    return measurements.get("cells") if isinstance(measurements, dict) else None


def _ints(cells: dict[str, Any] | None) -> Any:
    if cells is None:
        return None
    return {k: {"total": int(v["total"]), "classes": {c: int(n) for c, n in v["classes"].items()}}
            for k, v in cells.items()}


async def test_live_counts_follow_edits_and_layers(
    live: LiveServer, slide: str, layer: str, centroids: Any, cells: list[dict[str, Any]]
) -> None:
    first, moved = square(3000, 3000, 2500), square(9000, 6000, 4000)
    async with live.client(slide, user="alice") as a, live.client(slide, user="bob", role="viewer") as b:
        a.annotations["roi"] = Map({"geometry": first, "classification": None, "name": "roi",
                                    "comments": Array([])})
        started = time.monotonic()
        await b.wait_for(lambda: _ints(cells_of(b, "roi")) == {layer: brute_count(centroids, first)})
        assert time.monotonic() - started < 1.5
        a.annotations["roi"]["geometry"] = moved
        started = time.monotonic()
        await b.wait_for(lambda: _ints(cells_of(b, "roi")) == {layer: brute_count(centroids, moved)})
        assert time.monotonic() - started < 1.5
        # A second layer: every outline is recounted; deleting the first removes its counts.
        async with live.http("reviewer") as http:
            r = await import_layer(http, slide, export_bytes(cells[:500]), name="half")
            second = r.json()["id"]
        half = (centroids[0][:500], centroids[1][:500], centroids[2][:500])
        await b.wait_for(lambda: _ints(cells_of(b, "roi")) == {
            layer: brute_count(centroids, moved), second: brute_count(half, moved)})
        async with live.http("admin") as http:
            assert (await http.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 200
            await b.wait_for(lambda: _ints(cells_of(b, "roi")) == {second: brute_count(half, moved)})
            assert (await http.delete(f"/api/slides/{slide}/layers/{second}")).status_code == 200
            await b.wait_for(lambda: "roi" in b.annotations and cells_of(b, "roi") is None
                             and "area_um2" in b.annotations["roi"]["measurements"])


async def test_counts_of_a_reloaded_room_follow_layers_deleted_meanwhile(
    live: LiveServer, slide: str, layer: str, centroids: Any
) -> None:
    collab = live.app.state.collab
    outline = square(2000, 2000, 3000)
    async with live.client(slide, user="alice") as a:
        a.annotations["roi"] = Map({"geometry": outline, "comments": Array([])})
        await a.wait_for(lambda: _ints(cells_of(a, "roi")) == {layer: brute_count(centroids, outline)})

    await collab.rooms.unload(RoomKey.slide(slide)) if hasattr(collab.rooms, "unload") else None
    async with live.http("admin") as http:
        assert (await http.delete(f"/api/slides/{slide}/layers/{layer}")).status_code == 200
    async with live.client(slide, user="carol", role="viewer") as c:
        await c.wait_for(lambda: "roi" in c.annotations and cells_of(c, "roi") is None)


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.mark.slow
def test_large_import_keeps_memory_bounded(server_process: ServerProcess, tmp_path: Path) -> None:
    """200,000 cells (about 130 MB of JSON) streamed to a child `collab serve`: the growth of its
    peak RSS (VmHWM) over its RSS before the import stays far below the size of the file."""
    proc = server_process.start()
    assert proc.proc is not None
    pid = proc.proc.pid
    auth = TokenAuthenticator(SECRET)
    admin = auth.mint(user="adm", name="Adm", site="Roubaix", role="admin", slides="*", ttl=600)
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=proc.base_url, headers=headers, timeout=300) as http:
        r = http.post("/api/slides", json={"id": "big", "title": "big", "width": 100_000, "height": 80_000,
                                           "mpp": 0.25, "tiles": "https://example.invalid/x.dzi"})
        assert r.status_code in (200, 201), r.text
        before = _rss_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        sent = 0

        def body() -> Any:
            nonlocal sent
            for piece in export_pieces(200_000, box=(0, 0, 99_000, 79_000)):
                sent += len(piece)
                yield piece

        r = http.post("/api/slides/big/layers", params={"name": "big"}, content=body())
        assert r.status_code == 201, r.text
        assert r.json()["count"] == 200_000
        peak = _rss_kb(pid, "VmHWM")
    growth_mb = (peak - before) / 1024
    print(f"\nimport of {sent / 1e6:.0f} MB: peak RSS growth {growth_mb:.1f} MB")
    assert sent > 100e6
    assert growth_mb < 80, growth_mb
    assert os.path.getsize(proc.data / "layers.sqlite3") < 200_000 * 150 * 1.5


# --- the parser, without a server --------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(alphabet='ab,[]{}"\\é ', max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='k,"\\]', max_size=3), inner,
                                                               max_size=3),
    max_leaves=12,
)


@given(values=st.lists(json_values, max_size=8), cuts=st.lists(st.integers(1, 10_000), max_size=12))
@example(values=['\\', "]"], cuts=[2])  # a backslash at the end of a piece escapes the next
def test_splitter_cuts_whole_elements_wherever_the_pieces_end(values: list[Any], cuts: list[int]) -> None:
    body = orjson.dumps(values)[1:]
    splitter = ArraySplitter()
    got: list[Any] = []
    previous = 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        if cut < previous:
            continue
        span = splitter.feed(body[previous:cut])
        previous = cut
        if span.strip():
            got += orjson.loads(b"[" + span + b"]")
    assert splitter.closed
    assert got == values


def _parse(body: bytes, piece: int = 4096) -> tuple[LayerParser, list[Chunk]]:
    parser = LayerParser(width=100_000, height=80_000)
    chunks = []
    for start in range(0, len(body), piece):
        chunks += parser.feed(body[start : start + piece])
    chunks += parser.finish()
    return parser, chunks


def _objects(parser: LayerParser, chunks: list[Chunk]) -> list[tuple[Any, ...]]:
    """Every stored object as (class name, centroid, its rings' vertices), in a set order."""
    out = []
    for chunk in chunks:
        points = decode_points(chunk.points)
        shapes = decode_shapes(chunk.shapes, points.xy)
        for i in range(len(points)):
            rings = tuple(tuple(map(tuple, shapes.coords[o : o + n].tolist()))
                          for o, n in zip(shapes.offsets[i], shapes.counts[i], strict=True))
            out.append((parser.class_names[points.classes[i]], *points.xy[i].tolist(), rings))
    return sorted(out)


def _uncommon_features() -> list[Any]:
    """Usable features off the common form (the typed fast path hands them to the general one)."""
    square = [[100, 100], [140, 100], [140, 140], [100, 140], [100, 100]]
    hole = [[110, 110], [120, 110], [120, 120], [110, 110]]
    nucleus = {"type": "Polygon", "coordinates": [[[115, 115], [125, 115], [125, 125], [115, 115]]]}
    return [
        {"type": "Feature",
         "geometry": {"type": "MultiPolygon", "coordinates": [[square], [[[0, 0], [5, 0], [5, 5], [0, 0]]]]},
         "properties": {"objectType": "cell", "classification": {"name": "Odd"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square, hole]}, "properties": None},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x, y, 0] for x, y in square]]},
         "properties": {"objectType": "detection", "classification": {"name": "Odd", "color": [1, 2, 3]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}, "objectType": "cell",
         "classification": {"name": "Top"}, "nucleusGeometry": None, "properties": {"nucleusGeometry": nucleus}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
         "properties": {"nucleusGeometry": nucleus, "classification": None}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}, "nucleusGeometry": "junk",
         "properties": {"classification": {"names": ["Tumor", "Positive"], "color": 0x102030}}},
        {"type": "Feature",
         "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [140, 100.5], [140, 140], [100, 100]]]},
         "properties": {"objectType": "cell", "classification": {"name": "Top", "color": [9, 9, 9]}}},
    ]


def test_both_json_paths_agree(cells: list[dict[str, Any]]) -> None:
    """The usual layout goes through the splitter and msgspec's typed decoding (orjson for the
    features off the common form); another (a key before "features") through ijson: the same
    objects, classes, colors and reasons, whatever the mix within a piece."""
    bad, reasons = unusable_features()
    odd = _uncommon_features()
    features = cells[:500] + bad + odd + cells[500:1000] + odd[::-1]
    usual = export_bytes(features)
    other = orjson.dumps({"bbox": [0, 0, 1, 1], "type": "FeatureCollection", "features": features})
    array = orjson.dumps(features)
    results = []
    for body in (usual, other, array):
        for piece in (4096, 1 << 20):
            parser, chunks = _parse(body, piece)
            results.append((parser.count, dict(parser.class_counts), dict(parser.skipped),
                            dict(zip(parser.class_names, map(str, parser.class_colors), strict=True)),
                            _objects(parser, chunks)))
    assert all(r == results[0] for r in results[1:])
    assert results[0][0] == 1000 + 2 * len(odd) and results[0][2] == reasons
    assert results[0][3]["Odd"] == "[1, 2, 3]" and results[0][3]["Top"] == "[9, 9, 9]"


async def test_store_keeps_cells_compact_and_gives_space_back(tmp_path: Path) -> None:
    """The real SQLite layer store: an export in random order (every tile's pieces regrouped)
    takes at most 150 bytes a cell (8-vertex outline + nucleus) in the file, and a deleted layer
    gives its pages back."""
    import sqlite3

    from collab.layers.sqlite import SqliteLayerStore
    from collab.layers.store import LayerMeta

    n = 60_000
    raw = b"".join(export_pieces(n, box=(5000, 5000, 15_000, 15_000)))  # ~1,700 px² a cell
    path = tmp_path / "layers.sqlite3"
    store = SqliteLayerStore(path)
    await store.open()
    try:
        await store.begin_import("L", "s")
        parser = LayerParser(width=100_000, height=80_000)
        for start in range(0, len(raw), 1 << 20):
            await store.add_chunks("L", parser.feed(raw[start : start + (1 << 20)]))
        await store.add_chunks("L", parser.finish())
        await store.finish_import(LayerMeta("L", "s", "n", 0, parser.count, [], {}, {}))
        assert parser.count == n
        assert await store.stored_bytes("L") / n <= 150

        def file_bytes() -> int:
            db = sqlite3.connect(path)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                assert db.execute("PRAGMA freelist_count").fetchone() == (0,)
            finally:
                db.close()
            return path.stat().st_size

        full = file_bytes()
        assert full / n <= 150, full / n
        assert await store.delete_layer("s", "L")
        assert file_bytes() < full / 10
    finally:
        await store.close()


def _zigzag(cx: float, cy: float, r: float, n: int, depth: float = 0.9) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = np.where(np.arange(n) % 2 == 0, r, r * depth) * (1 + 0.2 * np.sin(3 * angles))
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).round(2).tolist()
    return [*ring, ring[0]]


def test_dense_counts_equal_brute_force() -> None:
    """Counts over enough centroids that every shortcut is taken (whole chunks, cells away from
    the outline, strips of the clipped outline) equal Shapely's test of every centroid."""
    rng = np.random.default_rng(11)
    n = 200_000
    xy = rng.uniform(0, 20_000, (n, 2)).astype(np.float32)
    xy[:500] = np.round(xy[:500] / 128) * 128  # on cell corners
    classes = rng.integers(0, 3, n).astype(np.uint16)
    index, xy, classes = _tiled_index(xy, classes)
    edge_cells = [[float(x), 0.0] for x in range(0, 20_001, 128)] + [[20_000.0, 3000.0], [0.0, 3000.0]]
    shapes = [
        shapely.Polygon(_zigzag(10_000, 10_000, 6000, 5000)),
        shapely.Polygon(_zigzag(10_000, 10_000, 8000, 4000, 0.7), [_zigzag(10_000, 10_000, 3000, 3000)[::-1]]),
        shapely.MultiPolygon([shapely.Polygon(_zigzag(5000, 5000, 4000, 2000)),
                              shapely.Polygon(_zigzag(15_000, 15_000, 4000, 2000))]),
        shapely.Polygon([*edge_cells, edge_cells[0]]),  # along the top, through cell corners
        shapely.box(0, 0, 20_000, 20_000),
    ]
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    for shape in shapes:
        assert shape.is_valid
        inside = shapely.contains_xy(shape, x, y)
        got = index.count_inside(shape)
        want = np.bincount(classes[inside], minlength=3)
        assert got == {"total": int(inside.sum()),
                       "classes": {name: int(k) for name, k in zip("ABC", want, strict=True) if k}}


def _tiled_index(xy: np.ndarray, classes: np.ndarray) -> tuple[LayerIndex, np.ndarray, np.ndarray]:
    """A LayerIndex of float32 centroids in chunks of 1024 px tiles, classes A, B, C; with the
    centroids and classes in the index's order."""
    n = len(xy)
    tiles = np.floor(xy / 1024).astype(np.int64)
    order = np.lexsort((tiles[:, 1], tiles[:, 0]))
    xy, tiles, classes = xy[order], tiles[order], classes[order]
    starts = [0, *(np.flatnonzero(np.any(np.diff(tiles, axis=0) != 0, axis=1)) + 1).tolist(), n]
    rows = []
    for number, (a, b) in enumerate(pairwise(starts)):
        part = xy[a:b]
        rows.append(PointsRow(number, b - a, (*part.min(axis=0).tolist(), *part.max(axis=0).tolist()),
                              encode_points(Points(np.arange(a, b, dtype=np.uint32), classes[a:b], part))))
    meta = LayerMeta(id="x", slide_id="s", name="n", created_ms=0, count=n, class_counts={},
                     classes=[{"name": name, "color": None} for name in ("A", "B", "C")])
    return LayerIndex(meta, rows), xy, classes


def _shapely_total(shape: Any, xy: np.ndarray) -> int:
    return int(shapely.contains_xy(shape, xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)).sum())


def test_centroids_on_slanted_edges_count_as_shapely_says() -> None:
    """Clipping the outline to strips rounds the points where a slanted edge crosses a strip's
    side; a centroid on the edge itself must still be outside (issue 15, M2)."""
    w = np.linspace(0, 1, 20_000)
    cases = [  # the reviewer's repro: float32 centroids on the edge (0, 0) -> (7000, 3000)
        (shapely.Polygon([(0, 0), (7000, 3000), (7000, 5000), (0, 5000)]), np.column_stack([7000 * w, 3000 * w])),
    ]
    i = np.arange(20_000)[:, None]
    for p, q in ((7, 3), (2, 9), (-11, 5)):  # centroids exactly on an edge (0, 0) -> (p, q) * 5000
        shape = shapely.Polygon([(60_000, 0), (60_000 + p * 5000, q * 5000), (60_000, q * 5000)])
        cases.append((shape, i * (p / 4, q / 4) + (60_000, 0)))
    for shape, points in cases:
        assert shape.is_valid
        xy = points.astype(np.float32)
        index, xy, _ = _tiled_index(xy, np.zeros(len(xy), np.uint16))
        assert index.count_inside(shape)["total"] == _shapely_total(shape, xy)
    on_edge = cases[1][1].astype(np.float32)
    assert _shapely_total(cases[1][0], on_edge) == 0  # those centroids are exactly on the edge


def _comb(vertices: int, width: float = 100_000, tooth: float = 90_000) -> Any:
    """A valid outline of `vertices` vertices: thin teeth `tooth` px long over `width` px."""
    teeth = (vertices - 1) // 4
    xs = np.linspace(0, width, 2 * teeth + 1)
    ring = [(xs[k + side], y) for k in range(0, 2 * teeth, 2) for side, y in ((0, 0), (0, tooth), (1, tooth), (1, 0))]
    return shapely.Polygon([*ring, (width, 0), (width, -1000), (0, -1000)])


def test_count_inside_a_long_outline_keeps_memory_bounded() -> None:
    """Memory of a count does not grow with the outline's length: a comb of up to 20,001
    vertices with 90,000 px teeth over a layer of 20,000 px (issue 15, H1; before the fix,
    5,001 vertices took +270 MB, 20,001 +1 GB). The counts equal Shapely's."""
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 20_000, (20_000, 2)).astype(np.float32)
    index, xy, _ = _tiled_index(xy, np.zeros(len(xy), np.uint16))
    for vertices in (5001, 20_001):
        shape = _comb(vertices)
        assert shape.is_valid
        assert len(shape.exterior.coords) == vertices + 3
        tracemalloc.start()
        try:
            total = index.count_inside(shape)["total"]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 40e6, f"{vertices} vertices: {peak / 1e6:.0f} MB"
        assert total == _shapely_total(shape, xy)


def test_geojson_of_a_selection_is_the_features_as_dicts() -> None:
    """The GeoJSON built from slices of one encoded text equals orjson.dumps of the Features as
    plain dicts: detections without a nucleus, an unclassified class, odd ring sizes, none."""
    classes = [{"name": "Tumor", "color": [200, 0, 0]}, {"name": UNCLASSIFIED, "color": None}]
    xy = np.array([[10.5, 20.25], [30, 40], [50.125, 60], [70, 80]], np.float32)
    points = Points(np.array([7, 8, 9, 10], np.uint32), np.array([0, 1, 1, 0], np.uint16), xy)
    rows = [PointsRow(0, 4, (10.5, 20.25, 70, 80), encode_points(points))]
    index = LayerIndex(LayerMeta(id="x", slide_id="s", name="n", created_ms=0, count=4, class_counts={},
                                 classes=classes), rows)
    outline_sizes, nucleus_sizes = np.array([3, 5, 4, 3]), np.array([3, 0, 0, 4])
    rng = np.random.default_rng(2)
    outlines = np.round(rng.uniform(0, 1e5, (outline_sizes.sum(), 2)) * 8) / 8
    nuclei = np.round(rng.uniform(-5, 5, (nucleus_sizes.sum(), 2)) * 8) / 8
    for rows_wanted in ([0, 1, 2, 3], [1, 2], []):
        sel = Selection(np.array(rows_wanted, np.int64), np.zeros(len(rows_wanted), np.int64))
        o_at, n_at = np.cumsum(outline_sizes) - outline_sizes, np.cumsum(nucleus_sizes) - nucleus_sizes
        features = []
        for i in rows_wanted:
            ring = outlines[o_at[i] : o_at[i] + outline_sizes[i]].tolist()
            feature = {"type": "Feature", "id": int(index.ids[i]),
                       "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                       "properties": {"objectType": "cell" if nucleus_sizes[i] else "detection",
                                      "classification": None if i in (1, 2) else classes[0]}}
            if nucleus_sizes[i]:
                nucleus = nuclei[n_at[i] : n_at[i] + nucleus_sizes[i]].tolist()
                feature["nucleusGeometry"] = {"type": "Polygon", "coordinates": [[*nucleus, nucleus[0]]]}
            features.append(feature)
        w = np.array(rows_wanted, np.int64)
        empty = [np.zeros((0, 2))]
        picked = SelectedRings(
            outline_sizes[w], np.concatenate([outlines[o_at[i] : o_at[i] + outline_sizes[i]] for i in w] or empty),
            nucleus_sizes[w], np.concatenate([nuclei[n_at[i] : n_at[i] + nucleus_sizes[i]] for i in w] or empty))
        assert _collection_json(index, sel, picked) == orjson.dumps({"type": "FeatureCollection", "features": features})


async def test_imports_past_the_limit_are_refused_with_429(server_settings: Settings,
                                                            cells: list[dict[str, Any]]) -> None:
    """COLLAB_LAYER_IMPORTS=1: while one import streams in, another is refused at once (429, a
    JSON error naming the setting); once the first is done, imports are taken again."""
    import asyncio

    from collab import metrics
    from tests.conftest import serving
    from tests.waiting import wait_for

    body = export_bytes(cells)
    more = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:1000]
        await more.wait()
        yield body[1000:]

    def imported_bytes() -> float:
        return metrics.REGISTRY.get_sample_value("collab_layer_import_bytes_total") or 0.0

    async with serving(server_settings.replace(layer_imports=1)) as live:
        await live.register_slide("slide-1")
        bytes_before = imported_bytes()
        async with live.http("reviewer") as http:
            first = asyncio.create_task(http.post("/api/slides/slide-1/layers", params={"name": "first"},
                                                  content=slow_body()))
            # Once the first import is in (its first bytes were read), a second is refused.
            await wait_for(lambda: imported_bytes() > bytes_before, what="the first import reading its body")
            second = await import_layer(http, "slide-1", body, name="second")
            assert second.status_code == 429, second.text
            assert "COLLAB_LAYER_IMPORTS" in second.json()["error"]
            more.set()
            assert (await first).status_code == 201
            third = await import_layer(http, "slide-1", body, name="third")
            assert third.status_code == 201, third.text


async def test_layers_kept_in_sqlite_before_are_served_from_postgresql(tmp_path: Path,
                                                                       cells: list[dict[str, Any]]) -> None:
    """Upgrading a PostgreSQL deployment whose nodes kept layers in <data>/layers.sqlite3: the
    node starts with its layers copied into PostgreSQL; a room loading keeps their counts."""
    from tests.conftest import serving

    data = tmp_path / "data"
    async with serving(make_settings(data)) as live:  # before: layers in the file (SQLite live store)
        await live.register_slide("slide-1")
        async with live.http("reviewer") as http:
            r = await import_layer(http, "slide-1", export_bytes(cells))
            assert r.status_code == 201, r.text
            layer_id = r.json()["id"]
            before = (await http.get("/api/slides/slide-1/layers")).json()
    async with fresh_database("collab_layers") as url, serving(make_settings(data, database_url=url)) as live:
        await live.register_slide("slide-1")
        async with live.http("reviewer") as http:
            assert (await http.get("/api/slides/slide-1/layers")).json() == before
            box = await http.get(f"/api/slides/slide-1/layers/{layer_id}/objects",
                                 params={"bbox": "0,0,100000,100000", "limit": "0"})
            assert box.status_code == 200, box.text
        assert not (data / "layers.sqlite3").exists() and (data / "layers.sqlite3.migrated").exists()


async def test_a_node_whose_sqlite_layers_cannot_be_copied_does_not_start(tmp_path: Path) -> None:
    """A damaged layers.sqlite3 beside a PostgreSQL live store: `collab serve` refuses to start
    and says what to do, rather than serving without those layers (rooms would drop their counts)."""
    import asyncio

    data = tmp_path / "data"
    data.mkdir()
    (data / "layers.sqlite3").write_bytes(b"not a database" * 100)
    async with fresh_database("collab_layers") as url:
        node = ServerProcess(data, env={"COLLAB_DATABASE_URL": url})
        try:
            with pytest.raises(RuntimeError, match="server exited") as refused:
                await asyncio.to_thread(node.start)
        finally:
            node.stop()
    assert "could not be copied into PostgreSQL" in str(refused.value)
    assert "move the file aside" in str(refused.value)
    assert (data / "layers.sqlite3").exists()  # left as it was


def test_a_number_past_float64_is_a_parse_error_not_a_crash() -> None:
    """msgspec refuses 1e400; the general path's orjson must then say "not valid JSON" (a 400),
    not raise its own error (a 500)."""
    features = cell_features(20)
    body = orjson.dumps({"type": "FeatureCollection", "features": features})
    body = body.replace(orjson.dumps(features[3]["geometry"]["coordinates"][0][0][0]), b"1e400", 1)
    with pytest.raises(ParseError, match="not valid JSON"):
        _parse(body)


def test_classifications_with_a_per_object_field_do_not_grow_a_cache() -> None:
    features = cell_features(6000)
    for i, f in enumerate(features):
        f["properties"]["classification"] = {"name": "Tumor", "color": [200, 0, 0], "probability": i / 6000}
    parser, chunks = _parse(orjson.dumps({"type": "FeatureCollection", "features": features}), piece=1 << 16)
    assert sum(len(decode_points(c.points)) for c in chunks) == 6000
    assert len(parser._raw_classes) <= 4096
    assert parser.class_names == ["Tumor"]

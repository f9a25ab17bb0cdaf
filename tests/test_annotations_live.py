"""Annotation checks over real sockets and HTTP: repair, invalid, measure, stamp, query, import, audit."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import shapely
from pycrdt import Array, Doc, Map

import collab.annotations.guard as annotations_module
from collab.live.keys import RoomKey
from tests.conftest import LiveServer
from tests.waiting import settled, wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "qupath_export.geojson"
BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]}


def square(x: float, y: float, size: float = 10) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def ann(geometry: Any, **extra: Any) -> Map:
    return Map({"geometry": geometry, "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "name": "r", "comments": Array([]), **extra})


def field(client: Any, key: str, name: str) -> Any:
    if key not in client.annotations:
        return None
    return client.annotations[key].get(name)


def guard_of(live: LiveServer, slide: str) -> Any:
    room = live.app.state.collab.rooms.get(RoomKey.slide(slide))
    return room.policy


async def test_bowtie_is_repaired_and_clients_converge(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice") as a, live.client(slide, user="bob") as b:
        a.annotations["bow"] = ann(BOWTIE)
        await b.wait_for(lambda: field(b, "bow", "status") == "repaired")
        await a.wait_for(lambda: field(a, "bow", "status") == "repaired")
        geom = field(a, "bow", "geometry")
        assert geom == field(b, "bow", "geometry")
        assert geom["type"] == "MultiPolygon"
        assert shapely.geometry.shape(geom).is_valid
        assert "Repaired" in field(a, "bow", "problem")
        assert a.annotations["bow"].to_py() == b.annotations["bow"].to_py()


async def test_invalid_kept_with_problem_and_not_indexed(live: LiveServer, slide: str) -> None:
    cases = {
        "nan": {"type": "Polygon", "coordinates": [[[0, 0], [float("nan"), 5], [5, 5], [0, 0]]]},
        "oob": square(99_995, 10, 100),
        "type": {"type": "Circle", "coordinates": [1, 2]},
        "garbage": "not a geometry",
    }
    async with live.client(slide) as a, live.client(slide, user="obs") as b:
        for key, geom in cases.items():
            a.annotations[key] = ann(geom)
        a.annotations["good"] = ann(square(10, 10))
        for key in cases:
            await b.wait_for(lambda key=key: field(b, key, "status") == "invalid")
            assert field(b, key, "problem")
        await b.wait_for(lambda: field(b, "good", "status") == "ok")
        async with live.http("reviewer") as http:
            r = await http.get(f"/api/slides/{slide}/annotations", params={"bbox": "0,0,100000,80000"})
            assert [f["id"] for f in r.json()["features"]] == ["good"]
            r = await http.get(f"/api/slides/{slide}/annotations")
            assert [f["id"] for f in r.json()["features"]] == ["good"]
            r = await http.get(f"/api/slides/{slide}/annotations", params={"include_invalid": "1"})
            assert sorted(f["id"] for f in r.json()["features"]) == sorted([*cases, "good"])


async def test_plain_json_value_is_corrected_by_replacement(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a, live.client(slide, user="obs") as b:
        a.annotations["plain"] = {"geometry": BOWTIE, "name": "p", "author": "mallory"}
        await b.wait_for(lambda: field(b, "plain", "status") == "repaired")
        assert field(b, "plain", "author") == "reviewer-roubaix"
        assert field(b, "plain", "name") == "p"
        assert a.annotations.to_py() == b.annotations.to_py()


async def test_measurements_author_and_no_loop(live: LiveServer) -> None:
    await live.register_slide("m", mpp=0.5)
    async with live.client("m", user="alice") as a, live.client("m", user="obs") as b:
        a.annotations["sq"] = ann(square(100, 100, 20), author="forged")
        a.annotations["line"] = ann({"type": "LineString", "coordinates": [[0, 0], [30, 40]]})
        await b.wait_for(lambda: field(b, "line", "status") == "ok" and field(b, "sq", "status") == "ok")
        await b.wait_for(lambda: field(b, "sq", "author") == "alice")
        assert field(b, "sq", "measurements") == {"area_um2": 100.0, "perimeter_um": 40.0}
        assert field(b, "line", "measurements") == {"length_um": 25.0}
        assert isinstance(field(b, "sq", "updated"), int | float)
        await settled(live, "slide:m", a, b)
        guard = guard_of(live, "m")
        corrections, frames = guard.corrections, b.received_frames
        # Checking that nothing happens: a short sleep, then the server must not have written.
        await asyncio.sleep(0.5)
        assert (guard.corrections, b.received_frames) == (corrections, frames)
        # A classification edit: one client update, one server stamp of `updated`, no more.
        a.annotations["sq"]["classification"] = {"name": "Stroma", "color": [0, 200, 0]}
        await b.wait_for(lambda: field(b, "sq", "classification")["name"] == "Stroma")
        await settled(live, "slide:m", a, b)
        assert guard.corrections == corrections + 1
        assert field(b, "sq", "status") == "ok"
        # Forging the author later is undone too.
        a.annotations["sq"]["author"] = "mallory"
        await b.wait_for(lambda: field(b, "sq", "author") == "alice")


async def test_client_writing_what_the_server_would_costs_no_correction(live: LiveServer, slide: str) -> None:
    """The web client writes author, status, measurements and updated itself: kept as written
    (measurements within rounding, `updated` within 30 s of the server's clock), no correction."""
    import time as _time

    async with live.client(slide, user="alice") as a, live.client(slide, user="obs") as b:
        await settled(live, "slide:" + slide, a, b)
        guard = guard_of(live, slide)
        corrections = guard.corrections
        now = int(_time.time() * 1000)
        # A 10 x 10 px square at 0.25 µm/px: 6.25 µm², perimeter 10 µm (client rounding: +0.001).
        a.annotations["good"] = ann(square(10, 10), author="alice", status="ok", created=now, updated=now,
                                    measurements={"area_um2": 6.251, "perimeter_um": 10.0})
        await b.wait_for(lambda: "good" in b.annotations)
        await settled(live, "slide:" + slide, a, b)
        assert guard.corrections == corrections
        assert field(b, "good", "updated") == now and field(b, "good", "measurements")["area_um2"] == 6.251
        # An edit that writes its own `updated` (one transaction): still no correction.
        with a.doc.transaction():
            a.annotations["good"]["name"] = "renamed"
            a.annotations["good"]["updated"] = now + 1
        await settled(live, "slide:" + slide, a, b)
        assert guard.corrections == corrections
        # A clock 10 minutes off, and measurements that are not the server's: corrected.
        a.annotations["off"] = ann(square(40, 10), author="alice", status="ok", created=now,
                                   updated=now - 600_000, measurements={"area_um2": 7.0, "perimeter_um": 10.0})
        await b.wait_for(lambda: field(b, "off", "measurements") == {"area_um2": 6.25, "perimeter_um": 10.0})
        assert abs(field(b, "off", "updated") - int(_time.time() * 1000)) < 30_000
        assert guard.corrections == corrections + 1
        # A clock ahead of the server's by a minute: stamped (a change cannot be dated ahead).
        with a.doc.transaction():
            a.annotations["good"]["name"] = "ahead"
            a.annotations["good"]["updated"] = int(_time.time() * 1000) + 60_000
        await b.wait_for(lambda: field(b, "good", "name") == "ahead"
                         and field(b, "good", "updated") <= int(_time.time() * 1000))
        # Going back in time (before the annotation's last `updated`): stamped.
        previous = field(b, "good", "updated")
        with a.doc.transaction():
            a.annotations["good"]["name"] = "back"
            a.annotations["good"]["updated"] = previous - 1
        await b.wait_for(lambda: field(b, "good", "name") == "back" and field(b, "good", "updated") > previous)
        # An edit that leaves the old `updated` as it was: the server stamps it.
        stamped = field(b, "good", "updated")
        a.annotations["good"]["name"] = "again"
        await b.wait_for(lambda: field(b, "good", "name") == "again" and field(b, "good", "updated") != stamped)


async def test_update_and_its_correction_reach_the_others_in_one_frame(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice") as a, live.client(slide, user="obs") as b:
        await settled(live, "slide:" + slide, a, b)
        a.updates.clear()
        b.updates.clear()
        a.annotations["sq"] = ann(BOWTIE)  # repaired: the server rewrites its geometry too
        await b.wait_for(lambda: field(b, "sq", "status") == "repaired")
        await a.wait_for(lambda: field(a, "sq", "status") == "repaired")
        await settled(live, "slide:" + slide, a, b)
        # The correction joined the update's group commit: the others get both in one frame.
        assert len(b.updates) == 1
        first = Doc()
        first.apply_update(b.updates[0])
        assert first.get("annotations", type=Map)["sq"].to_py()["status"] == "repaired"
        # The writer gets the verdict only: not its own update back.
        assert len(a.updates) == 1
        assert a.annotations.to_py() == b.annotations.to_py()


async def test_burst_of_writes_gets_one_correction_per_group_commit(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice") as a, live.client(slide, user="obs") as b:
        await settled(live, "slide:" + slide, a, b)
        guard = guard_of(live, slide)
        writer = live.app.state.collab.store._writer
        before, batches = guard.corrections, writer.batches
        b.updates.clear()
        for i in range(20):  # twenty updates, a millisecond apart
            a.annotations[f"k{i}"] = ann(square(20 * i, 10))
            await asyncio.sleep(0.001)
        await b.wait_for(lambda: all(field(b, f"k{i}", "status") == "ok" for i in range(20)))
        # The corrections of what one group commit holds are one transaction in that commit:
        # never more corrections than commits (how many commits depends on the store's pace).
        corrections = guard.corrections - before
        assert 1 <= corrections <= writer.batches - batches
        # ...and never travel alone: every frame the other client got carries a new annotation
        # (a correction committed apart, as a timer would, arrives in a frame of its own).
        assert b.updates
        for update in b.updates:
            alone = Doc()
            alone.apply_update(update)  # a correction alone references items it lacks: pending
            assert len(alone.get("annotations", type=Map)) > 0
        assert {field(b, f"k{i}", "author") for i in range(20)} == {"alice"}


async def test_large_geometry_is_relayed_before_its_check(live: LiveServer, slide: str) -> None:
    n = 2000  # about 80 kB of JSON: checked in a worker thread, corrected in a second frame
    ring = [[5000 + 4000 * math.cos(2 * math.pi * i / n), 5000 + 4000 * math.sin(2 * math.pi * i / n)]
            for i in range(n)]
    ring[n // 2], ring[n // 2 + 1] = ring[n // 2 + 1], ring[n // 2]  # one crossing: a repair
    async with live.client(slide, user="alice") as a, live.client(slide, user="obs") as b:
        await settled(live, "slide:" + slide, a, b)
        b.updates.clear()
        a.annotations["big"] = ann({"type": "Polygon", "coordinates": [[*ring, ring[0]]]})
        await b.wait_for(lambda: field(b, "big", "status") == "repaired")
        assert len(b.updates) == 2
        assert shapely.geometry.shape(field(b, "big", "geometry")).is_valid
        await a.wait_for(lambda: a.annotations.to_py() == b.annotations.to_py())


async def test_server_corrections_do_not_carry_the_whole_delete_set(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice") as a, live.client(slide, user="obs") as b:
        for i in range(200):
            a.annotations[f"k{i}"] = ann(square(10 * i, 10))
        await b.wait_for(lambda: all(field(b, f"k{i}", "status") == "ok" for i in range(200)))
        for i in range(200):  # each rename deletes an item: 200 separate deleted ranges
            a.annotations[f"k{i}"]["name"] = f"renamed {i}"
        await b.wait_for(lambda: field(b, "k199", "name") == "renamed 199")
        await settled(live, "slide:" + slide, a, b)
        whole_delete_set = len(b.doc.get_update(b.doc.get_state()))
        assert whole_delete_set > 1000
        b.updates.clear()
        a.annotations["k7"]["classification"] = {"name": "Stroma", "color": [0, 200, 0]}
        await b.wait_for(lambda: field(b, "k7", "classification")["name"] == "Stroma")
        await settled(live, "slide:" + slide, a, b)
        # The edit and the server's `updated` stamp, in one frame: a few hundred bytes at most.
        assert len(b.updates) == 1
        assert max(map(len, b.updates)) < 400, ([len(u) for u in b.updates], whole_delete_set)


async def test_open_ring_is_ok_as_written_and_exported_closed(live: LiveServer, slide: str) -> None:
    open_ring = {"type": "Polygon", "coordinates": [[[0, 0], [40, 0], [40, 40], [0, 40]]]}
    async with live.client(slide, user="alice") as a:
        a.annotations["open"] = ann(open_ring)
        await a.wait_for(lambda: field(a, "open", "status") == "ok")
        assert field(a, "open", "geometry") == open_ring  # not rewritten
        async with live.http("reviewer") as http:
            r = await http.get(f"/api/slides/{slide}/annotations", params={"bbox": "10,10,20,20"})
            [feature] = r.json()["features"]
            assert feature["geometry"]["coordinates"] == [[[0, 0], [40, 0], [40, 40], [0, 40], [0, 0]]]


async def test_repaired_marker_survives_other_edits(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a:
        a.annotations["bow"] = ann(BOWTIE)
        await a.wait_for(lambda: field(a, "bow", "status") == "repaired")
        a.annotations["bow"]["name"] = "renamed"
        await settled(live, "slide:" + slide, a)
        assert field(a, "bow", "status") == "repaired"


async def test_queries_match_shapely_brute_force(live: LiveServer, slide: str) -> None:
    rng = random.Random(4)
    shapes: dict[str, shapely.Geometry] = {}
    classes = ["Tumor", "Stroma", None]
    cls: dict[str, str | None] = {}
    async with live.client(slide) as a:
        with a.doc.transaction():
            for i in range(40):
                x, y = rng.uniform(0, 2000), rng.uniform(0, 2000)
                kind = rng.random()
                if kind < 0.6:
                    g = square(x, y, rng.uniform(5, 300))
                elif kind < 0.8:
                    end = [x + rng.uniform(1, 200), y + rng.uniform(1, 200)]
                    g = {"type": "LineString", "coordinates": [[x, y], end]}
                else:
                    g = {"type": "Point", "coordinates": [x, y]}
                key = f"k{i:02d}"
                c = classes[i % 3]
                cls[key] = c
                klass = None if c is None else {"name": c, "color": [1, 2, 3]}
                a.annotations[key] = Map({"geometry": g, "classification": klass})
                shapes[key] = shapely.geometry.shape(g)
        await a.wait_for(lambda: all(field(a, k, "status") == "ok" for k in shapes))
        async with live.http("viewer") as http:
            for _ in range(8):
                x0, y0 = rng.uniform(0, 1800), rng.uniform(0, 1800)
                x1, y1 = x0 + rng.uniform(10, 600), y0 + rng.uniform(10, 600)
                box = shapely.box(x0, y0, x1, y1)
                r = await http.get(f"/api/slides/{slide}/annotations", params={"bbox": f"{x0},{y0},{x1},{y1}"})
                assert r.status_code == 200, r.text
                got = sorted(f["id"] for f in r.json()["features"])
                assert got == sorted(k for k, s in shapes.items() if s.intersects(box))
                r = await http.get(f"/api/slides/{slide}/stats", params={"bbox": f"{x0},{y0},{x1},{y1}"})
                stats = r.json()
                expect: dict[Any, list[float]] = {}
                for k, s in shapes.items():
                    if s.intersects(box):
                        expect.setdefault(cls[k], []).append(s.intersection(box).area)
                assert {c["name"]: c["count"] for c in stats["classes"]} == {k: len(v) for k, v in expect.items()}
                for row in stats["classes"]:
                    assert abs(row["area_px2"] - sum(expect[row["name"]])) < 0.01
            for key, s in list(shapes.items())[:10]:
                p = s.representative_point()
                r = await http.get(f"/api/slides/{slide}/annotations", params={"point": f"{p.x},{p.y}"})
                got = {f["id"] for f in r.json()["features"]}
                assert key in got
                pt = shapely.Point(p.x, p.y)
                brute = {k for k, g in shapes.items() if (g.covers(pt) if g.area > 0 else g.distance(pt) <= 2.0)}
                assert got == brute


async def test_import_qupath_live_and_roundtrip(live: LiveServer, slide: str) -> None:
    body = json.loads(FIXTURE.read_text())
    n = len(body["features"])
    async with live.client(slide, user="watcher") as w:
        async with live.http("reviewer", user="importer", site="Lille") as http:
            r = await http.post(f"/api/slides/{slide}/annotations", json=body)
            assert r.status_code == 201, r.text
            answer = r.json()
            assert answer["created"] == [f["id"] for f in body["features"] if "id" in f][: len(answer["created"])]
            assert len(answer["results"]) == n
            await w.wait_for(lambda: len(w.annotations) == n)
            assert all(field(w, f["id"], "author") == "importer" for f in answer["results"])
            r = await http.get(f"/api/slides/{slide}/annotations", params={"include_invalid": "1"})
            out = {f["id"]: f for f in r.json()["features"]}
        server_fields = {"author", "status", "problem", "measurements", "created", "updated", "comments"}
        for feature in body["features"]:
            got = out[feature["id"]]
            status = next(x for x in answer["results"] if x["id"] == feature["id"])["status"]
            if status == "ok":
                assert got["geometry"] == json.loads(json.dumps(feature["geometry"]), parse_float=float) or \
                    shapely.geometry.shape(got["geometry"]).equals(shapely.geometry.shape(feature["geometry"]))
            props = {k: v for k, v in got["properties"].items() if k not in server_fields}
            expect = {k: v for k, v in feature["properties"].items() if k not in server_fields}
            expect.setdefault("objectType", "annotation")
            if "measurements" in feature["properties"]:
                m = got["properties"]["measurements"]
                for k, v in feature["properties"]["measurements"].items():
                    assert m[k] == v
            assert props == expect, (props, expect)


async def test_malformed_import_is_400_and_changes_nothing(live: LiveServer, slide: str) -> None:
    bad = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "ok1", "geometry": square(1, 1), "properties": {}},
        {"type": "Feature", "id": "bad", "geometry": "nope", "properties": {}},
    ]}
    async with live.http("reviewer") as http:
        r = await http.post(f"/api/slides/{slide}/annotations", json=bad)
        assert r.status_code == 400
        assert "feature 1" in r.json()["error"]
        r = await http.post(f"/api/slides/{slide}/annotations", content=b"{not json")
        assert r.status_code == 400
        r = await http.get(f"/api/slides/{slide}/annotations", params={"include_invalid": "1"})
        assert r.json()["features"] == []
    async with live.http("viewer") as http:
        r = await http.post(f"/api/slides/{slide}/annotations", json={"type": "FeatureCollection", "features": []})
        assert r.status_code == 403
    async with live.http("reviewer", slides=["other"]) as http:
        r = await http.get(f"/api/slides/{slide}/annotations")
        assert r.status_code == 403


async def test_audit_entries(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice", site="Roubaix") as a, \
            live.client(slide, user="bob", site="Mouscron") as b:
        a.annotations["x"] = ann(square(10, 10))
        await b.wait_for(lambda: field(b, "x", "status") == "ok")
        b.annotations["x"]["geometry"] = square(20, 20)
        await a.wait_for(lambda: field(a, "x", "geometry")["coordinates"][0][0] == [20.0, 20.0])
        await settled(live, "slide:" + slide, a, b)
        b.annotations["x"]["classification"] = {"name": "Stroma", "color": [0, 1, 2]}
        await a.wait_for(lambda: field(a, "x", "classification")["name"] == "Stroma")
        await settled(live, "slide:" + slide, a, b)
        a.annotations["x"]["comments"].append({"id": "c1", "author": "alice", "text": "hm", "created": 1})
        await b.wait_for(lambda: len(field(b, "x", "comments")) == 1)
        await settled(live, "slide:" + slide, a, b)
        a.annotations["bow"] = ann(BOWTIE)
        a.annotations["nan"] = ann({"type": "Point", "coordinates": [float("inf"), 1]})
        await b.wait_for(lambda: field(b, "nan", "status") == "invalid")
        del b.annotations["x"]
        await a.wait_for(lambda: "x" not in a.annotations)
        await settled(live, "slide:" + slide, a, b)  # every audit record committed
    async with live.http("reviewer") as http:
        r = await http.get(f"/api/slides/{slide}/audit")
        assert r.status_code == 403
    async with live.http("admin") as http:
        r = await http.get(f"/api/slides/{slide}/audit")
        assert r.status_code == 200, r.text
        entries = [(e["action"], e["annotation"], e["user"], e["site"]) for e in r.json()]
    for entry in [
        ("created", "x", "alice", "Roubaix"),
        ("geometry_changed", "x", "bob", "Mouscron"),
        ("classification_changed", "x", "bob", "Mouscron"),
        ("commented", "x", "alice", "Roubaix"),
        ("repaired", "bow", "alice", "Roubaix"),
        ("marked_invalid", "nan", "alice", "Roubaix"),
        ("deleted", "x", "bob", "Mouscron"),
    ]:
        assert entry in entries, (entry, entries)


async def test_index_survives_reload(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a:
        a.annotations["s"] = ann(square(50, 50))
        await a.wait_for(lambda: field(a, "s", "status") == "ok")
    rooms = live.app.state.collab.rooms
    room = rooms.get(RoomKey.slide(slide))
    await wait_for(lambda: not room.connections, what="the client has left the room")
    await rooms._unload(room.key)  # force a reload from the store
    assert rooms.get(RoomKey.slide(slide)) is None
    async with live.http("viewer") as http:
        r = await http.get(f"/api/slides/{slide}/annotations", params={"point": "55,55"})
        assert [f["id"] for f in r.json()["features"]] == ["s"]


async def test_changes_within_one_correction_window_are_credited_to_their_authors(
    live: LiveServer, slide: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annotations_module, "CORRECTION_DELAY", 0.5)  # both edits in one window
    async with live.client(slide, user="alice", site="Roubaix") as a, \
            live.client(slide, user="bob", site="Mouscron") as b:
        a.annotations["x"] = ann(square(10, 10))
        await b.wait_for(lambda: "x" in b.annotations)
        assert field(b, "x", "status") is None  # alice's change is still queued
        b.annotations["x"]["classification"] = {"name": "Stroma", "color": [0, 1, 2]}
        b.annotations["x"]["geometry"] = square(30, 30)
        await a.wait_for(lambda: field(a, "x", "status") == "ok" and field(a, "x", "updated") is not None
                         and field(a, "x", "measurements")["area_um2"] == 100 * 0.25 * 0.25)
        await settled(live, "slide:" + slide, a, b)
        assert field(a, "x", "author") == "alice"
    async with live.http("admin") as http:
        entries = [(e["action"], e["user"], e["site"]) for e in (await http.get(f"/api/slides/{slide}/audit")).json()
                   if e["annotation"] == "x"]
    assert ("created", "alice", "Roubaix") in entries
    assert ("classification_changed", "bob", "Mouscron") in entries
    assert ("geometry_changed", "bob", "Mouscron") in entries
    assert not any(user == "alice" and action != "created" for action, user, _site in entries), entries


async def test_plain_invalid_and_no_spurious_geometry_audit(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="carol") as a, live.client(slide, user="obs") as b:
        a.annotations["pn"] = {"geometry": {"type": "Point", "coordinates": [float("nan"), 1]}, "name": "n"}
        a.annotations["ym"] = ann(square(5, 5))
        await b.wait_for(lambda: field(b, "pn", "status") == "invalid" and field(b, "ym", "status") == "ok")
        assert "not finite" in field(b, "pn", "problem"), field(b, "pn", "problem")
        for i in range(3):  # three renames, each processed on its own
            a.annotations["ym"]["name"] = f"name {i}"
            await settled(live, "slide:" + slide, a, b)
        # NaN != NaN: compare serialized
        assert json.dumps(a.annotations.to_py(), sort_keys=True) == json.dumps(b.annotations.to_py(), sort_keys=True)
    async with live.http("admin") as http:
        entries = (await http.get(f"/api/slides/{slide}/audit")).json()
    actions = sorted((e["action"], e["annotation"]) for e in entries)
    assert actions == sorted([("created", "pn"), ("marked_invalid", "pn"), ("created", "ym")] + [("renamed", "ym")] * 3)


@pytest.mark.parametrize("plain", [False, True], ids=["ymap", "plain-json"])
async def test_renaming_and_locking_are_audited(live: LiveServer, slide: str, plain: bool) -> None:
    """Every field a user can change leaves a record: who, how, when, from which site."""
    async with live.client(slide, user="dana", site="Mouscron") as a:
        record = {"geometry": square(5, 5), "name": "first", "locked": False}
        a.annotations["r"] = dict(record) if plain else ann(square(5, 5), name="first", locked=False)
        await a.wait_for(lambda: field(a, "r", "status") == "ok")
        if plain:
            a.annotations["r"] = {**record, "name": "second", "locked": True}
        else:
            with a.doc.transaction():
                a.annotations["r"]["name"] = "second"
                a.annotations["r"]["locked"] = True
        await a.wait_for(lambda: field(a, "r", "name") == "second")
        await settled(live, "slide:" + slide, a)
    async with live.http("admin") as http:
        entries = [e for e in (await http.get(f"/api/slides/{slide}/audit")).json() if e["annotation"] == "r"]
    by_action = {e["action"]: e for e in entries}
    assert by_action["renamed"]["detail"] == {"from": "first", "to": "second"}
    assert (by_action["renamed"]["user"], by_action["renamed"]["site"]) == ("dana", "Mouscron")
    assert "locked" in by_action and by_action["locked"]["user"] == "dana"
    assert all(isinstance(e["at"], int) and e["at"] > 0 for e in entries)


async def test_edit_right_after_reload_keeps_the_original_author(tmp_path) -> None:
    from tests.conftest import make_settings, serving

    async with serving(make_settings(tmp_path / "d", room_idle_seconds=0.1)) as live:
        await live.register_slide("s", width=10_000, height=10_000, mpp=0.5)
        async with live.client("s", user="alice") as a:
            for i in range(300):
                a.annotations[f"k{i}"] = Map({"geometry": {"type": "Point", "coordinates": [i, i]}, "name": "p"})
            await a.wait_for(lambda: all("author" in v for v in a.annotations.to_py().values()), timeout=20)
        rooms = live.app.state.collab.rooms
        await wait_for(lambda: rooms.get(RoomKey.slide("s")) is None, what="the idle room unloaded")
        # Reload and edit at once, before the server has read the stored annotations back.
        async with live.client("s", user="bob") as b:
            b.annotations["k7"]["name"] = "renamed by bob"
            await b.wait_for(lambda: b.annotations["k7"].get("updated", 0) > b.annotations["k7"].get("created", 0))
            assert b.annotations["k7"]["author"] == "alice"


async def test_server_transaction_refuses_to_nest(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a:
        a.annotations["k"] = ann(square(10, 10))
        await a.wait_for(lambda: field(a, "k", "status") == "ok")
        room = live.app.state.collab.rooms.get(RoomKey.slide(slide))
        with pytest.raises(RuntimeError, match="inside another transaction"), room.doc.transaction():
            with room.server_transaction():
                pass
        with room.server_transaction():  # on its own it writes, stores and relays
            room.doc.get("annotations", type=Map)["k"]["name"] = "by the server"
        await a.wait_for(lambda: field(a, "k", "name") == "by the server")

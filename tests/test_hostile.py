"""Hostile and heavy input (issue 11): deep nesting, huge and slow bodies, slide paths outside
the slide directories, tokens with string dates, and what a dying server leaves in its log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pycrdt import Map

from collab.annotations.geojson import parse_features_piecewise
from collab.annotations.geometry import nesting_depth
from collab.slides.api import UNUSABLE_PATH
from collab.slides.demo import ensure_demo_slide
from tests.conftest import SECRET, LiveServer, ServerProcess, make_settings, serving

FIXTURES = Path(__file__).parent / "fixtures"

# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_date_claims_must_be_numbers(live: LiveServer, claim: str) -> None:
    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "slides": "*", "exp": now + 600, "iat": now, "nbf": now - 5}
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    claims[claim] = str(claims[claim])  # PyJWT alone accepts a numeric string
    bad = jwt.encode(claims, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        ok = await http.get("/api/slides", headers={"Authorization": f"Bearer {good}"})
        refused = await http.get("/api/slides", headers={"Authorization": f"Bearer {bad}"})
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert claim in refused.json()["error"]


# --- crashes leave a trace ----------------------------------------------------------------------

# `collab serve` as the command line runs it; once serving, the child provokes an uncaught
# exception in a thread, in an event-loop callback and in a task nobody awaits (no route of the
# app is involved), then prints which hooks are in place.
_PROVOKE = r"""
import asyncio, faulthandler, sys, threading
import collab.server
from collab.__main__ import main

startup = collab.server.CollabServer.startup

async def provoking_startup(self, *args, **kwargs):
    await startup(self, *args, **kwargs)
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: 1 / 0, name="provoked-thread").start()
    loop.call_soon(lambda: {}["provoked-callback"])
    async def failing():
        raise LookupError("provoked-task")
    task = loop.create_task(failing())
    await asyncio.sleep(0.05)
    del task  # never awaited: the loop reports it when it is collected
    import gc; gc.collect()
    print("HOOKS", faulthandler.is_enabled(), sys.excepthook.__module__,
          threading.excepthook.__module__, loop.get_exception_handler().__module__, flush=True)

collab.server.CollabServer.startup = provoking_startup
sys.exit(main(sys.argv[1:]))
"""


def _wait_for_output(path: Any, needles: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if all(n in text for n in needles):
            return text
        time.sleep(0.05)
    raise AssertionError(f"missing {needles} in server output:\n{text[-3000:]}")


def test_serve_logs_uncaught_exceptions_of_threads_callbacks_and_tasks(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "COLLAB_SECRET": SECRET}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PROVOKE, "serve", "--port", "0", "--data", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        text = _wait_for_output(log_path, ["HOOKS", "provoked-thread", "provoked-callback", "provoked-task"])
        assert "HOOKS True collab.log collab.log collab.log" in text
        lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
        crashes = [e for e in lines if e.get("logger") == "collab.crash"]
        assert any("ZeroDivisionError" in e.get("exc", "") and e.get("thread_name") == "provoked-thread"
                   for e in crashes)
        assert any("provoked-callback" in e.get("exc", "") for e in crashes)
        assert any("provoked-task" in e.get("exc", "") for e in crashes)
        assert proc.poll() is None  # a failing callback or thread does not end the server
    finally:
        proc.terminate()
        proc.wait(30)


def test_fatal_signal_prints_a_traceback(server_process: ServerProcess) -> None:
    server_process.start()
    assert server_process.proc is not None
    os.kill(server_process.proc.pid, signal.SIGSEGV)
    assert server_process.proc.wait(30) == -signal.SIGSEGV
    text = _wait_for_output(server_process.log_path, ["Fatal Python error: Segmentation fault"])
    assert "Current thread" in text or "Thread 0x" in text


# --- deep nesting -------------------------------------------------------------------------------


def nested_list(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_object(depth: int) -> Any:
    value: Any = {"x": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


def square(x: float, y: float, size: float = 10) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


def feature(geometry: Any, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


async def test_import_refuses_deep_properties_and_coordinates(live: LiveServer, slide: str) -> None:
    deep_coords = (b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
                   b'"coordinates":' + b"[" * 1000 + b"1" + b"]" * 1000 + b'},"properties":{}}]}')
    async with live.http("admin") as http:
        good = {"type": "FeatureCollection", "features": [feature(square(10, 10))]}
        assert (await http.post(f"/api/slides/{slide}/annotations", json=good)).status_code == 201
        deep = {"type": "FeatureCollection", "features": [feature(square(1, 1), deep=nested_object(500))]}
        r = await http.post(f"/api/slides/{slide}/annotations", json=deep)
        assert r.status_code == 400
        assert "nest deeper than 32 levels" in r.json()["error"]
        r = await http.post(f"/api/slides/{slide}/annotations", content=deep_coords)
        assert r.status_code == 400
        assert "coordinates nest deeper" in r.json()["error"]
        r = await http.post(f"/api/slides/{slide}/annotations",
                            json=[feature({"type": "Point", "coordinates": nested_list(5, 3)})])
        assert r.status_code == 400
        # 32 levels are fine, and nothing of the refused imports was kept.
        r = await http.post(f"/api/slides/{slide}/annotations", json=[feature(square(1, 1), ok=nested_object(30))])
        assert r.status_code == 201
        for query in ("", "?bbox=0,0,1000,1000", "?include_invalid=1"):
            r = await http.get(f"/api/slides/{slide}/annotations{query}")
            assert r.status_code == 200
            assert len(r.json()["features"]) == 2


async def test_deep_live_annotation_is_invalid_and_breaks_nothing_even_after_reload(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    async with serving(settings) as live:
        await live.register_slide("s")
        async with live.http("admin") as http:
            fc = {"type": "FeatureCollection",
                  "features": [feature(square(20 * i, 20), name=f"n{i}") for i in range(40)]}
            assert (await http.post("/api/slides/s/annotations", json=fc)).status_code == 201
        async with live.client("s", user="mallory") as c:
            c.annotations["deep-geometry"] = Map({"geometry": {"type": "Polygon", "coordinates": nested_list(1000)}})
            c.annotations["deep-property"] = Map({"geometry": square(5, 5), "deep": nested_object(500)})
            await c.wait_for(lambda: _field(c, "deep-geometry", "status") == "invalid"
                             and _field(c, "deep-property", "status") == "ok")
            assert "nest deeper than the 3 levels" in _field(c, "deep-geometry", "problem")
        await _expect_whole_slide(live, 42)
    async with serving(settings) as live:  # a fresh process's view: read back from the store
        await _expect_whole_slide(live, 42)


def _field(client: Any, key: str, name: str) -> Any:
    value = client.annotations.get(key)
    return value.get(name) if value is not None else None


async def _expect_whole_slide(live: LiveServer, count: int) -> None:
    async with live.http("admin") as http:
        r = await http.get("/api/slides/s/annotations?include_invalid=1")
        assert r.status_code == 200
        by_id = {f["id"]: f for f in r.json()["features"]}
        assert len(by_id) == count
        assert by_id["deep-geometry"]["geometry"] is None  # exported without what JSON cannot hold
        assert by_id["deep-geometry"]["properties"]["status"] == "invalid"
        assert "deep" not in by_id["deep-property"]["properties"]
        r = await http.get("/api/slides/s/annotations?bbox=0,0,2000,2000")
        assert r.status_code == 200
        assert len(r.json()["features"]) == count - 1
        r = await http.get("/api/slides/s/stats")
        assert r.status_code == 200, r.text
        assert r.json()["count"] == count - 1  # every other annotation is still indexed


# --- request bodies: bounded in size and in time ---------------------------------------------------


async def _raw_request(live: LiveServer, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(live.base_url.rsplit(":", 1)[1]))
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


def _head(live: LiveServer, path: str, *headers: str) -> str:
    token = live.token("admin")
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}",
             "Content-Type: application/json", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


async def _response(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, dict[str, Any], bytes]:
    """Status, JSON body and whatever follows until the server closes the connection."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = await reader.readexactly(length)
        try:
            rest = await reader.read()  # EOF: the connection is closed, not kept alive for the rest
        except ConnectionResetError:  # closed with some of a refused body unread
            rest = b""
    return status, orjson.loads(body), rest


@pytest.fixture
def small_bodies(tmp_path: Path) -> Any:
    return make_settings(tmp_path / "data", max_import_bytes=1024 * 1024, max_body_bytes=64 * 1024,
                         body_timeout=1.0, body_min_rate=1024.0)


async def test_declared_oversized_body_is_refused_before_reading(small_bodies: Any) -> None:
    async with serving(small_bodies) as live:
        await live.register_slide("s")
        reader, writer = await _raw_request(live, _head(live, "/api/slides/s/annotations", "Content-Length: 300000000"))
        status, body, _ = await _response(reader)  # not one byte of the body was sent
        writer.close()
        assert status == 413
        assert "body over 1048576 bytes" in body["error"]


async def test_streamed_oversized_body_is_refused_as_it_streams(small_bodies: Any) -> None:
    async with serving(small_bodies) as live:
        await live.register_slide("s")
        for path in ("/api/slides/s/annotations", "/api/slides"):  # imports, and the JSON API
            reader, writer = await _raw_request(live, _head(live, path, "Transfer-Encoding: chunked"))

            async def endless(writer: asyncio.StreamWriter = writer) -> None:
                chunk = b" " * 65536
                while True:  # the answer comes without the body's end (and in bounded time)
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()

            sending = asyncio.create_task(endless())
            try:
                status, body, _ = await _response(reader)
            finally:
                sending.cancel()
                writer.close()
            assert status == 413, body
            assert "body over" in body["error"]


async def test_trickled_body_is_cut_with_408(small_bodies: Any) -> None:
    async with serving(small_bodies) as live:
        await live.register_slide("s")
        reader, writer = await _raw_request(live, _head(live, "/api/slides/s/annotations", "Content-Length: 1000"))

        async def trickle() -> None:
            for _ in range(100):  # one byte every 0.1 s: far under the minimum rate
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(trickle())
        try:
            status, body, _ = await _response(reader)
        finally:
            dripping.cancel()
            writer.close()
        assert status == 408
        assert "not received within 1 s" in body["error"]
        async with live.http("admin") as http:  # and the server goes on
            assert (await http.get("/api/slides/s/annotations")).status_code == 200


async def test_slow_but_steady_body_is_not_cut(small_bodies: Any) -> None:
    async with serving(small_bodies) as live:
        await live.register_slide("s")
        payload = orjson.dumps([feature(square(1, 1))]) + b" " * 24_000
        reader, writer = await _raw_request(
            live, _head(live, "/api/slides/s/annotations", f"Content-Length: {len(payload)}"))
        for i in range(0, len(payload), 2000):  # about 8 KB/s for 3 s, over 3 body timeouts
            writer.write(payload[i:i + 2000])
            await writer.drain()
            await asyncio.sleep(0.25)
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 201"), head


# --- slide files stay inside the slide directories ----------------------------------------------


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_slide(tmp_path_factory.mktemp("slide"), width=1024, height=768).path


async def test_slide_paths_are_confined_and_refusals_alike(tmp_path: Path, small_slide: Path) -> None:
    data = tmp_path / "data"
    inside, other, outside = data / "slides", tmp_path / "more-slides", tmp_path / "elsewhere"
    for d in (inside, other, outside):
        d.mkdir(parents=True)
    shutil.copy(small_slide, inside / "ok.tiff")
    shutil.copy(small_slide, inside / "three.tiff")
    shutil.copy(small_slide, other / "two.tiff")
    shutil.copy(small_slide, outside / "secret.tiff")
    (inside / "junk.svs").write_bytes(b"not a slide")
    (inside / "link.tiff").symlink_to(outside / "secret.tiff")

    async def register(live: LiveServer, slide_id: str, path: str) -> httpx.Response:
        async with live.http("admin") as http:
            return await http.post("/api/slides", json={"id": slide_id, "path": path})

    async with serving(make_settings(data)) as live:  # default: <data>/slides
        assert (await register(live, "a", "ok.tiff")).status_code == 201
        r = await register(live, "b", str(inside / "ok.tiff"))
        assert r.status_code == 201
        assert r.json()["width"] == 1024
        refused = [
            str(outside / "secret.tiff"),  # a readable slide, outside
            str(inside / ".." / ".." / "elsewhere" / "secret.tiff"),
            "../../elsewhere/secret.tiff",
            str(inside / "link.tiff"),  # a link inside, to a file outside
            str(inside / "missing.tiff"),
            str(inside / "junk.svs"),
            "/etc/passwd",
            "/etc/no-such-file",
            str(inside),
            "ok\x00.tiff",
        ]
        answers = {(r.status_code, r.text) for r in [await register(live, "c", p) for p in refused]}
        assert answers == {(400, orjson.dumps({"error": UNUSABLE_PATH}).decode())}
        async with live.http("admin") as http:
            listed = {s["id"] for s in (await http.get("/api/slides")).json()}
            assert listed == {"a", "b"}
            assert (await http.get("/slides/b.dzi")).status_code == 200
            (inside / "ok.tiff").unlink()  # swapped for a link to a file outside, after registration
            (inside / "ok.tiff").symlink_to(outside / "secret.tiff")
            assert (await http.get("/slides/b.dzi")).status_code == 404
            assert (await http.get("/slides/a_files/0/0_0.jpeg")).status_code == 404
    async with serving(make_settings(data, slide_dirs=(str(other), str(outside)))) as live:
        assert (await register(live, "d", str(other / "two.tiff"))).status_code == 201
        assert (await register(live, "e", str(outside / "secret.tiff"))).status_code == 201
        assert (await register(live, "f", str(inside / "three.tiff"))).status_code == 400  # no longer listed


def _depth_reference(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth_reference(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth_reference(v) for v in value), default=0)
    return 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=30,
)


@given(value=_json, limit=st.integers(min_value=0, max_value=8))
@example(value=[[], [[{"a": [1]}]]], limit=3)
def test_nesting_depth_matches_a_recursive_count(value: Any, limit: int) -> None:
    expected = _depth_reference(value)
    depth = nesting_depth(value, limit)
    if expected <= limit:
        assert depth == expected
    else:
        assert limit < depth <= expected


def test_nesting_depth_of_values_no_recursion_survives() -> None:
    assert nesting_depth(nested_list(100_000), 32) == 33  # stops counting past the limit
    assert nesting_depth(nested_list(100_000), 10**6) == 100_000
    assert nesting_depth(nested_object(100_000), 10**6) == 100_001


# --- large imports are parsed one Feature at a time ------------------------------------------------

_FEATURES = [feature(square(i, i), name=f"n{i}", note='x {"type": "Feature", "a": [1]} "q"') for i in range(5)]


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"type": "FeatureCollection", "features": _FEATURES}),
        json.dumps({"type": "FeatureCollection", "features": _FEATURES}, indent=2).encode(),
        json.dumps(_FEATURES, indent="\t").encode() + b"\r\n",
        (FIXTURES / "qupath_export.geojson").read_bytes(),
    ],
    ids=["compact", "indented", "bare-list", "qupath"],
)
def test_piecewise_parse_equals_a_whole_parse(raw: bytes) -> None:
    assert parse_features_piecewise(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"FeatureCollection","features":[{"type":"Feature","a":1}],"bbox":[1,2,3,4]}',
        b'{"type":"FeatureCollection","features":[{"type":"Feature","p":{"x":{"type":"Feature","g":1}}}]}',
        b'{"features":[{"type":"Feature"}],"type":"FeatureCollection"}',
        b'[{"type":"Feature"}, {"type":"Feature"}',
        b'{"type":"FeatureCollection","features":[{"type":"Feature"} {"type":"Feature"}]}',
        b'{"type":"FeatureCollection","features":[{"type":"Feature"}]',
        b'[{"type":"Feature"}]}',
    ],
)
def test_piecewise_parse_leaves_other_forms_to_a_whole_parse(raw: bytes) -> None:
    assert parse_features_piecewise(raw) is None


def _ring(x: float, y: float, vertices: int, r: float = 40.0) -> list[list[float]]:
    import math

    ring = [[x + r * math.cos(2 * math.pi * i / vertices), y + r * math.sin(2 * math.pi * i / vertices)]
            for i in range(vertices)]
    return [*ring, ring[0]]


async def test_a_large_import_is_written_in_chunks_that_let_the_room_breathe(live: LiveServer) -> None:
    """A 150 MB import held the event loop for seconds while its Y.Maps were built and committed
    in one transaction: past IMPORT_CHUNK_COORDINATES positions it is written chunk by chunk."""
    from collab.annotations.guard import IMPORT_CHUNK_COORDINATES

    await live.register_slide("big", width=100_000, height=100_000)
    vertices = 5_000
    count = 3 * IMPORT_CHUNK_COORDINATES // vertices + 1
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"p{i}",
         "geometry": {"type": "Polygon", "coordinates": [_ring(100 + 90 * i, 500, vertices)]},
         "properties": {"objectType": "annotation"}} for i in range(count)]}
    from collab.live.keys import RoomKey

    async with live.client("big", user="watcher") as w:
        guard = live.app.state.collab.rooms.get(RoomKey.slide("big")).policy
        before = guard.corrections  # server transactions written
        async with live.http("reviewer") as http:
            r = await http.post("/api/slides/big/annotations", json=fc)
            assert r.status_code == 201, r.text
        await w.wait_for(lambda: len(w.annotations) == count, timeout=30)
        assert guard.corrections - before >= 3  # one per chunk of positions, in order
        small = {"type": "FeatureCollection", "features": fc["features"][:2]}
        small["features"] = [{**f, "id": f"s{i}"} for i, f in enumerate(small["features"])]
        before = guard.corrections
        async with live.http("reviewer") as http:
            assert (await http.post("/api/slides/big/annotations", json=small)).status_code == 201
        await w.wait_for(lambda: len(w.annotations) == count + 2)
        assert guard.corrections - before == 1  # a small import is one transaction

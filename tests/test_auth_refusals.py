"""Refusals arrive as close codes before any document byte (docs/reference.md, section 3)."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
import websockets

from tests.conftest import SECRET, LiveServer


async def first_event(url: str, origin: str | None = None) -> tuple[int | None, str, int]:
    """Connect raw and report (close code, reason, frames received before the close)."""
    frames = 0
    async with websockets.connect(url, origin=origin) as ws:
        try:
            async for _ in ws:
                frames += 1
        except websockets.ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason, frames


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda live: None, 4401),
        (lambda live: "not-a-jwt", 4401),
        (lambda live: jwt.encode({"sub": "x", "role": "reviewer", "slides": "*", "exp": int(time.time()) + 60},
                                 "wrong-secret-wrong-secret-wrong-secret", algorithm="HS256"), 4401),
        (lambda live: live.token(ttl=-5), 4401),
        (lambda live: live.token(slides=["other-slide"]), 4403),
        (lambda live: jwt.encode({"sub": "x", "role": "surgeon", "slides": "*", "exp": int(time.time()) + 60},
                                 SECRET, algorithm="HS256"), 4401),
    ],
    ids=["no-token", "garbage", "bad-signature", "expired", "wrong-slide", "unknown-role"],
)
async def test_refused_with_code_and_no_document_bytes(live: LiveServer, slide: str, make_token, code) -> None:
    token = make_token(live)
    close_code, reason, frames = await first_event(live.slide_url(slide, token))
    assert close_code == code, reason
    assert frames == 0
    assert reason


async def test_unknown_slide_is_4404(live: LiveServer) -> None:
    code, reason, frames = await first_event(live.slide_url("no-such-slide", live.token()))
    assert code == 4404 and "not registered" in reason and frames == 0


async def test_token_expiring_during_connection_closes_with_4401(live: LiveServer, slide: str) -> None:
    client = live.client(slide, ttl=1.5)
    await client.connect()
    assert await client.wait_closed(timeout=10) == 4401
    assert "expired" in (client.close_reason or "")


async def test_foreign_origin_refused_same_origin_allowed(live: LiveServer, slide: str) -> None:
    code, reason, _ = await first_event(live.slide_url(slide, live.token()), origin="https://evil.example")
    assert code == 4403 and "origin" in reason
    host = live.base_url.removeprefix("http://")
    async with live.client(slide, origin=f"http://{host}") as ok:
        assert ok.synced.is_set()


async def test_refusals_are_counted_in_metrics_without_tokens(live: LiveServer, slide: str) -> None:
    token = live.token(slides=["elsewhere"])
    await first_event(live.slide_url(slide, token))
    await asyncio.sleep(0.05)
    async with live.http(None) as http:
        text = (await http.get("/metrics")).text
    assert 'collab_refusals_total{reason="Forbidden"}' in text
    assert token not in text


async def test_http_refusals(live: LiveServer) -> None:
    async with live.http(None) as anon:
        r = await anon.get("/api/slides")
        assert r.status_code == 401 and "error" in r.json()
    async with live.http("reviewer") as reviewer:
        r = await reviewer.post("/api/slides", json={"id": "x", "width": 10, "height": 10, "mpp": 0.5})
        assert r.status_code == 403 and "admin" in r.json()["error"]
    async with live.http("admin") as admin:
        r = await admin.post("/api/slides", json={"id": "bad id!", "width": 10})
        assert r.status_code == 400
        r = await admin.post("/api/slides", content=b"{not json")
        assert r.status_code == 400
        r = await admin.post("/api/slides", json={"id": "ok", "width": 10, "height": 10, "mpp": 0.5},
                             headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        r = await admin.get("/api/slides")
        assert r.status_code == 200 and r.json() == []


async def test_slide_list_is_filtered_by_token(live: LiveServer) -> None:
    await live.register_slide("a")
    await live.register_slide("b")
    async with live.http("viewer", slides=["b"]) as viewer:
        assert [s["id"] for s in (await viewer.get("/api/slides")).json()] == ["b"]


async def test_tokens_never_reach_the_logs(server_process) -> None:
    from tests.test_durability import register, url

    server_process.start()
    register(server_process, "s1")
    ws_url = url(server_process, "s1", "logged")
    token = ws_url.split("token=")[1]
    from tests.yclient import YClient

    async with YClient(ws_url) as c:
        c.set_presence({"cursor": None})
    bad = YClient(f"{server_process.ws_url}/ws/slides/s1?token={token}x")
    await bad.connect(wait_sync=False)
    await bad.wait_closed()
    await asyncio.sleep(0.2)
    log = server_process.log_path.read_text()
    assert "/ws/slides/s1" in log  # the request lines are there...
    assert token not in log and token[:40] not in log  # ...without the credential


async def test_unknown_routes_and_methods_answer_json_errors(live: LiveServer, slide: str) -> None:
    async with live.http("viewer") as http:
        r = await http.get("/api/nope")
        assert (r.status_code, r.json()) == (404, {"error": "Not Found"})
        r = await http.delete("/api/slides")
        assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"}
        assert "allow" in r.headers

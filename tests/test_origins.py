"""Foreign browser origins are refused on every route, and "same origin" never trusts Host."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest
import websockets
from starlette.routing import Mount, Route

from tests.conftest import LiveServer, make_settings, serving

EVIL = "http://evil.example.com"


def every_http_request(live: LiveServer) -> list[tuple[str, str]]:
    """(method, path) for every HTTP route of the app, path parameters filled in: a route
    added later is covered without touching this test."""
    requests = []
    for route in live.app.routes:
        if isinstance(route, Route):
            path = re.sub(r"\{[^}:]+:int\}", "0", route.path)
            path = re.sub(r"\{[^}]+\}", "slide-1", path)
            requests += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
        elif isinstance(route, Mount):
            requests.append(("GET", route.path + "/"))
    return requests


async def test_foreign_origin_is_refused_on_every_route(live: LiveServer, slide: str) -> None:
    requests = every_http_request(live)
    assert ("GET", "/api/slides") in requests and ("GET", "/slides/slide-1_files/0/0_0.jpeg") in requests
    token = live.token("admin")
    async with live.http("admin") as http:
        for method, path in requests:
            # The token in both places: tiles and summaries take ?token=, the API takes Bearer.
            r = await http.request(method, path, params={"token": token}, headers={"Origin": EVIL}, json={})
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json() == {"error": f"origin {EVIL} is not allowed"}


async def test_requests_without_origin_or_from_the_server_itself_are_allowed(live: LiveServer, slide: str) -> None:
    port = live.base_url.rsplit(":", 1)[1]
    async with live.http("admin") as http:
        assert (await http.get("/api/slides")).status_code == 200  # scripts, QuPath: no Origin
        for own in (live.base_url, f"http://localhost:{port}", f"http://localhost:{port}/"):
            r = await http.get("/api/slides", headers={"Origin": own})
            assert r.status_code == 200, own


async def test_dns_rebinding_host_is_not_same_origin(live: LiveServer, slide: str) -> None:
    # evil.example resolves to this server: the browser sends Host and Origin that agree.
    port = live.base_url.rsplit(":", 1)[1]
    forged = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    async with live.http("admin") as http:
        r = await http.get("/api/slides", headers=forged)
        assert r.status_code == 403
        assert (await http.post("/api/slides", headers=forged, json={})).status_code == 403
    sock = socket.create_connection(("127.0.0.1", int(port)))
    url = f"ws://evil.example:{port}/ws/slides/{slide}?token={live.token()}"
    async with websockets.connect(url, sock=sock, origin=f"http://evil.example:{port}") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4403 and "origin" in ws.close_reason


async def test_public_url_and_allowed_origins_are_same_origin(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "d", public_url="https://Collab.Example.org:443/path/", allowed_origins=("https://viewer.example",)
    )
    async with serving(settings) as live:
        await live.register_slide("s")
        async with live.http("admin") as http:
            for origin, status in [
                ("https://collab.example.org", 200),
                ("https://viewer.example", 200),
                ("http://collab.example.org", 403),  # another scheme is another origin
                ("https://collab.example.org:8443", 403),
                ("null", 403),
            ]:
                r = await http.get("/api/slides", headers={"Origin": origin})
                assert r.status_code == status, origin
        async with live.client("s", origin="https://collab.example.org") as ok:
            assert ok.synced.is_set()


async def test_tile_link_with_token_is_refused_from_a_foreign_page(live: LiveServer, slide: str) -> None:
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        url = f"/slides/{slide}.dzi?token={live.token()}"
        assert (await http.get(url, headers={"Origin": EVIL})).status_code == 403
        assert (await http.get(url)).status_code != 403

"""Fixtures: a real collab server (uvicorn on a socket bound to port 0), tokens, clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.app import create_app
from collab.auth import TokenAuthenticator
from collab.server import build_server
from collab.settings import Settings
from tests.yclient import YClient

SECRET = "test-secret-not-for-production-0123456789"

# Browser fixtures (a demo server process, Chromium) for the modules that ask for them.
pytest_plugins = ["tests.browser_support"]


@dataclass
class LiveServer:
    """A running server and helpers to talk to it."""

    base_url: str
    ws_url: str
    settings: Settings
    auth: TokenAuthenticator = field(init=False)
    app: Any = None

    def __post_init__(self) -> None:
        self.auth = TokenAuthenticator(self.settings.secret or SECRET)

    def token(self, role: str = "reviewer", *, user: str | None = None, site: str = "Roubaix",
              slides: Any = "*", ttl: float = 600, name: str | None = None) -> str:
        user = user or f"{role}-{site.lower()}"
        return self.auth.mint(user=user, name=name or user.title(), site=site, role=role,
                              slides=slides, ttl=ttl)

    def slide_url(self, slide_id: str, token: str | None) -> str:
        query = f"?token={token}" if token is not None else ""
        return f"{self.ws_url}/ws/slides/{slide_id}{query}"

    def client(self, slide_id: str, role: str = "reviewer", **kw: Any) -> YClient:
        origin = kw.pop("origin", None)
        return YClient(self.slide_url(slide_id, self.token(role, **kw)), origin=origin)

    def http(self, role: str | None = "admin", **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(role, **kw)}"} if role else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    async def register_slide(self, slide_id: str, **fields: Any) -> dict[str, Any]:
        body = {"id": slide_id, "title": slide_id, "width": 100_000, "height": 80_000, "mpp": 0.25,
                "tiles": "https://example.invalid/x.dzi"} | fields
        async with self.http("admin") as http:
            r = await http.post("/api/slides", json=body)
            assert r.status_code in (200, 201), r.text
            return r.json()


def make_settings(data: Path, **overrides: Any) -> Settings:
    return Settings(host="127.0.0.1", port=0, data=data, secret=SECRET, **overrides)


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


async def start_server(settings: Settings) -> tuple[LiveServer, Any, asyncio.Task[None], socket.socket]:
    sock = socket.create_server((settings.host, 0))
    port = sock.getsockname()[1]
    settings = settings.replace(port=port)
    app = create_app(settings)
    server = build_server(app, settings)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    live = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", settings, app=app)
    return live, server, task, sock


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[LiveServer]:
    """A real server for the block's duration; stopped (and drained) at its end."""
    live, server, task, sock = await start_server(settings)
    try:
        yield live
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@pytest.fixture
async def live(server_settings: Settings) -> AsyncIterator[LiveServer]:
    async with serving(server_settings) as live:
        yield live


@pytest.fixture
async def slide(live: LiveServer) -> str:
    await live.register_slide("slide-1")
    return "slide-1"


class ServerProcess:
    """`collab serve` in a child process, for kill -9 and SIGTERM tests."""

    def __init__(self, data: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.extra = extra
        self.env = {**os.environ, "COLLAB_SECRET": SECRET, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.log_path = data.parent / f"server-{id(self)}.log"

    def start(self, timeout: float = 30) -> ServerProcess:
        port = self.port or 0
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collab", "serve", "--port", str(port), "--data", str(self.data),
                 *self.extra],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            match = re.search(rb"Uvicorn running on http://[\d.]+:(\d+)", self.log_path.read_bytes())
            if match and (self.port is None or int(match.group(1)) == self.port or port == 0):
                found = [int(m) for m in re.findall(rb"Uvicorn running on http://[\d.]+:(\d+)",
                                                     self.log_path.read_bytes())]
                self.port = found[-1]
                if self._answers():
                    return self
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()

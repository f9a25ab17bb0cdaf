"""Drive a stock yjs + y-websocket client (tests/js/peer.mjs) in Node from a test."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent / "js"


def require_node() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "y-websocket").is_dir():
        pytest.fail("Node.js and tests/js/node_modules are required: run `npm ci --prefix tests/js`")
    return node


class NodePeer:
    """One stock Yjs client process; commands go in as JSON lines, replies and events come out."""

    def __init__(self, server_url: str, slide_id: str, token: str) -> None:
        self._args = (server_url, slide_id, token)
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> NodePeer:
        self.proc = await asyncio.create_subprocess_exec(
            require_node(), str(JS_DIR / "peer.mjs"), *self._args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=JS_DIR,
            limit=256 * 1024 * 1024,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
            else:
                await self._replies.put(msg)

    async def call(self, op: str, timeout: float = 20, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(self._replies.get(), timeout)
        if "error" in reply:
            raise AssertionError(f"node peer {op} failed: {reply['message']}")
        return reply

    async def wait_event(self, name: str, timeout: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for ev in self.events:
                if ev["event"] == name:
                    return ev
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {name} event; saw {self.events}")

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

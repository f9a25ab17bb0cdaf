"""A small pycrdt-based y-websocket client for tests: real socket, real Doc."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import websockets
from pycrdt import Doc, Map

from collab.live.protocol import (
    AuthMessage,
    AwarenessEntry,
    AwarenessMessage,
    SyncMessage,
    SyncType,
    decode_awareness_update,
    decode_message,
    encode_awareness,
    encode_awareness_update,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)


class YClient:
    """Connects to /ws/slides/{id}, syncs a Doc both ways, tracks presence and refusals."""

    def __init__(self, url: str, *, doc: Doc | None = None, origin: str | None = None) -> None:
        self.url = url
        self.doc: Doc = doc if doc is not None else Doc()
        self.origin = origin
        self.ws: Any = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.denied: list[str] = []
        self.presence: dict[int, dict[str, Any]] = {}
        self.presence_clocks: dict[int, int] = {}
        self.received_frames = 0
        # (arrival time, client id) of every awareness entry from another client.
        self.presence_arrivals: list[tuple[float, int]] = []
        self.updates: list[bytes] = []  # payloads of the update messages received, in order
        self._applying_remote = False
        self._clock = 0
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._sub = self.doc.observe(self._on_local_change)

    @property
    def annotations(self) -> Map:
        return self.doc.get("annotations", type=Map)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason if self.ws is not None else None

    async def connect(self, *, wait_sync: bool = True, timeout: float = 10) -> YClient:
        self.ws = await websockets.connect(
            self.url, max_size=None, compression=None, origin=self.origin, open_timeout=timeout
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._writer = asyncio.get_running_loop().create_task(self._write())
        self._queue(encode_sync_step1(self.doc.get_state()))
        if wait_sync:
            await asyncio.wait_for(self.synced.wait(), timeout)
        return self

    async def flush(self, timeout: float = 10) -> None:
        """Wait until every queued frame was handed to the socket."""
        await asyncio.wait_for(self._outgoing.join(), timeout)

    async def close(self) -> None:
        if self.ws is not None:
            if not self.closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await self.flush()
            await self.ws.close()
        if self._writer is not None:
            self._writer.cancel()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader

    async def wait_closed(self, timeout: float = 10) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def __aenter__(self) -> YClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    def set_presence(self, state: dict[str, Any] | None) -> None:
        self._clock += 1
        entry = AwarenessEntry(self.doc.client_id, self._clock, orjson.dumps(state).decode())
        msg = encode_awareness(encode_awareness_update([entry]))
        self._queue(msg)

    def _queue(self, msg: bytes) -> None:
        self._outgoing.put_nowait(msg)

    async def _write(self) -> None:
        while True:
            msg = await self._outgoing.get()
            try:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await self.ws.send(msg)
            finally:
                self._outgoing.task_done()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `predicate()` holds, checking after every frame and every 20 ms."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.02)

    def _on_local_change(self, event: Any) -> None:
        if self._applying_remote or self.ws is None:
            return
        self._queue(encode_update(event.update))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.received_frames += 1
                self._handle(decode_message(frame))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def _handle(self, message: Any) -> None:
        if isinstance(message, SyncMessage):
            if message.kind is SyncType.STEP1:
                self._queue(encode_sync_step2(self.doc.get_update(message.payload)))
                return
            self._applying_remote = True
            try:
                self.doc.apply_update(message.payload)
            finally:
                self._applying_remote = False
            if message.kind is SyncType.STEP2:
                self.synced.set()
            elif message.kind is SyncType.UPDATE:
                self.updates.append(message.payload)
        elif isinstance(message, AwarenessMessage):
            for entry in decode_awareness_update(message.payload):
                if entry.client_id == self.doc.client_id:
                    continue
                self.presence_arrivals.append((time.monotonic(), entry.client_id))
                if entry.clock < self.presence_clocks.get(entry.client_id, -1):
                    continue
                self.presence_clocks[entry.client_id] = entry.clock
                state = orjson.loads(entry.state_json)
                if state is None:
                    self.presence.pop(entry.client_id, None)
                else:
                    self.presence[entry.client_id] = state
        elif isinstance(message, AuthMessage):
            self.denied.append(message.reason)

"""One client's WebSocket: a bounded outbox drained by a writer task, and a reader loop.

A frame is handed to the socket at once when nothing is queued before it and the socket takes
it without waiting (the common case: a task switch per client per frame was a third of the
cost of a fan-out); otherwise it is queued for the writer task.

Backpressure: the outbox is bounded in messages and bytes. A client that cannot keep up is
closed with 1013 (it reconnects and resyncs); a document update is never dropped while the
connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Send

from collab import metrics
from collab.auth import Principal
from collab.errors import CollabError, LimitExceeded, SlowConsumer, UnsupportedData
from collab.live.protocol import SyncMessage, SyncType, decode_message
from collab.live.ratelimit import TokenBucket
from collab.settings import Settings

if TYPE_CHECKING:
    from collab.live.room import Room

log = logging.getLogger(__name__)

_ids = itertools.count(1)

# After asking to close, how long the close frame and the client's answer may take: a client
# that stopped reading only gets it once it reads again (uvicorn's pings end a dead one sooner).
_CLOSE_GRACE_SECONDS = 60.0


class Connection:
    """A client joined to one room."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        principal: Principal,
        room_key: str,
        settings: Settings,
    ) -> None:
        self.id = next(_ids)
        self.principal = principal
        self.presence_user = principal.presence_user()
        self.room_key = room_key
        self._receive = receive
        self._send = send
        self._max_messages = settings.outbox_max_messages
        self._max_bytes = settings.outbox_max_bytes
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._close_requested = asyncio.Event()
        self._close_sent = asyncio.Event()  # the close frame was handed to the socket (or it is gone)
        self._updates = TokenBucket(settings.update_rate, settings.update_burst)
        self._flood_seconds = settings.update_flood_seconds
        self._throttled_since: float | None = None
        self._writer: asyncio.Task[None] | None = None
        self._writer_idle = False  # the writer waits for frames: the socket may be written to directly
        self._in_flight: Generator[Any, Any, int] | None = None  # a direct send the socket made wait

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.principal.user_id} {self.room_key}>"

    @property
    def closing(self) -> bool:
        return self._close is not None

    def send(self, message: bytes) -> None:
        """Send a frame now if nothing is queued before it, else queue it; close the connection
        rather than let the queue grow without bound."""
        if self._close is not None:
            return
        if self._writer_idle and not self._outbox and self._in_flight is None:
            self._send_now(message)
            return
        if len(self._outbox) >= self._max_messages or self._outbox_bytes >= self._max_bytes:
            metrics.REFUSALS.labels(reason="slow_consumer").inc()
            self.close_soon(SlowConsumer.close_code, "slow consumer: reconnect and resync")
            return
        self._outbox.append(message)
        self._outbox_bytes += len(message)
        self._wakeup.set()

    def _send_now(self, message: bytes) -> None:
        """Run the ASGI send to its end without a task switch: uvicorn writes to the transport
        synchronously unless the socket's buffer is full. If it has to wait, the writer task
        finishes it, and frames sent meanwhile queue behind it (order is kept)."""
        sending = self._send({"type": "websocket.send", "bytes": message})
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            metrics.BYTES_OUT.inc(len(message))
            return
        except Exception:
            # The socket is gone (OSError), or uvicorn closed it itself (RuntimeError: a send
            # after its keepalive timeout): never into the caller, a broadcast to the others.
            # The writer meets the same error and ends the connection as it would have.
            self._outbox.append(message)
            self._outbox_bytes += len(message)
            self._wakeup.set()
            return
        self._in_flight = _resumed(sending, waiting_on, len(message))
        self._wakeup.set()

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the writer to close with `code` (idempotent: the first reason wins)."""
        if self._close is not None:
            return
        self._close = (code, reason[:120])  # a close reason must fit in 123 bytes
        metrics.CLOSES.labels(code=str(code)).inc()
        self._outbox.clear()
        self._outbox_bytes = 0
        self._wakeup.set()
        self._close_requested.set()
        # A writer stuck on a slow socket would never see the request: interrupt it.
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()

    async def wait_close_sent(self) -> None:
        """Until the close frame asked for by `close_soon` was handed to the socket, or the socket
        is gone (the server's shutdown waits on this before uvicorn closes what is left)."""
        await self._close_sent.wait()

    async def _pace_update(self) -> None:
        """Hold a document update until the connection's rate allows it (TCP pushes back on the
        client); a client that is held back without pause for too long is closed with 1008."""
        wait = self._updates.take_or_wait()
        if wait == 0.0:
            self._throttled_since = None
            return
        now = time.monotonic()
        if self._throttled_since is None:
            self._throttled_since = now
        elif now - self._throttled_since > self._flood_seconds:
            raise LimitExceeded("update rate limit exceeded")
        metrics.REFUSALS.labels(reason="update_throttled").inc()
        while wait > 0.0:
            await asyncio.sleep(wait)
            wait = self._updates.take_or_wait()

    async def serve(self, room: Room, on_leave: Callable[[], None]) -> None:
        """Run until the client leaves or the connection is closed; `on_leave` detaches it."""
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_loop(), name=f"conn-{self.id}-writer")
        # The writer ends right after handing the close frame to the socket (or finding it gone).
        self._writer.add_done_callback(lambda _task: self._close_sent.set())
        expiry = loop.call_later(
            max(0.0, self.principal.expires_at - time.time()),
            self.close_soon,
            4401,
            "token expired",
        )
        reader = loop.create_task(self._read_loop(room), name=f"conn-{self.id}-reader")
        close_requested = loop.create_task(self._close_requested.wait())
        try:
            await asyncio.wait(
                {reader, self._writer, close_requested}, return_when=asyncio.FIRST_COMPLETED
            )
            if not reader.done():
                # Closing: leave the room at once (a client that stopped reading must not hold
                # a place in it), then give the close frame, queued behind what the socket
                # still holds, and the client's answer a bounded time.
                on_leave()
                await asyncio.wait({reader, self._writer}, timeout=_CLOSE_GRACE_SECONDS)
        finally:
            close_requested.cancel()
            expiry.cancel()
            for task in (reader, self._writer):
                if not task.done():
                    task.cancel()
            await asyncio.gather(reader, self._writer, return_exceptions=True)

    async def _read_loop(self, room: Room) -> None:
        receive = self._receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            try:
                if data is None:
                    raise UnsupportedData("text frames are not part of the y-websocket protocol")
                metrics.BYTES_IN.inc(len(data))
                message = decode_message(data)
                if isinstance(message, SyncMessage) and message.kind is not SyncType.STEP1:
                    await self._pace_update()
                room.handle(self, message)
            except CollabError as exc:
                log.info(
                    "closing connection: %s",
                    exc,
                    extra={"room": self.room_key, "user": self.principal.user_id},
                )
                metrics.REFUSALS.labels(reason=type(exc).__name__).inc()
                self.close_soon(exc.close_code, str(exc))
                # Keep reading until the client answers the close, but act on nothing more.
                await self._drain_until_disconnect()
                return

    async def _drain_until_disconnect(self) -> None:
        while (await self._receive())["type"] != "websocket.disconnect":
            pass

    async def _write_loop(self) -> None:
        send = self._send
        outbox = self._outbox
        try:
            while self._close is None:
                if self._in_flight is not None:
                    sent = await self._in_flight
                    self._in_flight = None
                    metrics.BYTES_OUT.inc(sent)
                    continue
                if not outbox:
                    self._wakeup.clear()
                    self._writer_idle = True
                    try:
                        await self._wakeup.wait()
                    finally:
                        self._writer_idle = False
                    continue
                message = outbox.popleft()
                self._outbox_bytes -= len(message)
                await send({"type": "websocket.send", "bytes": message})
                metrics.BYTES_OUT.inc(len(message))
        except asyncio.CancelledError:
            if self._close is None:
                raise
        except OSError:
            return  # the socket is gone; the reader sees the disconnect
        code, reason = self._close
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.close", "code": code, "reason": reason})


@types.coroutine
def _resumed(sending: Coroutine[Any, Any, None], waiting_on: Any, size: int) -> Generator[Any, Any, int]:
    """Finish a send coroutine that was started by hand and is waiting on `waiting_on` (a
    future it yielded): hands that future to the awaiting task, then drives the coroutine on,
    exactly as the task would have (a `yield from` that starts after the first step).
    Answers `size` (the frame's bytes) once sent."""
    pending = waiting_on
    while True:
        try:
            value = yield pending
        except BaseException as exc:  # cancellation (a close), passed on to the send
            try:
                pending = sending.throw(exc)
            except StopIteration:
                return size
        else:
            try:
                pending = sending.send(value)
            except StopIteration:
                return size

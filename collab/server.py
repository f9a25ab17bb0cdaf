"""Run the app under uvicorn, with collab's own graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import orjson
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from collab.settings import Settings

log = logging.getLogger(__name__)


class CollabServer(uvicorn.Server):
    """On SIGTERM, stop accepting, close sockets with 1001 and flush the store, then exit 0.

    uvicorn's own shutdown closes every WebSocket that has not sent its close frame yet with
    1012, and only then runs the app's lifespan: so the drain runs first, here, and returns once
    every close frame is out (the lifespan's drain then finds it done).
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._collab_app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What startup allocated (modules, settings, the app) lives as long as the process: out
        # of the collector's full passes, which would otherwise rescan it in the middle of a
        # session (a pause every client of the node feels).
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        try:
            await self._collab_app.state.collab.drain()
        except Exception:
            log.exception("draining rooms at shutdown failed")
        await super().shutdown(sockets)
        # uvicorn re-raises the captured SIGTERM after serving, so the process would die by
        # the signal; a clean drain is a normal exit (status 0) for process supervisors.
        self._captured_signals.clear()


class HandshakeTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose request headers (the WebSocket
    handshake included) are not complete within `handshake_timeout`: a client that trickles
    its headers cannot hold a socket forever (uvicorn's keep-alive timer stops at the first
    byte). Request bodies are cut the same way (408), after `body_timeout`. It hooks private
    methods of uvicorn's class: pyproject.toml pins the uvicorn versions tested
    (tests/test_hardening.py `test_trickled_handshake_is_closed`)."""

    handshake_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._arm_handshake_timer()

    def _arm_handshake_timer(self) -> None:
        self._cancel_handshake_timer()
        self._handshake_timer = self.loop.call_later(self.handshake_timeout, self._handshake_expired)

    def _cancel_handshake_timer(self) -> None:
        timer = getattr(self, "_handshake_timer", None)
        if timer is not None:
            timer.cancel()
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        log.info("closing a connection whose request did not arrive in %.0f s", self.handshake_timeout)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_handshake_timer()
        super().on_headers_complete()
        if self._has_body():
            self._cancel_body_timer()
            self._body_started = self.loop.time()
            self._body_received = 0
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_expired)

    # --- request bodies: a body trickled in (one byte a second) must not hold a socket and a
    # request task for ever; nor may the rest of a body the app already answered (a 413).
    # A body gets `body_timeout` seconds, and more while it keeps arriving at `body_min_rate`
    # (a 256 MiB import over a slow link is not cut, a slow drip is).

    body_timeout = 30.0
    body_min_rate = 64 * 1024.0  # bytes per second, averaged since the headers

    def on_body(self, body: bytes) -> None:
        self._body_received = getattr(self, "_body_received", 0) + len(body)
        super().on_body(body)

    def _has_body(self) -> bool:
        if self.parser.should_upgrade():
            return False
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"", b"0")
            if name == b"transfer-encoding":
                return True
        return False

    def _cancel_body_timer(self) -> None:
        timer: asyncio.TimerHandle | None = getattr(self, "_body_timer", None)
        if timer is not None:
            timer.cancel()
            self._body_timer = None

    def _body_expired(self) -> None:
        self._body_timer = None
        elapsed = self.loop.time() - self._body_started
        cycle = self.cycle
        answered = cycle is not None and cycle.response_complete  # (413) the rest is discarded
        if not answered and self._body_received >= self.body_min_rate * elapsed:  # slow but steady
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_expired)
            return
        log.info("cutting a request whose body did not arrive in %.0f s", self.body_timeout,
                 extra={"path": self.scope.get("path")})
        if cycle is not None and not cycle.response_started and not self.transport.is_closing():
            body = orjson.dumps({"error": f"request body not received within {self.body_timeout:g} s"})
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() answers http.disconnect; its sends are dropped
            cycle.message_event.set()
        self.transport.close()

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()


    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_handshake_timer()  # each request on a keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    http_protocol = type(
        "CollabHttpProtocol",
        (HandshakeTimeoutProtocol,),
        {"handshake_timeout": settings.handshake_timeout, "body_timeout": settings.body_timeout,
         "body_min_rate": settings.body_min_rate},
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws="websockets-sansio",
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.deflate,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.flush_timeout,
        timeout_keep_alive=settings.handshake_timeout,
    )


def build_server(app: Starlette, settings: Settings) -> CollabServer:
    return CollabServer(uvicorn_config(app, settings), app)

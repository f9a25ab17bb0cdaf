"""Run the app under uvicorn, with collab's own graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import socket

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
    byte). It hooks private methods of uvicorn's class: pyproject.toml pins the uvicorn versions
    tested (tests/test_hardening.py `test_trickled_handshake_is_closed`)."""

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_handshake_timer()  # each request on a keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        super().connection_lost(exc)


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    http_protocol = type(
        "CollabHttpProtocol", (HandshakeTimeoutProtocol,), {"handshake_timeout": settings.handshake_timeout}
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

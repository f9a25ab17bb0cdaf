"""Run the app under uvicorn, with collab's own graceful shutdown on SIGTERM."""

from __future__ import annotations

import logging
import socket

import uvicorn
from starlette.applications import Starlette

from collab.settings import Settings

log = logging.getLogger(__name__)


class CollabServer(uvicorn.Server):
    """On SIGTERM, stop accepting, close sockets with 1001 and flush the store, then exit 0.

    uvicorn alone would close WebSockets with 1012 before the app's lifespan could flush.
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


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
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

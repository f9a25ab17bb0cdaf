"""HTTP routes of tumor-board sessions: create, list, read, summary (JSON or printable HTML)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from collab.errors import Forbidden
from collab.http import JSONResponse, RequestAuth, read_json
from collab.sessions.registry import SessionRegistry, build_summary, may_join, session_key, summary_html
from collab.slides.registry import SlideRegistry
from collab.store import Store


class SessionsApi:
    def __init__(self, api: RequestAuth, sessions: SessionRegistry, slides: SlideRegistry, store: Store) -> None:
        self._api = api
        self._sessions = sessions
        self._slides = slides
        self._store = store

    async def create(self, request: Request) -> Response:
        principal = self._api.principal(request)
        record, initial = await self._sessions.create(principal, await read_json(request, 1024 * 1024))
        await self._store.append(session_key(record["id"]), initial)
        return JSONResponse(record, status_code=201)

    async def list(self, request: Request) -> Response:
        principal = self._api.principal(request)
        return JSONResponse(await self._sessions.list(principal))

    async def get(self, request: Request) -> Response:
        principal = self._api.principal(request)
        record = await self._sessions.get(request.path_params["session_id"])
        if not may_join(principal, record):
            raise Forbidden("token does not grant every slide of this session")
        return JSONResponse(record)

    async def summary(self, request: Request) -> Response:
        # A printable page is opened as a link: it may carry ?token= like tiles do.
        principal = self._api.image_principal(request)
        record = await self._sessions.get(request.path_params["session_id"])
        if not may_join(principal, record):
            raise Forbidden("token does not grant every slide of this session")
        summary = await build_summary(record, self._slides, self._store)
        if request.query_params.get("format") == "html":
            return HTMLResponse(summary_html(summary))
        return JSONResponse(summary)

    def routes(self) -> list[Route]:
        return [
            Route("/api/sessions", self.create, methods=["POST"]),
            Route("/api/sessions", self.list, methods=["GET"]),
            Route("/api/sessions/{session_id}", self.get, methods=["GET"]),
            Route("/api/sessions/{session_id}/summary", self.summary, methods=["GET"]),
        ]

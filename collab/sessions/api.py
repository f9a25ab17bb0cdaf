"""HTTP routes of tumor-board sessions: create, list, read, and the board's record."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from collab.errors import Forbidden, NotFound
from collab.http import JSONResponse, RequestAuth, read_json
from collab.live.rooms import RoomManager
from collab.sessions.picture import render_slide_png
from collab.sessions.printing import record_html
from collab.sessions.record import build_record, current_annotations, time_zone
from collab.sessions.registry import SessionRegistry, may_join, session_key
from collab.settings import Settings
from collab.slides.registry import SlideRegistry
from collab.store import Store


class SessionsApi:
    def __init__(self, api: RequestAuth, sessions: SessionRegistry, slides: SlideRegistry, store: Store,
                 rooms: RoomManager, settings: Settings) -> None:
        self._api = api
        self._sessions = sessions
        self._slides = slides
        self._store = store
        self._rooms = rooms
        self._settings = settings

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

    async def _readable(self, request: Request) -> dict[str, Any]:
        # The record is a stable link to print or keep: it may carry ?token= like tiles do.
        principal = self._api.image_principal(request)
        record = await self._sessions.get(request.path_params["session_id"])
        if not may_join(principal, record):
            raise Forbidden("token does not grant every slide of this session")
        return record

    async def record(self, request: Request) -> Response:
        session = await self._readable(request)
        zone = time_zone(request.query_params.get("tz") or self._settings.time_zone)
        built = await build_record(session, slides=self._slides, store=self._store, rooms=self._rooms, zone=zone)
        if request.query_params.get("format") != "html":
            return JSONResponse(built)
        images = {s["slide"]: await self._slide_png(s["slide"]) for s in built["slides"]}
        return HTMLResponse(record_html(built, images))

    async def slide_png(self, request: Request) -> Response:
        session = await self._readable(request)
        slide_id = request.path_params["slide_id"]
        if slide_id not in session["slides"]:
            raise NotFound(f"slide {slide_id!r} is not on this session's agenda")
        png = await self._slide_png(slide_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-cache"})

    async def _slide_png(self, slide_id: str) -> bytes:
        slide = await self._slides.get(slide_id)
        annotations = list((await current_annotations(self._rooms, slide_id)).values())
        return await asyncio.to_thread(render_slide_png, slide, annotations)

    def routes(self) -> list[Route]:
        return [
            Route("/api/sessions", self.create, methods=["POST"]),
            Route("/api/sessions", self.list, methods=["GET"]),
            Route("/api/sessions/{session_id}", self.get, methods=["GET"]),
            Route("/api/sessions/{session_id}/record", self.record, methods=["GET"]),
            Route("/api/sessions/{session_id}/summary", self.record, methods=["GET"]),  # the former name
            Route("/api/sessions/{session_id}/record/slides/{slide_id}.png", self.slide_png, methods=["GET"]),
        ]

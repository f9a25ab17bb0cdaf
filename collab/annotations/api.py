"""HTTP for annotations: query, stats, GeoJSON import, audit. Served from the room."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab.annotations.geojson import (
    GeoJSONError,
    feature_collection,
    parse_feature_collection,
    parse_features_piecewise,
    writable_feature,
)
from collab.annotations.geometry import coordinates_depth_problem
from collab.annotations.guard import AnnotationGuard
from collab.errors import BadRequest, Forbidden, StoreError
from collab.gc_pause import paused_gc
from collab.http import JSONResponse, RequestAuth, parse_json, read_body
from collab.live.keys import RoomKey
from collab.live.room import Room
from collab.live.rooms import RoomManager
from collab.settings import Settings
from collab.slides.registry import SlideRegistry
from collab.store import Store

log = logging.getLogger(__name__)

# Imports this large are checked in a worker thread.
_THREAD_BYTES = 64 * 1024  # bodies larger than this are parsed and checked in a worker thread
_PIECEWISE_BYTES = 1024 * 1024  # ... and, past this, parsed one Feature at a time (the GIL)


def _numbers(text: str | None, count: int, what: str) -> list[float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise BadRequest(f"{what} must be {count} finite numbers separated by commas")
    return values


def _encode_collection(collection: dict[str, Any], room: str) -> bytes:
    try:
        return orjson.dumps(collection)
    except TypeError:  # orjson.JSONEncodeError: a value nested too deeply, say
        pass
    # One annotation that JSON cannot hold must not take the export of all the others down.
    features = []
    for feature in collection["features"]:
        try:
            orjson.dumps(feature)
        except TypeError as exc:
            log.warning("annotation %s holds a value JSON cannot write (%s): exported without it",
                        feature["id"], exc, extra={"room": room, "annotation": feature["id"]})
            feature = writable_feature(feature)
        features.append(feature)
    return orjson.dumps({**collection, "features": features})


class AnnotationsApi:
    def __init__(self, api: RequestAuth, rooms: RoomManager, slides: SlideRegistry, store: Store,
                 settings: Settings) -> None:
        self._api = api
        self._rooms = rooms
        self._slides = slides
        self._store = store
        self._settings = settings

    async def _room(
        self, request: Request, *, write: bool = False, admin: bool = False
    ) -> tuple[Any, Room, AnnotationGuard]:
        principal = self._api.principal(request)
        slide_id = request.path_params["slide_id"]
        principal.require_slide(slide_id)
        if write and not principal.can_write:
            raise Forbidden("only a reviewer, presenter or admin may import annotations")
        if admin and not principal.is_admin:
            raise Forbidden("only an admin may read the audit log")
        await self._slides.get(slide_id)  # 404 for unknown slides
        room = await self._rooms.open(RoomKey.slide(slide_id))
        guard = room.policy
        if not isinstance(guard, AnnotationGuard):
            raise BadRequest("annotations are not followed in this room (geometry checks are off)")
        await guard.catalog.wait_indexed()
        return principal, room, guard

    async def list_annotations(self, request: Request) -> Response:
        _, _, guard = await self._room(request)
        catalog = guard.catalog
        q = request.query_params
        bbox = _numbers(q.get("bbox"), 4, "bbox")
        point = _numbers(q.get("point"), 2, "point")
        include_invalid = q.get("include_invalid") in ("1", "true", "yes")
        ids: set[str] | None = None
        if bbox is not None:
            ids = set(catalog.index.query_bbox(*bbox))
        if point is not None:
            hits = set(catalog.index.query_point(*point))
            ids = hits if ids is None else ids & hits
        if ids is not None:
            records = catalog.records(sorted(ids))
        else:
            records = [
                (k, r) for k, r in catalog.records() if include_invalid or not catalog.is_invalid(k)
            ]
        return Response(_encode_collection(feature_collection(records), guard.room.key),
                        media_type="application/json")

    async def stats(self, request: Request) -> Response:
        _, _, guard = await self._room(request)
        catalog = guard.catalog
        bbox = _numbers(request.query_params.get("bbox"), 4, "bbox")
        if bbox is None:
            bbox = [0.0, 0.0, float(catalog.width), float(catalog.height)]
        return JSONResponse(catalog.index.stats_bbox(*bbox, catalog.classification_of, mpp=catalog.mpp))

    async def import_annotations(self, request: Request) -> Response:
        principal, room, guard = await self._room(request, write=True)
        raw = await read_body(request, self._settings.max_import_bytes)

        def parse_and_check() -> tuple[list[tuple[str, dict[str, Any]]], list[Any]]:
            # Off the event loop: a 10,000-feature import is ~1 s of parsing and Shapely.
            with paused_gc():  # millions of small lists and dicts, none of them cyclic
                body = parse_features_piecewise(raw) if len(raw) > _PIECEWISE_BYTES else None
                try:
                    items = parse_feature_collection(
                        parse_json(raw) if body is None else body, max_depth=self._settings.max_json_depth
                    )
                except GeoJSONError as exc:
                    raise BadRequest(f"not importable GeoJSON: {exc}") from exc
                verdicts = [guard.check(r) for _, r in items]
                for index, ((_key, record), verdict) in enumerate(zip(items, verdicts, strict=True)):
                    # Invalid geometries are stored and shown, but not ones nested deeper than
                    # their type: such values break whatever reads them back.
                    problem = verdict.status == "invalid" and coordinates_depth_problem(record["geometry"])
                    if problem:
                        raise BadRequest(f"not importable GeoJSON: feature {index}: {problem}")
                return items, verdicts

        if len(raw) > _THREAD_BYTES:
            items, verdicts = await asyncio.to_thread(parse_and_check)
        else:
            items, verdicts = parse_and_check()
        results = await guard.import_records(items, verdicts, principal)
        await room.flush()  # answer 201 only once the import is committed
        if room.failed:
            raise StoreError("the import could not be stored")
        return JSONResponse({"created": [k for k, _ in items], "results": results}, status_code=201)

    async def audit(self, request: Request) -> Response:
        _, room, _ = await self._room(request, admin=True)
        text = request.query_params.get("limit", "1000")
        limit = int(text) if text.isdigit() else 1000
        await self._store.flush()
        records = await self._store.list_audit(room.name, limit)
        return JSONResponse([
            {"at": r.at_ms, "user": r.user_id, "site": r.site, "action": r.action,
             "annotation": r.target, "detail": r.detail}
            for r in records
        ])

    def routes(self) -> list[Route]:
        return [
            Route("/api/slides/{slide_id}/annotations", self.list_annotations, methods=["GET"]),
            Route("/api/slides/{slide_id}/annotations", self.import_annotations, methods=["POST"]),
            Route("/api/slides/{slide_id}/stats", self.stats, methods=["GET"]),
            Route("/api/slides/{slide_id}/audit", self.audit, methods=["GET"]),
        ]

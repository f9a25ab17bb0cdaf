"""HTTP for detection layers: streamed import, list, delete, box queries and counts."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from collab import metrics
from collab.annotations.geometry import check_geometry
from collab.annotations.guard import AnnotationGuard
from collab.errors import BadRequest, Forbidden, LimitExceeded, NotFound, PayloadTooLarge
from collab.http import JSONResponse, RequestAuth, read_json
from collab.layers import binary
from collab.layers.codec import Shapes, decode_shapes
from collab.layers.index import LayerIndex, Selection
from collab.layers.qupath import UNCLASSIFIED, LayerParser, ParseError
from collab.layers.registry import LayerRegistry
from collab.layers.store import LayerMeta
from collab.live.keys import RoomKey
from collab.live.rooms import RoomManager
from collab.settings import Settings
from collab.slides.registry import SlideRegistry
from collab.store import AuditRecord, Store

log = logging.getLogger(__name__)

FEED_BYTES = 1024 * 1024  # the parser takes the body in pieces of about this size, in a thread
PROGRESS_EVERY = 100_000  # objects between two progress lines in the log

IMPORTED_OBJECTS = Counter(
    "collab_layer_import_objects_total", "Detection objects stored by layer imports", registry=metrics.REGISTRY
)
IMPORTED_BYTES = Counter(
    "collab_layer_import_bytes_total", "Request body bytes read by layer imports", registry=metrics.REGISTRY
)


def _bbox(text: str | None) -> tuple[float, float, float, float]:
    if text is None:
        raise BadRequest("bbox=x0,y0,x1,y1 is required")
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)) or values[2] < values[0] or values[3] < values[1]:
        raise BadRequest("bbox must be x0,y0,x1,y1: four finite numbers with x0 <= x1 and y0 <= y1")
    return values[0], values[1], values[2], values[3]


class LayersApi:
    def __init__(self, api: RequestAuth, layers: LayerRegistry, slides: SlideRegistry, rooms: RoomManager,
                 store: Store, settings: Settings) -> None:
        self._api = api
        self._layers = layers
        self._slides = slides
        self._rooms = rooms
        self._store = store
        self._settings = settings
        self._importing = 0  # imports in progress on this node (at most settings.layer_imports)
        self._publishing: set[asyncio.Task[None]] = set()

    async def _slide(self, request: Request) -> tuple[Any, dict[str, Any]]:
        principal = self._api.principal(request)
        slide_id = request.path_params["slide_id"]
        principal.require_slide(slide_id)
        return principal, await self._slides.get(slide_id)

    # --- layers ---------------------------------------------------------------------------

    async def list_layers(self, request: Request) -> Response:
        _, slide = await self._slide(request)
        metas = await self._layers.store.list_layers(slide["id"])
        return JSONResponse([m.public() for m in metas])

    async def import_layer(self, request: Request) -> Response:
        principal, slide = await self._slide(request)
        if not principal.can_write:
            raise Forbidden("only a reviewer, presenter or admin may import a layer")
        name = (request.query_params.get("name") or "").strip()
        if not name or len(name) > 200:
            raise BadRequest("name=... (1 to 200 characters) is required")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            raise BadRequest(f"Content-Encoding {encoding[:40]} is not supported (gzip or none)")
        limit = self._settings.layer_max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes (Content-Length {declared})")
        if self._importing >= self._settings.layer_imports:
            # Refused at once rather than queued: a queued body would sit unread past its timeout.
            raise LimitExceeded(f"{self._importing} layer imports are in progress on this server"
                                " (COLLAB_LAYER_IMPORTS): try again when one is done")
        self._importing += 1
        try:
            meta, bytes_in, started = await self._import(request, principal, slide, name, encoding, limit)
        finally:
            self._importing -= 1
        ctx = {"slide_id": meta.slide_id, "layer": meta.id, "user": principal.user_id}
        seconds = time.perf_counter() - started
        log.info("layer imported: %d objects, %d skipped, %.1f MB in %.1f s", meta.count, meta.skipped["count"],
                 bytes_in / 1e6, seconds, extra={**ctx, "objects": meta.count})
        return JSONResponse({"id": meta.id, "name": meta.name, "count": meta.count,
                             "classes": meta.class_counts, "skipped": meta.skipped}, status_code=201)

    async def _import(self, request: Request, principal: Any, slide: dict[str, Any], name: str, encoding: str,
                      limit: int) -> tuple[LayerMeta, int, float]:
        slide_id = slide["id"]
        layer_id = uuid.uuid4().hex
        ctx = {"slide_id": slide_id, "layer": layer_id, "user": principal.user_id}
        parser = LayerParser(width=float(slide["width"]), height=float(slide["height"]), gzip=encoding == "gzip")
        store = self._layers.store
        started = time.perf_counter()
        await store.begin_import(layer_id, slide_id)
        try:
            await self._stream_into(request, parser, layer_id, limit, ctx)
            meta = LayerMeta(
                id=layer_id, slide_id=slide_id, name=name, created_ms=int(time.time() * 1000),
                count=parser.count,
                classes=[{"name": n, "color": c} for n, c in zip(parser.class_names, parser.class_colors, strict=True)],
                class_counts=dict(parser.class_counts),
                skipped={"count": sum(parser.skipped.values()), "reasons": dict(parser.skipped)},
                author=principal.user_id,
            )
        except BaseException:
            # Nothing of a failed or cut import stays behind (cancellation included).
            await asyncio.shield(store.abort_import(layer_id))
            raise
        # Publishing runs to its end even if the request is cancelled meanwhile: a layer committed
        # is always announced and counted (a task of its own, which the request only waits for).
        publish = asyncio.get_running_loop().create_task(self._publish(meta, principal), name="layer-publish")
        self._publishing.add(publish)
        publish.add_done_callback(self._publishing.discard)
        await asyncio.shield(publish)
        return meta, parser.bytes_in, started

    async def _publish(self, meta: LayerMeta, principal: Any) -> None:
        store = self._layers.store
        try:
            await store.finish_import(meta)
        except BaseException:
            await store.abort_import(meta.id)
            raise
        # Committed: audited, announced and counted, whether or not the client still waits.
        self._audit(meta.slide_id, principal, "layer_imported", meta.id, {"name": meta.name, "count": meta.count})
        await self._layers.added(meta)  # never raises

    async def _stream_into(self, request: Request, parser: LayerParser, layer_id: str, limit: int,
                           ctx: dict[str, Any]) -> None:
        """Feed the body to the parser piece by piece (off the event loop) and store its chunks as
        they come: the body is never held whole."""
        store = self._layers.store
        buffer = bytearray()
        total = 0
        reported = 0
        # One thread parses the whole body: its allocations stay in one malloc arena, rather than
        # leaving freed memory behind in the arena of every pool thread that took a piece.
        worker = ThreadPoolExecutor(1, thread_name_prefix="layer-import")
        loop = asyncio.get_running_loop()
        # The piece being parsed while the next one is read (one at a time: memory stays bounded).
        parsing: asyncio.Future[list[Any]] | None = None

        async def stored() -> None:
            nonlocal parsing, reported
            if parsing is None:
                return
            try:
                chunks = await parsing
            except ParseError as exc:
                raise BadRequest(f"not an importable detection export: {exc}") from exc
            finally:
                parsing = None
            await store.add_chunks(layer_id, chunks)
            IMPORTED_OBJECTS.inc(sum(c.count for c in chunks))
            if parser.count - reported >= PROGRESS_EVERY:
                reported = parser.count
                log.info("layer import: %d objects so far (%.1f MB read)", parser.count, total / 1e6,
                         extra={**ctx, "objects": parser.count})

        def last(data: bytes) -> list[Any]:
            return parser.feed(data) + parser.finish()

        try:
            async for data in request.stream():
                total += len(data)
                IMPORTED_BYTES.inc(len(data))
                if total > limit:
                    raise PayloadTooLarge(f"body over {limit} bytes")
                buffer += data
                if len(buffer) >= FEED_BYTES:
                    await stored()  # the previous piece
                    parsing = loop.run_in_executor(worker, parser.feed, bytes(buffer))
                    buffer.clear()
            await stored()
            parsing = loop.run_in_executor(worker, last, bytes(buffer))
            await stored()
        except ClientDisconnect as exc:
            raise BadRequest("the request body did not arrive: the connection closed") from exc
        finally:
            if parsing is not None:  # the import failed meanwhile: let the piece finish, unread
                await asyncio.wait([parsing])
                if not parsing.cancelled():
                    parsing.exception()  # retrieved: the import's own error is the one raised
            worker.shutdown(wait=False)

    async def delete_layer(self, request: Request) -> Response:
        principal, slide = await self._slide(request)
        if not principal.is_admin:
            raise Forbidden("only an admin may delete a layer")
        layer_id = request.path_params["layer_id"]
        # Asked first: a delete retried on a dropped connection answers "gone" as deleted, which
        # is right only for a layer that was there (never a 200 for an id that never existed).
        if await self._layers.store.get_layer(slide["id"], layer_id) is None:
            raise NotFound(f"no layer {layer_id} on slide {slide['id']}")
        if not await self._layers.store.delete_layer(slide["id"], layer_id):
            raise NotFound(f"no layer {layer_id} on slide {slide['id']}")
        await self._layers.removed(slide["id"], layer_id)
        self._audit(slide["id"], principal, "layer_deleted", layer_id, None)
        log.info("layer deleted", extra={"slide_id": slide["id"], "layer": layer_id, "user": principal.user_id})
        return JSONResponse({"deleted": layer_id})

    def _audit(self, slide_id: str, principal: Any, action: str, layer_id: str, detail: dict[str, Any] | None) -> None:
        self._store.audit(AuditRecord(str(RoomKey.slide(slide_id)), int(time.time() * 1000), principal.user_id,
                                      principal.site, action, layer_id, detail))

    # --- queries --------------------------------------------------------------------------

    async def objects(self, request: Request) -> Response:
        _, slide = await self._slide(request)
        index = await self._layers.index(slide["id"], request.path_params["layer_id"])
        q = request.query_params
        bbox = _bbox(q.get("bbox"))
        text = q.get("limit", str(self._settings.layer_query_limit))
        if not text.isdigit():
            raise BadRequest("limit must be a whole number")
        limit = min(int(text), self._settings.layer_outlines_max)  # a listing is never unbounded
        sel = index.in_box(*bbox)
        if q.get("format") == "binary":
            detail = q.get("detail", "auto")
            if detail not in ("auto", "points", "outlines"):
                raise BadRequest("detail must be points, outlines or auto")
            with_outlines = detail == "outlines" or (detail == "auto" and len(sel.rows) <= limit)
            if with_outlines and len(sel.rows) > self._settings.layer_outlines_max:
                raise BadRequest(f"over {self._settings.layer_outlines_max} outlines: ask for points")
            rings = await self._rings(index, sel) if with_outlines else None
            blob = binary.encode(
                [(c["name"], tuple(c["color"] or (160, 160, 160))) for c in index.meta.classes],
                index.ids[sel.rows], index.classes[sel.rows],
                np.stack([index.x[sel.rows], index.y[sel.rows]], axis=1),
                (rings.outline_sizes, rings.outlines) if rings is not None else None,
            )
            return Response(blob, media_type="application/octet-stream")
        if len(sel.rows) > limit:
            return JSONResponse(index.grid(sel, bbox))
        rings = await self._rings(index, sel)
        return Response(_collection_json(index, sel, rings), media_type="application/json")

    async def _rings(self, index: LayerIndex, sel: Selection) -> SelectedRings:
        """The rings of the selected objects, in their order, from the chunks they belong to."""
        wanted = np.unique(sel.chunks)
        blobs = await self._layers.store.load_shapes(index.id, wanted.tolist())
        if len(blobs) < len(wanted):
            raise NotFound(f"layer {index.id} was deleted meanwhile")

        def decode() -> SelectedRings:
            # The selection lists its rows chunk by chunk, in chunk order (LayerIndex.in_box).
            parts = []
            for chunk in wanted.tolist():
                start, end = index.chunk_span(chunk)
                xy = np.stack([index.x[start:end], index.y[start:end]], axis=1).astype(np.float32)
                shapes = decode_shapes(blobs[chunk], xy)
                local = sel.rows[(sel.rows >= start) & (sel.rows < end)] - start
                parts.append(_pick(shapes, local))
            return SelectedRings.concat(parts)

        return await asyncio.to_thread(decode) if len(sel.rows) > 2000 else decode()

    async def count(self, request: Request) -> Response:
        _, slide = await self._slide(request)
        index = await self._layers.index(slide["id"], request.path_params["layer_id"])
        body = await read_json(request, self._settings.max_body_bytes)
        if not isinstance(body, dict) or ("geometry" in body) == ("annotation" in body):
            raise BadRequest('the body must be {"geometry": <Polygon|MultiPolygon>} or {"annotation": "<id>"}')
        if "geometry" in body:
            geometry = body["geometry"]
            if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
                raise BadRequest("geometry must be a GeoJSON Polygon or MultiPolygon")
            verdict = await asyncio.to_thread(
                check_geometry, geometry, width=float(slide["width"]), height=float(slide["height"]),
                max_vertices=self._settings.max_vertices, mpp=slide.get("mpp"),
            )
            if verdict.shape is None:
                raise BadRequest(f"geometry cannot be used: {verdict.problem}")
            shape = verdict.shape
        else:
            shape = await self._annotation_shape(slide["id"], body["annotation"])
        return JSONResponse(await asyncio.to_thread(index.count_inside, shape))

    async def _annotation_shape(self, slide_id: str, annotation: Any) -> Any:
        if not isinstance(annotation, str):
            raise BadRequest("annotation must be an annotation id (a string)")
        room = await self._rooms.open(RoomKey.slide(slide_id))
        guard = room.policy
        if not isinstance(guard, AnnotationGuard):
            raise BadRequest("annotations are not followed in this room (geometry checks are off)")
        await guard.catalog.wait_indexed()
        if annotation not in guard.known:
            raise NotFound(f"no annotation {annotation[:80]} on slide {slide_id}")
        shape = guard.index.get(annotation)
        if shape is None or shape.geom_type not in ("Polygon", "MultiPolygon"):
            raise BadRequest("that annotation has no valid Polygon or MultiPolygon geometry")
        return shape

    def routes(self) -> list[Route]:
        base = "/api/slides/{slide_id}/layers"
        return [
            Route(base, self.list_layers, methods=["GET"]),
            Route(base, self.import_layer, methods=["POST"]),
            Route(base + "/{layer_id}", self.delete_layer, methods=["DELETE"]),
            Route(base + "/{layer_id}/objects", self.objects, methods=["GET"]),
            Route(base + "/{layer_id}/count", self.count, methods=["POST"]),
        ]


@dataclass(slots=True)
class SelectedRings:
    """Outlines and nuclei of selected objects, in selection order, flattened."""

    outline_sizes: np.ndarray
    outlines: np.ndarray
    nucleus_sizes: np.ndarray
    nuclei: np.ndarray

    @classmethod
    def concat(cls, parts: list[SelectedRings]) -> SelectedRings:
        if not parts:
            empty = np.zeros(0, np.int64)
            return cls(empty, np.zeros((0, 2)), empty, np.zeros((0, 2)))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("outline_sizes", "outlines", "nucleus_sizes", "nuclei")))


def _gather(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    total = int(sizes.sum())
    offsets = np.cumsum(sizes) - sizes
    return np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, sizes)


def _pick(shapes: Shapes, local: np.ndarray) -> SelectedRings:
    sizes, starts = shapes.counts[local], shapes.offsets[local]
    return SelectedRings(sizes[:, 0], shapes.coords[_gather(starts[:, 0], sizes[:, 0])],
                         sizes[:, 1], shapes.coords[_gather(starts[:, 1], sizes[:, 1])])


def _closed(sizes: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rings (flattened, `sizes` vertices each) with their first vertex repeated at the end, as
    GeoJSON wants them; and where each closed ring ends."""
    ends = np.cumsum(sizes)
    starts = ends - sizes
    closed_sizes = np.where(sizes > 0, sizes + 1, 0)
    at = _gather(starts, closed_sizes)
    closed_ends = np.cumsum(closed_sizes)
    at[closed_ends[sizes > 0] - 1] = starts[sizes > 0]  # the closing vertex: the first again
    return coords[at], closed_ends


def _collection_json(index: LayerIndex, sel: Selection, rings: SelectedRings) -> bytes:
    """The selection as a GeoJSON FeatureCollection, encoded: orjson writes all the outlines'
    vertices at once, then all the nuclei's, and each Feature is joined from slices of that text
    and a few constant pieces (the same bytes as orjson.dumps of the Features as dicts)."""
    props = []  # per class: (as a detection, as a cell)
    for c in index.meta.classes:
        classification = orjson.dumps(None if c["name"] == UNCLASSIFIED else {"name": c["name"], "color": c["color"]})
        props.append(tuple(b'},"properties":{"objectType":"' + kind + b'","classification":' + classification + b"}"
                           for kind in (b"detection", b"cell")))
    outlines = _ring_texts(*_closed(rings.outline_sizes, rings.outlines))
    nuclei = _ring_texts(*_closed(rings.nucleus_sizes, rings.nuclei))
    parts = []
    for i, (object_id, cls) in enumerate(zip(index.ids[sel.rows].tolist(), index.classes[sel.rows].tolist(),
                                             strict=True)):
        nucleus = nuclei[i]
        parts.append(b'{"type":"Feature","id":%d,"geometry":{"type":"Polygon","coordinates":[%b]%b%b}' % (
            object_id, outlines[i], props[cls][nucleus is not None],
            b',"nucleusGeometry":{"type":"Polygon","coordinates":[%b]}' % nucleus if nucleus is not None else b""))
    return b'{"type":"FeatureCollection","features":[' + b",".join(parts) + b"]}"


def _ring_texts(coords: np.ndarray, ends: np.ndarray) -> list[bytes | None]:
    """Closed rings (flattened, ending at `ends`) as JSON arrays of [x, y], one bytes each (None
    for an empty ring): one orjson call for all, cut at the vertices' brackets."""
    text = orjson.dumps(coords, option=orjson.OPT_SERIALIZE_NUMPY)  # [[x,y],[x,y],...]
    raw = np.frombuffer(text, np.uint8)
    opens = np.flatnonzero(raw == ord("["))[1:].tolist()  # each vertex's (numbers hold no brackets)
    closes = np.flatnonzero(raw == ord("]"))[:-1].tolist()
    starts = np.concatenate([[0], ends])[:-1]
    out: list[bytes | None] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        out.append(b"[" + text[opens[a] : closes[b - 1] + 1] + b"]" if b > a else None)
    return out

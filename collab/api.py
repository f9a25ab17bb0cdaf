"""HTTP routes: health, metrics, the slide registry. Errors are JSON `{"error": ...}`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab import metrics
from collab.auth import Principal, TokenAuthenticator
from collab.errors import BadRequest, CollabError, Forbidden, NotFound, Unauthorized
from collab.origins import origin_allowed
from collab.registry import SlideRegistry, public_slide, validate_slide
from collab.tiles import SlideImageError, SlideImages

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: CollabError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status)


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


async def read_body(request: Request, max_bytes: int) -> bytes:
    body = await request.body()
    if len(body) > max_bytes:
        raise BadRequest(f"body over {max_bytes} bytes")
    return body


async def read_json(request: Request, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes))


class Api:
    """The HTTP surface; each handler authenticates from the Bearer header."""

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        slides: SlideRegistry,
        settings: Any,
        images: SlideImages,
    ) -> None:
        self._auth = authenticator
        self._slides = slides
        self._settings = settings
        self._images = images

    def principal(self, request: Request) -> Principal:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin")
            if not origin_allowed(origin, request.headers.get("host"), self._settings.allowed_origins):
                metrics.REFUSALS.labels(reason="origin").inc()
                raise Forbidden(f"origin {origin} is not allowed")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        return self._auth.authenticate(token.strip())

    def image_principal(self, request: Request) -> Principal:
        """Tiles also take `?token=`: an image viewer cannot always set headers on each tile,
        and OpenSeadragon carries the DZI URL's query string over to every tile URL."""
        if "authorization" in request.headers:
            return self.principal(request)
        return self._auth.authenticate(request.query_params.get("token"))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def list_slides(self, request: Request) -> Response:
        principal = self.principal(request)
        records = await self._slides.list()
        return JSONResponse([public_slide(r) for r in records if principal.may_open(r["id"])])

    async def register_slide(self, request: Request) -> Response:
        principal = self.principal(request)
        if not principal.is_admin:
            raise Forbidden("only an admin may register slides")
        record = validate_slide(await read_json(request, 1024 * 1024))
        record = await self.complete_slide(record)
        existed = await self._slides.exists(record["id"])
        await self._slides.put(record)
        log.info("slide registered", extra={"slide": record["id"], "user": principal.user_id})
        return JSONResponse(public_slide(record), status_code=200 if existed else 201)

    async def complete_slide(self, record: dict[str, Any]) -> dict[str, Any]:
        """Fill width, height and mpp of a slide file the server opens itself."""
        if "path" not in record:
            return record
        try:
            probed = await asyncio.to_thread(self._images.probe, record["path"])
        except SlideImageError as exc:
            raise BadRequest(f"cannot open slide file: {exc}") from exc
        for key in ("width", "height", "mpp"):
            record.setdefault(key, probed[key])
        if not record.get("mpp"):
            raise BadRequest("the slide file has no microns per pixel: give mpp")
        return record

    async def _slide_file(self, request: Request) -> str:
        slide_id = request.path_params["slide_id"]
        self.image_principal(request).require_slide(slide_id)
        record = await self._slides.get(slide_id)
        if not record.get("path"):
            raise NotFound(f"slide {slide_id!r} has no image served by this server")
        return str(record["path"])

    async def slide_dzi(self, request: Request) -> Response:
        xml = await self._images.dzi(await self._slide_file(request))  # SlideImageError: 4xx
        return Response(xml, media_type="application/xml")

    async def slide_tile(self, request: Request) -> Response:
        path = await self._slide_file(request)
        p = request.path_params
        jpeg = await self._images.tile(path, p["level"], p["col"], p["row"])  # SlideImageError: 4xx
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/api/slides", self.list_slides, methods=["GET"]),
            Route("/api/slides", self.register_slide, methods=["POST"]),
            Route("/slides/{slide_id}.dzi", self.slide_dzi, methods=["GET"]),
            Route(
                "/slides/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg",
                self.slide_tile,
                methods=["GET"],
            ),
        ]

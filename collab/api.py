"""HTTP routes: health, metrics, the slide registry. Errors are JSON `{"error": ...}`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab import metrics
from collab.auth import Principal, TokenAuthenticator
from collab.errors import BadRequest, CollabError, Forbidden, Unauthorized
from collab.origins import origin_allowed
from collab.registry import SlideRegistry, public_slide, validate_slide

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: CollabError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status)


async def read_json(request: Request, max_bytes: int) -> Any:
    body = await request.body()
    if len(body) > max_bytes:
        raise BadRequest(f"body over {max_bytes} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


class Api:
    """The HTTP surface; each handler authenticates from the Bearer header."""

    def __init__(self, authenticator: TokenAuthenticator, slides: SlideRegistry, settings: Any) -> None:
        self._auth = authenticator
        self._slides = slides
        self._settings = settings

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
        """Fill width, height and mpp of a slide file the server opens itself (see tiles)."""
        return record

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/api/slides", self.list_slides, methods=["GET"]),
            Route("/api/slides", self.register_slide, methods=["POST"]),
        ]

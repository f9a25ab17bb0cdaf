"""What every HTTP route shares: JSON responses and errors, bodies, who is asking, origins."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from collab import metrics
from collab.auth import Principal, TokenAuthenticator
from collab.errors import BadRequest, CollabError, Forbidden, PayloadTooLarge, Unauthorized


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
    """The request body, refused (413) as soon as it is known to exceed `max_bytes`: from its
    Content-Length before a byte is read, else as it streams in, never after holding it whole.
    (A body that trickles in too slowly is cut by the server's HTTP protocol: 408.)"""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body over {max_bytes} bytes (Content-Length {declared})")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"body over {max_bytes} bytes")
    except ClientDisconnect as exc:  # gone, or cut for slowness: no one reads this answer
        raise BadRequest("the request body did not arrive: the connection closed") from exc
    return bytes(body)


async def read_json(request: Request, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes))


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """True for non-browser clients (no Origin), the server's own origin, and listed origins."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    # Same origin: the page was served by this server under the Host the browser used.
    netloc = urlsplit(origin).netloc
    return bool(host) and netloc == host


def header(scope_headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in scope_headers:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestAuth:
    """Who is asking: the Bearer token of a request (or `?token=` where a browser cannot set headers)."""

    def __init__(self, authenticator: TokenAuthenticator, allowed_origins: tuple[str, ...]) -> None:
        self._auth = authenticator
        self._allowed_origins = allowed_origins

    def principal(self, request: Request) -> Principal:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("origin")
            if not origin_allowed(origin, request.headers.get("host"), self._allowed_origins):
                metrics.REFUSALS.labels(reason="origin").inc()
                raise Forbidden(f"origin {origin} is not allowed")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        return self._auth.authenticate(token.strip())

    def image_principal(self, request: Request) -> Principal:
        """Tiles (and printable pages) also take `?token=`: an image viewer cannot always set
        headers on each tile, and OpenSeadragon carries the DZI URL's query string over to every
        tile URL."""
        if "authorization" in request.headers:
            return self.principal(request)
        return self._auth.authenticate(request.query_params.get("token"))

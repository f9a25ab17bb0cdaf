"""What every HTTP route shares: JSON responses and errors, bodies, who is asking, origins."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


def origin_allowed(
    origin: str | None, server: tuple[str, int] | None, allowed: tuple[str, ...], public_url: str
) -> bool:
    """True for non-browser clients (no Origin), the server's own origins, and listed origins.

    The server's own origins are its public URL and the address the connection really reached
    (the ASGI scope's `server`, the socket's local address), never the Host header: with DNS
    rebinding, evil.example resolves to this server and the browser sends
    `Host: evil.example:PORT` along with `Origin: http://evil.example:PORT`, which would match.
    """
    if origin is None:
        return True
    if "*" in allowed:
        return True
    normalized = _origin(origin)
    if normalized is None:  # "null" (sandboxed frames, file://) or garbage: not ours
        return False
    if normalized == _origin(public_url) or normalized in {_origin(a) for a in allowed}:
        return True
    return server is not None and urlsplit(normalized).netloc in _own_netlocs(server)


def _origin(url: str) -> str | None:
    """scheme://host[:port] in lower case, without a default port, as browsers send Origin."""
    try:
        parts = urlsplit(url.strip().rstrip("/").lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or (parts.scheme, port) in (("http", 80), ("https", 443)):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _own_netlocs(server: tuple[str, int]) -> set[str]:
    """host:port forms of the address a connection reached; a loopback address is also
    reachable as localhost (browsers resolve localhost themselves, never through DNS)."""
    host, port = server[0], server[1]
    hosts = {f"[{host}]" if ":" in host else host}
    if host in ("127.0.0.1", "::1"):
        hosts |= {"localhost", "127.0.0.1", "[::1]"}
    return {f"{h}:{port}" for h in hosts} | ({*hosts} if port == 80 else set())


class OriginCheck:
    """Refuse (403) every HTTP request that carries a foreign browser Origin, GET included, on
    every route: a page elsewhere must not read slides, tiles or summaries with a token it got
    hold of (a `?token=` link, say). WebSockets are checked at admission (collab.live.ws), where
    the refusal is a close code the browser can see."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...], public_url: str) -> None:
        self._app = app
        self._allowed = allowed
        self._public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = header(scope.get("headers", []), b"origin")
            if not origin_allowed(origin, scope.get("server"), self._allowed, self._public_url):
                metrics.REFUSALS.labels(reason="origin").inc()
                response = error_response(Forbidden(f"origin {str(origin)[:200]} is not allowed"))
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def header(scope_headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in scope_headers:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestAuth:
    """Who is asking: the Bearer token of a request (or `?token=` where a browser cannot set headers)."""

    def __init__(self, authenticator: TokenAuthenticator) -> None:
        self._auth = authenticator

    def principal(self, request: Request) -> Principal:
        # Origins are checked before any route, by OriginCheck.
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

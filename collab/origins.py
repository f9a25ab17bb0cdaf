"""Origin allow-list for browser requests (WebSocket handshakes and state-changing HTTP)."""

from __future__ import annotations

from urllib.parse import urlsplit


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

"""One error root for collab; each error knows the WebSocket close code clients see."""

from __future__ import annotations


class CollabError(Exception):
    """Root of collab's errors. `close_code` is what a WebSocket client sees."""

    close_code = 1011
    http_status = 500


class ProtocolError(CollabError):
    """Malformed y-websocket bytes: only this connection is closed."""

    close_code = 1002
    http_status = 400


class UnsupportedData(CollabError):
    """A frame of a kind the protocol does not use (text instead of binary)."""

    close_code = 1003
    http_status = 400


class AuthError(CollabError):
    pass


class Unauthorized(AuthError):
    close_code = 4401
    http_status = 401


class Forbidden(AuthError):
    close_code = 4403
    http_status = 403


class NotFound(CollabError):
    close_code = 4404
    http_status = 404


class LimitExceeded(CollabError):
    """A configured limit (rate, connections) was exceeded."""

    close_code = 1008
    http_status = 429


class TooManyConnections(LimitExceeded):
    close_code = 4429


class SlowConsumer(CollabError):
    """The client could not keep up with its room: it reconnects and resyncs."""

    close_code = 1013


class ShuttingDown(CollabError):
    """The server is draining: no new joins."""

    close_code = 1001
    http_status = 503


class BadRequest(CollabError):
    http_status = 400


class PayloadTooLarge(BadRequest):
    """A request body over its configured maximum, refused before or as it streams in."""

    http_status = 413


class StoreError(CollabError):
    close_code = 1011
    http_status = 503  # the store (or a room being reloaded from it) cannot take the write now


class SecretNotFound(CollabError):
    """No signing secret to mint tokens with: only `collab serve` creates one."""

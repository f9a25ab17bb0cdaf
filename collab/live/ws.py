"""WebSocket endpoints: authenticate before joining, then hand the socket to a Connection.

Refusals are sent as close codes after accepting the handshake (a browser never sees the code
of a refused upgrade) and before any document byte: 4401, 4403, 4404 (docs/reference.md, section 3).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from collab.auth import Principal, TokenAuthenticator
from collab.errors import CollabError, Forbidden, TooManyConnections
from collab.http import header, origin_allowed
from collab.live.connection import Connection
from collab.live.keys import RoomKey
from collab.live.rooms import RoomManager
from collab.settings import Settings
from collab.tickets import Tickets

log = logging.getLogger(__name__)

# Raises NotFound when the document id is not registered, Forbidden when the principal may not join.
DocumentCheck = Callable[[str, Principal], Awaitable[None]]


class RoomEndpoint:
    """ASGI app for /ws/{kind}/{id}: one room per document id."""

    def __init__(
        self,
        kind: str,
        *,
        rooms: RoomManager,
        authenticator: TokenAuthenticator,
        settings: Settings,
        check_document: DocumentCheck,
        on_refusal: Callable[[str, Principal | None, str, str], None],
        connections_per_user: Counter[str],
        tickets: Tickets,
    ) -> None:
        self._kind = kind
        self._rooms = rooms
        self._auth = authenticator
        self._settings = settings
        self._check_document = check_document
        self._on_refusal = on_refusal
        # Shared by the slide and session endpoints: the limit is per user, not per kind of room.
        self._per_user = connections_per_user
        self._tickets = tickets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        doc_id: str = scope["path_params"]["doc_id"]
        key = RoomKey(self._kind, doc_id)
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        principal: Principal | None = None
        counted = False
        try:
            try:
                principal = await self._admit(scope, doc_id)
                # Counted at once, before the next await: parallel connects see each other.
                self._per_user[principal.user_id] += 1
                counted = True
                await self._check_document(doc_id, principal)
            except CollabError as exc:
                self._on_refusal(str(key), principal, type(exc).__name__, str(exc))
                await send({"type": "websocket.close", "code": exc.close_code, "reason": str(exc)[:120]})
                return
            if self._rooms.closing:
                await send({"type": "websocket.close", "code": 1001, "reason": "server shutting down"})
                return
            conn = Connection(receive, send, principal, str(key), self._settings)
            try:
                room = await self._rooms.join(key, conn)
            except CollabError as exc:
                self._on_refusal(str(key), principal, type(exc).__name__, str(exc))
                await send({"type": "websocket.close", "code": exc.close_code, "reason": str(exc)[:120]})
                return
            try:
                await conn.serve(room, lambda: self._rooms.leave(room, conn))
            finally:
                self._rooms.leave(room, conn)
        finally:
            if counted and principal is not None:
                self._per_user[principal.user_id] -= 1
                if self._per_user[principal.user_id] <= 0:
                    del self._per_user[principal.user_id]

    async def _admit(self, scope: Scope, doc_id: str) -> Principal:
        headers = scope.get("headers", [])
        origin = header(headers, b"origin")
        settings = self._settings
        if not origin_allowed(origin, scope.get("server"), settings.allowed_origins, settings.base_url):
            raise Forbidden(f"origin {origin} is not allowed")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if "ticket" in query:
            # A browser's single-use ticket: keeps the token itself out of URLs and logs.
            principal = await self._tickets.redeem(query["ticket"][0])
        else:
            principal = self._auth.authenticate((query.get("token") or [None])[0])
        if self._per_user[principal.user_id] >= self._settings.max_connections_per_user:
            raise TooManyConnections("too many connections for this user")
        return principal


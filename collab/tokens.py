"""HTTP routes that trade a valid token: for a WebSocket ticket, or for a renewed token."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab.auth import TokenAuthenticator
from collab.http import JSONResponse, RequestAuth
from collab.settings import Settings
from collab.tickets import Tickets

log = logging.getLogger(__name__)


class TokensApi:
    def __init__(self, api: RequestAuth, authenticator: TokenAuthenticator, tickets: Tickets,
                 settings: Settings) -> None:
        self._api = api
        self._auth = authenticator
        self._tickets = tickets
        self._settings = settings

    async def ticket(self, request: Request) -> Response:
        principal = self._api.principal(request)  # any role; Origin checked like any POST
        ticket = self._tickets.issue(principal)
        log.info("ticket issued", extra={"user": principal.user_id, "site": principal.site})
        return JSONResponse(
            {"ticket": ticket, "expires_in": round(self._settings.ticket_seconds)}, status_code=201
        )

    async def renew(self, request: Request) -> Response:
        self._api.principal(request)  # Origin and token checks shared with every POST
        token = request.headers["authorization"].partition(" ")[2].strip()
        renewed, expires_at = self._auth.renew(
            token, link_ttl=self._settings.link_ttl, max_lifetime=self._settings.token_max_lifetime
        )
        return JSONResponse({"token": renewed, "expires_at": expires_at})

    def routes(self) -> list[Route]:
        return [
            Route("/api/tickets", self.ticket, methods=["POST"]),
            Route("/api/tokens/renew", self.renew, methods=["POST"]),
        ]

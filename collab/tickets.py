"""Short-lived, single-use tickets that stand for a token's principal.

A browser that keeps its token out of URLs asks for a ticket over HTTP (Bearer) and opens the
WebSocket with `?ticket=`; a ticket seen in a log or a proxy is worthless after its first use or
after a few seconds. The registry is in-process; a multi-node version keeps the same interface
over the shared store.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from collab.auth import Principal
from collab.errors import LimitExceeded, Unauthorized

log = logging.getLogger(__name__)

INVALID = "invalid or expired ticket"
# Outstanding tickets per user: a page needs a few per reconnect; a loop asking for more only
# grows memory.
MAX_PER_USER = 100


class Tickets(Protocol):
    """What the HTTP and WebSocket layers need: issue one, redeem it once."""

    def issue(self, principal: Principal) -> str: ...

    def redeem(self, ticket: str | None) -> Principal: ...


class TicketRegistry:
    """Tickets in a dict with an expiry each; expired ones are swept as new ones are issued."""

    def __init__(
        self, ttl: float, *, max_per_user: int = MAX_PER_USER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl <= 0:
            raise ValueError("the ticket lifetime must be positive")
        self.ttl = ttl
        self._max_per_user = max_per_user
        self._clock = clock
        self._tickets: dict[str, tuple[Principal, float]] = {}
        self._per_user: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._tickets)

    def issue(self, principal: Principal) -> str:
        now = self._clock()
        self._sweep(now)
        if self._per_user[principal.user_id] >= self._max_per_user:
            raise LimitExceeded("too many unused tickets for this user")
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = (principal, now + self.ttl)
        self._per_user[principal.user_id] += 1
        return ticket

    def redeem(self, ticket: str | None) -> Principal:
        """The principal a ticket stands for; the ticket is gone afterwards, used or not."""
        entry = self._tickets.pop(ticket, None) if ticket else None
        if entry is None:
            raise Unauthorized(INVALID)
        principal, expires = entry
        self._forget(principal.user_id)
        if self._clock() >= expires:
            raise Unauthorized(INVALID)
        # The token behind it may have expired since the ticket was issued.
        if principal.expires_at <= time.time():
            raise Unauthorized("token expired")
        return principal

    def _sweep(self, now: float) -> None:
        expired = [t for t, (_, expires) in self._tickets.items() if expires <= now]
        for ticket in expired:
            self._forget(self._tickets.pop(ticket)[0].user_id)
        if expired:
            log.debug("swept %d expired tickets", len(expired), extra={"tickets": len(self._tickets)})

    def _forget(self, user_id: str) -> None:
        self._per_user[user_id] -= 1
        if self._per_user[user_id] <= 0:
            del self._per_user[user_id]

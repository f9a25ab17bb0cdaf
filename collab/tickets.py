"""Short-lived, single-use tickets that stand for a token's principal.

A browser that keeps its token out of URLs asks for a ticket over HTTP (Bearer) and opens the
WebSocket with `?ticket=`; a ticket seen in a log or a proxy is worthless after its first use or
after a few seconds.

A ticket is itself signed (a JWT of type "ticket", with its own id and the token's expiry), so
any node can redeem it: behind a load balancer the WebSocket rarely lands on the node that issued
the ticket. Single use is kept in a set of redeemed ticket ids until they expire: in memory on one
node, in Redis (SET NX) when several nodes share one (and, should Redis not answer, in memory:
the ticket still expires within seconds). A ticket is never accepted as a token.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collab.auth import Principal, TokenAuthenticator
from collab.errors import Unauthorized

log = logging.getLogger(__name__)

INVALID = "invalid or expired ticket"


class LocalRedeemed:
    """Ticket ids redeemed on this node, each kept until its ticket would have expired."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    async def first_use(self, ticket_id: str, expires_at: float) -> bool:
        now = self._clock()
        if len(self._until) > 1024:  # sweep now and then: the set only holds live tickets
            self._until = {t: u for t, u in self._until.items() if u > now}
        if ticket_id in self._until:
            return False
        self._until[ticket_id] = expires_at
        return True


class RedisRedeemed:
    """Ticket ids redeemed on any node (Redis SET NX with the ticket's remaining life)."""

    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        self._local = LocalRedeemed()

    async def first_use(self, ticket_id: str, expires_at: float) -> bool:
        ttl = max(1, int(expires_at - time.time()) + 1)
        try:
            async with asyncio.timeout(2):
                return bool(await self._redis.set(f"collab:ticket:{ticket_id}", b"1", nx=True, ex=ttl))
        except (RedisError, OSError, TimeoutError) as exc:
            # Redis away: each node still refuses a second use of what it redeemed itself.
            log.warning("Redis did not answer for a ticket (%s): single use is per node meanwhile", exc)
            return await self._local.first_use(ticket_id, expires_at)

    async def close(self) -> None:
        await self._redis.aclose()


class Tickets:
    """Issue a ticket for a principal; redeem it once, on any node, within `ttl` seconds."""

    def __init__(self, authenticator: TokenAuthenticator, ttl: float,
                 redeemed: LocalRedeemed | RedisRedeemed | None = None) -> None:
        if ttl <= 0:
            raise ValueError("the ticket lifetime must be positive")
        self._auth = authenticator
        self.ttl = ttl
        self._redeemed = redeemed or LocalRedeemed()

    def issue(self, principal: Principal) -> str:
        return self._auth.mint_ticket(principal, ttl=self.ttl, ticket_id=secrets.token_urlsafe(16))

    async def redeem(self, ticket: str | None) -> Principal:
        """The principal a ticket stands for; refused once used, after it expires, or when the
        token behind it has expired since."""
        principal, ticket_id, expires_at = self._auth.open_ticket(ticket)  # Unauthorized if bad
        if not await self._redeemed.first_use(ticket_id, expires_at):
            raise Unauthorized(INVALID)
        if principal.expires_at <= time.time():
            raise Unauthorized("token expired")
        return principal

    async def close(self) -> None:
        if isinstance(self._redeemed, RedisRedeemed):
            await self._redeemed.close()

"""Identity from HS256 JWTs (PyJWT): who is connecting, from which site, and what they may do."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from collab.errors import Forbidden, SecretNotFound, Unauthorized

if TYPE_CHECKING:
    from collab.store import Store

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
TICKET = "ticket"  # the `typ` claim of connection tickets, which are never accepted as tokens
_DATE_CLAIMS = ("exp", "iat", "nbf")


class Role(StrEnum):
    VIEWER = "viewer"
    REVIEWER = "reviewer"
    PRESENTER = "presenter"
    ADMIN = "admin"


# Roles that may change slide documents (annotations, comments).
WRITER_ROLES = frozenset({Role.REVIEWER, Role.PRESENTER, Role.ADMIN})

# Presence colors: distinct, readable on a slide, chosen stably from the user id.
_PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
    "#f032e6", "#9a6324", "#469990", "#800000", "#808000", "#000075",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified identity behind a connection or request."""

    user_id: str
    name: str
    site: str
    role: Role
    slides: frozenset[str] | None  # None means every slide ("*")
    expires_at: float

    @property
    def can_write(self) -> bool:
        return self.role in WRITER_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def can_present(self) -> bool:
        return self.role in (Role.PRESENTER, Role.ADMIN)

    def may_open(self, slide_id: str) -> bool:
        return self.slides is None or slide_id in self.slides

    def require_slide(self, slide_id: str) -> None:
        if not self.may_open(slide_id):
            raise Forbidden(f"token does not grant slide {slide_id!r}")

    @property
    def color(self) -> str:
        digest = hashlib.sha256(self.user_id.encode()).digest()
        return _PALETTE[digest[0] % len(_PALETTE)]

    def presence_user(self) -> dict[str, str]:
        """The `user` field the server stamps into every awareness state of this principal."""
        return {
            "id": self.user_id,
            "name": self.name,
            "site": self.site,
            "role": self.role.value,
            "color": self.color,
        }


class TokenAuthenticator:
    """Verifies and mints tokens with one HS256 secret.

    The secret may come later (`set_secret`): a generated one is read from the store, which the
    app opens in its lifespan, before it serves any request.
    """

    def __init__(self, secret: str | None) -> None:
        self._secret_value: str | None = None
        if secret is not None:
            self.set_secret(secret)

    def set_secret(self, secret: str) -> None:
        if not secret:
            raise ValueError("an empty signing secret is not allowed")
        self._secret_value = secret

    @property
    def _secret(self) -> str:
        if self._secret_value is None:
            raise RuntimeError("the signing secret is not loaded yet (the store is not open)")
        return self._secret_value

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "role", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        # PyJWT reads date claims with int(), so it takes "exp": "99999999999" (a string that
        # would outlive any intended lifetime): RFC 7519 says NumericDate, so numbers only.
        for name in _DATE_CLAIMS:
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise Unauthorized(f"invalid token: claim {name!r} must be a number")
        if claims.get("typ") == TICKET:
            raise Unauthorized("invalid token: a connection ticket is not a token")
        return _principal_from_claims(claims)

    def mint_ticket(self, principal: Principal, *, ttl: float, ticket_id: str) -> str:
        """A signed ticket standing for `principal` for `ttl` seconds (collab/tickets.py)."""
        claims = {
            "typ": TICKET,
            "jti": ticket_id,
            "sub": principal.user_id,
            "name": principal.name,
            "site": principal.site,
            "role": principal.role.value,
            "slides": "*" if principal.slides is None else sorted(principal.slides),
            "tok_exp": principal.expires_at,  # the token behind it still ends the connection
            "exp": time.time() + ttl,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def open_ticket(self, ticket: str | None) -> tuple[Principal, str, float]:
        """(principal, ticket id, expiry) of a valid ticket; Unauthorized otherwise."""
        invalid = Unauthorized("invalid or expired ticket")
        if not ticket:
            raise invalid
        try:
            claims = jwt.decode(ticket, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "role", "exp", "jti"]})
        except jwt.InvalidTokenError as exc:
            raise invalid from exc
        if claims.get("typ") != TICKET or not isinstance(claims.get("tok_exp"), int | float):
            raise invalid
        principal = _principal_from_claims({**claims, "exp": claims["tok_exp"]})
        return principal, str(claims["jti"]), float(claims["exp"])

    def mint(
        self,
        *,
        user: str,
        name: str,
        site: str,
        role: str,
        slides: list[str] | str = "*",
        ttl: float = 3600,
        issued_at: int | None = None,
    ) -> str:
        """A signed token; `iat` marks when the link was first issued (renewals keep it)."""
        now = time.time()
        claims = {
            "sub": user,
            "name": name,
            "site": site,
            "role": Role(role).value,
            "slides": slides,
            "iat": int(now) if issued_at is None else int(issued_at),
            "exp": int(now + ttl),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def renew(self, token: str | None, *, link_ttl: float, max_lifetime: float) -> tuple[str, int]:
        """A fresh token for the same identity and slides, expiring `link_ttl` from now but never
        past the original link's `iat` + `max_lifetime`: a meeting can run long, a leaked link
        cannot be kept alive forever. Raises Unauthorized (invalid, expired) or Forbidden (cap)."""
        principal = self.authenticate(token)  # refuses expired and invalid tokens
        claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM])  # type: ignore[arg-type]
        exp = int(claims["exp"])
        iat = claims.get("iat")
        # Tokens minted before `iat` existed count from their own expiry minus the link TTL.
        issued = int(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else int(exp - link_ttl)
        cap = int(issued + max_lifetime)
        if exp >= cap:
            raise Forbidden("this link cannot be renewed further")
        new_exp = min(int(time.time() + link_ttl), cap)
        renewed = {**claims, "iat": issued, "exp": new_exp}
        log.info("token renewed", extra={"user": principal.user_id, "site": principal.site, "exp": new_exp})
        return jwt.encode(renewed, self._secret, algorithm=ALGORITHM), new_exp


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise Unauthorized(f"unknown role {claims['role']!r}") from exc
    slides_claim = claims.get("slides", [])
    if slides_claim == "*":
        slides = None
    elif isinstance(slides_claim, list) and all(isinstance(s, str) for s in slides_claim):
        slides = frozenset(slides_claim)
    else:
        raise Unauthorized("claim 'slides' must be a list of slide ids or \"*\"")
    return Principal(
        user_id=str(claims["sub"]),
        name=str(claims.get("name") or claims["sub"]),
        site=str(claims.get("site") or ""),
        role=role,
        slides=slides,
        expires_at=float(claims["exp"]),
    )


def load_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, or the one the server generated under the data dir.

    Commands other than `serve` use this: a secret they made up would sign tokens that the
    running server rejects, so they fail saying where they looked instead.
    """
    if configured:
        return configured
    path = data_dir / "secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SecretNotFound(
            f"no signing secret: COLLAB_SECRET is not set and {path.resolve()} does not exist. "
            "Pass --data with the server's data directory (or set COLLAB_SECRET as the server has it); "
            "`collab serve` creates the secret on its first start."
        ) from None


def generate_secret() -> str:
    return secrets.token_urlsafe(48)


async def signing_secret(configured: str | None, store: Store, *, create: bool = False) -> str:
    """COLLAB_SECRET when set; otherwise the one the store keeps: a file under --data with
    SQLite, a row every node shares with PostgreSQL. Only the server creates it (`create=True`):
    a secret a command made up would sign tokens the running server rejects (SecretNotFound)."""
    if configured:
        return configured
    return await store.secret(generate_secret if create else None)

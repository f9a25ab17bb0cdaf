"""RoomPolicy: what a kind of room adds to the bare room, given once, when the room is built.

The room itself only applies, stores and relays. Its policy decides who may write, does the
server-side work that follows the document (the annotation checks of a slide, the audit of a
session) and finishes that work before the room is unloaded. The base class is a plain document
that users with a writing role may change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from collab.auth import Principal
from collab.live.keys import RoomKey

if TYPE_CHECKING:
    from collab.live.room import Room


class RoomPolicy:
    """A plain document: writers by role, nothing done around their updates."""

    async def attach(self, room: Room) -> None:
        """The room is loaded and no client has joined yet."""

    def refuse_write(self, principal: Principal, update: bytes) -> str | None:
        """Why `principal` may not apply `update` (it is answered with permission-denied), or None."""
        return None if principal.can_write else "read-only role"

    def before_apply(self, principal: Principal) -> None:
        """A client's update is about to be applied."""

    def after_apply(self, principal: Principal) -> None:
        """A client's update was applied and queued for the store."""

    def before_remote_apply(self) -> None:
        """An update another node committed (and did the server-side work for) is about to be applied."""

    def after_remote_apply(self) -> None:
        """An update another node committed was applied: follow it (an index), write nothing."""

    def joined(self, principal: Principal) -> None:
        """A client joined the room."""

    def left(self, principal: Principal) -> None:
        """A client left the room."""

    async def settle(self) -> None:
        """The room is about to be unloaded: finish the server's own pending writes."""

    def close(self) -> None:
        """The room is gone (unloaded or dropped): write nothing more to it."""


# Given to the RoomManager: the policy of a room about to be loaded.
PolicyFactory = Callable[[RoomKey], Awaitable[RoomPolicy]]

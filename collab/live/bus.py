"""The fan-out seam between server nodes. One node: LocalBus, which has nobody to tell."""

from __future__ import annotations

from typing import Protocol


class Bus(Protocol):
    def publish(self, room: str, message: bytes) -> None:
        """Offer a committed y-websocket message of `room` to the other nodes."""
        ...


class LocalBus:
    """Single process: every client of a room is attached to this node's Room."""

    def publish(self, room: str, message: bytes) -> None:
        return None

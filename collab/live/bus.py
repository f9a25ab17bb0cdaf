"""The fan-out seam between server nodes.

A node tells the others about a room: a committed update (with its sequence numbers in the
store), a presence relay, a request for everyone's presence (a node that just loaded the room);
and about a slide: its detection layers changed (one was added or removed in the shared store).
Messages are a convenience, never data: a node that misses one reads what it lacks from the
store (collab/live/rooms.py catches up), so a message lost while Redis is away loses nothing.

One node: LocalBus, which has nobody to tell. Several: RedisBus (collab/live/redis_bus.py).
"""

from __future__ import annotations

from typing import Protocol


class RemoteRoom(Protocol):
    """What a loaded room hears from the other nodes."""

    def on_remote_update(self, first: int, last: int, update: bytes, owners: dict[int, str]) -> None:
        """Another node committed `update`, the room's entries `first`..`last`; `owners` names
        the user each of its Yjs client ids belongs to."""
        ...

    def on_remote_presence(self, node: str, message: bytes) -> None:
        """Another node relayed presence (an encoded awareness message, already stamped)."""
        ...

    def on_presence_query(self, node: str) -> None:
        """Another node just loaded the room and asks for everyone's presence."""
        ...

    def on_node_gone(self, node: str) -> None:
        """Another node stopped answering: forget the presence of its clients."""
        ...


class Bus(Protocol):
    node_id: str

    @property
    def connected(self) -> bool:
        """Whether messages are flowing (always true for a single node)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def attach(self, room: str, listener: RemoteRoom) -> None:
        """Deliver the room's messages from other nodes to `listener` (the room was loaded)."""
        ...

    def detach(self, room: str) -> None: ...

    def publish_update(self, room: str, first: int, last: int, update: bytes, owners: dict[int, str]) -> None: ...

    def publish_presence(self, room: str, message: bytes) -> None: ...

    def query_presence(self, room: str) -> None: ...

    def publish_layers(self, slide_id: str) -> None:
        """This node added or removed a layer of the slide (the layer store has it committed)."""
        ...


class LocalBus:
    """Single process: every client of a room is attached to this node's Room."""

    node_id = "local"
    connected = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def attach(self, room: str, listener: RemoteRoom) -> None:
        return None

    def detach(self, room: str) -> None:
        return None

    def publish_update(self, room: str, first: int, last: int, update: bytes, owners: dict[int, str]) -> None:
        return None

    def publish_presence(self, room: str, message: bytes) -> None:
        return None

    def query_presence(self, room: str) -> None:
        return None

    def publish_layers(self, slide_id: str) -> None:
        return None

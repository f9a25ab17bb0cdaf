"""Presence (awareness) of one room: who owns which client id, stamped identity, throttled relay.

The server keeps the latest state of every client id and relays an entry only when its clock
advances, at most `hz` times in any one-second window per client id (a sliding window, so
normal jitter is not delayed while the window has room). A held-back state is sent as soon as
the window has room, so the latest state always arrives; removals are sent at once.
A state that is not a JSON object is malformed input: ProtocolError closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from collab import metrics
from collab.errors import ProtocolError
from collab.live.protocol import (
    AwarenessEntry,
    decode_awareness_update,
    encode_awareness,
    encode_awareness_update,
)
from collab.live.ratelimit import SlidingWindow

if TYPE_CHECKING:
    from collab.live.connection import Connection

log = logging.getLogger(__name__)

NULL_STATE = "null"


@dataclass(slots=True)
class _ClientPresence:
    owner: Connection
    clock: int
    state_json: str
    bucket: SlidingWindow
    dirty: bool = False
    timer: asyncio.TimerHandle | None = field(default=None)


class Presence:
    """Awareness states of one room, keyed by Yjs client id."""

    def __init__(
        self,
        broadcast: Callable[[bytes, Connection | None], int],
        *,
        hz: float,
    ) -> None:
        self._broadcast = broadcast  # answers how many clients it sent the frame to
        self._hz = hz
        self._clients: dict[int, _ClientPresence] = {}
        # Last clock seen per client id, kept after removal so late echoes cannot revive it.
        self._clocks: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def apply(self, conn: Connection, payload: bytes) -> None:
        """Apply an awareness update from `conn`; relay the entries that really advance.

        Stock y-websocket clients echo every awareness change they receive back to the server,
        so entries that do not advance a clock are common and are dropped silently.
        """
        for entry in decode_awareness_update(payload):
            client_id = entry.client_id
            removal = entry.state_json == NULL_STATE
            current = self._clients.get(client_id)
            known = self._clocks.get(client_id)
            if known is not None and (
                entry.clock < known or (entry.clock == known and not (removal and current))
            ):
                continue  # stale or an echo: nothing new
            # Parsed before anything changes: a malformed state closes the connection.
            state_json = None if removal else self._stamp(conn, client_id, entry.state_json)
            if current is not None and current.owner is not conn:
                if current.owner.principal.user_id != conn.principal.user_id:
                    metrics.REFUSALS.labels(reason="foreign_awareness_id").inc()
                    log.warning(
                        "refused awareness for a client id owned by another user",
                        extra={"room": conn.room_key, "user": conn.principal.user_id},
                    )
                    continue
                # The same user reconnected with the same Yjs client id before the server
                # noticed the old socket was gone: the new connection takes the id over.
                current.owner.client_ids.discard(client_id)
                current.owner = conn
            self._clocks[client_id] = entry.clock
            if state_json is None:
                if current is not None:
                    self._remove(client_id)
                continue
            if current is None:
                bucket = SlidingWindow(self._hz)
                current = _ClientPresence(conn, entry.clock, state_json, bucket)
                self._clients[client_id] = current
                conn.client_ids.add(client_id)
            else:
                current.clock = entry.clock
                current.state_json = state_json
            self._relay_throttled(client_id, current)

    def encode_all(self) -> bytes | None:
        """One awareness message with every known state, for a joiner or a query."""
        if not self._clients:
            return None
        entries = [AwarenessEntry(cid, c.clock, c.state_json) for cid, c in self._clients.items()]
        return encode_awareness(encode_awareness_update(entries))

    def drop_connection(self, conn: Connection) -> None:
        """Remove every state `conn` introduced, for everyone."""
        for client_id in list(conn.client_ids):
            current = self._clients.get(client_id)
            if current is not None and current.owner is conn:
                self._remove(client_id)
        conn.client_ids.clear()

    def close(self) -> None:
        for c in self._clients.values():
            if c.timer is not None:
                c.timer.cancel()
        self._clients.clear()

    def _stamp(self, conn: Connection, client_id: int, state_json: str) -> str:
        """Replace the client's `user` with the token's identity: presence cannot be forged."""
        try:
            state = orjson.loads(state_json)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"awareness state of client {client_id} is not JSON") from None
        if not isinstance(state, dict):
            raise ProtocolError(f"awareness state of client {client_id} is not a JSON object or null")
        state["user"] = conn.presence_user
        return orjson.dumps(state).decode()

    def _remove(self, client_id: int) -> None:
        """Forget a state and tell everyone, at its clock (as y-websocket's server does)."""
        current = self._clients.pop(client_id, None)
        if current is None:
            return
        if current.timer is not None:
            current.timer.cancel()
        current.owner.client_ids.discard(client_id)
        clock = self._clocks.get(client_id, current.clock)
        update = encode_awareness_update([AwarenessEntry(client_id, clock, NULL_STATE)])
        metrics.AWARENESS_OUT.inc(self._broadcast(encode_awareness(update), current.owner))

    def _relay_throttled(self, client_id: int, current: _ClientPresence) -> None:
        current.dirty = True
        if current.timer is not None:
            return  # a relay is already scheduled; it will carry this latest state
        if current.bucket.take():
            self._send(client_id, current)
        else:
            loop = asyncio.get_running_loop()
            current.timer = loop.call_later(
                current.bucket.wait_time(), self._send_held, client_id
            )

    def _send_held(self, client_id: int) -> None:
        current = self._clients.get(client_id)
        if current is None:
            return
        current.timer = None
        if not current.dirty:
            return
        if current.bucket.take():
            self._send(client_id, current)
        else:  # the timer fired a hair early: wait for the token rather than overspend
            loop = asyncio.get_running_loop()
            current.timer = loop.call_later(current.bucket.wait_time(), self._send_held, client_id)

    def _send(self, client_id: int, current: _ClientPresence) -> None:
        current.dirty = False
        update = encode_awareness_update([AwarenessEntry(client_id, current.clock, current.state_json)])
        metrics.AWARENESS_OUT.inc(self._broadcast(encode_awareness(update), current.owner))

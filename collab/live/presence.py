"""Presence (awareness) of one room: who owns which client id, stamped identity, throttled relay.

The server keeps the latest state of every client id and relays an entry only when its clock
advances, at most `hz` times in any one-second window per client id (a sliding window, so
normal jitter is not delayed while the window has room). A held-back state is sent as soon as
the window has room, so the latest state always arrives; removals are sent at once.
A state that is not a JSON object is malformed input: ProtocolError closes the connection.

With several nodes, each relay is also offered to the other nodes (`publish`); their clients'
states arrive already stamped and throttled (`apply_remote`) and are kept, marked with their
node, for late joiners here, until that node removes them or stops answering (`drop_node`).
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
    AwarenessMessage,
    decode_awareness_update,
    decode_message,
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
    owner: Connection | None  # None: a client of another node
    user_id: str
    clock: int
    state_json: str
    bucket: SlidingWindow | None = None  # None for another node's client
    node: str | None = None  # the other node, for its clients
    dirty: bool = False
    timer: asyncio.TimerHandle | None = field(default=None)


class Presence:
    """Awareness states of one room, keyed by Yjs client id."""

    def __init__(
        self,
        broadcast: Callable[[bytes, Connection | None], int],
        *,
        hz: float,
        publish: Callable[[bytes], None] | None = None,
    ) -> None:
        self._broadcast = broadcast  # answers how many clients it sent the frame to
        self._publish = publish  # to the other nodes
        self._hz = hz
        self._clients: dict[int, _ClientPresence] = {}
        self._by_conn: dict[Connection, set[int]] = {}  # the client ids each connection introduced
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
                if current.user_id != conn.principal.user_id:
                    metrics.REFUSALS.labels(reason="foreign_awareness_id").inc()
                    log.warning(
                        "refused awareness for a client id owned by another user",
                        extra={"room": conn.room_key, "user": conn.principal.user_id},
                    )
                    continue
                # The same user reconnected with the same Yjs client id (before the server noticed
                # the old socket was gone, or on another node): the new connection takes it over.
                self._forget_owner(client_id, current)
                current.owner, current.node = conn, None
                current.bucket = current.bucket or SlidingWindow(self._hz)
                self._by_conn.setdefault(conn, set()).add(client_id)
            self._clocks[client_id] = entry.clock
            if state_json is None:
                if current is not None:
                    self._remove(client_id)
                continue
            if current is None:
                bucket = SlidingWindow(self._hz)
                current = _ClientPresence(conn, conn.principal.user_id, entry.clock, state_json, bucket)
                self._clients[client_id] = current
                self._by_conn.setdefault(conn, set()).add(client_id)
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

    def user_of(self, client_id: int) -> str | None:
        """The user whose presence uses `client_id`, if any (on this node or another)."""
        current = self._clients.get(client_id)
        return current.user_id if current is not None else None

    def encode_local(self) -> bytes | None:
        """The states of this node's clients (what another node that just loaded the room asks)."""
        entries = [
            AwarenessEntry(cid, c.clock, c.state_json) for cid, c in self._clients.items() if c.owner is not None
        ]
        return encode_awareness(encode_awareness_update(entries)) if entries else None

    def drop_connection(self, conn: Connection) -> None:
        """Remove every state `conn` introduced, for everyone."""
        for client_id in list(self._by_conn.pop(conn, ())):
            current = self._clients.get(client_id)
            if current is not None and current.owner is conn:
                self._remove(client_id)

    def apply_remote(self, node: str, message: bytes) -> None:
        """States another node relayed (stamped and throttled there): keep them and pass them on."""
        decoded = decode_message(message)
        if not isinstance(decoded, AwarenessMessage):
            return
        accepted: list[AwarenessEntry] = []
        for entry in decode_awareness_update(decoded.payload):
            client_id = entry.client_id
            current = self._clients.get(client_id)
            if current is not None and current.owner is not None:
                continue  # a client of this node: its own connection is the authority
            if entry.clock < self._clocks.get(client_id, -1):
                continue
            self._clocks[client_id] = entry.clock
            accepted.append(entry)
            if entry.state_json == NULL_STATE:
                self._clients.pop(client_id, None)
                continue
            user = _user_id(entry.state_json)
            self._clients[client_id] = _ClientPresence(None, user, entry.clock, entry.state_json, node=node)
        if accepted:  # only what was taken: a stale or overruled entry must not reach clients
            message = encode_awareness(encode_awareness_update(accepted))
            metrics.AWARENESS_OUT.inc(self._broadcast(message, None))

    def drop_node(self, node: str) -> None:
        """A node stopped answering: its clients' states are removed for everyone here."""
        gone = [cid for cid, c in self._clients.items() if c.owner is None and c.node == node]
        for client_id in gone:
            del self._clients[client_id]
        if gone:
            entries = [AwarenessEntry(cid, self._clocks.get(cid, 0), NULL_STATE) for cid in gone]
            metrics.AWARENESS_OUT.inc(self._broadcast(encode_awareness(encode_awareness_update(entries)), None))

    def _forget_owner(self, client_id: int, current: _ClientPresence) -> None:
        if current.owner is not None:
            ids = self._by_conn.get(current.owner)
            if ids is not None:
                ids.discard(client_id)

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
        self._forget_owner(client_id, current)
        clock = self._clocks.get(client_id, current.clock)
        message = encode_awareness(encode_awareness_update([AwarenessEntry(client_id, clock, NULL_STATE)]))
        metrics.AWARENESS_OUT.inc(self._broadcast(message, current.owner))
        if self._publish is not None and current.owner is not None:
            self._publish(message)

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
        message = encode_awareness(update)
        metrics.AWARENESS_OUT.inc(self._broadcast(message, current.owner))
        if self._publish is not None:
            self._publish(message)


def _user_id(state_json: str) -> str:
    """The stamped user id of a state another node relayed."""
    try:
        state = orjson.loads(state_json)
        return str(state["user"]["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""

"""One live document (a slide or a session): apply, persist before relay, fan out.

Order of an update from a client: reject it if the client may not write (before applying),
apply it to the room's Doc (pycrdt validates it), queue it in the store's group commit, and
relay it to the other clients only once that commit is done. A joiner's initial state is also
sent only after the commits it depends on, so nothing a client has seen can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator

from pycrdt import Doc, merge_updates

from collab import metrics
from collab.errors import ProtocolError
from collab.live.bus import Bus
from collab.live.connection import Connection
from collab.live.presence import Presence
from collab.live.protocol import (
    EMPTY_UPDATE,
    AuthMessage,
    AwarenessMessage,
    Message,
    QueryAwarenessMessage,
    SyncMessage,
    SyncType,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from collab.settings import Settings
from collab.store import Store

log = logging.getLogger(__name__)

# Origin of the transactions the server itself writes (corrections, imports, new sessions).
SERVER_ORIGIN = "collab-server"

# A state vector with no clients: what a fresh Yjs client sends in sync step 1.
_EMPTY_STATE_VECTOR = b"\x00"

# Decides whether a connection may apply a given update to this room; None means it may.
WriteGuard = Callable[[Connection, bytes], str | None]


class RoomHooks:
    """What server-side work attached to a room (the annotation checks) is told; no-ops here."""

    def before_apply(self, conn: Connection) -> None:
        """A client's update is about to be applied."""

    def after_apply(self, conn: Connection) -> None:
        """A client's update was applied and queued for the store."""

    async def settle(self) -> None:
        """The room is about to be unloaded: finish the server's own pending writes."""

    def close(self) -> None:
        """The room is gone (unloaded or dropped): write nothing more to it."""


class Room:
    """The clients, document and presence of one room."""

    def __init__(
        self,
        key: str,
        doc: Doc,
        *,
        store: Store,
        bus: Bus,
        settings: Settings,
        log_entries: int = 0,
        log_bytes: int = 0,
        snapshot_bytes: int = 0,
        write_guard: WriteGuard | None = None,
    ) -> None:
        self.key = key
        self.doc = doc
        self.connections: set[Connection] = set()
        self.presence = Presence(self.broadcast, hz=settings.presence_hz)
        self._store = store
        self._bus = bus
        self._settings = settings
        self.write_guard = write_guard  # who may change this document, beyond roles
        self._log_entries = log_entries
        self._log_bytes = log_bytes
        self._snapshot_bytes = snapshot_bytes
        self._last_commit: asyncio.Future[None] | None = None
        self._committed: list[tuple[bytes, Connection | None]] = []  # durable, not yet relayed
        self._full_state: bytes | None = None  # cached answer to an empty state vector
        self.failed = False
        self.hooks = RoomHooks()  # server-side work following the document (annotation checks)

    # -- membership -------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        # Like the y-websocket server: ask for what the client has, then show who is here.
        conn.send(encode_sync_step1(self.doc.get_state()))
        presence = self.presence.encode_all()
        if presence is not None:
            conn.send(presence)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.presence.drop_connection(conn)

    # -- messages ---------------------------------------------------------------------------

    def handle(self, conn: Connection, message: Message) -> None:
        if isinstance(message, SyncMessage):
            if message.kind is SyncType.STEP1:
                self._answer_step1(conn, message.payload)
            else:
                self.apply_client_update(conn, message.payload)
        elif isinstance(message, AwarenessMessage):
            metrics.AWARENESS_IN.inc()
            self.presence.apply(conn, message.payload)
        elif isinstance(message, QueryAwarenessMessage):
            presence = self.presence.encode_all()
            if presence is not None:
                conn.send(presence)
        elif isinstance(message, AuthMessage):
            pass  # clients have no reason to send auth messages; harmless

    def prime_full_state(self, full_update: bytes) -> None:
        """Cache the answer to a fresh joiner's sync step 1 from a whole-document update a caller
        has just encoded (it is invalidated by the next update, like any cached answer)."""
        self._full_state = encode_sync_step2(full_update)

    def _answer_step1(self, conn: Connection, state_vector: bytes) -> None:
        if state_vector == _EMPTY_STATE_VECTOR:
            if self._full_state is None:
                self._full_state = encode_sync_step2(self.doc.get_update())
            reply = self._full_state
        else:
            try:
                reply = encode_sync_step2(self.doc.get_update(state_vector))
            except ValueError as exc:
                raise ProtocolError(f"invalid state vector: {exc}") from exc
        self._after_commits(functools.partial(conn.send, reply))

    def apply_client_update(self, conn: Connection, update: bytes) -> None:
        if update == EMPTY_UPDATE:
            return
        if not conn.principal.can_write:
            metrics.REFUSALS.labels(reason="read_only").inc()
            conn.send(encode_permission_denied("permission-denied: read-only role"))
            return
        if self.write_guard is not None:
            refusal = self.write_guard(conn, update)
            if refusal is not None:
                metrics.REFUSALS.labels(reason="write_guard").inc()
                conn.send(encode_permission_denied(f"permission-denied: {refusal}"))
                return
        self.hooks.before_apply(conn)
        try:
            self.doc.apply_update(update)
        except ValueError as exc:
            raise ProtocolError(f"update rejected: {exc}") from exc
        metrics.UPDATES_IN.inc()
        self.persist_and_relay(update, sender=conn)
        self.hooks.after_apply(conn)

    @contextlib.contextmanager
    def server_transaction(self) -> Iterator[None]:
        """A transaction of the server's own (corrections, imports), stored and relayed like a
        client's update.

        What is stored and relayed is the transaction's own update: what it added and deleted.
        A diff against the state vector from before would also carry the document's whole
        delete set (Yrs encodes all of it), tens of kilobytes on a much-edited slide.
        """
        if getattr(self.doc, "_txn", None) is not None:
            # Its update would only exist once the outer transaction ends (and pycrdt cannot
            # subscribe inside a transaction): a caller error, said plainly.
            raise RuntimeError("Room.server_transaction() cannot run inside another transaction")
        captured: list[bytes] = []
        subscription = self.doc.observe(lambda event: captured.append(event.update))
        try:
            with self.doc.transaction(origin=SERVER_ORIGIN):
                yield
        finally:
            self.doc.unobserve(subscription)
            # Whatever was applied is stored, even if the writer failed half-way.
            changes = [u for u in captured if u != EMPTY_UPDATE]
            if changes:
                self.persist_and_relay(_merged(changes), sender=None)

    def persist_and_relay(self, update: bytes, *, sender: Connection | None) -> None:
        """Store an update already applied to the doc; relay it to the others once committed."""
        self._full_state = None
        committed = self._store.append(self.key, update)
        self._last_commit = committed
        committed.add_done_callback(functools.partial(self._on_committed, update, sender))
        self._log_entries += 1
        self._log_bytes += len(update)
        if self._log_due_for_compaction():
            self.compact()

    def _log_due_for_compaction(self) -> bool:
        """Compaction re-encodes the whole document, so it waits until the log is at least half
        the snapshot's size: its cost stays proportional to what was written (amortized O(1)
        per update), even on a large, busy slide."""
        settings = self._settings
        if self._log_entries < settings.compact_after_updates and self._log_bytes < settings.compact_after_bytes:
            return False
        return self._log_bytes * 2 >= self._snapshot_bytes

    def _on_committed(self, update: bytes, sender: Connection | None, committed: asyncio.Future[None]) -> None:
        if committed.cancelled() or committed.exception() is not None:
            self._fail("store commit failed")
            return
        self._committed.append((update, sender))
        if len(self._committed) == 1:
            # The other updates of the same group commit resolve in this loop turn; relay
            # them together once they have all been collected.
            asyncio.get_running_loop().call_soon(self._relay_committed)

    def _relay_committed(self) -> None:
        """Relay what one group commit made durable: one frame per client, however many updates.

        Several updates are merged into one (Yjs updates merge losslessly), which is what keeps
        a busy room from falling behind: the cost per client is per frame, not per update.
        """
        batch, self._committed = self._committed, []
        if not batch:
            return
        message = encode_update(_merged(u for u, _s in batch))
        clients = {sender for _update, sender in batch if sender is not None}
        # A lone client sender gets only what it does not have (a server update that shares
        # the commit, if any). With several client senders each gets the whole frame
        # (harmless: Yjs ignores what it already has).
        exclude = next(iter(clients)) if len(clients) == 1 else None
        self.broadcast(message, exclude)
        sent = len(self.connections) - (exclude in self.connections)
        if exclude in self.connections:
            rest = [u for u, s in batch if s is not exclude]
            if rest:
                exclude.send(encode_update(_merged(rest)))
                sent += 1
        metrics.UPDATES_OUT.inc(sent)
        self._bus.publish(self.key, message)

    def broadcast(self, message: bytes, exclude: Connection | None) -> int:
        """Send to every client but `exclude`; answer how many that was (for the metrics)."""
        sent = 0
        for conn in self.connections:
            if conn is not exclude:
                conn.send(message)
                sent += 1
        return sent

    def _after_commits(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every update applied so far is committed."""
        last = self._last_commit
        if last is None or last.done():
            callback()
        else:
            last.add_done_callback(lambda _f: callback())

    # -- persistence ------------------------------------------------------------------------

    def compact(self) -> None:
        """Fold the room's log into one snapshot (safe at any crash point: one transaction)."""
        snapshot = self.doc.get_update()
        self._snapshot_bytes = len(snapshot)
        self._last_commit = self._store.compact(self.key, snapshot)
        self._log_entries = 0
        self._log_bytes = 0
        metrics.COMPACTIONS.inc()

    @property
    def log_entries(self) -> int:
        return self._log_entries

    async def flush(self) -> None:
        last = self._last_commit
        if last is not None and not last.done():
            await asyncio.wait({last})

    def _fail(self, why: str) -> None:
        """The store refused a write: clients must not believe it is saved. Close them all."""
        if self.failed:
            return
        self.failed = True
        log.error("room %s failed: %s; closing its connections", self.key, why)
        for conn in list(self.connections):
            conn.close_soon(1011, why)

    def close(self) -> None:
        self.hooks.close()
        self.presence.close()


def _merged(updates: Iterable[bytes]) -> bytes:
    """One update for several (Yjs updates merge losslessly); a lone update as it is."""
    updates = list(updates)
    return updates[0] if len(updates) == 1 else merge_updates(*updates)

"""One live document (a slide or a session): apply, persist before relay, fan out.

Order of an update from a client: refuse it if the client may not write it (before applying:
the room's policy decides, and a Yjs client id belongs to the user who first wrote with it),
unless it would change nothing (a reconnecting client's resend is no edit); apply it to the
room's Doc (pycrdt validates it), queue it in the store's group commit, and relay it to the other
clients only once that commit is done. A joiner's initial state is also sent only after the
commits it depends on, so nothing a client has seen can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pycrdt import Doc, merge_updates

from collab import metrics
from collab.errors import ProtocolError, StoreError
from collab.live.bus import Bus
from collab.live.connection import Connection
from collab.live.keys import RoomKey
from collab.live.policy import RoomPolicy
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
from collab.live.updates import changes_nothing, decode_state_vector, struct_ranges
from collab.settings import Settings
from collab.store import Store

log = logging.getLogger(__name__)

# Origin of the transactions the server itself writes (corrections, imports, new sessions).
SERVER_ORIGIN = "collab-server"

# A state vector with no clients: what a fresh Yjs client sends in sync step 1.
_EMPTY_STATE_VECTOR = b"\x00"

class Room:
    """The clients, document and presence of one room."""

    def __init__(
        self,
        key: RoomKey,
        doc: Doc,
        *,
        policy: RoomPolicy,
        store: Store,
        bus: Bus,
        settings: Settings,
        log_entries: int = 0,
        log_bytes: int = 0,
        snapshot_bytes: int = 0,
        client_owners: dict[int, str] | None = None,
        seq: int = 0,
    ) -> None:
        self.key = key
        self.name = str(key)  # in the store, logs and audit
        self.doc = doc
        self.policy = policy
        self.connections: set[Connection] = set()
        self.presence = Presence(
            self.broadcast, hz=settings.presence_hz,
            publish=lambda message: bus.publish_presence(self.name, message),
        )
        self._store = store
        self._bus = bus
        self._settings = settings
        self._log_entries = log_entries
        self._log_bytes = log_bytes
        self._snapshot_bytes = snapshot_bytes
        self._last_commit: asyncio.Future[Any] | None = None
        # Durable, not yet relayed: (update, its sender, its sequence number, its client ids' owners).
        self._committed: list[tuple[bytes, Connection | None, int, dict[int, str]]] = []
        # Sequence numbers of the room's entries in the store: every entry up to `seq` is in the
        # document; `_ahead` holds those past a gap (another node's update not heard of yet).
        self.seq = seq
        self._ahead: set[int] = set()
        self.on_gap: Callable[[Room], None] | None = None  # the RoomManager catches up from the store
        self._full_state: bytes | None = None  # cached answer to an empty state vector
        # The user who first wrote with each Yjs client id (kept in the store). Another user's
        # structs under that id would silently replace the owner's next ones (same id, same clock).
        self._client_owners: dict[int, str] = dict(client_owners or {})
        self._client_owners[doc.client_id] = SERVER_ORIGIN  # the server's own transactions
        # The next clock of each Yjs client in the document: an update with structs past it that
        # integrates nothing waits in Yrs for content the room does not have (pending, unseen by
        # get_update(), so never in a snapshot) while it would be stored and counted as applied.
        self._clocks: dict[int, int] = decode_state_vector(doc.get_state())
        self.failed = False

    # -- membership -------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.policy.joined(conn.principal)
        # Like the y-websocket server: ask for what the client has, then show who is here.
        conn.send(encode_sync_step1(self.doc.get_state()))
        presence = self.presence.encode_all()
        if presence is not None:
            conn.send(presence)

    def remove(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.presence.drop_connection(conn)
        self.policy.left(conn.principal)

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
        if update == EMPTY_UPDATE or self.failed:
            return
        principal = conn.principal
        ranges = struct_ranges(update)  # malformed or too deeply nested: 1002 before pycrdt sees it
        refusal = self.policy.refuse_write(principal, update)
        reason = "read_only" if not principal.can_write else "policy"
        claims: dict[int, str] = {}
        if refusal is None:
            refusal, claims = self._claim_client_ids(principal.user_id, ranges)
            reason = "client_id"
        if refusal is not None:
            if changes_nothing(self.doc, update):
                return  # a reconnecting client sending what the room has: not a write
            metrics.REFUSALS.labels(reason=reason).inc()
            conn.send(encode_permission_denied(f"permission-denied: {refusal}"))
            return
        self.policy.before_apply(principal)
        self._apply(conn, update, ranges)
        metrics.UPDATES_IN.inc()
        if claims:
            self._client_owners.update(claims)
            self._store.claim_clients(self.name, claims)  # in the same commit as the update
        self.persist_and_relay(update, sender=conn, owners={c: self._client_owners[c] for c in ranges})
        self.policy.after_apply(principal)

    def _claim_client_ids(
        self, user_id: str, ranges: dict[int, tuple[int, int]]
    ) -> tuple[str | None, dict[int, str]]:
        """Which Yjs client ids `update` writes with that nobody owns yet (claimed by `user_id`),
        or why it is refused: it writes new structs under another user's client id. Structs the
        room already has may come back from anyone (a client restoring its offline copy)."""
        claims: dict[int, str] = {}
        foreign: dict[int, int] = {}
        for client, (_first, end) in ranges.items():
            owner = self._client_owners.get(client)
            if owner is None:
                # Presence shows everyone's client ids before they write: one another user is
                # using may not be claimed from under them.
                present = self.presence.user_of(client)
                if present is not None and present != user_id:
                    return f"client id {client} belongs to another user", {}
                claims[client] = user_id
            elif owner != user_id:
                foreign[client] = end
        if foreign:
            have = decode_state_vector(self.doc.get_state())  # rare: only for another user's ids
            for client, clock in foreign.items():
                if clock > have.get(client, 0):
                    log.warning(
                        "refused an update under another user's Yjs client id %d", client,
                        extra={"room": self.name, "user": user_id},
                    )
                    return f"client id {client} belongs to another user", {}
        return None, claims

    def _apply(self, conn: Connection, update: bytes, ranges: dict[int, tuple[int, int]]) -> None:
        """Apply a client's update, or refuse it with a ProtocolError (1002) if pycrdt cannot.

        Yrs decodes an update before integrating it, so most bad updates change nothing and
        only their sender is closed. One that fails half-way through (or whose change events
        cannot be read) may leave part of itself in the document, which was never stored:
        the room is then failed, its clients reconnect to a room reloaded from the store.
        """
        changed: list[bool] = []
        subscription = self.doc.observe(lambda _event: changed.append(True))
        try:
            self.doc.apply_update(update)
        except BaseException as exc:  # pycrdt raises ValueError, RuntimeError, or a Rust panic
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            log.warning(
                "refused an update pycrdt cannot apply: %s: %s", type(exc).__name__, exc,
                extra={"room": self.name, "user": conn.principal.user_id},
            )
            metrics.REFUSALS.labels(reason="bad_update").inc()
            if changed:
                conn.close_soon(ProtocolError.close_code, "update rejected")  # the sender's own code first
                self._fail("a refused update was partly applied", code=1012)
            raise ProtocolError(f"update rejected: {type(exc).__name__}: {exc}") from exc
        finally:
            self.doc.unobserve(subscription)
        new = any(end > self._clocks.get(client, 0) for client, (_first, end) in ranges.items())
        if new and not changed:
            # Nothing integrated: it waits in Yrs for content another client never sent. It would
            # be stored and relayed, yet missing from every snapshot: refuse it, reload the room.
            conn.close_soon(ProtocolError.close_code, "update depends on content the room does not have")
            self._fail("an update depends on content the room does not have", code=1012)
            raise ProtocolError("update depends on content the room does not have")
        self._note_clocks(ranges)

    def _note_clocks(self, ranges: dict[int, tuple[int, int]]) -> None:
        clocks = self._clocks
        for client, (_first, end) in ranges.items():
            if end > clocks.get(client, 0):
                clocks[client] = end

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
        if self.failed:
            raise StoreError(f"room {self.name} failed and is being reloaded")
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
                update = _merged(changes)
                self._note_clocks(struct_ranges(update))
                self.persist_and_relay(update, sender=None, owners={self.doc.client_id: SERVER_ORIGIN})

    def persist_and_relay(self, update: bytes, *, sender: Connection | None, owners: dict[int, str]) -> None:
        """Store an update already applied to the doc; relay it to the others once committed.
        `owners`: the user each of its Yjs client ids belongs to (told to the other nodes)."""
        if self.failed:  # what this room holds is not what is stored: nothing more goes out of it
            raise StoreError(f"room {self.name} failed and is being reloaded")
        self._full_state = None
        committed = self._store.append(self.name, update)
        self._last_commit = committed
        committed.add_done_callback(functools.partial(self._on_committed, update, sender, owners))
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

    def _on_committed(
        self, update: bytes, sender: Connection | None, owners: dict[int, str], committed: asyncio.Future[int]
    ) -> None:
        if committed.cancelled() or committed.exception() is not None:
            self._fail("store commit failed")
            return
        seq = committed.result()
        self._note_applied(seq, seq)
        self._committed.append((update, sender, seq, owners))
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
        message = encode_update(_merged(u for u, _s, _q, _o in batch))
        clients = {sender for _update, sender, _seq, _owners in batch if sender is not None}
        # A lone client sender gets only what it does not have (a server update that shares
        # the commit, if any). With several client senders each gets the whole frame
        # (harmless: Yjs ignores what it already has).
        exclude = next(iter(clients)) if len(clients) == 1 else None
        self.broadcast(message, exclude)
        sent = len(self.connections) - (exclude in self.connections)
        if exclude in self.connections:
            rest = [u for u, s, _q, _o in batch if s is not exclude]
            if rest:
                exclude.send(encode_update(_merged(rest)))
                sent += 1
        metrics.UPDATES_OUT.inc(sent)
        for update, _sender, seq, owners in batch:  # one message per entry: its number says what is missing
            self._bus.publish_update(self.name, seq, seq, update, owners)

    # -- other nodes ------------------------------------------------------------------------

    def on_remote_update(self, first: int, last: int, update: bytes, owners: dict[int, str]) -> None:
        """Another node committed `update` (entries first..last): apply it and relay it to this
        node's clients. Its checks, corrections and audit were done by that node."""
        self.learn_owners(owners)
        if last <= self.seq or self.failed:
            return  # already here (a message heard twice, or read from the store meanwhile)
        if self.apply_committed([update]):
            self._note_applied(first, last)

    def apply_committed(self, updates: list[bytes]) -> bool:
        """Apply updates some node already committed (bus messages, a catch-up from the store).
        If one cannot be applied, the room is failed (its clients reconnect to a room reloaded
        from the store) and False answered: the caller must not count it as applied, or a
        compaction would delete an entry the snapshot does not hold."""
        changes = [u for u in updates if u != EMPTY_UPDATE]
        if not changes:
            return True
        update = _merged(changes)
        self.policy.before_remote_apply()
        try:
            self.doc.apply_update(update)
        except Exception:
            log.exception("a committed update could not be applied", extra={"room": self.name})
            self._fail("a committed update could not be applied", code=1012)
            return False
        self._note_clocks(struct_ranges(update))
        self._full_state = None
        self.policy.after_remote_apply()
        message = encode_update(update)
        metrics.UPDATES_OUT.inc(self.broadcast(message, None))
        return True

    def learn_owners(self, owners: dict[int, str]) -> None:
        """Client ids other nodes saw claimed (the first claim, kept in the store, wins)."""
        for client, user in owners.items():
            self._client_owners.setdefault(client, user)

    def caught_up(self, seq: int) -> None:
        """Everything up to `seq` was read from the store and applied."""
        if seq > self.seq:
            self._note_applied(self.seq + 1, seq)

    def _note_applied(self, first: int, last: int) -> None:
        if first == self.seq + 1 and not self._ahead:
            self.seq = last
            return
        self._ahead.update(range(max(first, self.seq + 1), last + 1))
        while self.seq + 1 in self._ahead:
            self.seq += 1
            self._ahead.discard(self.seq)
        if self._ahead and self.on_gap is not None:
            self.on_gap(self)  # an entry is missing below what arrived: read it from the store

    def on_remote_presence(self, node: str, message: bytes) -> None:
        self.presence.apply_remote(node, message)

    def on_presence_query(self, node: str) -> None:
        local = self.presence.encode_local()
        if local is not None:
            self._bus.publish_presence(self.name, local)

    def on_node_gone(self, node: str) -> None:
        self.presence.drop_node(node)

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
        if self.failed:
            return  # never snapshot what may not be what is stored
        snapshot = self.doc.get_update()
        self._snapshot_bytes = len(snapshot)
        # The snapshot covers the log up to `self.seq` (every entry up to it is in the document).
        # An update whose append has not resolved
        # yet is in the snapshot AND stays in the log (its number is above `upto`): harmless,
        # Yjs updates are idempotent.
        self._last_commit = self._store.compact(self.name, snapshot, self.seq)
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

    def _fail(self, why: str, code: int = 1011) -> None:
        """What the room holds is not what is stored (the store refused a write, or a bad update
        was partly applied): close every client, which reconnect to a room reloaded from the
        store (the RoomManager drops a failed room at the next join; it is never compacted)."""
        if self.failed:
            return
        self.failed = True
        log.error("room %s failed: %s; closing its connections", self.name, why)
        self.policy.close()  # no more corrections from the server's side either
        for conn in list(self.connections):
            conn.close_soon(code, why)

    def close(self) -> None:
        self._bus.detach(self.name)
        self.policy.close()
        self.presence.close()


def _merged(updates: Iterable[bytes]) -> bytes:
    """One update for several (Yjs updates merge losslessly); a lone update as it is."""
    updates = list(updates)
    return updates[0] if len(updates) == 1 else merge_updates(*updates)

"""The store seam: bytes keyed by room, plus small JSON records. No SQL leaves this package.

A backend offers group commit: every write (`append`, `compact`, `audit`, `claim_clients`,
`put_record`) is queued and answers a future that resolves once it is committed, so rooms relay
only what is durable while writes that arrive together share one commit. Writes submitted in the
same loop turn (no await between them) share one transaction: all of them are committed, or none.
Reads see only committed data.

Every update of a room gets a sequence number, 1, 2, 3, ... contiguous in commit order, even
with several nodes appending to one room: a node that missed some catches up with `read_since`,
and a compaction names the last number its snapshot covers, so it deletes exactly those entries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collab.settings import Settings


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    updates: list[bytes]  # the snapshot (if any) first, then the log in commit order
    log_entries: int  # entries in the log after the snapshot
    log_bytes: int
    snapshot_bytes: int = 0
    client_owners: dict[int, str] = field(default_factory=dict)  # Yjs client id -> first writer
    seq: int = 0  # the highest sequence number included (0: a room never written)


def loaded_document(
    snapshot: tuple[bytes, int] | None, log_rows: list[Any], owners: dict[int, str], after: int
) -> LoadedDocument:
    """A backend's read as a LoadedDocument: the snapshot (data, upto) if included, then the log's
    (seq, data) rows; `after` is the number the read started from."""
    updates = ([bytes(snapshot[0])] if snapshot is not None else []) + [bytes(r[1]) for r in log_rows]
    return LoadedDocument(
        updates,
        len(log_rows),
        sum(len(r[1]) for r in log_rows),
        len(snapshot[0]) if snapshot is not None else 0,
        owners,
        log_rows[-1][0] if log_rows else after,
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    room: str
    at_ms: int
    user_id: str
    site: str
    action: str
    target: str | None = None
    detail: dict[str, Any] | None = None


class Store(Protocol):
    """What rooms and the HTTP API need from persistence. Open before use, close once."""

    async def open(self) -> None:
        """Connect and migrate the schema; writes are accepted from then on."""
        ...

    async def close(self) -> None:
        """Commit everything queued so far, then disconnect."""
        ...

    def append(self, room: str, update: bytes) -> asyncio.Future[int]:
        """Queue an update; the future answers its sequence number in `room` once committed."""
        ...

    def before_next_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once, just before the next group commit is taken: what it writes
        commits (and is relayed) together with what was queued before it."""

    def compact(self, room: str, snapshot: bytes, upto: int) -> asyncio.Future[None]:
        """Store `snapshot`, which covers every entry of `room` numbered <= `upto`, and delete
        exactly those entries, in one transaction; later entries survive. A no-op unless `upto` is
        greater than the stored snapshot's (an older snapshot never replaces a newer one)."""
        ...

    def audit(self, record: AuditRecord) -> asyncio.Future[None]: ...

    def claim_clients(self, room: str, owners: dict[int, str]) -> asyncio.Future[None]:
        """Record who first wrote with each Yjs client id of `room`; an id already claimed keeps
        its owner. Submitted just before the `append` of the update that introduced the ids, it
        shares that update's transaction."""
        ...

    def put_record(self, kind: str, record_id: str, record: dict[str, Any]) -> asyncio.Future[None]:
        """Insert or replace a JSON record (slides, sessions)."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        ...

    @property
    def committed_writes(self) -> int:
        """Writes committed since the store was opened (the shutdown log says how many it flushed)."""
        ...

    async def load(self, room: str) -> LoadedDocument:
        """The room as committed: its snapshot (if any), then its log (`read_since(room, 0)`)."""
        ...

    async def latest_seqs(self, rooms: list[str]) -> dict[str, int]:
        """The highest sequence number committed in each of `rooms` (rooms with none are left out):
        nodes compare their loaded rooms with it to notice a message they missed."""
        ...

    async def read_since(self, room: str, seq: int) -> LoadedDocument:
        """What was committed after `seq`: the snapshot first if it covers entries numbered above
        `seq`, then the log entries above both, in order. `.seq` is the highest included (`seq`
        itself when nothing is newer). Read in one consistent snapshot of the database."""
        ...

    async def secret(self, generate: Callable[[], str] | None) -> str:
        """The signing secret kept by this deployment; `generate()` kept now if there is none
        (when several nodes race, the first one kept wins and every node answers it). Without
        `generate` (commands other than `serve`), SecretNotFound when there is none."""
        ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers right now (health checks)."""
        ...

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None: ...

    async def list_records(self, kind: str) -> list[dict[str, Any]]: ...

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]: ...


def create_store(settings: Settings) -> Store:
    """Choose the backend from the database URL: SQLite under --data unless PostgreSQL is named.
    The store is not open yet: `await store.open()` (or use `open_store`)."""
    url = settings.database_url
    if url is not None and is_postgres_url(url):
        from collab.store.postgres import PostgresStore

        return PostgresStore(url)
    from collab.store.sqlite import SqliteStore

    if url and url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    else:
        path = str(settings.data / "collab.sqlite3")
    # The generated secret stays a file under --data, where it always was.
    return SqliteStore(path, synchronous=settings.sqlite_synchronous, secret_dir=settings.data)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """An open store for the block's duration (scripts and tests); closed, all writes committed, after it."""
    store = create_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()

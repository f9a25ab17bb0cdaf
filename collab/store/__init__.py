"""The store seam: bytes keyed by room, plus small JSON records. No SQL leaves this package.

A backend offers group commit: every write (`append`, `compact`, `audit`, `claim_clients`,
`put_record`) is queued and answers a future that resolves once it is committed, so rooms relay
only what is durable while writes that arrive together share one commit. Writes submitted in the
same loop turn (no await between them) share one transaction: all of them are committed, or none.
Reads see only committed data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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

    def append(self, room: str, update: bytes) -> asyncio.Future[None]: ...

    def compact(self, room: str, snapshot: bytes) -> asyncio.Future[None]:
        """Replace every log entry appended to `room` before this call by `snapshot` (which
        covers them); entries appended after it survive."""
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

    async def load(self, room: str) -> LoadedDocument: ...

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None: ...

    async def list_records(self, kind: str) -> list[dict[str, Any]]: ...

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]: ...


def create_store(settings: Settings) -> Store:
    """Choose the backend from the database URL: SQLite under --data unless PostgreSQL is named.
    The store is not open yet: `await store.open()` (or use `open_store`)."""
    url = settings.database_url
    if url and url.startswith(("postgresql://", "postgres://")):
        # The seam is here (a Store over asyncpg); until it lands, refuse rather than run
        # silently on something the operator did not choose.
        raise ValueError("COLLAB_DATABASE_URL=postgresql://... is not supported by this version yet")
    from collab.store.sqlite import SqliteStore

    if url and url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    else:
        path = str(settings.data / "collab.sqlite3")
    return SqliteStore(path, synchronous=settings.sqlite_synchronous)


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """An open store for the block's duration (scripts and tests); closed, all writes committed, after it."""
    store = create_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()

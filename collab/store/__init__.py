"""The store seam: bytes keyed by room, plus small JSON records. No SQL leaves this package.

A backend offers group commit: `append` queues an update and returns a future that resolves
once the update is committed, so rooms relay only what is durable while updates that arrive
together share one commit.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from collab.settings import Settings


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    updates: list[bytes]  # the snapshot (if any) first, then the log in commit order
    log_entries: int  # entries in the log after the snapshot
    log_bytes: int
    snapshot_bytes: int = 0


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
    """What rooms and the HTTP API need from persistence."""

    def append(self, room: str, update: bytes) -> asyncio.Future[None]: ...

    def compact(self, room: str, snapshot: bytes) -> asyncio.Future[None]:
        """Replace every log entry appended to `room` so far by `snapshot` (which covers them)."""
        ...

    def audit(self, record: AuditRecord) -> asyncio.Future[None]: ...

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        ...

    async def load(self, room: str) -> LoadedDocument: ...

    async def put_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None: ...

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None: ...

    async def list_records(self, kind: str) -> list[dict[str, Any]]: ...

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]: ...


def open_store(settings: Settings) -> AbstractAsyncContextManager[Store]:
    """Choose the backend from the database URL: SQLite under --data unless PostgreSQL is named."""
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

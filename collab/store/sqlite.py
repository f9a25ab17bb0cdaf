"""Embedded store: one SQLite file (WAL) through aiosqlite, with group commit.

Two connections: the group-commit writer's, whose transaction stays open across the awaits of a
batch, and a read-only one. Every write goes through the writer, so nothing commits half a batch
and a failing batch's rollback undoes only that batch; reads run on the other connection, so
they never see rows of a batch that is not committed yet (WAL: readers see the last commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from collab.errors import StoreError
from collab.store import AuditRecord, LoadedDocument
from collab.store.writer import GroupCommitWriter, Op

log = logging.getLogger(__name__)

# One tuple of statements per schema version (run in one transaction with the version bump).
_MIGRATIONS: list[tuple[str, ...]] = [
    # 1: the update log, snapshots, JSON records (slides, sessions), audit trail
    (
        """CREATE TABLE updates (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room TEXT NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX updates_room ON updates (room, id)",
        """CREATE TABLE snapshots (
            room TEXT PRIMARY KEY,
            data BLOB NOT NULL,
            updated_ms INTEGER NOT NULL
        )""",
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            data BLOB NOT NULL,
            created_ms INTEGER NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            site TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail BLOB
        )""",
        "CREATE INDEX audit_room ON audit (room, id)",
    ),
    # 2: which user first wrote with each Yjs client id of a room
    (
        """CREATE TABLE client_owners (
            room TEXT NOT NULL,
            client_id INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            PRIMARY KEY (room, client_id)
        ) WITHOUT ROWID""",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)

_Apply = Callable[[aiosqlite.Connection, list[Op], int], Awaitable[None]]


class SqliteStore:
    """aiosqlite backend: `await store.open()` before use, `await store.close()` after."""

    def __init__(self, path: str, *, synchronous: str = "normal") -> None:
        if path == ":memory:":
            # Reads use a second connection, which would open a second, empty database.
            raise ValueError("the SQLite store needs a file, not :memory:")
        self._path = path
        self._synchronous = synchronous.upper()
        if self._synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous must be normal, full or extra, not {synchronous!r}")
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # A read that spans awaits (load) holds its transaction; others wait instead of reading
        # inside it (they would miss what was committed meanwhile, a put_record just awaited).
        self._read_lock = asyncio.Lock()
        self._writer = GroupCommitWriter(self._commit_batch, name="sqlite")
        self._apply: dict[str, _Apply] = {
            "append": _append,
            "compact": _compact,
            "audit": _audit,
            "claim": _claim,
            "record": _put_records,
        }

    async def open(self) -> None:
        if self._db is not None:
            raise StoreError("store is already open")
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self._path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={self._synchronous}")
            await db.execute("PRAGMA busy_timeout=5000")
            await _migrate(db)
            # Autocommit: a read transaction is opened explicitly where one is needed (load).
            reader = await aiosqlite.connect(self._path, isolation_level=None)
        except BaseException:
            await db.close()
            raise
        await reader.execute("PRAGMA busy_timeout=5000")
        await reader.execute("PRAGMA query_only=1")
        self._db, self._reader = db, reader
        await self._writer.start()

    async def close(self) -> None:
        try:
            await self._writer.stop()
        finally:
            for conn in (self._reader, self._db):
                if conn is not None:
                    await conn.close()
            self._db = self._reader = None

    def _connection(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError("store is not open")
        return conn

    # -- group-committed writes ------------------------------------------------------------

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        return self._writer.submit(Op("append", room, update))

    def compact(self, room: str, snapshot: bytes) -> asyncio.Future[None]:
        return self._writer.submit(Op("compact", room, snapshot))

    def audit(self, record: AuditRecord) -> asyncio.Future[None]:
        return self._writer.submit(Op("audit", record.room, record))

    def claim_clients(self, room: str, owners: dict[int, str]) -> asyncio.Future[None]:
        return self._writer.submit(Op("claim", room, dict(owners)))

    def put_record(self, kind: str, record_id: str, record: dict[str, Any]) -> asyncio.Future[None]:
        # Serialised now: the caller may change its dict before the batch runs.
        return self._writer.submit(Op("record", "", (kind, record_id, orjson.dumps(record))))

    async def flush(self) -> None:
        await self._writer.flush()

    @property
    def committed_writes(self) -> int:
        return self._writer.committed

    async def _commit_batch(self, ops: list[Op]) -> None:
        """One transaction for the whole batch, in submission order."""
        db = self._connection(self._db)
        now = int(time.time() * 1000)
        await db.execute("BEGIN IMMEDIATE")
        try:
            for kind, run in _runs(ops):
                await self._apply[kind](db, run, now)
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    # -- reads (committed data only) ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._read_lock:
            yield self._connection(self._reader)

    async def load(self, room: str) -> LoadedDocument:
        async with self._reading() as db:
            # One read transaction: the snapshot, the log and the owners of the same commit.
            await db.execute("BEGIN")
            try:
                async with db.execute("SELECT data FROM snapshots WHERE room = ?", (room,)) as cur:
                    snapshot = await cur.fetchone()
                async with db.execute("SELECT data FROM updates WHERE room = ? ORDER BY id", (room,)) as cur:
                    log_rows = [r[0] for r in await cur.fetchall()]
                async with db.execute(
                    "SELECT client_id, user_id FROM client_owners WHERE room = ?", (room,)
                ) as cur:
                    owners = {r[0]: r[1] for r in await cur.fetchall()}
            finally:
                await db.execute("COMMIT")
        updates = ([snapshot[0]] if snapshot else []) + log_rows
        return LoadedDocument(
            updates,
            len(log_rows),
            sum(len(r) for r in log_rows),
            len(snapshot[0]) if snapshot else 0,
            owners,
        )

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        async with self._reading() as db, db.execute(
            "SELECT data FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ) as cur:
            row = await cur.fetchone()
        return orjson.loads(row[0]) if row else None

    async def list_records(self, kind: str) -> list[dict[str, Any]]:
        async with self._reading() as db, db.execute(
            "SELECT data FROM records WHERE kind = ? ORDER BY created_ms, id", (kind,)
        ) as cur:
            return [orjson.loads(r[0]) for r in await cur.fetchall()]

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]:
        async with self._reading() as db, db.execute(
            "SELECT room, at_ms, user_id, site, action, target, detail FROM audit"
            " WHERE room = ? ORDER BY id DESC LIMIT ?",
            (room, limit),
        ) as cur:
            rows = list(await cur.fetchall())
        return [
            AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]) if r[6] else None)
            for r in reversed(rows)
        ]


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION. The version is read inside the write transaction, so
    two processes opening the same new file at once migrate it once."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number}")
            log.info("store migrated to schema version %d", number)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise


# -- what each kind of op writes (inside the batch's transaction) ---------------------------


async def _append(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    await db.executemany("INSERT INTO updates (room, data) VALUES (?, ?)", [(op.room, op.payload) for op in ops])


async def _compact(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    for op in ops:
        # Everything appended to this room before this op is in the snapshot, and is deleted
        # here; appends queued after it come later in the batch (or in a later one) and survive.
        await db.execute(
            "INSERT OR REPLACE INTO snapshots (room, data, updated_ms) VALUES (?, ?, ?)",
            (op.room, op.payload, now),
        )
        await db.execute("DELETE FROM updates WHERE room = ?", (op.room,))


async def _audit(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    await db.executemany(
        "INSERT INTO audit (room, at_ms, user_id, site, action, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [_audit_row(op.payload) for op in ops],
    )


async def _claim(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    # First claim wins: a client id already owned keeps its owner.
    await db.executemany(
        "INSERT INTO client_owners (room, client_id, user_id) VALUES (?, ?, ?)"
        " ON CONFLICT (room, client_id) DO NOTHING",
        [(op.room, client_id, user_id) for op in ops for client_id, user_id in op.payload.items()],
    )


async def _put_records(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    await db.executemany(
        "INSERT INTO records (kind, id, data, created_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
        [(*op.payload, now) for op in ops],
    )


def _audit_row(rec: AuditRecord) -> tuple[Any, ...]:
    detail = orjson.dumps(rec.detail) if rec.detail is not None else None
    return (rec.room, rec.at_ms, rec.user_id, rec.site, rec.action, rec.target, detail)


def _runs(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    """Consecutive ops of one kind, so each run is one executemany while order is kept."""
    runs: list[tuple[str, list[Op]]] = []
    for op in ops:
        if runs and runs[-1][0] == op.kind:
            runs[-1][1].append(op)
        else:
            runs.append((op.kind, [op]))
    return runs

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
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from collab.errors import SecretNotFound, StoreError
from collab.store import AuditRecord, LoadedDocument, loaded_document
from collab.store.writer import GroupCommitWriter, Op, QueuedWrites, appends_by_room, number_appends, runs_of_kind

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
    # 3: sequence numbers per room (the log's `seq`, the snapshot's `upto`, the counter in `rooms`).
    # An existing snapshot stands for number 1 and the log after it is numbered from 2, in order.
    (
        "ALTER TABLE updates ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        """UPDATE updates SET seq = numbered.n
            + (CASE WHEN EXISTS (SELECT 1 FROM snapshots s WHERE s.room = updates.room) THEN 1 ELSE 0 END)
           FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY room ORDER BY id) AS n FROM updates) AS numbered
           WHERE numbered.id = updates.id""",
        "DROP INDEX IF EXISTS updates_room",
        "CREATE UNIQUE INDEX updates_room_seq ON updates (room, seq)",
        "ALTER TABLE snapshots ADD COLUMN upto INTEGER NOT NULL DEFAULT 1",
        "CREATE TABLE rooms (room TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
        """INSERT INTO rooms (room, seq)
           SELECT room, MAX(seq) FROM (SELECT room, seq FROM updates UNION ALL SELECT room, upto FROM snapshots)
           GROUP BY room""",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)

_Apply = Callable[[aiosqlite.Connection, list[Op], int], Awaitable[None]]


class SqliteStore(QueuedWrites):
    """aiosqlite backend: `await store.open()` before use, `await store.close()` after."""

    def __init__(self, path: str, *, synchronous: str = "normal", secret_dir: Path | None = None) -> None:
        if path == ":memory:":
            # Reads use a second connection, which would open a second, empty database.
            raise ValueError("the SQLite store needs a file, not :memory:")
        self._path = path
        self._secret_dir = secret_dir or Path(path).parent
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

    # -- group-committed writes: queued by QueuedWrites, committed here -------------------

    async def _commit_batch(self, ops: list[Op]) -> None:
        """One transaction for the whole batch, in submission order."""
        db = self._connection(self._db)
        now = int(time.time() * 1000)
        await db.execute("BEGIN IMMEDIATE")
        try:
            await _number_appends(db, ops)
            for kind, run in runs_of_kind(ops):
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
        return await self.read_since(room, 0)

    async def latest_seqs(self, rooms: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        async with self._reading() as db:
            for start in range(0, len(rooms), 500):
                chunk = rooms[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async with db.execute(f"SELECT room, seq FROM rooms WHERE room IN ({marks})", chunk) as cur:
                    out.update({r[0]: r[1] for r in await cur.fetchall()})
        return out

    async def read_since(self, room: str, seq: int) -> LoadedDocument:
        async with self._reading() as db:
            # One read transaction: the snapshot, the log and the owners of the same commit.
            await db.execute("BEGIN")
            try:
                async with db.execute("SELECT data, upto FROM snapshots WHERE room = ?", (room,)) as cur:
                    snapshot = await cur.fetchone()
                if snapshot is not None and snapshot[1] <= seq:
                    snapshot = None  # the caller has everything it covers
                after = snapshot[1] if snapshot is not None else seq
                async with db.execute(
                    "SELECT seq, data FROM updates WHERE room = ? AND seq > ? ORDER BY seq", (room, after)
                ) as cur:
                    log_rows = list(await cur.fetchall())
                async with db.execute(
                    "SELECT client_id, user_id FROM client_owners WHERE room = ?", (room,)
                ) as cur:
                    owners = {r[0]: r[1] for r in await cur.fetchall()}
            finally:
                await db.execute("COMMIT")
        return loaded_document(snapshot, log_rows, owners, after)

    async def secret(self, generate: Callable[[], str] | None) -> str:
        return await asyncio.to_thread(_secret_file, self._secret_dir, generate)

    async def ping(self) -> None:
        self._connection(self._reader)  # a local file: open means it answers

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


def _secret_file(data_dir: Path, generate: Callable[[], str] | None) -> str:
    """The secret kept (mode 0600) in `<data>/secret`, generated and written on first use."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    if generate is None:
        raise SecretNotFound(
            f"no signing secret: COLLAB_SECRET is not set and {path.resolve()} does not exist. "
            "Pass --data with the server's data directory (or set COLLAB_SECRET as the server has it); "
            "`collab serve` creates the secret on its first start."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    log.warning("COLLAB_SECRET is not set: generated a signing secret and stored it in %s", path)
    return secret


# -- what each kind of op writes (inside the batch's transaction) ---------------------------


async def _number_appends(db: aiosqlite.Connection, ops: list[Op]) -> None:
    """Give each append of the batch its room's next sequence number (the counter is in `rooms`,
    updated in the batch's transaction: BEGIN IMMEDIATE makes it one writer at a time)."""
    for room, appends in appends_by_room(ops):
        async with db.execute(
            "INSERT INTO rooms (room, seq) VALUES (?, ?) ON CONFLICT (room) DO UPDATE SET seq = seq + excluded.seq"
            " RETURNING seq",
            (room, len(appends)),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None  # an upsert with RETURNING answers its row
        number_appends(appends, row[0])


async def _append(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    await db.executemany(
        "INSERT INTO updates (room, seq, data) VALUES (?, ?, ?)", [(op.room, op.result, op.payload) for op in ops]
    )


async def _compact(db: aiosqlite.Connection, ops: list[Op], now: int) -> None:
    for op in ops:
        snapshot, upto = op.payload
        if upto <= 0:
            continue  # covers no entry: nothing to fold
        # Only a newer snapshot replaces the stored one; then exactly the entries it covers go.
        async with db.execute(
            "INSERT INTO snapshots (room, data, updated_ms, upto) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (room) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms,"
            " upto = excluded.upto WHERE excluded.upto > snapshots.upto RETURNING upto",
            (op.room, snapshot, now, upto),
        ) as cur:
            stored = await cur.fetchone()
        if stored is not None:
            await db.execute("DELETE FROM updates WHERE room = ? AND seq <= ?", (op.room, upto))


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

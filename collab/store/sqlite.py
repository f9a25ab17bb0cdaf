"""Embedded store: one SQLite file (WAL) through aiosqlite, with group commit."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from collab.errors import StoreError
from collab.store import AuditRecord, LoadedDocument
from collab.store.writer import GroupCommitWriter, Op

log = logging.getLogger(__name__)

_MIGRATIONS = [
    # 1: the update log, snapshots, JSON records (slides, sessions), audit trail
    """
    CREATE TABLE updates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX updates_room ON updates (room, id);
    CREATE TABLE snapshots (
        room TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE records (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        data BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        site TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        detail BLOB
    );
    CREATE INDEX audit_room ON audit (room, id);
    """,
]


class SqliteStore:
    """aiosqlite backend. Use as `async with SqliteStore(path) as store:`."""

    def __init__(self, path: str, *, synchronous: str = "normal") -> None:
        self._path = path
        self._synchronous = synchronous.upper()
        if self._synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous must be normal, full or extra, not {synchronous!r}")
        self._db: aiosqlite.Connection | None = None
        self._writer = GroupCommitWriter(self._commit_batch, name="sqlite")

    async def __aenter__(self) -> SqliteStore:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute(f"PRAGMA synchronous={self._synchronous}")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()
        await self._writer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self._writer.stop()
        finally:
            if self._db is not None:
                await self._db.close()
                self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = row[0] if row else 0
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            await self.db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
            log.info("store migrated to schema version %d", number)

    # -- group-committed writes ------------------------------------------------------------

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        return self._writer.submit(Op("append", room, update))

    def compact(self, room: str, snapshot: bytes) -> asyncio.Future[None]:
        return self._writer.submit(Op("compact", room, snapshot))

    def audit(self, record: AuditRecord) -> asyncio.Future[None]:
        return self._writer.submit(Op("audit", record.room, record))

    async def flush(self) -> None:
        await self._writer.flush()

    async def _commit_batch(self, ops: list[Op]) -> None:
        """One transaction for the whole batch, in submission order."""
        db = self.db
        now = int(time.time() * 1000)
        try:
            for kind, group in _runs(ops):
                if kind == "append":
                    await db.executemany(
                        "INSERT INTO updates (room, data) VALUES (?, ?)",
                        [(op.room, op.payload) for op in group],
                    )
                elif kind == "audit":
                    await db.executemany(
                        "INSERT INTO audit (room, at_ms, user_id, site, action, target, detail)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [_audit_row(op.payload) for op in group],
                    )
                else:
                    for op in group:
                        # Everything appended to this room before this op is in the snapshot,
                        # and has a smaller id: later appends keep larger ids and survive.
                        await db.execute(
                            "INSERT OR REPLACE INTO snapshots (room, data, updated_ms)"
                            " VALUES (?, ?, ?)",
                            (op.room, op.payload, now),
                        )
                        await db.execute("DELETE FROM updates WHERE room = ?", (op.room,))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise

    # -- reads ------------------------------------------------------------------------------

    async def load(self, room: str) -> LoadedDocument:
        db = self.db
        updates: list[bytes] = []
        snapshot_bytes = 0
        async with db.execute("SELECT data FROM snapshots WHERE room = ?", (room,)) as cur:
            row = await cur.fetchone()
            if row is not None:
                updates.append(row[0])
                snapshot_bytes = len(row[0])
        async with db.execute(
            "SELECT data FROM updates WHERE room = ? ORDER BY id", (room,)
        ) as cur:
            log_rows = [r[0] for r in await cur.fetchall()]
        updates.extend(log_rows)
        return LoadedDocument(updates, len(log_rows), sum(len(r) for r in log_rows), snapshot_bytes)

    async def put_record(self, kind: str, record_id: str, record: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO records (kind, id, data, created_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
            (kind, record_id, orjson.dumps(record), int(time.time() * 1000)),
        )
        await self.db.commit()

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        async with self.db.execute(
            "SELECT data FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ) as cur:
            row = await cur.fetchone()
        return orjson.loads(row[0]) if row else None

    async def list_records(self, kind: str) -> list[dict[str, Any]]:
        async with self.db.execute(
            "SELECT data FROM records WHERE kind = ? ORDER BY created_ms, id", (kind,)
        ) as cur:
            return [orjson.loads(r[0]) for r in await cur.fetchall()]

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]:
        async with self.db.execute(
            "SELECT room, at_ms, user_id, site, action, target, detail FROM audit"
            " WHERE room = ? ORDER BY id DESC LIMIT ?",
            (room, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [
            AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]) if r[6] else None)
            for r in reversed(rows)
        ]


def _audit_row(rec: AuditRecord) -> tuple[Any, ...]:
    detail = orjson.dumps(rec.detail) if rec.detail is not None else None
    return (rec.room, rec.at_ms, rec.user_id, rec.site, rec.action, rec.target, detail)


def _runs(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    """Consecutive ops of one kind, so appends go in one executemany while order is kept."""
    runs: list[tuple[str, list[Op]]] = []
    for op in ops:
        if runs and runs[-1][0] == op.kind:
            runs[-1][1].append(op)
        else:
            runs.append((op.kind, [op]))
    return runs

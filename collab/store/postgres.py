"""Shared store: PostgreSQL through an asyncpg pool, with the same group commit as SQLite.

Every node of a deployment opens one of these on the same database. Each batch of the
group-commit writer is one transaction on one pooled connection; reads run on other pooled
connections, so they see only committed data by construction. Several nodes append to one room at
once: the room's counter row in `rooms` is updated inside each batch's transaction, and its row
lock, held until COMMIT, makes sequence numbers contiguous and in commit order. Compaction takes an
advisory lock on the room (one compactor per room at a time) and deletes exactly the entries its
snapshot covers, in the same transaction, so appends committed meanwhile by other nodes survive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from collab.errors import SecretNotFound, StoreError
from collab.store import AuditRecord, LoadedDocument, loaded_document
from collab.store.writer import GroupCommitWriter, Op, QueuedWrites, appends_by_room, number_appends, runs_of_kind

log = logging.getLogger(__name__)

T = TypeVar("T")

# One tuple of statements per schema version, applied in one transaction with the version bump.
_MIGRATIONS: list[tuple[str, ...]] = [
    # 1: the same tables as SQLite's schema 3, plus `meta` (the generated signing secret)
    (
        """CREATE TABLE rooms (
            room TEXT PRIMARY KEY,
            seq BIGINT NOT NULL
        )""",
        """CREATE TABLE updates (
            room TEXT NOT NULL,
            seq BIGINT NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (room, seq)
        )""",
        """CREATE TABLE snapshots (
            room TEXT PRIMARY KEY,
            upto BIGINT NOT NULL,
            data BYTEA NOT NULL,
            updated_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            data BYTEA NOT NULL,
            created_ms BIGINT NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
        """CREATE TABLE audit (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            room TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            user_id TEXT NOT NULL,
            site TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail BYTEA
        )""",
        "CREATE INDEX audit_room ON audit (room, id)",
        """CREATE TABLE client_owners (
            room TEXT NOT NULL,
            client_id BIGINT NOT NULL,
            user_id TEXT NOT NULL,
            PRIMARY KEY (room, client_id)
        )""",
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)

# Advisory lock key held while migrating: nodes started together migrate one after the other.
# Above 2**31, so it never meets a room's lock (hashtext answers a 32-bit int).
MIGRATION_LOCK = 0x636F6C6C6162  # "collab"

POOL_SIZE = 10  # connections per node: one for the writer's batch, the rest for reads
CONNECT_TIMEOUT = 5.0  # seconds to open a connection (a database that is down answers at once)
COMMAND_TIMEOUT = 30.0  # seconds any statement may take before its batch (or read) fails

# What a connection that broke (the database restarted, the network dropped) raises.
# A connection the database dropped (a restart): asyncpg may also raise InternalClientError right
# after the server cut a pooled connection.
CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError)
ERRORS = (*CONNECTION_ERRORS, asyncpg.PostgresError, TimeoutError)

_Apply = Callable[[asyncpg.Connection, list[Op], int], Awaitable[None]]



async def open_pool(
    url: str, *, max_size: int, command_timeout: float, migrate: Callable[[asyncpg.Connection], Awaitable[None]],
    what: str,
) -> asyncpg.Pool:
    """A pool on `url` whose tables `migrate` brought up to date (every PostgreSQL store opens
    this way); StoreError, saying `what` it was for, when PostgreSQL cannot be reached."""
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                         command_timeout=command_timeout)
    except ERRORS as exc:
        raise StoreError(f"cannot connect to PostgreSQL{what}: {exc}") from exc
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        pool.terminate()
        raise
    return pool


async def run_twice(pool: asyncpg.Pool, work: Callable[[asyncpg.Connection], Awaitable[T]], failed: str) -> T:
    """Run `work` on a pooled connection; once more on a fresh one if the database dropped the
    first (work that may run twice only). StoreError, prefixed `failed`, otherwise."""
    for attempt in (1, 2):
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        except CONNECTION_ERRORS as exc:
            if attempt == 2:
                raise StoreError(f"{failed}: {type(exc).__name__}: {exc}") from exc
        except (asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"{failed}: {type(exc).__name__}: {exc}") from exc
    raise AssertionError("unreachable")


async def close_pool(pool: asyncpg.Pool | None) -> None:
    """Close a pool, its connections' ends told; ended at once if that does not finish in time."""
    if pool is None:
        return
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await pool.close()
    except TimeoutError:
        log.warning("PostgreSQL pool did not close in time; terminating its connections")
        pool.terminate()

class PostgresStore(QueuedWrites):
    """asyncpg backend: `await store.open()` before use, `await store.close()` after."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._writer = GroupCommitWriter(self._commit_batch, name="postgres")
        self._apply: dict[str, _Apply] = {
            "append": _append,
            "compact": _compact,
            "audit": _audit,
            "claim": _claim,
            "record": _put_records,
        }

    async def open(self) -> None:
        if self._pool is not None:
            raise StoreError("store is already open")
        self._pool = await open_pool(self._url, max_size=self._pool_size, command_timeout=COMMAND_TIMEOUT,
                                     migrate=_migrate, what="")
        await self._writer.start()

    async def close(self) -> None:
        try:
            await self._writer.stop()
        finally:
            pool, self._pool = self._pool, None
            await close_pool(pool)

    def _need_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    # -- group-committed writes: queued by QueuedWrites, committed here -------------------

    async def _commit_batch(self, ops: list[Op]) -> None:
        """One transaction for the whole batch, in submission order. A database that is down fails
        the batch (StoreError); the pool opens new connections once it answers again."""
        pool = self._need_pool()
        now = int(time.time() * 1000)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await _lock_and_number(conn, ops)
                for kind, run in runs_of_kind(ops):
                    await self._apply[kind](conn, run, now)
        except ERRORS as exc:
            raise StoreError(f"PostgreSQL commit failed: {type(exc).__name__}: {exc}") from exc

    # -- reads (committed data only) ---------------------------------------------------------

    async def _read(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `read` on a pooled connection. Reads are idempotent: one that met a connection the
        database dropped (a restart) runs once more on a fresh one."""
        return await run_twice(self._need_pool(), read, "PostgreSQL read failed")

    async def load(self, room: str) -> LoadedDocument:
        return await self.read_since(room, 0)

    async def latest_seqs(self, rooms: list[str]) -> dict[str, int]:
        rows = await self._read(
            lambda conn: conn.fetch("SELECT room, seq FROM rooms WHERE room = ANY($1::text[])", rooms)
        )
        return {r["room"]: r["seq"] for r in rows}

    async def read_since(self, room: str, seq: int) -> LoadedDocument:
        async def read(conn: asyncpg.Connection) -> LoadedDocument:
            # Repeatable read: the snapshot and the log of the same commit, even if a compaction
            # commits between the two statements.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                row = await conn.fetchrow("SELECT data, upto FROM snapshots WHERE room = $1", room)
                snapshot = (row["data"], row["upto"]) if row is not None and row["upto"] > seq else None
                after = snapshot[1] if snapshot is not None else seq
                log_rows = await conn.fetch(
                    "SELECT seq, data FROM updates WHERE room = $1 AND seq > $2 ORDER BY seq", room, after
                )
                owners = await conn.fetch("SELECT client_id, user_id FROM client_owners WHERE room = $1", room)
            return loaded_document(
                snapshot, [(r["seq"], r["data"]) for r in log_rows], {r[0]: r[1] for r in owners}, after
            )

        return await self._read(read)

    async def get_record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        data = await self._read(
            lambda conn: conn.fetchval("SELECT data FROM records WHERE kind = $1 AND id = $2", kind, record_id)
        )
        return orjson.loads(data) if data is not None else None

    async def list_records(self, kind: str) -> list[dict[str, Any]]:
        rows = await self._read(
            lambda conn: conn.fetch("SELECT data FROM records WHERE kind = $1 ORDER BY created_ms, id", kind)
        )
        return [orjson.loads(r["data"]) for r in rows]

    async def list_audit(self, room: str, limit: int = 1000) -> list[AuditRecord]:
        rows = await self._read(
            lambda conn: conn.fetch(
                "SELECT room, at_ms, user_id, site, action, target, detail FROM audit"
                " WHERE room = $1 ORDER BY id DESC LIMIT $2",
                room,
                limit,
            )
        )
        return [
            AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]) if r[6] is not None else None)
            for r in reversed(rows)
        ]

    async def secret(self, generate: Callable[[], str] | None) -> str:
        async def read(conn: asyncpg.Connection) -> str:
            value = await conn.fetchval("SELECT value FROM meta WHERE key = 'secret'")
            if value is not None:
                return str(value)
            if generate is None:
                raise SecretNotFound(
                    "no signing secret: COLLAB_SECRET is not set and the database keeps none yet; "
                    "`collab serve` creates it on its first start"
                )
            # Nodes racing here: the first insert wins, every node reads the same row back.
            kept = await conn.fetchval(
                "INSERT INTO meta (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING RETURNING value",
                generate(),
            )
            if kept is not None:
                log.warning("COLLAB_SECRET is not set: generated a signing secret and stored it in the database")
                return str(kept)
            return str(await conn.fetchval("SELECT value FROM meta WHERE key = 'secret'"))

        return await self._read(read)

    async def ping(self) -> None:
        await self._read(lambda conn: conn.fetchval("SELECT 1"))


async def _migrate(conn: asyncpg.Connection) -> None:
    await migrate(conn, lock=MIGRATION_LOCK, table="schema_version", migrations=_MIGRATIONS, what="store")


async def migrate(
    conn: asyncpg.Connection, *, lock: int, table: str, migrations: Sequence[Sequence[str]], what: str
) -> None:
    """Bring a set of tables to the last of `migrations`, the version kept in `table`. The
    advisory lock comes first in the transaction, so nodes opening the same new database at once
    migrate it once, one after the other."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        version = await conn.fetchval(f"SELECT max(version) FROM {table}") or 0
        for number, statements in enumerate(migrations[version:], start=version + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO {table} (version) VALUES ($1)", number)
            log.info("%s migrated to schema version %d", what, number)


# -- what each kind of op writes (inside the batch's transaction) ---------------------------


async def _lock_and_number(conn: asyncpg.Connection, ops: list[Op]) -> None:
    """First in every batch, in a fixed order: the rooms' counters (sorted by room), then the
    compacted rooms' advisory locks (sorted by key). Taking them all up front, always in that
    order, keeps two nodes' batches from waiting on each other in a cycle."""
    groups = appends_by_room(ops)
    if groups:
        rows = await conn.fetch(
            "INSERT INTO rooms (room, seq)"
            " SELECT room, n FROM unnest($1::text[], $2::bigint[]) AS t(room, n) ORDER BY room"
            " ON CONFLICT (room) DO UPDATE SET seq = rooms.seq + excluded.seq RETURNING room, seq",
            [room for room, _ in groups],
            [len(appends) for _, appends in groups],
        )
        last = {r["room"]: r["seq"] for r in rows}
        for room, appends in groups:
            number_appends(appends, last[room])
    compacted = sorted({op.room for op in ops if op.kind == "compact"})
    if compacted:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM"
            " (SELECT DISTINCT hashtext(r) AS k FROM unnest($1::text[]) AS r ORDER BY k OFFSET 0) AS keys",
            compacted,
        )


async def _append(conn: asyncpg.Connection, ops: list[Op], now: int) -> None:
    await conn.executemany(
        "INSERT INTO updates (room, seq, data) VALUES ($1, $2, $3)", [(op.room, op.result, op.payload) for op in ops]
    )


async def _compact(conn: asyncpg.Connection, ops: list[Op], now: int) -> None:
    for op in ops:
        snapshot, upto = op.payload
        if upto <= 0:
            continue  # covers no entry: nothing to fold
        # Only a newer snapshot replaces the stored one; then exactly the entries it covers go.
        # Entries numbered above `upto` (another node's, committed while this one was built) stay.
        stored = await conn.fetchval(
            "INSERT INTO snapshots (room, upto, data, updated_ms) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (room) DO UPDATE SET upto = excluded.upto, data = excluded.data,"
            " updated_ms = excluded.updated_ms WHERE snapshots.upto < excluded.upto RETURNING upto",
            op.room,
            upto,
            snapshot,
            now,
        )
        if stored is not None:
            await conn.execute("DELETE FROM updates WHERE room = $1 AND seq <= $2", op.room, upto)


async def _audit(conn: asyncpg.Connection, ops: list[Op], now: int) -> None:
    await conn.executemany(
        "INSERT INTO audit (room, at_ms, user_id, site, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [_audit_row(op.payload) for op in ops],
    )


async def _claim(conn: asyncpg.Connection, ops: list[Op], now: int) -> None:
    # First claim wins: a client id already owned keeps its owner. Rows in key order (stable, so
    # two claims of one id in this run keep their order) to keep lock waits between nodes acyclic.
    rows = [(op.room, client_id, user_id) for op in ops for client_id, user_id in op.payload.items()]
    rows.sort(key=lambda r: (r[0], r[1]))
    await conn.executemany(
        "INSERT INTO client_owners (room, client_id, user_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (room, client_id) DO NOTHING",
        rows,
    )


async def _put_records(conn: asyncpg.Connection, ops: list[Op], now: int) -> None:
    rows = sorted(((*op.payload, now) for op in ops), key=lambda r: (r[0], r[1]))
    await conn.executemany(
        "INSERT INTO records (kind, id, data, created_ms) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data",
        rows,
    )


def _audit_row(rec: AuditRecord) -> tuple[Any, ...]:
    detail = orjson.dumps(rec.detail) if rec.detail is not None else None
    return (rec.room, rec.at_ms, rec.user_id, rec.site, rec.action, rec.target, detail)

"""The Store contract (tests/store_contract.py) run against SqliteStore.

Another backend runs the same suite by adding its harness to `HARNESSES` (a param of the
`harness` fixture).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosqlite
import httpx
import pytest

from collab.auth import TokenAuthenticator
from collab.store.sqlite import SCHEMA_VERSION, SqliteStore
from tests.conftest import make_settings, serving
from tests.store_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.store_contract import WAIT, StoreHarness

_names = itertools.count()


class ThreadGate:
    """Holds the writer's database thread inside a SQL function until released."""

    def __init__(self) -> None:
        self._reached = threading.Event()
        self._released = threading.Event()

    async def reached(self, timeout: float) -> bool:
        return await asyncio.to_thread(self._reached.wait, timeout)

    async def release(self) -> None:
        self._released.set()

    def hold(self) -> int:
        self._reached.set()
        self._released.wait(2 * WAIT)  # never forever, even if a test forgot to release
        return 0


class SqliteHarness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.database_url = f"sqlite:///{path}"
        self.store = SqliteStore(str(path))

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def reopen(self) -> None:
        await self.store.close()
        self.store = SqliteStore(str(self.path))
        await self.store.open()

    async def another_store(self) -> None:
        return None  # one SQLite file is served by one process

    def _writer_connection(self) -> aiosqlite.Connection:
        # Reaching inside is the harness's job: triggers must live on the writer's own
        # connection (TEMP), so that only this store's batches meet them.
        db = self.store._db
        assert db is not None
        return db

    async def _trigger(self, data: bytes, action: str) -> None:
        db = self._writer_connection()
        for table in ("updates", "snapshots"):
            await db.execute(
                f"CREATE TEMP TRIGGER test_{next(_names)} BEFORE INSERT ON main.{table}"
                f" WHEN NEW.data = X'{data.hex()}' BEGIN {action}; END"
            )

    async def fail_writes_of(self, data: bytes) -> None:
        await self._trigger(data, "SELECT RAISE(ABORT, 'refused by the test')")

    async def hold_writes_of(self, data: bytes) -> ThreadGate:
        gate = ThreadGate()
        name = f"test_hold_{next(_names)}"
        await self._writer_connection().create_function(name, 0, gate.hold)
        await self._trigger(data, f"SELECT {name}()")
        return gate


async def sqlite_harness(tmp_path: Path) -> SqliteHarness:
    harness = SqliteHarness(tmp_path / "store" / "collab.sqlite3")
    await harness.open()
    return harness


HARNESSES: dict[str, Callable[[Path], Awaitable[StoreHarness]]] = {"sqlite": sqlite_harness}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    harness = await HARNESSES[request.param](tmp_path)
    try:
        yield harness
    finally:
        await harness.store.close()


# -- SQLite only -------------------------------------------------------------------------------


async def test_reads_use_a_query_only_connection(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    await store.open()
    try:
        reader = store._reader
        assert reader is not None
        async with reader.execute("PRAGMA query_only") as cur:
            assert (await cur.fetchone()) == (1,)
        async with reader.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone()) == ("wal",)
    finally:
        await store.close()


async def test_schema_v1_file_is_migrated(tmp_path: Path) -> None:
    """A file written by the previous version (schema 1) gains the client-owner table."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE updates (id INTEGER PRIMARY KEY, room TEXT NOT NULL, data BLOB NOT NULL)")
        old.execute("CREATE TABLE snapshots (room TEXT PRIMARY KEY, data BLOB NOT NULL, updated_ms INTEGER NOT NULL)")
        old.execute("INSERT INTO updates (room, data) VALUES ('r', x'0000')")
        old.execute("PRAGMA user_version=1")
    old.close()
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.claim_clients("r", {1: "alice"})
        loaded = await store.load("r")
        assert (loaded.updates, loaded.client_owners) == ([b"\x00\x00"], {1: "alice"})
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    check.close()


def test_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a file"):
        SqliteStore(":memory:")


async def test_schema_v2_log_is_numbered_after_its_snapshot(tmp_path: Path) -> None:
    """Schema 3 numbers an existing log per room: a snapshot stands for number 1, its log follows."""
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE updates (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT, data BLOB)")
        old.execute("CREATE INDEX updates_room ON updates (room, id)")
        old.execute("CREATE TABLE snapshots (room TEXT PRIMARY KEY, data BLOB NOT NULL, updated_ms INTEGER NOT NULL)")
        old.execute("CREATE TABLE client_owners (room TEXT, client_id INTEGER, user_id TEXT,"
                    " PRIMARY KEY (room, client_id))")
        old.execute("INSERT INTO snapshots VALUES ('a', x'aa', 0)")
        for room, data in [("a", "01"), ("b", "b1"), ("a", "02"), ("b", "b2"), ("b", "b3")]:
            old.execute("INSERT INTO updates (room, data) VALUES (?, ?)", (room, bytes.fromhex(data)))
        old.execute("PRAGMA user_version=2")
    old.close()
    store = SqliteStore(str(path))
    await store.open()
    try:
        a, b = await store.load("a"), await store.load("b")
        assert (a.updates, a.seq) == ([b"\xaa", b"\x01", b"\x02"], 3)
        assert (b.updates, b.seq) == ([b"\xb1", b"\xb2", b"\xb3"], 3)
        assert (await store.read_since("a", 2)).updates == [b"\x02"]
        assert await asyncio.gather(store.append("a", b"\x03"), store.append("b", b"\xb4")) == [4, 4]
    finally:
        await store.close()


async def test_generated_secret_stays_a_file_under_data(tmp_path: Path) -> None:
    """Without COLLAB_SECRET, a SQLite server keeps generating its secret in <data>/secret (0600)."""
    settings = make_settings(tmp_path / "data").replace(secret=None)
    async with serving(settings) as live:
        path = tmp_path / "data" / "secret"
        assert path.stat().st_mode & 0o777 == 0o600
        token = TokenAuthenticator(path.read_text().strip()).mint(user="a", name="A", site="Roubaix", role="admin")
        async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as http:
            r = await http.get("/api/slides", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text

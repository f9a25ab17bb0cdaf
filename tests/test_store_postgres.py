"""The Store contract (tests/store_contract.py) run against PostgresStore, plus what only a shared
database has: several nodes migrating at once, one secret for all, an outage and its end, and a
`collab serve --database-url postgresql://...` killed with -9.

Each test gets a database of its own (`collab_test_<random>`), dropped at its end. PostgreSQL is
reached at COLLAB_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); when it
does not answer these tests are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from pycrdt import Array

from collab.auth import TokenAuthenticator
from collab.errors import StoreError
from collab.sessions.registry import session_key
from collab.settings import Settings
from collab.store import create_store
from collab.store.postgres import SCHEMA_VERSION, PostgresStore
from tests.conftest import SECRET, ServerProcess, make_settings, serving
from tests.store_contract import *  # noqa: F403  (the contract's tests, collected here)
from tests.store_contract import WAIT
from tests.yclient import YClient

ADMIN_URL = os.environ.get("COLLAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

_names = itertools.count()


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI and does not answer at {ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL does not answer at {ADMIN_URL} ({exc}); set COLLAB_TEST_PG_URL")


def _url_of(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped at its end."""
    name = f"collab_test_{secrets.token_hex(6)}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _url_of(name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class PgGate:
    """A write held inside its open transaction: a trigger waits for an advisory lock this test holds."""

    def __init__(self, holder: asyncpg.Connection, key: int) -> None:
        self._holder = holder
        self._key = key

    async def reached(self, timeout: float) -> bool:
        # The writer is inside the trigger once it waits for the lock.
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if await self._holder.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = $1 AND objid = $2 AND objsubid = 1",
                self._key >> 32, self._key & 0xFFFFFFFF,
            ):
                return True
            await asyncio.sleep(0.01)
        return False

    async def release(self) -> None:
        if not self._holder.is_closed():
            await self._holder.execute("SELECT pg_advisory_unlock($1)", self._key)
            await self._holder.close()


class PostgresHarness:
    def __init__(self, url: str) -> None:
        self.database_url = url
        self.store = PostgresStore(url)
        self._connections: list[asyncpg.Connection] = []

    async def reopen(self) -> None:
        await self.store.close()
        self.store = PostgresStore(self.database_url)
        await self.store.open()

    async def another_store(self) -> PostgresStore:
        other = PostgresStore(self.database_url)
        await other.open()
        return other

    async def _trigger(self, data: bytes, action: str) -> None:
        # Triggers act on every connection to this test's own database: only this test writes there.
        name = f"test_{next(_names)}"
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF NEW.data = '\\x{data.hex()}'::bytea THEN {action}; END IF; RETURN NEW; END $$"
            )
            for table in ("updates", "snapshots"):
                await conn.execute(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
        finally:
            await conn.close()

    async def fail_writes_of(self, data: bytes) -> None:
        await self._trigger(data, "RAISE EXCEPTION 'refused by the test'")

    async def hold_writes_of(self, data: bytes) -> PgGate:
        key = (1 << 40) + next(_names)  # never a room's key (hashtext is 32-bit)
        holder = await asyncpg.connect(self.database_url)
        await holder.execute("SELECT pg_advisory_lock($1)", key)
        await self._trigger(data, f"PERFORM pg_advisory_xact_lock({key})")
        return PgGate(holder, key)


@pytest.fixture
async def harness(pg_url: str) -> AsyncIterator[PostgresHarness]:
    harness = PostgresHarness(pg_url)
    await harness.store.open()
    try:
        yield harness
    finally:
        await harness.store.close()


# -- PostgreSQL only ----------------------------------------------------------------------------


async def test_create_store_chooses_postgres_for_its_urls(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = create_store(Settings(data=tmp_path, database_url=url))
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            assert await store.append("r", b"\x00\x00") in (1, 2)
        finally:
            await store.close()


async def test_nodes_opening_a_fresh_database_at_once_all_come_up(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(3)]
    results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    try:
        assert results == [None, None, None]
        numbers = await asyncio.gather(*(s.append("r", b"\x00\x00") for s in stores))
        assert sorted(numbers) == [1, 2, 3]
    finally:
        for store, result in zip(stores, results, strict=True):
            if result is None:
                await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetch("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        # Binary columns hold the bytes themselves.
        assert await conn.fetchval("SELECT pg_typeof(data)::text FROM updates LIMIT 1") == "bytea"
    finally:
        await conn.close()


async def test_every_node_gets_the_same_generated_secret(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await asyncio.gather(a.open(), b.open())
    try:
        generated = iter(["from-a", "from-b"])
        first, second = await asyncio.gather(a.secret(lambda: next(generated)), b.secret(lambda: next(generated)))
        assert first == second and first in ("from-a", "from-b")
        assert await b.secret(lambda: "never used") == first
    finally:
        await a.close()
        await b.close()


async def test_cli_token_and_session_create_find_the_databases_secret(pg_url: str, tmp_path: Path) -> None:
    """`collab token` and `collab session create` with --database-url sign with the secret the
    server generated in the database, and the session lands in that database."""
    store = PostgresStore(pg_url)
    await store.open()
    try:
        kept = await store.secret(lambda: "kept-in-the-database-0123456789-abcdef")
        await store.put_record("slide", "s1", {"id": "s1", "title": "s1", "width": 10, "height": 10, "mpp": 0.5})
    finally:
        await store.close()
    env = {k: v for k, v in os.environ.items() if k not in ("COLLAB_SECRET", "COLLAB_DATABASE_URL")}
    common = ["--data", str(tmp_path / "cli"), "--database-url", pg_url]
    auth = TokenAuthenticator(kept)

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collab", *args, *common,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=Path(__file__).parent.parent,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode()

    token = await run("token", "--user", "u", "--name", "U", "--site", "Roubaix", "--role", "viewer")
    assert auth.authenticate(token.strip()).user_id == "u"
    printed = await run("session", "create", "--title", "Board", "--slides", "s1")
    session_id = printed.split()[1].rstrip(":")
    links = [line.rsplit("token=", 1)[1] for line in printed.splitlines() if "token=" in line]
    assert len(links) >= 4 and all(auth.authenticate(t).slides == frozenset({"s1"}) for t in links)
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert (await store.get_record("session", session_id)) is not None
        assert (await store.load(session_key(session_id))).seq == 1  # its initial document
    finally:
        await store.close()
    assert not (tmp_path / "cli" / "secret").exists()  # not a file: the database's


class TcpProxy:
    """A loopback forwarder to PostgreSQL that the test can cut (listener and live connections
    closed) and restore on the same port: an outage without touching the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass  # the other side went away: closing both below is the answer
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def url(self, database_url: str) -> str:
        rest = database_url.split("@", 1)[1].split("/", 1)[1]
        user = database_url.split("://", 1)[1].split("@", 1)[0]
        return f"postgresql://{user}@127.0.0.1:{self.port}/{rest}"


@contextlib.asynccontextmanager
async def proxy_to_postgres() -> AsyncIterator[TcpProxy]:
    host_port = ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = TcpProxy((host, int(port or 5432)))
    await proxy.start()
    try:
        yield proxy
    finally:
        if proxy._server is not None:
            await proxy.stop()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 2 * WAIT) -> None:
    """Wait until `check()` answers True, trying again every 50 ms; fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {timeout:g} s: {what}")


async def test_outage_fails_writes_and_service_resumes_when_the_database_is_back(pg_url: str) -> None:
    async with proxy_to_postgres() as proxy:
        store = PostgresStore(proxy.url(pg_url))
        await store.open()
        try:
            assert await store.append("r", b"\x01") == 1
            await store.ping()
            await proxy.stop()
            with pytest.raises(StoreError):
                await store.append("r", b"\x02")
            with pytest.raises(StoreError):
                await store.ping()
            with pytest.raises(StoreError):
                await store.load("r")
            await proxy.start()

            async def append_works() -> bool:
                try:
                    await store.append("r", b"\x03")
                except StoreError:
                    return False
                return True

            await _until(append_works, "an append commits again")
            loaded = await store.load("r")
            assert loaded.updates[0] == b"\x01" and b"\x02" not in loaded.updates
            assert loaded.seq == len(loaded.updates)  # a failed batch took no number
        finally:
            await store.close()


def _log(client: YClient) -> list[str]:
    return [str(v) for v in client.doc.get("log", type=Array).to_py()]


async def test_server_on_postgres_outage_closes_writers_with_1011_and_healthz_says_degraded(
    pg_url: str, tmp_path: Path
) -> None:
    async with proxy_to_postgres() as proxy:
        settings = make_settings(tmp_path / "data", database_url=proxy.url(pg_url))
        async with serving(settings) as live:
            await live.register_slide("s1")
            async with live.http(None) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok", "store": "ok"}
            async with live.client("s1") as writer, live.client("s1", user="watcher") as watcher:
                writer.doc.get("log", type=Array).append("before")
                await watcher.wait_for(lambda: _log(watcher) == ["before"])
                await proxy.stop()
                async with live.http(None) as http:
                    health = await http.get("/healthz")
                assert health.status_code == 503, health.text
                assert health.json()["status"] == "degraded" and health.json()["store"]
                writer.doc.get("log", type=Array).append("during")
                assert await writer.wait_closed(WAIT) == 1011
                assert await watcher.wait_closed(WAIT) == 1011
                assert _log(watcher) == ["before"]  # nothing relayed that was not stored
            await proxy.start()

            async def healthy() -> bool:
                async with live.http(None) as http:
                    return (await http.get("/healthz")).status_code == 200

            await _until(healthy, "healthz answers 200 again")

            async def writes_again() -> bool:
                try:
                    async with live.client("s1") as w, live.client("s1", user="watcher") as v:
                        w.doc.get("log", type=Array).append("after")
                        await v.wait_for(lambda: "after" in _log(v), timeout=5)
                        return True
                except (TimeoutError, OSError):
                    return False

            await _until(writes_again, "a client writes again and another receives it")
            async with live.client("s1") as reader:
                assert _log(reader)[0] == "before" and "during" not in _log(reader)


async def test_serve_on_postgres_survives_kill9(pg_url: str, tmp_path: Path) -> None:
    """`collab serve --database-url postgresql://...`: a pycrdt client writes, the server is killed
    with -9, a new one starts on the same database (another --data), everything is there."""
    first = ServerProcess(tmp_path / "node-a", "--database-url", pg_url)
    second = ServerProcess(tmp_path / "node-b", "--database-url", pg_url)
    try:
        first.start()
        slide = "slide-pg"
        token = _token()
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
            r = await http.post("/api/slides", headers={"Authorization": f"Bearer {_token('admin')}"}, json={
                "id": slide, "title": slide, "width": 1000, "height": 1000, "mpp": 0.25,
                "tiles": "https://example.invalid/x.dzi",
            })
            assert r.status_code in (200, 201), r.text
        async with YClient(f"{first.ws_url}/ws/slides/{slide}?token={token}") as writer, \
                YClient(f"{first.ws_url}/ws/slides/{slide}?token={_token(user='watcher')}") as watcher:
            log = writer.doc.get("log", type=Array)
            for i in range(200):
                log.append(i)
                if i % 20 == 19:
                    await asyncio.sleep(0)  # let frames go out in several commits
            # What the other client received was committed first.
            await watcher.wait_for(lambda: len(watcher.doc.get("log", type=Array)) == 200)
        first.kill9()
        second.start()
        async with YClient(f"{second.ws_url}/ws/slides/{slide}?token={token}") as reader:
            assert [int(v) for v in reader.doc.get("log", type=Array).to_py()] == list(range(200))
    finally:
        first.stop()
        second.stop()


def _token(role: str = "reviewer", user: str | None = None) -> str:
    return TokenAuthenticator(SECRET).mint(user=user or f"{role}-1", name=role, site="Roubaix", role=role)


async def test_nodes_without_collab_secret_share_the_databases_secret(pg_url: str, tmp_path: Path) -> None:
    """Two servers on one database, neither given COLLAB_SECRET: both accept a token signed with
    the secret generated in the database (not a file under either --data)."""
    a_settings = make_settings(tmp_path / "a", database_url=pg_url).replace(secret=None)
    b_settings = make_settings(tmp_path / "b", database_url=pg_url).replace(secret=None)
    async with serving(a_settings) as a, serving(b_settings) as b:
        store = PostgresStore(pg_url)
        await store.open()
        try:
            secret = await store.secret(lambda: pytest.fail("the servers already generated one"))
        finally:
            await store.close()
        token = TokenAuthenticator(secret).mint(user="admin-1", name="A", site="Roubaix", role="admin")
        for node in (a, b):
            async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as http:
                r = await http.get("/api/slides", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
    assert not (tmp_path / "a" / "secret").exists() and not (tmp_path / "b" / "secret").exists()


async def test_rooms_on_postgres_compact_up_to_what_they_saw_committed(pg_url: str, tmp_path: Path) -> None:
    """A live room folds its log while clients write (compaction up to the last number it saw
    committed), and a second server on the same database serves the whole document."""
    settings = make_settings(tmp_path / "a", database_url=pg_url, compact_after_updates=20)
    async with serving(settings) as live:
        await live.register_slide("s1")
        async with live.client("s1") as writer, live.client("s1", user="watcher") as watcher:
            for i in range(120):
                writer.doc.get("log", type=Array).append(str(i))
                if i % 10 == 9:  # several commits, several compactions
                    await watcher.wait_for(lambda n=i + 1: len(_log(watcher)) == n)
        store = PostgresStore(pg_url)
        await store.open()
        try:
            loaded = await store.load("slide:s1")
        finally:
            await store.close()
        assert loaded.snapshot_bytes > 0 and loaded.log_entries < 60, (loaded.log_entries, loaded.seq)
        assert loaded.seq >= 120
    async with serving(make_settings(tmp_path / "b", database_url=pg_url)) as other:
        async with other.client("s1") as reader:
            assert _log(reader) == [str(i) for i in range(120)]

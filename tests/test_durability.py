"""Nothing a client has seen is lost: kill -9, SIGTERM, idle unload, compaction."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map

import collab.annotations.guard as annotations_module
from collab.auth import TokenAuthenticator
from collab.live.keys import RoomKey
from collab.live.rooms import RoomManager
from collab.store import open_store
from collab.store.sqlite import SqliteStore
from tests.conftest import SECRET, ServerProcess, make_settings, serving
from tests.test_live_rooms import annotation
from tests.waiting import settled, wait_for
from tests.yclient import YClient

AUTH = TokenAuthenticator(SECRET)


def token(role: str = "reviewer", user: str = "u") -> str:
    return AUTH.mint(user=user, name=user, site="Roubaix", role=role, slides="*", ttl=600)


def register(proc: ServerProcess, slide_id: str) -> None:
    r = httpx.post(f"{proc.base_url}/api/slides", headers={"Authorization": f"Bearer {token('admin')}"},
                   json={"id": slide_id, "width": 100000, "height": 80000, "mpp": 0.25})
    assert r.status_code in (200, 201), r.text


def url(proc: ServerProcess, slide_id: str, user: str = "u") -> str:
    return f"{proc.ws_url}/ws/slides/{slide_id}?token={token(user=user)}"


async def write_until_killed(proc: ServerProcess, slide_id: str, kill_after_seen: int) -> set[str]:
    """A writer writes as fast as it can; kill -9 once an observer has seen `kill_after_seen`."""
    writer = await YClient(url(proc, slide_id, "writer")).connect()
    observer = await YClient(url(proc, slide_id, "observer")).connect()
    seen: set[str] = set()
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            writer.annotations[f"w-{i}"] = annotation(i)
            i += 1
            await asyncio.sleep(0.001)  # pacing the writer, not waiting for anything

    task = asyncio.get_running_loop().create_task(write())
    await observer.wait_for(lambda: len(observer.annotations) >= kill_after_seen, timeout=30)
    proc.kill9()
    seen = set(observer.annotations.keys())
    stop.set()
    await task
    await writer.close()
    await observer.close()
    return seen


@pytest.mark.parametrize("kill_after_seen", [1, 57, 400])
async def test_kill9_loses_nothing_that_was_seen(server_process: ServerProcess, kill_after_seen: int) -> None:
    server_process.start()
    register(server_process, "s1")
    seen = await write_until_killed(server_process, "s1", kill_after_seen)
    assert len(seen) >= kill_after_seen
    server_process.start()
    async with YClient(url(server_process, "s1", "checker")) as checker:
        recovered = set(checker.annotations.keys())
    assert seen <= recovered, f"lost {len(seen - recovered)} of {len(seen)} seen annotations"


async def test_sigterm_flushes_and_exits_zero(server_process: ServerProcess) -> None:
    server_process.start()
    register(server_process, "s1")
    client = await YClient(url(server_process, "s1", "writer")).connect()
    for i in range(300):
        client.annotations[f"t-{i}"] = annotation(i)
    # The server has applied all 300 once it has stamped them (its corrections come back).
    await client.wait_for(lambda: all("status" in v for v in client.annotations.to_py().values()))
    assert server_process.terminate() == 0
    assert await client.wait_closed() == 1001
    server_process.start()
    async with YClient(url(server_process, "s1", "checker")) as checker:
        assert len(checker.annotations) == 300


async def test_idle_room_unloads_and_reloads_intact(tmp_path: Path) -> None:
    async with serving(make_settings(tmp_path / "d", room_idle_seconds=0.2)) as live:
        await live.register_slide("s")
        async with live.client("s") as a:
            for i in range(50):
                a.annotations[f"k{i}"] = annotation(i)
            a.annotations["k0"]["name"] = "renamed"
            del a.annotations["k1"]
            # The server stamps status, author, measurements: wait for its corrections.
            await a.wait_for(lambda: all("status" in v for v in a.annotations.to_py().values()))
            await settled(live, "slide:s", a)
            before = a.annotations.to_py()
        rooms = live.app.state.collab.rooms
        await wait_for(lambda: rooms.get(RoomKey.slide("s")) is None, what="the idle room unloaded")
        async with live.client("s", user="again") as b:
            assert b.annotations.to_py() == before


async def test_compaction_keeps_document_content(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", compact_after_updates=25)
    async with serving(settings) as live:
        await live.register_slide("s")
        async with live.client("s") as a:
            for i in range(60):
                a.annotations[f"k{i}"] = annotation(i)
                if i % 7 == 0:
                    a.annotations[f"k{i}"]["locked"] = True
            del a.annotations["k3"]
            await a.wait_for(lambda: all("status" in v for v in a.annotations.to_py().values()))
            await settled(live, "slide:s", a)
            before = a.annotations.to_py()
    # Read the store directly: snapshot + remaining log must rebuild exactly the same content.
    async with open_store(settings) as store:
        loaded = await store.load("slide:s")
    assert loaded.log_entries < 25
    doc: Doc = Doc()
    for update in loaded.updates:
        doc.apply_update(update)
    assert doc.get("annotations", type=Map).to_py() == before


async def test_sigterm_with_many_rooms(server_process: ServerProcess) -> None:
    server_process.start()
    clients = []
    for n in range(5):
        register(server_process, f"r{n}")
        c = await YClient(url(server_process, f"r{n}", f"w{n}")).connect()
        c.annotations["x"] = annotation(n)
        clients.append(c)
    for c in clients:  # applied by the server: it stamped them
        await c.wait_for(lambda c=c: "status" in c.annotations.to_py().get("x", {}))
    server_process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert server_process.proc.wait(30) == 0  # type: ignore[union-attr]
    server_process.start()
    for n in range(5):
        async with YClient(url(server_process, f"r{n}", "checker")) as checker:
            assert "x" in checker.annotations


async def test_pending_corrections_are_written_before_shutdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Corrections wait a few milliseconds before they are written; make that wait longer than the
    # test, so only the shutdown's own flush can have written them.
    monkeypatch.setattr(annotations_module, "CORRECTION_DELAY", 60.0)
    settings = make_settings(tmp_path / "d")
    async with serving(settings) as live:
        await live.register_slide("s")
        async with live.client("s") as a, live.client("s", user="obs") as b:
            a.annotations["k"] = annotation(1)
            await b.wait_for(lambda: "k" in b.annotations)  # applied, stored and relayed
            assert "status" not in b.annotations["k"].to_py()
    async with serving(settings) as live, live.client("s") as c:
        assert c.annotations["k"].to_py()["status"] == "ok"
        assert c.annotations["k"].to_py()["author"] == "reviewer-roubaix"


@pytest.mark.parametrize("writes", [0, 1])
async def test_sigterm_closes_every_socket_with_1001(server_process: ServerProcess, writes: int) -> None:
    """A client that only synced gets 1001 like one that wrote (uvicorn used to close it with 1012)."""
    server_process.start()
    register(server_process, "s1")
    client = await YClient(url(server_process, "s1", "reader")).connect()
    for i in range(writes):
        client.annotations[f"w-{i}"] = annotation(i)
        await client.flush()
    assert server_process.terminate() == 0
    assert await client.wait_closed() == 1001
    assert client.close_reason == "server shutting down"


async def test_drain_runs_once_and_logs_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's shutdown and the app's lifespan both ask for the drain: it runs once."""
    calls = 0
    shutdown = RoomManager.shutdown

    async def counted(self: RoomManager, *args: Any, **kwargs: Any) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        return await shutdown(self, *args, **kwargs)

    monkeypatch.setattr(RoomManager, "shutdown", counted)
    caplog.set_level(logging.INFO, logger="collab.app")
    async with serving(make_settings(tmp_path / "d")) as live:
        await live.register_slide("s")
        a = await live.client("s").connect()
        b = await live.client("s", user="other").connect()
        a.annotations["k"] = annotation(1)
        await b.wait_for(lambda: "k" in b.annotations)
    assert calls == 1
    drained = [r for r in caplog.records if r.getMessage().startswith("drained")]
    assert len(drained) == 1
    assert (drained[0].sockets, drained[0].rooms) == (2, 1)  # type: ignore[attr-defined]
    assert await a.wait_closed() == 1001
    assert await b.wait_closed() == 1001


async def test_drain_is_bounded_by_flush_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that cannot commit does not hold the shutdown past COLLAB_FLUSH_TIMEOUT."""
    stuck = asyncio.Event()
    release = asyncio.Event()
    commit = SqliteStore._commit_batch

    async def slow_commit(self: SqliteStore, ops: list[Any]) -> None:
        if any(op.kind == "append" for op in ops):
            stuck.set()
            await release.wait()
        await commit(self, ops)

    monkeypatch.setattr(SqliteStore, "_commit_batch", slow_commit)
    caplog.set_level(logging.INFO, logger="collab.app")
    async with serving(make_settings(tmp_path / "d", flush_timeout=0.5)) as live:
        try:
            await live.register_slide("s")
            async with live.client("s") as a:
                a.annotations["k"] = annotation(1)
                await asyncio.wait_for(stuck.wait(), 10)
                await asyncio.wait_for(live.app.state.collab.drain(), 10)
                assert any("did not finish within 0.5 s" in r.getMessage() for r in caplog.records)
        finally:
            release.set()  # the store's close still commits what was queued
    async with open_store(make_settings(tmp_path / "d")) as store:
        loaded = await store.load("slide:s")
    doc: Doc = Doc()
    for update in loaded.updates:
        doc.apply_update(update)
    assert "k" in doc.get("annotations", type=Map)


async def test_a_client_joining_while_the_server_drains_gets_1001(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A join still loading its room when the drain starts is closed with 1001 too."""
    loading = asyncio.Event()
    release = asyncio.Event()
    load = SqliteStore.load

    async def slow_load(self: SqliteStore, room: str) -> Any:
        if room == "slide:late":
            loading.set()
            await release.wait()
        return await load(self, room)

    monkeypatch.setattr(SqliteStore, "load", slow_load)
    async with serving(make_settings(tmp_path / "d")) as live:
        await live.register_slide("late")
        client = live.client("late")
        await client.connect(wait_sync=False)
        await asyncio.wait_for(loading.wait(), 10)
        rooms = live.app.state.collab.rooms
        drain = asyncio.get_running_loop().create_task(live.app.state.collab.drain())
        for _ in range(200):
            if rooms.closing:
                break
            await asyncio.sleep(0.01)
        assert rooms.closing and not drain.done()  # the drain waits for the join in progress
        release.set()
        await asyncio.wait_for(drain, 10)
        assert await client.wait_closed() == 1001
        assert not client.synced.is_set()

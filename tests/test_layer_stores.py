"""The LayerStore contract, run against both stores: SQLite (`<data>/layers.sqlite3`) and
PostgreSQL (a fresh database per test; skipped when PostgreSQL does not answer, except under CI).

An import is invisible until it finishes; a failed, cancelled or cut import leaves nothing; the
pieces of a tile are regrouped; a finished layer is never overwritten; a delete removes
everything; read_chunks (a worker thread's blocking read) gives what load_points/load_shapes give;
a cell takes far under 150 bytes. PostgreSQL alone: two nodes' stores on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from collab.errors import StoreError
from collab.layers.adopt import adopt_sqlite_layers
from collab.layers.codec import decode_points, decode_shapes
from collab.layers.postgres import PostgresLayerStore
from collab.layers.qupath import LayerParser
from collab.layers.regroup import MERGED_CHUNK_MAX
from collab.layers.sqlite import SqliteLayerStore
from collab.layers.store import LayerMeta, LayerStore
from tests.pg import fresh_database
from tests.test_layers_data import cell_features, export_bytes, export_pieces

WIDTH, HEIGHT = 100_000, 80_000


class Harness:
    """One store under test, and what only a test does to it: open a second instance on the same
    data (another node, or the server started again), and measure the bytes it takes on disk."""

    def __init__(self, make: Callable[[], LayerStore], disk_bytes: Callable[[], Awaitable[int]],
                 cut: Callable[[LayerStore, str], Awaitable[None]]) -> None:
        self.make = make
        self.disk_bytes = disk_bytes
        self.cut = cut  # the import's process dies (kill -9) while it streams in
        self.store = make()

    async def another(self) -> LayerStore:
        store = self.make()
        await store.open()
        return store


@contextlib.asynccontextmanager
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "layers.sqlite3"

    async def disk_bytes() -> int:
        import sqlite3

        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        return path.stat().st_size

    async def cut(store: LayerStore, layer_id: str) -> None:
        # What a kill -9 leaves: the pieces committed so far, the layer's row still `importing`.
        assert isinstance(store, SqliteLayerStore)
        await store.db.close()
        store._db = None

    yield Harness(lambda: SqliteLayerStore(path), disk_bytes, cut)


@contextlib.asynccontextmanager
async def postgres_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with fresh_database("collab_layers") as url:
        async def disk_bytes() -> int:
            conn = await asyncpg.connect(url)
            try:
                return int(await conn.fetchval(
                    "SELECT pg_total_relation_size('layer_chunks') + pg_total_relation_size('layers')"))
            finally:
                await conn.close()

        async def cut(store: LayerStore, layer_id: str) -> None:
            # A node killed mid-import: its connection to the database drops without a word.
            assert isinstance(store, PostgresLayerStore)
            store._imports.pop(layer_id).conn.terminate()

        yield Harness(lambda: PostgresLayerStore(url), disk_bytes, cut)


HARNESSES = {"sqlite": sqlite_harness, "postgres": postgres_harness}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param](tmp_path) as h:
        await h.store.open()
        try:
            yield h
        finally:
            await h.store.close()


def meta(layer_id: str, count: int, slide: str = "s", name: str = "cells") -> LayerMeta:
    return LayerMeta(layer_id, slide, name, 0, count, [{"name": "Tumor", "color": [200, 0, 0]}], {"Tumor": count}, {})


async def stream(store: LayerStore, layer_id: str, body: bytes, *, buffer_max: int = 32_768,
                 stop_after: int | None = None, stored_some: asyncio.Event | None = None) -> LayerParser:
    """Parse `body` into the store as the HTTP import does, 64 KiB at a time; stop after
    `stop_after` pieces were stored (the rest never arrives); set `stored_some` once some were."""
    parser = LayerParser(width=WIDTH, height=HEIGHT, buffer_max=buffer_max)
    stored = 0
    for start in range(0, len(body), 1 << 16):
        chunks = parser.feed(body[start : start + (1 << 16)])
        await store.add_chunks(layer_id, chunks)
        stored += len(chunks)
        if stored and stored_some is not None:
            stored_some.set()
        if stop_after is not None and stored >= stop_after:
            return parser
    await store.add_chunks(layer_id, parser.finish())
    return parser


async def import_whole(store: LayerStore, layer_id: str, body: bytes, slide: str = "s", **kw: Any) -> LayerParser:
    await store.begin_import(layer_id, slide)
    parser = await stream(store, layer_id, body, **kw)
    await store.finish_import(meta(layer_id, parser.count, slide))
    return parser


async def unlisted(store: LayerStore, layer_id: str, slide: str = "s") -> bool:
    return await store.get_layer(slide, layer_id) is None and layer_id not in [
        m.id for m in await store.list_layers(slide)]


async def nothing_of(store: LayerStore, layer_id: str, slide: str = "s") -> bool:
    return (await unlisted(store, layer_id, slide) and await store.load_points(layer_id) == []
            and await store.stored_bytes(layer_id) == 0)


BODY = export_bytes(cell_features(5000, seed=11, box=(1000, 1000, 9000, 7000)))


async def test_an_import_is_invisible_until_it_finishes_then_reads_back_whole(harness: Harness) -> None:
    store = harness.store
    other = await harness.another()  # another node (PostgreSQL) or another connection (SQLite)
    try:
        await store.begin_import("L", "s")
        parser = await stream(store, "L", BODY)
        for s in (store, other):
            assert await unlisted(s, "L")
        await store.finish_import(meta("L", parser.count))
        for s in (store, other):
            assert [m.id for m in await s.list_layers("s")] == ["L"]
            assert await s.get_layer("s", "L") == meta("L", 5000)
            assert await s.get_layer("other-slide", "L") is None
            rows = await s.load_points("L")
            ids = np.concatenate([decode_points(r.points).ids for r in rows])
            assert sorted(ids.tolist()) == list(range(5000))
            assert sum(r.count for r in rows) == 5000
            for r in rows:  # each chunk's box holds its centroids
                xy = decode_points(r.points).xy
                assert r.bbox == (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
    finally:
        await other.close()


async def test_pieces_of_a_tile_are_regrouped_and_read_chunks_gives_the_same(harness: Harness) -> None:
    """A small parser buffer writes every tile in many pieces: after the import each tile has as
    few chunks as MERGED_CHUNK_MAX allows, and the worker thread's read_chunks equals the
    event loop's load_points + load_shapes, chunk by chunk."""
    store = harness.store
    body = b"".join(export_pieces(30_000, box=(50, 50, 2000, 2000)))  # 4 tiles, ~7,500 objects each
    parser = await import_whole(store, "L", body, buffer_max=500)
    assert parser.count == 30_000
    rows = await store.load_points("L")
    assert all(r.count <= MERGED_CHUNK_MAX for r in rows)
    assert len(rows) <= 8  # 4 tiles of ~7,500: one or two chunks each (hundreds of pieces before)
    shapes = await store.load_shapes("L", [r.chunk for r in rows])
    read = await asyncio.to_thread(lambda: list(store.read_chunks("L")))
    assert [(c, p, s) for c, p, s in read] == [(r.count, r.points, shapes[r.chunk]) for r in rows]
    first = decode_shapes(shapes[rows[0].chunk], decode_points(rows[0].points).xy)
    assert len(first.counts) == rows[0].count and (first.counts[:, 0] == 8).all()


@pytest.mark.parametrize("how", ["failed", "cancelled", "killed"])
async def test_an_import_cut_midway_leaves_nothing(harness: Harness, how: str) -> None:
    store = harness.store
    await import_whole(store, "kept", BODY)
    before = [m.id for m in await store.list_layers("s")]
    await store.begin_import("L", "s")
    if how == "failed":  # the API's path for a bad body or a client gone: abort_import
        await stream(store, "L", BODY, buffer_max=500, stop_after=5)
        await store.abort_import("L")
    elif how == "cancelled":  # the request task cancelled mid-store, abort shielded (api.py)
        stored_some = asyncio.Event()
        task = asyncio.create_task(stream(store, "L", BODY, buffer_max=200, stored_some=stored_some))
        await stored_some.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()  # cut before the end of the body
        await asyncio.shield(store.abort_import("L"))
    else:  # the process dies; the server starts again on the same data
        await stream(store, "L", BODY, buffer_max=500, stop_after=5)
        await harness.cut(store, "L")
        await store.close()
        harness.store = store = await harness.another()
    assert await nothing_of(store, "L")
    assert [m.id for m in await store.list_layers("s")] == before
    assert sum(r.count for r in await store.load_points("kept")) == 5000
    await import_whole(store, "L", BODY)  # the same id imports cleanly afterwards
    assert [m.id for m in await store.list_layers("s")] == [*before, "L"]


async def test_a_finished_layer_is_never_overwritten(harness: Harness) -> None:
    store = harness.store
    await import_whole(store, "L", BODY)
    points = await store.load_points("L")
    with pytest.raises(StoreError, match="exists already"):  # refused at once, by both stores
        await store.begin_import("L", "s")
    await store.abort_import("L")
    assert await store.get_layer("s", "L") == meta("L", 5000)
    assert await store.load_points("L") == points


async def test_delete_removes_everything_and_only_on_its_slide(harness: Harness) -> None:
    store = harness.store
    await import_whole(store, "L", BODY)
    await import_whole(store, "M", BODY)
    assert not await store.delete_layer("other-slide", "L")
    assert await store.get_layer("s", "L") is not None
    assert await store.delete_layer("s", "L")
    assert await nothing_of(store, "L")
    assert await asyncio.to_thread(lambda: list(store.read_chunks("L"))) == []
    assert await store.load_shapes("L", [0, 1, 2]) == {}
    assert not await store.delete_layer("s", "L")
    assert [m.id for m in await store.list_layers("s")] == ["M"]
    assert sum(r.count for r in await store.load_points("M")) == 5000


async def test_a_cell_takes_far_under_150_bytes(harness: Harness) -> None:
    """60,000 cells (8-vertex outline + nucleus) in random order: blobs and rows, and what the
    database takes on disk (the SQLite file; PostgreSQL's pg_total_relation_size of the layer
    tables, TOAST and indexes included), at most 150 bytes a cell."""
    n = 60_000
    empty = await harness.disk_bytes()
    await import_whole(harness.store, "L", b"".join(export_pieces(n, box=(5000, 5000, 15_000, 15_000))))
    assert await harness.store.stored_bytes("L") / n <= 100
    on_disk = (await harness.disk_bytes() - empty) / n
    print(f"\n{on_disk:.1f} bytes a cell on disk")
    assert on_disk <= 150, on_disk


# --- PostgreSQL: several nodes on one database ----------------------------------------------------


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database("collab_layers") as url:
        yield url


async def test_nodes_migrate_together_and_import_at_once(pg_url: str) -> None:
    stores = [PostgresLayerStore(pg_url) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))  # an empty database, migrated once
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM layer_schema_version") == 1
        finally:
            await conn.close()
        await asyncio.gather(*(import_whole(s, f"L{i}", BODY) for i, s in enumerate(stores)))
        for s in stores:
            assert sorted(m.id for m in await s.list_layers("s")) == ["L0", "L1", "L2"]
        assert await stores[2].delete_layer("s", "L0")
        assert await nothing_of(stores[0], "L0")
    finally:
        for s in stores:
            await s.close()


async def test_read_chunks_of_a_layer_deleted_meanwhile_reads_it_whole(pg_url: str) -> None:
    """An export reads one snapshot: a delete committed while it reads does not cut it short."""
    store = PostgresLayerStore(pg_url)
    await store.open()
    try:
        await import_whole(store, "L", b"".join(export_pieces(40_000, box=(0, 0, 20_000, 20_000))))
        rows = await store.load_points("L")
        reader = store.read_chunks("L")
        first = await asyncio.to_thread(next, reader)
        assert await store.delete_layer("s", "L")
        rest = await asyncio.to_thread(list, reader)
        assert [first[0]] + [c for c, _p, _s in rest] == [r.count for r in rows]
    finally:
        await store.close()


# --- upgrading: layers kept in <data>/layers.sqlite3 move into PostgreSQL -------------------------


async def test_layers_of_the_sqlite_file_are_copied_into_postgresql_once(pg_url: str, tmp_path: Path) -> None:
    """A node that kept its layers in layers.sqlite3 before, now on PostgreSQL: its published
    layers are copied chunk for chunk (an unfinished import is not), a second copy (another node,
    a run cut midway) skips them, and the file is renamed so the next start does nothing."""
    path = tmp_path / "layers.sqlite3"
    old = SqliteLayerStore(path)
    await old.open()
    await import_whole(old, "A", BODY)
    await import_whole(old, "B", b"".join(export_pieces(20_000, box=(0, 0, 20_000, 20_000))), slide="t")
    await old.begin_import("cut", "s")  # never finished: not a layer
    before = {lid: (await old.list_layers(s), await old.load_points(lid), list(old.read_chunks(lid)))
              for lid, s in (("A", "s"), ("B", "t"))}
    await old.close()
    store = PostgresLayerStore(pg_url)
    await store.open()
    try:
        assert await adopt_sqlite_layers(path, store) == (2, 0)
        for lid, s in (("A", "s"), ("B", "t")):
            metas, points, chunks = before[lid]
            assert await store.list_layers(s) == metas
            assert await store.load_points(lid) == points
            assert await asyncio.to_thread(list, store.read_chunks(lid)) == chunks
        assert not path.exists() and (tmp_path / "layers.sqlite3.migrated").exists()
        assert await adopt_sqlite_layers(path, store) == (0, 0)  # renamed: nothing to do
        (tmp_path / "layers.sqlite3.migrated").rename(path)  # another node's copy of the same file
        assert await adopt_sqlite_layers(path, store) == (0, 2)
        assert [m.id for m in await store.list_layers("s")] == ["A"]
    finally:
        await store.close()


async def test_a_delete_whose_connection_dropped_is_retried_and_answers_deleted(pg_url: str) -> None:
    """The pool's connections are cut by the server (a failover, say): the delete is retried on
    a fresh one and answers True; a retry finding the layer gone answers True too (the first
    attempt may have committed and lost its reply)."""
    store = PostgresLayerStore(pg_url, pool_size=1)
    await store.open()
    try:
        await import_whole(store, "L", BODY)
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await admin.close()
        assert await store.delete_layer("s", "L")
        assert await nothing_of(store, "L")
        assert not await store.delete_layer("s", "L")  # no retry: gone before, not deleted now
    finally:
        await store.close()

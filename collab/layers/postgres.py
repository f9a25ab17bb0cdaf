"""PostgresLayerStore: detection layers in the shared PostgreSQL database, for several nodes.

Tables of their own beside the live store's, `layers` and `layer_chunks`, with a schema version
of their own, migrated under an advisory lock as collab/store/postgres.py does. One row per
chunk: its tile, the bounding box of its centroids, and two `bytea` blobs (codec.py) stored out
of line as they are (STORAGE EXTERNAL: shapes are zlib already; TOAST compression would spend
CPU on every write for nothing).

An import streams its pieces into a temporary table on a connection of its own: nobody else sees
them, they are not WAL-logged, and an import cut in any way (an error, a cancelled request, the
node killed) leaves nothing, since a temporary table goes with its session. finish_import
regroups the pieces of each tile (regroup.py) and inserts the chunks and the layer's row in one
transaction: a layer is listed, and its chunks readable, from that commit on. No row marks an
import in progress, so a node starting never has to guess whether another node's import is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from collab.errors import StoreError
from collab.layers.qupath import Chunk
from collab.layers.regroup import Piece, TileGroups, merge_pieces
from collab.layers.store import LayerMeta, PointsRow, meta_from_json, meta_json
from collab.store.postgres import ERRORS, close_pool, migrate, open_pool, run_twice

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE layers (
            id TEXT PRIMARY KEY,
            slide_id TEXT NOT NULL,
            listed BIGINT GENERATED ALWAYS AS IDENTITY,  -- the listing's order: publication
            meta BYTEA NOT NULL                          -- JSON of LayerMeta
        )""",
        "CREATE INDEX layers_slide ON layers (slide_id, listed)",
        """CREATE TABLE layer_chunks (
            layer_id TEXT NOT NULL REFERENCES layers (id) ON DELETE CASCADE,
            chunk INTEGER NOT NULL,
            tx INTEGER NOT NULL, ty INTEGER NOT NULL,
            count INTEGER NOT NULL,
            x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,  -- float32 centroids
            points BYTEA NOT NULL,
            shapes BYTEA NOT NULL,
            PRIMARY KEY (layer_id, chunk)
        )""",
        "ALTER TABLE layer_chunks ALTER COLUMN points SET STORAGE EXTERNAL,"
        " ALTER COLUMN shapes SET STORAGE EXTERNAL",
    ),
]

SCHEMA_VERSION = len(_MIGRATIONS)
# Not the live store's key (collab/store/postgres.py): the two migrate independently.
MIGRATION_LOCK = 0x636F6C6C61624C  # "collabL"

POOL_SIZE = 4  # connections for reads and deletes; each import has one of its own besides
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 120.0  # a statement of a large import's finish copies megabytes
COPY_BYTES = 4 << 20  # merged chunks are copied to the table about this many bytes at a time
FETCH_ROWS = 16  # chunks per fetch of a cursor (memory stays bounded: a few MB)

_PIECES = """CREATE TEMPORARY TABLE import_pieces (
    piece INTEGER NOT NULL, tx INTEGER NOT NULL, ty INTEGER NOT NULL, count INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    points BYTEA NOT NULL, shapes BYTEA NOT NULL
);
ALTER TABLE import_pieces ALTER COLUMN points SET STORAGE EXTERNAL, ALTER COLUMN shapes SET STORAGE EXTERNAL"""
_PIECE_COLUMNS = ["piece", "tx", "ty", "count", "x0", "y0", "x1", "y1", "points", "shapes"]
_CHUNK_COLUMNS = ["layer_id", "chunk", "tx", "ty", "count", "x0", "y0", "x1", "y1", "points", "shapes"]

# InternalClientError: what the next operation on a pooled connection the server just cut may
# raise ("another operation is in progress": asyncpg is still handling the termination).


@dataclass(slots=True)
class _Import:
    conn: asyncpg.Connection
    pieces: int = 0


class PostgresLayerStore:
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._imports: dict[str, _Import] = {}

    async def open(self) -> None:
        if self._pool is not None:
            raise StoreError("the layer store is already open")
        self._pool = await open_pool(self._url, max_size=self._pool_size, command_timeout=COMMAND_TIMEOUT,
                                     migrate=_migrate, what=" for layers")

    async def close(self) -> None:
        for layer_id in list(self._imports):
            await self.abort_import(layer_id)
        pool, self._pool = self._pool, None
        await close_pool(pool)

    async def _run(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `read` on a pooled connection; once more on a fresh one if the database dropped it."""
        if self._pool is None:
            raise StoreError("the layer store is not open")
        return await run_twice(self._pool, read, "PostgreSQL layer store failed")

    # -- imports ---------------------------------------------------------------------------

    async def begin_import(self, layer_id: str, slide_id: str) -> None:
        if self._pool is None:
            raise StoreError("the layer store is not open")
        if layer_id in self._imports:
            raise StoreError(f"layer {layer_id} is already being imported")
        if await self._run(lambda c: c.fetchval("SELECT 1 FROM layers WHERE id = $1", layer_id)) is not None:
            raise StoreError(f"layer {layer_id} exists already")
        try:
            conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
        except ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL for an import: {exc}") from exc
        try:
            await conn.execute(_PIECES)
        except BaseException:
            conn.terminate()
            raise
        self._imports[layer_id] = _Import(conn)

    def _import(self, layer_id: str) -> _Import:
        found = self._imports.get(layer_id)
        if found is None:
            raise StoreError(f"no import of layer {layer_id} in progress")
        return found

    async def add_chunks(self, layer_id: str, chunks: Iterable[Chunk]) -> None:
        imp = self._import(layer_id)
        rows = []
        for chunk in chunks:
            rows.append((imp.pieces, *chunk.tile, chunk.count, *chunk.bbox, chunk.points, chunk.shapes))
            imp.pieces += 1
        if rows:
            try:
                await imp.conn.copy_records_to_table("import_pieces", records=rows, columns=_PIECE_COLUMNS)
            except ERRORS as exc:
                raise StoreError(f"storing a layer import failed: {type(exc).__name__}: {exc}") from exc

    async def finish_import(self, meta: LayerMeta) -> None:
        imp = self._import(meta.id)
        conn = imp.conn
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO layers (id, slide_id, meta) VALUES ($1, $2, $3)",
                                   meta.id, meta.slide_id, meta_json(meta))
                await self._regroup_into_chunks(conn, meta.id)
        except ERRORS as exc:
            raise StoreError(f"publishing a layer failed: {type(exc).__name__}: {exc}") from exc
        finally:
            await self._end_import(meta.id)

    @staticmethod
    async def _regroup_into_chunks(conn: asyncpg.Connection, layer_id: str) -> None:
        """The import's pieces, tile by tile, merged (regroup.py) and copied to layer_chunks,
        numbered in tile order. A cursor reads them a few at a time and the merged chunks are
        copied a few megabytes at a time: memory stays bounded whatever the layer's size."""
        cursor = await conn.cursor(
            "SELECT tx, ty, count, x0, y0, x1, y1, points, shapes FROM import_pieces ORDER BY tx, ty, piece"
        )
        grouper: TileGroups[Piece] = TileGroups()
        out: list[tuple[Any, ...]] = []
        out_bytes = 0

        async def merged(tile: tuple[int, int], pieces: list[Piece]) -> None:
            nonlocal out_bytes
            # Merging is zlib work: off the event loop.
            chunk = await asyncio.to_thread(merge_pieces, pieces) if len(pieces) > 1 else pieces[0]
            out.append((layer_id, next(numbers), *tile, chunk.count, *chunk.bbox, chunk.points, chunk.shapes))
            out_bytes += len(chunk.points) + len(chunk.shapes)

        async def copy() -> None:
            nonlocal out_bytes
            if out:
                await conn.copy_records_to_table("layer_chunks", records=out, columns=_CHUNK_COLUMNS)
                out.clear()
                out_bytes = 0

        numbers = itertools.count()
        tile = None
        while rows := await cursor.fetch(FETCH_ROWS):
            for r in rows:
                piece = Piece(r[2], (r[3], r[4], r[5], r[6]), r[7], r[8])
                closed = grouper.add((r[0], r[1]), r[2], piece)
                if closed:
                    await merged(tile, closed)  # the tile of the pieces before this one
                tile = (r[0], r[1])
            if out_bytes >= COPY_BYTES:
                await copy()
        last = grouper.last()
        if last:
            await merged(tile, last)
        await copy()

    async def abort_import(self, layer_id: str) -> None:
        await self._end_import(layer_id)

    async def _end_import(self, layer_id: str) -> None:
        """Close the import's connection: its temporary table (every piece) goes with it."""
        imp = self._imports.pop(layer_id, None)
        if imp is None:
            return
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await imp.conn.close()
        except Exception:
            imp.conn.terminate()

    async def adopt_layer(self, meta: LayerMeta, chunk_rows: Iterator[list[tuple[Any, ...]]]) -> bool:
        """Publish a layer whose chunks are packed already (rows of layer_chunks, a list at a time,
        from a blocking iterator stepped in a worker thread), in one transaction; False, and
        nothing written, when a layer of that id exists (adopt.py: copies from a SQLite file)."""
        if self._pool is None:
            raise StoreError("the layer store is not open")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                inserted = await conn.fetchval(
                    "INSERT INTO layers (id, slide_id, meta) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING"
                    " RETURNING 1", meta.id, meta.slide_id, meta_json(meta))
                if inserted is None:
                    return False
                while rows := await asyncio.to_thread(next, chunk_rows, None):
                    await conn.copy_records_to_table("layer_chunks", records=rows, columns=_CHUNK_COLUMNS)
                return True
        except ERRORS as exc:
            raise StoreError(f"copying a layer into PostgreSQL failed: {type(exc).__name__}: {exc}") from exc
        finally:
            close = getattr(chunk_rows, "close", None)
            if close is not None:
                await asyncio.to_thread(close)

    # -- reads and deletes -----------------------------------------------------------------

    async def list_layers(self, slide_id: str) -> list[LayerMeta]:
        rows = await self._run(lambda c: c.fetch("SELECT meta FROM layers WHERE slide_id = $1 ORDER BY listed",
                                                  slide_id))
        return [meta_from_json(r[0]) for r in rows]

    async def get_layer(self, slide_id: str, layer_id: str) -> LayerMeta | None:
        raw = await self._run(lambda c: c.fetchval("SELECT meta FROM layers WHERE id = $1 AND slide_id = $2",
                                                    layer_id, slide_id))
        return meta_from_json(raw) if raw is not None else None

    async def delete_layer(self, slide_id: str, layer_id: str) -> bool:
        # Its chunks go with it (ON DELETE CASCADE), in the same statement's transaction.
        attempts = 0

        async def delete(conn: asyncpg.Connection) -> bool:
            nonlocal attempts
            attempts += 1
            deleted = await conn.fetchval(
                "DELETE FROM layers WHERE id = $1 AND slide_id = $2 RETURNING 1", layer_id, slide_id)
            # A retry (_run: the connection dropped) that finds nothing: the first attempt may have
            # committed and lost its reply. Gone is what was asked: deleted (announced, 200).
            return deleted is not None or attempts > 1

        return await self._run(delete)

    async def load_points(self, layer_id: str) -> list[PointsRow]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT chunk, count, x0, y0, x1, y1, points FROM layer_chunks WHERE layer_id = $1 ORDER BY chunk",
            layer_id))
        return [PointsRow(r[0], r[1], (r[2], r[3], r[4], r[5]), r[6]) for r in rows]

    async def load_shapes(self, layer_id: str, chunks: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted(set(chunks))
        rows = await self._run(lambda c: c.fetch(
            "SELECT chunk, shapes FROM layer_chunks WHERE layer_id = $1 AND chunk = ANY($2::integer[])",
            layer_id, wanted))
        return {r[0]: r[1] for r in rows}

    def read_chunks(self, layer_id: str) -> Iterator[tuple[int, bytes, bytes]]:
        # In the caller's (worker) thread: an event loop and a connection of its own, so the
        # server's loop never decodes an export's megabytes. One repeatable-read transaction
        # reads one snapshot (a layer deleted meanwhile is still read whole); a cursor steps
        # through the chunks a few at a time. Called on a thread running a loop, it raises.
        loop = asyncio.new_event_loop()
        try:
            try:
                conn = loop.run_until_complete(
                    asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT))
            except ERRORS as exc:
                raise StoreError(f"cannot connect to PostgreSQL to read a layer: {exc}") from exc
            try:
                loop.run_until_complete(conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                cursor = loop.run_until_complete(conn.cursor(
                    "SELECT count, points, shapes FROM layer_chunks WHERE layer_id = $1 ORDER BY chunk", layer_id))
                while rows := loop.run_until_complete(cursor.fetch(FETCH_ROWS)):
                    for r in rows:
                        yield r[0], r[1], r[2]
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(conn.close(timeout=CONNECT_TIMEOUT))
        finally:
            loop.close()

    async def stored_bytes(self, layer_id: str) -> int:
        value = await self._run(lambda c: c.fetchval(
            "SELECT coalesce(sum(octet_length(points) + octet_length(shapes) + 64), 0) FROM layer_chunks"
            " WHERE layer_id = $1", layer_id))
        return int(value)


async def _migrate(conn: asyncpg.Connection) -> None:
    await migrate(conn, lock=MIGRATION_LOCK, table="layer_schema_version", migrations=_MIGRATIONS,
                  what="layer tables")

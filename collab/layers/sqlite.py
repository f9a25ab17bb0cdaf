"""SqliteLayerStore: detection layers in their own SQLite file, `<data>/layers.sqlite3`.

A file of its own keeps the bulk of an import (hundreds of megabytes) out of the live store's
WAL and its group commits. One row per chunk: the tile it belongs to, the bounding box of its
centroids, and two blobs (codec.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiosqlite

from collab.errors import StoreError
from collab.layers.qupath import Chunk
from collab.layers.regroup import Piece, TileGroups, merge_pieces
from collab.layers.store import LayerMeta, PointsRow, meta_from_json, meta_json

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS layers (
    id TEXT PRIMARY KEY,
    slide_id TEXT NOT NULL,
    state TEXT NOT NULL,            -- importing | ready
    meta BLOB                       -- JSON of LayerMeta once ready
);
CREATE INDEX IF NOT EXISTS layers_slide ON layers (slide_id, state);
CREATE TABLE IF NOT EXISTS chunks (
    layer_id TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    tx INTEGER NOT NULL, ty INTEGER NOT NULL,
    count INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    points BLOB NOT NULL,
    shapes BLOB NOT NULL,
    PRIMARY KEY (layer_id, chunk)
);
CREATE INDEX IF NOT EXISTS chunks_tile ON chunks (layer_id, tx, ty);
"""


class SqliteLayerStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._next_chunk: dict[str, int] = {}

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the layer store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Imports publish in one transaction of a few seconds (finish_import): writers wait.
        self._db = await aiosqlite.connect(self.path, timeout=60)
        # An import writes its pieces, then regroups them: give the freed pages back to the
        # file system (set when the file is created; takes effect only then).
        await self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        # An import cut by a crash left chunks of an unpublished layer: they are nobody's.
        cursor = await self._db.execute("SELECT id FROM layers WHERE state = 'importing'")
        stale = [row[0] for row in await cursor.fetchall()]
        for layer_id in stale:
            await self._delete(layer_id)
        await self._db.commit()
        if stale:
            log.warning("dropped %d unfinished layer imports", len(stale), extra={"layers": stale})

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def begin_import(self, layer_id: str, slide_id: str) -> None:
        try:
            await self.db.execute(
                "INSERT INTO layers (id, slide_id, state) VALUES (?, ?, 'importing')", (layer_id, slide_id)
            )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"layer {layer_id} exists already, or is being imported") from exc
        await self.db.commit()
        self._next_chunk[layer_id] = 0

    async def add_chunks(self, layer_id: str, chunks: Iterable[Chunk]) -> None:
        rows = []
        for chunk in chunks:
            number = self._next_chunk[layer_id]
            self._next_chunk[layer_id] = number + 1
            rows.append((layer_id, number, *chunk.tile, chunk.count, *chunk.bbox, chunk.points, chunk.shapes))
        if rows:
            await self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            await self.db.commit()

    async def finish_import(self, meta: LayerMeta) -> None:
        try:
            # One transaction on a connection of its own, in a worker thread: regrouping a
            # million cells is thousands of statements, each a thread hop through aiosqlite.
            await asyncio.to_thread(self._finish, meta)
        finally:
            self._next_chunk.pop(meta.id, None)

    def _finish(self, meta: LayerMeta) -> None:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:
                self._regroup(db, meta.id)
                db.execute("UPDATE layers SET state = 'ready', meta = ? WHERE id = ?", (meta_json(meta), meta.id))
            db.executescript("PRAGMA incremental_vacuum;")  # stepped to the end (execute steps once: one page)
        finally:
            db.close()

    @staticmethod
    def _regroup(db: sqlite3.Connection, layer_id: str) -> None:
        """Pieces of one tile written at different times become chunks of up to
        MERGED_CHUNK_MAX objects (regroup.py); a merged chunk keeps its first piece's number."""
        pieces = db.execute(
            "SELECT tx, ty, chunk, count FROM chunks WHERE layer_id = ? ORDER BY tx, ty, chunk", (layer_id,)
        ).fetchall()
        grouper: TileGroups[int] = TileGroups()
        groups: list[list[int]] = []
        for tx, ty, chunk, count in pieces:
            closed = grouper.add((tx, ty), count, chunk)
            if closed:
                groups.append(closed)
        last = grouper.last()
        if last:
            groups.append(last)
        merged: list[tuple[str, int]] = []
        for numbers in groups:
            if len(numbers) < 2:
                continue
            marks = ",".join("?" * len(numbers))
            rows = db.execute(
                f"SELECT count, x0, y0, x1, y1, points, shapes FROM chunks"
                f" WHERE layer_id = ? AND chunk IN ({marks}) ORDER BY chunk", (layer_id, *numbers),
            ).fetchall()
            chunk = merge_pieces([Piece(r[0], (r[1], r[2], r[3], r[4]), r[5], r[6]) for r in rows])
            db.execute(
                "UPDATE chunks SET count = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, points = ?, shapes = ?"
                " WHERE layer_id = ? AND chunk = ?",
                (chunk.count, *chunk.bbox, chunk.points, chunk.shapes, layer_id, numbers[0]),
            )
            merged.extend((layer_id, k) for k in numbers[1:])
        db.executemany("DELETE FROM chunks WHERE layer_id = ? AND chunk = ?", merged)

    async def abort_import(self, layer_id: str) -> None:
        self._next_chunk.pop(layer_id, None)
        # Only an import in progress: a published layer of that id (a second import under an id
        # already taken fails at begin_import) is not the aborted import's to remove.
        cursor = await self.db.execute("SELECT 1 FROM layers WHERE id = ? AND state = 'importing'", (layer_id,))
        if await cursor.fetchone() is not None:
            await self._delete(layer_id)
            await self.db.commit()

    async def _delete(self, layer_id: str) -> None:
        await self.db.execute("DELETE FROM chunks WHERE layer_id = ?", (layer_id,))
        await self.db.execute("DELETE FROM layers WHERE id = ?", (layer_id,))

    async def list_layers(self, slide_id: str) -> list[LayerMeta]:
        cursor = await self.db.execute(
            "SELECT meta FROM layers WHERE slide_id = ? AND state = 'ready' ORDER BY rowid", (slide_id,)
        )
        return [meta_from_json(row[0]) for row in await cursor.fetchall()]

    async def get_layer(self, slide_id: str, layer_id: str) -> LayerMeta | None:
        cursor = await self.db.execute(
            "SELECT meta FROM layers WHERE id = ? AND slide_id = ? AND state = 'ready'", (layer_id, slide_id)
        )
        row = await cursor.fetchone()
        return meta_from_json(row[0]) if row else None

    async def delete_layer(self, slide_id: str, layer_id: str) -> bool:
        cursor = await self.db.execute(
            "SELECT 1 FROM layers WHERE id = ? AND slide_id = ? AND state = 'ready'", (layer_id, slide_id)
        )
        if await cursor.fetchone() is None:
            return False
        await self._delete(layer_id)
        await self.db.commit()
        await self.db.executescript("PRAGMA incremental_vacuum;")  # stepped to the end (execute frees one page)
        return True

    async def load_points(self, layer_id: str) -> list[PointsRow]:
        cursor = await self.db.execute(
            "SELECT chunk, count, x0, y0, x1, y1, points FROM chunks WHERE layer_id = ? ORDER BY chunk",
            (layer_id,),
        )
        return [PointsRow(r[0], r[1], (r[2], r[3], r[4], r[5]), r[6]) for r in await cursor.fetchall()]

    async def load_shapes(self, layer_id: str, chunks: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted(set(chunks))
        out: dict[int, bytes] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            cursor = await self.db.execute(
                f"SELECT chunk, shapes FROM chunks WHERE layer_id = ? AND chunk IN ({marks})", (layer_id, *part)
            )
            out.update({r[0]: r[1] for r in await cursor.fetchall()})
        return out

    def read_chunks(self, layer_id: str) -> Iterator[tuple[int, bytes, bytes]]:
        # A connection of its own, in the caller's (worker) thread: a million cells are hundreds
        # of chunks, each a thread hop through aiosqlite. One SELECT reads one snapshot (WAL), so
        # a layer deleted meanwhile is still read whole; rows are stepped, never all in memory.
        db = sqlite3.connect(self.path, timeout=60)
        try:
            yield from db.execute(
                "SELECT count, points, shapes FROM chunks WHERE layer_id = ? ORDER BY chunk", (layer_id,)
            )
        finally:
            db.close()

    async def stored_bytes(self, layer_id: str) -> int:
        cursor = await self.db.execute(
            "SELECT coalesce(sum(length(points) + length(shapes) + 64), 0) FROM chunks WHERE layer_id = ?",
            (layer_id,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


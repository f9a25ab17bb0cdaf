"""Layers kept in `<data>/layers.sqlite3` moved into the PostgreSQL layer store, once, at startup.

Before the PostgreSQL layer store, every node kept its layers in that file even when its live
store was PostgreSQL. Such a node, upgraded, reads layers from PostgreSQL only: without this step
its layers would vanish, and a room loading would recount its outlines without them (stripping
their stored cell counts). The chunks are copied as they are (packed already: nothing is parsed
again), each layer in one transaction; a layer already in PostgreSQL (another node copied the same
file, or a run cut midway) is skipped. Once every layer is there the file is renamed
`layers.sqlite3.migrated`, so the next start does nothing and the copy stays for the operator.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collab.layers.postgres import PostgresLayerStore
from collab.layers.store import LayerMeta, meta_from_json

log = logging.getLogger(__name__)

MIGRATED_SUFFIX = ".migrated"
CHUNKS_PER_COPY = 16  # chunks read from the file and copied at a time (memory stays bounded)


async def adopt_sqlite_layers(path: Path, store: PostgresLayerStore) -> tuple[int, int]:
    """Copy the published layers of the SQLite file at `path` into `store`; rename the file once
    done. Answers (copied, skipped); (0, 0) when there is no file."""
    if not await asyncio.to_thread(path.exists):
        return 0, 0
    metas = await asyncio.to_thread(_published, path)
    copied = skipped = 0
    for meta in metas:
        if await store.adopt_layer(meta, _chunks(path, meta.id)):
            copied += 1
            log.info("layer copied from %s into PostgreSQL: %d objects", path.name, meta.count,
                     extra={"layer": meta.id, "slide_id": meta.slide_id})
        else:
            skipped += 1
    target = path.with_name(path.name + MIGRATED_SUFFIX)
    await asyncio.to_thread(_rename, path, target)
    log.warning("layers of %s moved into PostgreSQL: %d copied, %d already there; the file is now %s",
                path, copied, skipped, target.name)
    return copied, skipped


def _published(path: Path) -> list[LayerMeta]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "layers" not in tables:
            return []
        rows = db.execute("SELECT meta FROM layers WHERE state = 'ready' ORDER BY rowid").fetchall()
        return [meta_from_json(r[0]) for r in rows]
    finally:
        db.close()


def _chunks(path: Path, layer_id: str) -> Iterator[list[tuple[Any, ...]]]:
    """The layer's chunk rows, as layer_chunks takes them, a few at a time (blocking: the store
    steps it in a worker thread)."""
    # Stepped from whichever worker thread is free: the connection is used by one at a time.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, check_same_thread=False)
    try:
        cursor = db.execute("SELECT chunk, tx, ty, count, x0, y0, x1, y1, points, shapes FROM chunks"
                            " WHERE layer_id = ? ORDER BY chunk", (layer_id,))
        while rows := cursor.fetchmany(CHUNKS_PER_COPY):
            yield [(layer_id, *r) for r in rows]
    finally:
        db.close()


def _rename(path: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):  # the WAL files go with it, or SQLite would lose them
        part = path.with_name(path.name + suffix)
        if part.exists():
            part.rename(target.with_name(target.name + suffix))

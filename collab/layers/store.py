"""LayerStore: where detection layers live, as a seam of its own (bytes and metadata only).

A layer is immutable once imported: its objects are stored as chunks (packed blobs of one tile
of the slide, with the bounding box of their centroids), written while the import streams in
and published at its end in one step; an import that fails or is cut leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from collab.layers.qupath import Chunk

if TYPE_CHECKING:
    from collab.settings import Settings


@dataclass(frozen=True, slots=True)
class LayerMeta:
    """What the list of layers says of one."""

    id: str
    slide_id: str
    name: str
    created_ms: int
    count: int
    classes: list[dict[str, Any]]  # index -> {"name", "color"}
    class_counts: dict[str, int]
    skipped: dict[str, Any] = field(default_factory=dict)  # {"count", "reasons"}
    author: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "slide": self.slide_id, "created": self.created_ms,
            "author": self.author, "count": self.count, "classes": self.class_counts,
            "colors": {c["name"]: c["color"] for c in self.classes}, "skipped": self.skipped,
        }


def meta_json(meta: LayerMeta) -> bytes:
    """A layer's metadata as the stores keep it."""
    return orjson.dumps({
        "id": meta.id, "slide_id": meta.slide_id, "name": meta.name, "created_ms": meta.created_ms,
        "count": meta.count, "classes": meta.classes, "class_counts": meta.class_counts,
        "skipped": meta.skipped, "author": meta.author,
    })


def meta_from_json(raw: bytes) -> LayerMeta:
    return LayerMeta(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class PointsRow:
    """One chunk's point part, as the query index loads it."""

    chunk: int
    count: int
    bbox: tuple[float, float, float, float]
    points: bytes


class LayerStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def begin_import(self, layer_id: str, slide_id: str) -> None:
        """Reserve `layer_id`: its chunks may be added, it is listed only once finished. A
        `layer_id` published already, or being imported (through this store), is refused here
        (StoreError) and nothing changes; two nodes importing one id at once (PostgreSQL) are
        told at finish_import, where the second fails and leaves nothing. Ids are fresh UUIDs:
        in practice only a caller's mistake meets either."""

    async def add_chunks(self, layer_id: str, chunks: Iterable[Chunk]) -> None: ...

    async def finish_import(self, meta: LayerMeta) -> None:
        """Regroup the chunks of each tile into few, and publish the layer, in one transaction."""

    async def abort_import(self, layer_id: str) -> None: ...

    async def list_layers(self, slide_id: str) -> list[LayerMeta]: ...

    async def get_layer(self, slide_id: str, layer_id: str) -> LayerMeta | None: ...

    async def delete_layer(self, slide_id: str, layer_id: str) -> bool: ...

    async def load_points(self, layer_id: str) -> list[PointsRow]: ...

    async def load_shapes(self, layer_id: str, chunks: Iterable[int]) -> dict[int, bytes]: ...

    def read_chunks(self, layer_id: str) -> Iterator[tuple[int, bytes, bytes]]:
        """Every chunk of a layer as (count, points, shapes), in chunk order, one at a time.
        Blocking: iterate it in a worker thread (an export reads a whole layer this way)."""

    async def stored_bytes(self, layer_id: str) -> int:
        """Bytes of blobs and chunk rows the layer takes (benchmarks, the listing)."""


def create_layer_store(settings: Settings) -> LayerStore:
    """Where layers live: in PostgreSQL when the live store is there (the same database, tables of
    their own: every node sees every layer), else in `<data>/layers.sqlite3`. Not open yet."""
    from collab.store import is_postgres_url

    if settings.database_url is not None and is_postgres_url(settings.database_url):
        from collab.layers.postgres import PostgresLayerStore

        return PostgresLayerStore(settings.database_url)
    from collab.layers.sqlite import SqliteLayerStore

    return SqliteLayerStore(settings.data / "layers.sqlite3")

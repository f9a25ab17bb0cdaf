"""AnnotationCatalog: what the server knows of a slide's annotations, as the HTTP routes read it.

The guard (guard.py) keeps it current as the document changes; the routes only read it: the
annotations as Python records, the spatial index of the valid ones, and the slide's geometry
frame (size, microns per pixel) that checks and measurements use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pycrdt import Doc, Map

from collab.annotations.fields import Known, class_name, fingerprint, normalized, to_py
from collab.annotations.geometry import GeometryVerdict, check_geometry
from collab.annotations.spatial import SpatialIndex
from collab.gc_pause import paused_gc

log = logging.getLogger(__name__)


class AnnotationCatalog:
    def __init__(self, *, width: float, height: float, mpp: float | None, max_vertices: int) -> None:
        self.width = width
        self.height = height
        self.mpp = mpp
        self.max_vertices = max_vertices
        self.index = SpatialIndex()
        self.known: dict[str, Known] = {}
        self.annotations: Map | None = None  # the room's map, once attached
        self._indexed = asyncio.Event()

    def check(self, record: Any) -> GeometryVerdict:
        geometry = record.get("geometry") if isinstance(record, Mapping) else None
        return check_geometry(
            geometry, width=self.width, height=self.height, max_vertices=self.max_vertices, mpp=self.mpp
        )

    async def wait_indexed(self) -> None:
        """Spatial queries wait until the stored annotations of a reloaded room are indexed."""
        await self._indexed.wait()

    def mark_indexed(self) -> None:
        self._indexed.set()

    def records(self, ids: Iterable[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(id, record) per annotation, sorted by id unless `ids` gives an order. An annotation
        that cannot be read as JSON is left out and logged; it never hides the others."""
        annotations = self.annotations
        if annotations is None:
            return []
        keys = sorted(annotations.keys()) if ids is None else ids
        out = []
        for key in keys:
            try:
                value = to_py(annotations.get(key))
            except Exception:
                log.exception("annotation %s cannot be read", key)
                continue
            if value is None:
                continue
            out.append((key, normalized(value) if isinstance(value, dict) else {}))
        return out

    def is_invalid(self, key: str) -> bool:
        known = self.known.get(key)
        return (known is not None and known.status == "invalid") or key not in self.index

    def classification_of(self, key: str) -> str | None:
        known = self.known.get(key)
        return class_name(known.classification) if known else None


def read_stored(state: bytes) -> dict[str, tuple[Any, bytes]]:
    """In a worker thread: the annotations of a document state, with geometry fingerprints.
    A Doc of its own, so the room's Doc is never touched off the event loop. An annotation that
    cannot be read is logged and left out: it never hides the others."""
    with paused_gc():
        doc: Doc = Doc()
        doc.apply_update(state)
        out: dict[str, tuple[Any, bytes]] = {}
        for key, value in doc.get("annotations", type=Map).items():
            try:
                record = to_py(value)
                geometry = record.get("geometry") if isinstance(record, Mapping) else None
                out[key] = (record, fingerprint(geometry))
            except Exception:
                log.exception("stored annotation %s cannot be read", key)
        return out

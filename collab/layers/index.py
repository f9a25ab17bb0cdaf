"""LayerIndex: one layer's centroids and classes in memory, for box queries and counts.

14 bytes an object (a million cells: 14 MB), in chunk order, with per chunk its centroid
bounding box and its count per class. A count inside an outline takes the chunks the outline
wholly contains from their per-class counts, and tests only the centroids of the chunks its
edge crosses, with one vectorized Shapely call (QuPath's rule: a centroid inside the outline).
Immutable once built, so worker threads may read it while the event loop does too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from collab.layers.codec import concat_points, decode_points
from collab.layers.store import LayerMeta, PointsRow

# Chunks with fewer objects are always tested point by point (cheaper than the box test).
_WHOLE_CHUNK_MIN = 32


@dataclass(frozen=True, slots=True)
class Selection:
    """Objects of a query: positions in the index's arrays, and the chunks they come from."""

    rows: np.ndarray  # int64 positions
    chunks: np.ndarray  # the chunk number of each row


class LayerIndex:
    def __init__(self, meta: LayerMeta, rows: list[PointsRow]) -> None:
        self.meta = meta
        self.class_names = [c["name"] for c in meta.classes]
        parts = [decode_points(r.points) for r in rows]
        points = concat_points(parts)
        self.ids = points.ids
        self.classes = points.classes
        self.x = np.ascontiguousarray(points.xy[:, 0]).astype(np.float64)
        self.y = np.ascontiguousarray(points.xy[:, 1]).astype(np.float64)
        sizes = np.array([r.count for r in rows], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.chunk_numbers = np.array([r.chunk for r in rows], np.int64)
        self.bboxes = np.array([r.bbox for r in rows], np.float64).reshape(-1, 4)
        k = max(1, len(self.class_names))
        self.hist = np.zeros((len(rows), k), np.int64)
        for i, part in enumerate(parts):
            self.hist[i] = np.bincount(part.classes, minlength=k)[:k]
        self.chunk_of_row = np.repeat(self.chunk_numbers, sizes)
        self._chunk_position = {int(c): i for i, c in enumerate(self.chunk_numbers)}

    @property
    def id(self) -> str:
        return self.meta.id

    def __len__(self) -> int:
        return len(self.ids)

    def _chunks_touching(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        b = self.bboxes
        return np.nonzero((b[:, 2] >= x0) & (b[:, 0] <= x1) & (b[:, 3] >= y0) & (b[:, 1] <= y1))[0]

    def _rows_of(self, chunks: np.ndarray) -> np.ndarray:
        if len(chunks) == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(self.starts[c], self.starts[c + 1]) for c in chunks])

    def in_box(self, x0: float, y0: float, x1: float, y1: float) -> Selection:
        """Objects whose centroid lies in [x0, x1) x [y0, y1)."""
        rows = self._rows_of(self._chunks_touching(x0, y0, x1, y1))
        x, y = self.x[rows], self.y[rows]
        rows = rows[(x >= x0) & (x < x1) & (y >= y0) & (y < y1)]
        return Selection(rows, self.chunk_of_row[rows])

    def class_counts(self, rows: np.ndarray) -> dict[str, int]:
        counts = np.bincount(self.classes[rows], minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=False) if n}

    def count_inside(self, shape: Any) -> dict[str, Any]:
        """{"total", "classes"} of the objects whose centroid lies inside `shape` (a polygonal
        Shapely geometry); a centroid on the outline itself is outside, as in Shapely."""
        k = len(self.class_names)
        totals = np.zeros(max(1, k), np.int64)
        if shape is None or shape.is_empty or len(self.ids) == 0:
            return {"total": 0, "classes": {}}
        shapely.prepare(shape)
        chunks = self._chunks_touching(*shape.bounds)
        if len(chunks):
            b = self.bboxes[chunks]
            sizes = self.starts[chunks + 1] - self.starts[chunks]
            boxed = (sizes >= _WHOLE_CHUNK_MIN) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            whole = np.zeros(len(chunks), bool)
            if boxed.any():
                boxes = shapely.box(b[boxed, 0], b[boxed, 1], b[boxed, 2], b[boxed, 3])
                whole[boxed] = shapely.contains_properly(shape, boxes)
            totals += self.hist[chunks[whole]].sum(axis=0)
            rows = self._rows_of(chunks[~whole])
            inside = rows[shapely.contains_xy(shape, self.x[rows], self.y[rows])]
            totals += np.bincount(self.classes[inside], minlength=len(totals))[: len(totals)]
        classes = {name: int(n) for name, n in zip(self.class_names, totals, strict=False) if n}
        return {"total": int(totals.sum()), "classes": classes}

    def grid(self, sel: Selection, bbox: tuple[float, float, float, float], cells: int = 64) -> dict[str, Any]:
        """The objects of `sel` counted per square cell of a grid over `bbox`: each object in
        exactly one cell, so the counts add up to the selection."""
        x0, y0, x1, y1 = bbox
        size = max(1, int(np.ceil(max(x1 - x0, y1 - y0) / cells)))
        gx = np.floor((self.x[sel.rows] - x0) / size).astype(np.int64)
        gy = np.floor((self.y[sel.rows] - y0) / size).astype(np.int64)
        k = len(self.class_names)
        nx = int(gx.max()) + 1 if len(gx) else 0
        ny = int(gy.max()) + 1 if len(gy) else 0
        flat = (gy * nx + gx) * k + self.classes[sel.rows]
        counts = np.bincount(flat, minlength=nx * ny * k).reshape(ny, nx, k) if len(flat) else None
        out = []
        if counts is not None:
            for cy, cx in zip(*np.nonzero(counts.sum(axis=2)), strict=True):
                classes = {self.class_names[c]: int(n) for c, n in enumerate(counts[cy, cx]) if n}
                out.append({"x": x0 + int(cx) * size, "y": y0 + int(cy) * size, "classes": classes})
        return {"type": "grid", "bbox": list(bbox), "cell": size, "total": len(sel.rows), "counts": out}

    def chunk_span(self, chunk: int) -> tuple[int, int]:
        """Where a chunk's objects sit in the arrays."""
        position = self._chunk_position[chunk]
        return int(self.starts[position]), int(self.starts[position + 1])

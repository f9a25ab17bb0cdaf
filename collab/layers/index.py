"""LayerIndex: one layer's centroids and classes in memory, for box queries and counts.

14 bytes an object (a million cells: 14 MB), in chunk order, with per chunk its centroid
bounding box and its count per class. A count inside an outline takes the chunks the outline
wholly contains from their per-class counts; in the chunks its edge crosses, grid cells no
segment of the outline comes near are decided by their center, and only the centroids of the
other cells are tested, with Shapely, by strips of the clipped outline (QuPath's rule: a centroid
inside the outline).
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
# Past this many centroids to test, they are first grouped in cells of _CELL px (see _inside).
_CELL_TEST_MIN = 2000
_CELL = 128.0
_CELL_KEY = 1 << 24  # cell x * _CELL_KEY + cell y: slides are far narrower than 2**24 cells
_STRIP = 1024.0  # px: centroids near the outline are tested by strips this wide (_contains_by_strip)
_NEAR = 0.01  # px: rounding in cutting segments into pieces is far below this
# Past this many pieces (48 bytes each, ~10 arrays), centroids near the outline are all tested
# by strips instead of first sorting out the cells no segment comes near (_cells_near_boundary).
_MAX_PIECES = 100_000
# Relative to the largest coordinate: a point this close to a segment cut by a strip's side is
# tested against the whole outline (clipping rounds by a few ulps, 1e-16 relative, far below).
_ON_EDGE = 1e-9
_PAIR_BLOCK = 131_072  # point-segment distances computed at a time (~6 arrays of 8 bytes)
_PAIRS_MAX = 1_000_000  # past this many pairs (16 bytes each) in a strip, Shapely measures (~1.5 us a point)
_BATCH = 65_536  # points made into Shapely geometries at a time (~100 bytes each)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _classify_boxes(shape: Any, edge: Any, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For boxes (x0, y0, x1, y1): wholly inside `shape`'s interior, and wholly outside it.
    `edge` is the shape's boundary, prepared: a box that does not meet it lies on one side of
    it, which its center tells."""
    if not len(boxes):
        return np.zeros(0, bool), np.zeros(0, bool)
    crossed = shapely.intersects(edge, shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
    center_in = shapely.contains_xy(shape, (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2)
    return ~crossed & center_in, ~crossed & ~center_in


def _segments(shape: Any) -> tuple[np.ndarray, np.ndarray]:
    """The segments (from a, to b) of `shape`'s rings."""
    rings = shapely.get_parts(shape.boundary)
    coords = shapely.get_coordinates(rings)
    ends = np.cumsum(shapely.get_num_coordinates(rings))
    between = ends[:-1] - 1  # no segment from one ring's last vertex to the next one's first
    return np.delete(coords[:-1], between, axis=0), np.delete(coords[1:], between, axis=0)


def _clip_segments(a: np.ndarray, b: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the segments a -> b inside `box` (Liang-Barsky); segments missing it dropped."""
    d = b - a
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, (lo, hi) in enumerate(((box[0], box[2]), (box[1], box[3]))):
            enter, leave = (lo - a[:, axis]) / d[:, axis], (hi - a[:, axis]) / d[:, axis]
            flat = d[:, axis] == 0
            enter[flat] = np.where((a[flat, axis] >= lo) & (a[flat, axis] <= hi), -np.inf, np.inf)
            leave[flat] = np.inf
            t0 = np.maximum(t0, np.minimum(enter, leave))
            t1 = np.minimum(t1, np.maximum(enter, leave))
    keep = t0 <= t1
    return a[keep] + d[keep] * t0[keep, None], a[keep] + d[keep] * t1[keep, None]


def _segment_cells(a: np.ndarray, b: np.ndarray, size: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Keys (x * _CELL_KEY + y) of the grid cells of `size` px that the segments a -> b, widened
    by `margin` px, may touch, and the segment of each: a superset (each segment is cut into
    pieces no longer than a cell, and each piece's bounding box marks the up to 3 x 3 cells it
    covers). Cost: the number of pieces."""
    pieces = np.maximum(1, np.ceil(np.hypot(*(b - a).T) / size)).astype(np.int64)
    seg = np.repeat(np.arange(len(a)), pieces)
    j = np.arange(len(seg)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    step = (b - a)[seg] / pieces[seg, None]
    p0 = a[seg] + step * j[:, None]
    p1 = a[seg] + step * (j + 1)[:, None]
    lo = np.floor((np.minimum(p0, p1) - margin) / size).astype(np.int64)
    hi = np.floor((np.maximum(p0, p1) + margin) / size).astype(np.int64)
    keys, segs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for dx in range(3):
        for dy in range(3):
            ok = (lo[:, 0] + dx <= hi[:, 0]) & (lo[:, 1] + dy <= hi[:, 1])
            keys.append((lo[ok, 0] + dx) * _CELL_KEY + lo[ok, 1] + dy)
            segs.append(seg[ok])
    # A cell at y = -1 (an outline along the slide's top) shares its key with a cell 2**24 - 1
    # down the column before: no centroid is ever there, so nothing is miscounted.
    return np.concatenate(keys), np.concatenate(segs)


def _pieces(a: np.ndarray, b: np.ndarray, size: float) -> int:
    return int(np.maximum(1, np.ceil(np.hypot(*(b - a).T) / size)).sum())


def _cells_near_boundary(shape: Any, size: float, region: Box) -> np.ndarray | None:
    """Keys of the grid cells of `size` px in `region` that some segment of `shape`'s rings may
    touch (_segment_cells, each segment clipped to the region widened by a cell, margin _NEAR),
    so a cell of the region left out is certainly met by no segment. None past _MAX_PIECES
    pieces: memory and time stay bounded however long the outline (up to the vertex limit)."""
    x0, y0, x1, y1 = region
    a, b = _clip_segments(*_segments(shape), (x0 - size, y0 - size, x1 + size, y1 + size))
    if _pieces(a, b, size) > _MAX_PIECES:
        return None
    return np.unique(_segment_cells(a, b, size, _NEAR)[0])


def _near_segments(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Which points lie within `tolerance` (give or take rounding) of some segment a -> b. Only
    the pairs of a point and a segment that comes near its cell of _CELL px are measured,
    _PAIR_BLOCK at a time; past _MAX_PIECES pieces or _PAIRS_MAX pairs, Shapely measures."""
    if _pieces(a, b, _CELL) > _MAX_PIECES:
        return _near_segments_by_shapely(a, b, x, y, tolerance)
    cell_keys, cell_segs = _segment_cells(a, b, _CELL, _NEAR + tolerance)
    point_keys = np.floor(x / _CELL).astype(np.int64) * _CELL_KEY + np.floor(y / _CELL).astype(np.int64)
    by_key = np.argsort(point_keys)
    lo = np.searchsorted(point_keys[by_key], cell_keys, "left")
    n = np.searchsorted(point_keys[by_key], cell_keys, "right") - lo
    total = int(n.sum())
    if total > _PAIRS_MAX:
        return _near_segments_by_shapely(a, b, x, y, tolerance)
    seg = np.repeat(cell_segs, n)
    point = by_key[np.arange(total) - np.repeat(np.cumsum(n) - n - lo, n)]
    near = np.zeros(len(x), bool)
    for i in range(0, total, _PAIR_BLOCK):
        s, p = seg[i : i + _PAIR_BLOCK], point[i : i + _PAIR_BLOCK]
        d = b[s] - a[s]
        px, py = x[p] - a[s, 0], y[p] - a[s, 1]
        t = np.clip((px * d[:, 0] + py * d[:, 1]) / np.maximum((d**2).sum(axis=1), 1e-300), 0, 1)
        near[p[(px - t * d[:, 0]) ** 2 + (py - t * d[:, 1]) ** 2 <= tolerance**2]] = True
    return near


def _near_segments_by_shapely(
    a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, tolerance: float
) -> np.ndarray:
    lines = shapely.multilinestrings(shapely.linestrings(np.stack([a, b], axis=1)))
    shapely.prepare(lines)
    batches = range(0, len(x), _BATCH)
    points = (shapely.points(x[i : i + _BATCH], y[i : i + _BATCH]) for i in batches)
    return np.concatenate([shapely.dwithin(lines, p, tolerance) for p in points])


def _contains_by_strip(shape: Any, x: np.ndarray, y: np.ndarray, near_outline: bool = True) -> np.ndarray:
    """shapely.contains_xy, the points taken by vertical strips of _STRIP px, each against the
    outline clipped to its strip (widened by 1 px). A point test counts the outline's segments
    crossed by a ray from the point: a long wavy outline has many on every line, the part in a
    strip few. A point strictly inside the clipping rectangle is inside the clipped shape exactly
    when it is inside the outline, up to rounding: clipping rounds the points where slanted
    segments cross the strip's sides, so the points within _ON_EDGE of such a segment are tested
    against the whole outline (a point on it is outside, as in Shapely). Not needed for points
    known to lie away from the outline (`near_outline` False)."""
    if len(x) < _CELL_TEST_MIN:
        return shapely.contains_xy(shape, x, y)
    _x0, y0, _x1, y1 = shape.bounds
    tolerance = _ON_EDGE * max(1.0, *np.abs(shape.bounds))
    a, b = _segments(shape)
    seg_x0, seg_x1 = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    strip = np.floor(x / _STRIP).astype(np.int64)
    order = np.argsort(strip, kind="stable")
    starts = np.flatnonzero(np.diff(strip[order], prepend=strip[order[0]] - 1))
    result = np.zeros(len(x), bool)
    for i, j in zip(starts.tolist(), [*starts[1:].tolist(), len(x)], strict=True):
        rows = order[i:j]
        k = int(strip[rows[0]])
        left, right = k * _STRIP - 1, (k + 1) * _STRIP + 1
        part = shapely.clip_by_rect(shape, left, y0 - 1, right, y1 + 1)
        shapely.prepare(part)
        result[rows] = shapely.contains_xy(part, x[rows], y[rows])
        cut = ((seg_x0 <= left) & (left <= seg_x1)) | ((seg_x0 <= right) & (right <= seg_x1))
        if near_outline and cut.any():  # their parts in the strip, as the clipping cut them, but exact
            near = _near_segments(
                *_clip_segments(a[cut], b[cut], (left, y0 - 1, right, y1 + 1)), x[rows], y[rows], tolerance
            )
            rows = rows[near]
            result[rows] = shapely.contains_xy(shape, x[rows], y[rows])
    return result


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
        # float32 as stored (14 bytes an object in all); compared as float64, as the test expects.
        self.x = np.ascontiguousarray(points.xy[:, 0])
        self.y = np.ascontiguousarray(points.xy[:, 1])
        sizes = np.array([r.count for r in rows], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.chunk_numbers = np.array([r.chunk for r in rows], np.int64)
        self.bboxes = np.array([r.bbox for r in rows], np.float64).reshape(-1, 4)
        k = max(1, len(self.class_names))
        self.hist = np.zeros((len(rows), k), np.int64)
        for i, part in enumerate(parts):
            self.hist[i] = np.bincount(part.classes, minlength=k)[:k]
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
        x, y = self.x[rows].astype(np.float64), self.y[rows].astype(np.float64)
        rows = rows[(x >= x0) & (x < x1) & (y >= y0) & (y < y1)]
        return Selection(rows, self.chunk_numbers[np.searchsorted(self.starts, rows, side="right") - 1])

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
        edge = shape.boundary
        shapely.prepare(edge)
        chunks = self._chunks_touching(*shape.bounds)
        if len(chunks):
            # Whole chunks first: inside (their per-class counts) or outside (nothing).
            b = self.bboxes[chunks]
            sizes = self.starts[chunks + 1] - self.starts[chunks]
            boxed = np.flatnonzero((sizes >= _WHOLE_CHUNK_MIN) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))
            inside, outside = _classify_boxes(shape, edge, b[boxed])
            totals += self.hist[chunks[boxed[inside]]].sum(axis=0)
            crossing = np.ones(len(chunks), bool)
            crossing[boxed[inside | outside]] = False
            rows = self._rows_of(chunks[crossing])
            inside_rows = rows[self._inside(shape, rows)]
            totals += np.bincount(self.classes[inside_rows], minlength=len(totals))[: len(totals)]
        classes = {name: int(n) for name, n in zip(self.class_names, totals, strict=False) if n}
        return {"total": int(totals.sum()), "classes": classes}

    def _inside(self, shape: Any, rows: np.ndarray) -> np.ndarray:
        """Which of `rows` have their centroid inside `shape`. The chunks the outline crosses are
        cut again into cells of _CELL px: a cell no segment of the outline comes near is wholly
        inside or outside (its center tells), and only the centroids of the other cells are
        tested one by one."""
        x, y = self.x[rows].astype(np.float64), self.y[rows].astype(np.float64)
        if len(rows) < _CELL_TEST_MIN:
            return shapely.contains_xy(shape, x, y)
        gx = np.floor(x / _CELL).astype(np.int64)
        gy = np.floor(y / _CELL).astype(np.int64)
        keys, cell_of = np.unique(gx * _CELL_KEY + gy, return_inverse=True)
        near_keys = _cells_near_boundary(shape, _CELL, (x.min(), y.min(), x.max(), y.max()))
        if near_keys is None:  # an outline too long to sort out cells: every centroid tested
            return _contains_by_strip(shape, x, y)
        near = np.isin(keys, near_keys, assume_unique=True)
        far = np.flatnonzero(~near)
        cell_in = np.zeros(len(keys), bool)
        cx, cy = keys[far] // _CELL_KEY, keys[far] % _CELL_KEY
        cell_in[far] = _contains_by_strip(shape, (cx + 0.5) * _CELL, (cy + 0.5) * _CELL, near_outline=False)
        result = cell_in[cell_of]
        test = np.flatnonzero(near[cell_of])
        result[test] = _contains_by_strip(shape, x[test], y[test])
        return result

    def grid(self, sel: Selection, bbox: tuple[float, float, float, float], cells: int = 64) -> dict[str, Any]:
        """The objects of `sel` counted per square cell of a grid over `bbox`: each object in
        exactly one cell, so the counts add up to the selection."""
        x0, y0, x1, y1 = bbox
        size = max(1, int(np.ceil(max(x1 - x0, y1 - y0) / cells)))
        gx = np.floor((self.x[sel.rows].astype(np.float64) - x0) / size).astype(np.int64)
        gy = np.floor((self.y[sel.rows].astype(np.float64) - y0) / size).astype(np.int64)
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

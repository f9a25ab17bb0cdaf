"""Spatial index over one slide's annotations: a static STRtree plus a small delta.

An STRtree cannot change once built, and rebuilding one for 20,000 polygons on every edit
would stall the room. So the index answers from the last tree, skipping the ids changed
since it was built, plus a brute-force pass over the current shapes of those ids (the
delta). When the delta grows past ``delta_limit``, ``needs_rebuild`` says so and the owner
builds a new tree off the event loop (:meth:`SpatialIndex.refresh`) and installs it; edits
made meanwhile stay in the delta. No edit ever pays for a rebuild.

Only usable shapes belong here: the caller leaves invalid annotations out.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely import STRtree

__all__ = ["DEFAULT_POINT_TOLERANCE", "SpatialIndex", "TreeSnapshot", "build_tree"]

# How close (level-0 pixels) a click must come to a point or line annotation to hit it.
DEFAULT_POINT_TOLERANCE = 2.0
# Below this many changed ids the brute-force delta pass costs less than a rebuild, and
# stays well under a millisecond per query even for 500-vertex polygons.
MIN_DELTA_LIMIT = 256


@dataclass(frozen=True, slots=True, eq=False)
class TreeSnapshot:
    """An STRtree over the index as it was at ``version``; immutable, so thread-safe."""

    version: int
    ids: np.ndarray  # tree position -> annotation id (object array of str)
    geoms: np.ndarray  # tree position -> shapely geometry
    areal: np.ndarray  # tree position -> is a (Multi)Polygon
    tree: STRtree


def build_tree(items: Sequence[tuple[str, shapely.Geometry]], version: int) -> TreeSnapshot:
    """Build a tree from ``(id, shape)`` pairs. Pure and slow: run it in a worker thread."""
    ids = np.empty(len(items), dtype=object)
    geoms = np.empty(len(items), dtype=object)
    for i, (key, shape) in enumerate(items):
        ids[i] = key
        geoms[i] = shape
    areal = shapely.get_dimensions(geoms) == 2 if len(items) else np.zeros(0, dtype=bool)
    tree = STRtree(geoms)
    # GEOS builds the tree on its first query: do that here, not on the event loop.
    tree.query(shapely.Point(0, 0))
    return TreeSnapshot(version, ids, geoms, areal, tree)


class SpatialIndex:
    """Annotation id -> shapely geometry, with bbox, point and per-class statistics queries."""

    def __init__(
        self,
        items: Iterable[tuple[str, shapely.Geometry]] = (),
        *,
        min_delta_limit: int = MIN_DELTA_LIMIT,
    ) -> None:
        self._shapes: dict[str, shapely.Geometry] = {
            key: shape for key, shape in items if _usable(shape)
        }
        self._min_delta_limit = min_delta_limit
        self._version = 0
        self._tree = build_tree(list(self._shapes.items()), 0)
        # Ids changed since the tree was built, with the version of their last change:
        # their tree entries are stale, and their current shapes (if any) form the delta.
        self._touched: dict[str, int] = {}
        self._delta: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # cache
        self._refreshing = False

    # --- contents --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, key: object) -> bool:
        return key in self._shapes

    def get(self, key: str) -> shapely.Geometry | None:
        return self._shapes.get(key)

    def upsert(self, key: str, shape: shapely.Geometry | None) -> None:
        """Add or replace one annotation's shape; None or empty removes it. O(1)."""
        if not _usable(shape):
            self.remove(key)
            return
        current = self._shapes.get(key)
        # A re-check after a classification or comment edit hands back an equal shape:
        # keep it out of the delta.
        if current is not None and (
            current is shape or shapely.equals_exact(current, shape, tolerance=0)
        ):
            return
        self._shapes[key] = shape
        self._touch(key)

    def remove(self, key: str) -> None:
        if self._shapes.pop(key, None) is not None:
            self._touch(key)

    def _touch(self, key: str) -> None:
        self._version += 1
        self._touched[key] = self._version
        self._delta = None

    # --- rebuilding ------------------------------------------------------------------------

    @property
    def delta_size(self) -> int:
        """Ids changed since the tree was built (each costs a little on every query)."""
        return len(self._touched)

    @property
    def delta_limit(self) -> int:
        return max(self._min_delta_limit, math.isqrt(len(self._shapes)))

    @property
    def needs_rebuild(self) -> bool:
        return len(self._touched) >= self.delta_limit

    def snapshot(self) -> tuple[list[tuple[str, shapely.Geometry]], int]:
        """The items and version to hand to :func:`build_tree` in a worker thread."""
        return list(self._shapes.items()), self._version

    def install(self, tree: TreeSnapshot) -> bool:
        """Use a tree built from an earlier :meth:`snapshot`; False if an installed tree is newer.

        Ids changed after the snapshot keep their delta entries, so nothing is lost.
        """
        if tree.version < self._tree.version:
            return False
        self._tree = tree
        self._touched = {k: v for k, v in self._touched.items() if v > tree.version}
        self._delta = None
        return True

    def rebuild(self) -> None:
        """Rebuild synchronously (after a bulk load; tests). The hot path uses refresh()."""
        self.install(build_tree(*self.snapshot()))

    async def refresh(self) -> None:
        """Rebuild the tree in a worker thread and install it; no-op if one is under way."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            items, version = self.snapshot()
            self.install(await asyncio.to_thread(build_tree, items, version))
        finally:
            self._refreshing = False

    # --- queries ---------------------------------------------------------------------------

    def query_bbox(self, x0: float, y0: float, x1: float, y1: float) -> list[str]:
        """Ids whose geometry intersects the box (edges included), sorted.

        Exact: the shapes are tested, not only their envelopes. Corners may come in any
        order; a non-finite value raises ValueError.
        """
        region = _region(x0, y0, x1, y1)
        hits = self._tree.tree.query(region, predicate="intersects")
        found = self._fresh(hits)
        ids, geoms, _ = self._delta_arrays()
        if len(ids):
            lo_x, lo_y, hi_x, hi_y = shapely.bounds(region)
            near = _overlapping(geoms, lo_x, lo_y, hi_x, hi_y)
            found.extend(ids[near][shapely.intersects(geoms[near], region)].tolist())
        return sorted(found)

    def query_point(
        self, x: float, y: float, *, tolerance: float = DEFAULT_POINT_TOLERANCE
    ) -> list[str]:
        """Ids of annotations under the point, sorted.

        Polygons match when they cover the point (their edge included); points and lines
        match within ``tolerance`` pixels, since a click never lands exactly on a line.
        """
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(tolerance)):
            raise ValueError("point coordinates and tolerance must be finite numbers")
        tolerance = max(tolerance, 0.0)
        point = shapely.Point(x, y)
        reach = shapely.box(x - tolerance, y - tolerance, x + tolerance, y + tolerance)
        candidates = self._tree.tree.query(reach)
        hits = candidates[
            _point_hits(
                self._tree.geoms[candidates], self._tree.areal[candidates], point, tolerance
            )
        ]
        found = self._fresh(hits)
        ids, geoms, areal = self._delta_arrays()
        if len(ids):
            near = _overlapping(geoms, x - tolerance, y - tolerance, x + tolerance, y + tolerance)
            ids, geoms, areal = ids[near], geoms[near], areal[near]
            found.extend(ids[_point_hits(geoms, areal, point, tolerance)].tolist())
        return sorted(found)

    def stats_bbox(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        classification_of: Callable[[str], str | None],
        *,
        mpp: float | None = None,
    ) -> dict[str, Any]:
        """Count and area per classification of the annotations intersecting the box.

        Areas are clipped to the box and summed per annotation (overlapping annotations of
        one class count twice, as in QuPath); lines and points count with zero area.
        ``area_um2`` is None without a usable ``mpp``. Unclassified rows have name None and
        come last; the others are sorted by name.
        """
        ids = self.query_bbox(x0, y0, x1, y1)
        region = _region(x0, y0, x1, y1)
        geoms = np.array([self._shapes[k] for k in ids], dtype=object)
        areas = _clipped_areas(geoms, region)
        groups: dict[str | None, list[float]] = {}
        for key, area in zip(ids, areas.tolist(), strict=True):
            groups.setdefault(classification_of(key), []).append(area)
        scale = mpp * mpp if _usable_mpp(mpp) else None  # type: ignore[operator]

        def row(values: list[float]) -> dict[str, Any]:
            px = math.fsum(values)
            um = None if scale is None else round(px * scale, 3)
            return {"count": len(values), "area_px2": round(px, 3), "area_um2": um}

        names = sorted(groups, key=lambda n: (n is None, n or ""))
        return {
            "bbox": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
            **row(areas.tolist()),
            "classes": [{"name": name, **row(groups[name])} for name in names],
        }

    # --- internals -------------------------------------------------------------------------

    def _fresh(self, positions: np.ndarray) -> list[str]:
        """Tree hits as ids, minus those changed since the tree was built."""
        ids = self._tree.ids[positions].tolist()
        if not self._touched:
            return ids
        touched = self._touched
        return [k for k in ids if k not in touched]

    def _delta_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._delta is None:
            keys = [k for k in self._touched if k in self._shapes]
            geoms = np.array([self._shapes[k] for k in keys], dtype=object)
            areal = shapely.get_dimensions(geoms) == 2 if keys else np.zeros(0, dtype=bool)
            self._delta = (np.array(keys, dtype=object), geoms, areal)
        return self._delta


def _usable(shape: shapely.Geometry | None) -> bool:
    return shape is not None and not shape.is_empty


def _usable_mpp(mpp: object) -> bool:
    return type(mpp) in (int, float) and math.isfinite(mpp) and mpp > 0  # type: ignore[arg-type]


def _region(x0: float, y0: float, x1: float, y1: float) -> shapely.Geometry:
    """The query box as a geometry; a zero-width box is a segment, a zero-size one a point."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError("bbox coordinates must be finite numbers")
    lo_x, hi_x = sorted((x0, x1))
    lo_y, hi_y = sorted((y0, y1))
    if lo_x == hi_x and lo_y == hi_y:
        return shapely.Point(lo_x, lo_y)
    if lo_x == hi_x or lo_y == hi_y:
        return shapely.LineString([(lo_x, lo_y), (hi_x, hi_y)])
    return shapely.box(lo_x, lo_y, hi_x, hi_y)


def _overlapping(geoms: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Mask of geometries whose envelope meets the box: a cheap filter before exact tests."""
    b = shapely.bounds(geoms)
    return (b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)


def _point_hits(
    geoms: np.ndarray, areal: np.ndarray, point: shapely.Point, tolerance: float
) -> np.ndarray:
    hits = np.zeros(len(geoms), dtype=bool)
    if areal.any():
        hits[areal] = shapely.intersects(geoms[areal], point)  # = covers, for a point
    if (~areal).any():
        others = geoms[~areal]
        # dwithin(d=0) is intersects; GEOS warns on a zero distance, so say it plainly.
        near = shapely.dwithin(others, point, tolerance) if tolerance > 0 else None
        hits[~areal] = shapely.intersects(others, point) if near is None else near
    return hits


def _clipped_areas(geoms: np.ndarray, region: shapely.Geometry) -> np.ndarray:
    """Area of each geometry inside the region (a box), or zeros for a degenerate region.

    clip_by_rect is GEOS's rectangle clipper: about 40x faster than a general intersection
    here. Its output may be invalid (collapsed edges along the box), but its area is exact
    for valid input, which is all the index holds; shapes wholly inside skip it.
    """
    if region.geom_type != "Polygon" or not len(geoms):
        return np.zeros(len(geoms))
    areas = shapely.area(geoms)
    lo_x, lo_y, hi_x, hi_y = region.bounds
    b = shapely.bounds(geoms)
    inside = (b[:, 0] >= lo_x) & (b[:, 1] >= lo_y) & (b[:, 2] <= hi_x) & (b[:, 3] <= hi_y)
    cut = ~inside & (areas > 0)
    areas[cut] = shapely.area(shapely.clip_by_rect(geoms[cut], lo_x, lo_y, hi_x, hi_y))
    return areas

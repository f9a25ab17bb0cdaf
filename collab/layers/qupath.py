"""LayerParser: a QuPath detection/cell GeoJSON export, parsed incrementally (sans I/O).

Bytes go in as they arrive (gzip or not); packed chunks of objects come out, grouped by tile
of the slide so that each chunk covers a small area. Memory is bounded by the buffered objects
(`buffer_max`) and the JSON of one input piece, never by the file: ijson's C backend builds one
Feature at a time. Unusable features are counted by reason, never raised.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ijson
import numpy as np
import shapely

from collab.layers.codec import MAX_RING, Points, encode_points, encode_shapes

UNCLASSIFIED = "Unclassified"
DETECTION_TYPES = ("detection", "cell")
_INFLATE_STEP = 4 * 1024 * 1024  # gzip output per step: a small bomb cannot balloon at once


class ParseError(ValueError):
    """The body is not a JSON FeatureCollection (or array of features): the import is refused."""


@dataclass(slots=True)
class Chunk:
    """Packed objects of one tile, ready to store."""

    tile: tuple[int, int]
    count: int
    bbox: tuple[float, float, float, float]  # of the centroids
    points: bytes
    shapes: bytes
    class_counts: np.ndarray  # per class index


@dataclass(slots=True)
class _Pending:
    ids: list[int] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    xy: list[tuple[float, float]] = field(default_factory=list)
    rings: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)


class LayerParser:
    def __init__(self, *, width: float, height: float, gzip: bool = False, tile: int = 1024,
                 chunk_max: int = 4096, buffer_max: int = 16_384) -> None:
        self.width, self.height = width, height
        self.tile, self.chunk_max, self.buffer_max = tile, chunk_max, buffer_max
        self.count = 0
        self.class_names: list[str] = []
        self.class_colors: list[list[int] | None] = []
        self.class_counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.bytes_in = 0
        self._class_index: dict[str, int] = {}
        self._inflate = zlib.decompressobj(wbits=31) if gzip else None
        self._coro: Any = None
        self._items: list[Any] = []
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._buffered = 0

    # --- bytes in -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Chunk]:
        self.bytes_in += len(data)
        out: list[Chunk] = []
        if self._inflate is None:
            self._feed_json(data, out)
            return out
        try:
            while data:
                piece = self._inflate.decompress(data, _INFLATE_STEP)
                data = self._inflate.unconsumed_tail
                self._feed_json(piece, out)
        except zlib.error as exc:
            raise ParseError(f"the gzip body does not decompress: {exc}") from exc
        return out

    def finish(self) -> list[Chunk]:
        out: list[Chunk] = []
        if self._inflate is not None:
            try:
                self._feed_json(self._inflate.flush(), out)
            except zlib.error as exc:
                raise ParseError(f"the gzip body does not decompress: {exc}") from exc
            if not self._inflate.eof:
                raise ParseError("the gzip body is truncated")
        if self._coro is None:
            raise ParseError("empty body: expected a GeoJSON FeatureCollection")
        try:
            self._coro.close()
        except ijson.JSONError as exc:
            raise ParseError(f"not valid JSON: {exc}") from exc
        self._take_items()
        for key in list(self._pending):
            out.extend(self._flush_tile(key))
        return out

    def _feed_json(self, data: bytes, out: list[Chunk]) -> None:
        if not data:
            return
        if self._coro is None:
            head = data.lstrip()
            if not head:
                return
            # QuPath writes a FeatureCollection, or a bare array of features.
            prefix = "item" if head[:1] == b"[" else "features.item"
            self._coro = ijson.items_coro(_Sink(self._items), prefix, use_float=True)
        try:
            self._coro.send(data)
        except ijson.JSONError as exc:
            raise ParseError(f"not valid JSON: {exc}") from exc
        self._take_items()
        if self._buffered >= self.buffer_max:
            for key in list(self._pending):
                out.extend(self._flush_tile(key))
        else:
            for key, pending in list(self._pending.items()):
                if len(pending.ids) >= self.chunk_max:
                    out.extend(self._flush_tile(key))

    # --- features -------------------------------------------------------------------------

    def _take_items(self) -> None:
        items, self._items[:] = list(self._items), []
        if not items:
            return
        simple: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # (class, ring, nucleus)
        for feature in items:
            reason = self._accept(feature, simple)
            if reason is not None:
                self.skipped[reason] += 1
        if simple:
            self._add_simple(simple)

    def _accept(self, feature: Any, simple: list[tuple[int, np.ndarray, np.ndarray | None]]) -> str | None:
        if not isinstance(feature, dict):
            return "not a feature object"
        props = feature.get("properties")
        props = props if isinstance(props, dict) else {}
        kind = props.get("objectType", feature.get("objectType", "detection"))
        if kind not in DETECTION_TYPES:
            return f"objectType {str(kind)[:40]} is not a detection or cell"
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict):
            return "no geometry"
        gtype = geometry.get("type")
        if gtype not in ("Polygon", "MultiPolygon"):
            return f"geometry type {str(gtype)[:40]} (only Polygon and MultiPolygon)"
        nucleus_geometry = feature.get("nucleusGeometry", props.get("nucleusGeometry"))
        try:
            outline, multi = _outer_ring(geometry)
            nucleus = _outer_ring(nucleus_geometry)[0] if isinstance(nucleus_geometry, dict) else None
        except _Unusable as exc:
            return str(exc)
        cls = self._class_of(props.get("classification", feature.get("classification")))
        if multi:
            # Rare for cells: holes or several parts. Shapely gives the true centroid.
            try:
                shape = shapely.geometry.shape(geometry)
            except Exception:  # malformed nesting that _outer_ring let through
                return "malformed coordinates"
            if shape.is_empty or shape.area <= 0:
                return "degenerate outline (no area)"
            c = shape.centroid
            return self._add(cls, c.x, c.y, outline, nucleus)
        simple.append((cls, outline, nucleus))
        return None

    def _add_simple(self, simple: list[tuple[int, np.ndarray, np.ndarray | None]]) -> None:
        """Centroids of single-ring outlines, built with Shapely in one vectorized call."""
        sizes = np.fromiter((len(r) for _c, r, _n in simple), np.int64, len(simple))
        coords = np.concatenate([r for _c, r, _n in simple])
        rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(simple)), sizes + 0))
        polygons = shapely.polygons(rings)
        areas = shapely.area(polygons)
        centroids = shapely.get_coordinates(shapely.centroid(polygons))
        for (cls, outline, nucleus), area, (cx, cy) in zip(simple, areas, centroids, strict=True):
            if not area > 0:
                self.skipped["degenerate outline (no area)"] += 1
                continue
            reason = self._add(cls, cx, cy, outline, nucleus)
            if reason is not None:
                self.skipped[reason] += 1

    def _add(self, cls: int, cx: float, cy: float, outline: np.ndarray, nucleus: np.ndarray | None) -> str | None:
        if not (0 <= cx <= self.width and 0 <= cy <= self.height):
            return "centroid outside the slide"
        key = (int(cx // self.tile), int(cy // self.tile))
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        pending.ids.append(self.count)
        pending.classes.append(cls)
        pending.xy.append((cx, cy))
        pending.rings.append((outline, nucleus))
        self.count += 1
        self.class_counts[self.class_names[cls]] += 1
        self._buffered += 1
        return None

    def _class_of(self, classification: Any) -> int:
        name, color = UNCLASSIFIED, None
        if isinstance(classification, dict):
            if isinstance(classification.get("name"), str) and classification["name"]:
                name = classification["name"][:200]
            elif isinstance(classification.get("names"), list):  # older QuPath: derived classes
                name = ": ".join(str(n) for n in classification["names"])[:200] or UNCLASSIFIED
            raw = classification.get("color")
            if isinstance(raw, list) and len(raw) == 3 and all(isinstance(c, int | float) for c in raw):
                color = [max(0, min(255, int(c))) for c in raw]
            elif isinstance(raw, int):  # packed RGB
                color = [(raw >> 16) & 255, (raw >> 8) & 255, raw & 255]
        index = self._class_index.get(name)
        if index is None:
            index = self._class_index[name] = len(self.class_names)
            self.class_names.append(name)
            self.class_colors.append(color)
        elif self.class_colors[index] is None and color is not None:
            self.class_colors[index] = color
        return index

    def _flush_tile(self, key: tuple[int, int]) -> list[Chunk]:
        pending = self._pending.pop(key)
        self._buffered -= len(pending.ids)
        xy = np.asarray(pending.xy, np.float64)
        classes = np.asarray(pending.classes, np.uint16)
        xy32 = xy.astype(np.float32)
        points = Points(np.asarray(pending.ids, np.uint32), classes, xy32)
        bbox = (float(xy32[:, 0].min()), float(xy32[:, 1].min()), float(xy32[:, 0].max()), float(xy32[:, 1].max()))
        return [Chunk(
            tile=key, count=len(points), bbox=bbox, points=encode_points(points),
            shapes=encode_shapes(xy32, pending.rings),
            class_counts=np.bincount(classes, minlength=len(self.class_names)),
        )]


class _Unusable(Exception):
    """Internal: why a feature's geometry cannot be stored (its skip reason)."""


def _outer_ring(geometry: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """The exterior ring kept for drawing (the largest part's, without its closing vertex),
    and whether the geometry has more than that one ring (holes or parts)."""
    gtype, coords = geometry.get("type"), geometry.get("coordinates")
    if not isinstance(coords, list) or not coords:
        raise _Unusable("no coordinates")
    if gtype == "Polygon":
        polygons = [coords]
    elif gtype == "MultiPolygon":
        polygons = coords
    else:
        raise _Unusable(f"geometry type {str(gtype)[:40]} (only Polygon and MultiPolygon)")
    best: np.ndarray | None = None
    best_area = -1.0
    rings = 0
    for polygon in polygons:
        if not isinstance(polygon, list) or not polygon:
            raise _Unusable("malformed coordinates")
        rings += len(polygon)
        ring = _ring(polygon[0])
        area = _area(ring) if len(polygons) > 1 else 0.0
        if area > best_area:
            best, best_area = ring, area
    assert best is not None
    return best, rings > 1


def _ring(raw: Any) -> np.ndarray:
    try:
        ring = np.asarray(raw, np.float64)
    except (ValueError, TypeError) as exc:
        raise _Unusable("malformed coordinates") from exc
    if ring.ndim != 2 or ring.shape[1] < 2:
        raise _Unusable("malformed coordinates")
    ring = ring[:, :2]
    if not np.isfinite(ring).all():
        raise _Unusable("non-finite coordinates")
    if len(ring) > 1 and (ring[0] == ring[-1]).all():
        ring = ring[:-1]
    if len(ring) < 3:
        raise _Unusable("an outline of fewer than 3 vertices")
    if len(ring) > MAX_RING:
        raise _Unusable(f"an outline of over {MAX_RING} vertices")
    return ring


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


class _Sink:
    """ijson's coroutine target: it appends each Feature as it is built."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def send(self, value: Any) -> None:
        self._items.append(value)

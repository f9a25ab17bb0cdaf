"""LayerParser: a QuPath detection/cell GeoJSON export, parsed incrementally (sans I/O).

Bytes go in as they arrive (gzip or not); packed chunks of objects come out, grouped by tile
of the slide so that each chunk covers a small area. Memory is bounded by the buffered objects
(`buffer_max`) and the JSON of one input piece, never by the file.

Two ways through the JSON. The usual export (`{"type": "FeatureCollection", "features": [...`
or a bare array) is cut into whole Features by ArraySplitter and parsed by orjson a piece at a
time; the common Feature (one outline ring, maybe one nucleus ring) is then converted in
vectorized batches. Any other layout goes through ijson's C backend one Feature at a time.
Unusable features are counted by reason, never raised.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import ijson
import numpy as np
import orjson
import shapely

from collab.layers.codec import MAX_RING, Points, encode_points, encode_shapes, quantize, ring_deltas
from collab.layers.splitter import ArraySplitter

UNCLASSIFIED = "Unclassified"
DETECTION_TYPES = ("detection", "cell")
_INFLATE_STEP = 4 * 1024 * 1024  # gzip output per step: a small bomb cannot balloon at once
_HEAD_BYTES = 4096  # the layout is decided from this much of the body
_COLLECTION_HEAD = re.compile(rb'\A\s*\{\s*(?:"type"\s*:\s*"FeatureCollection"\s*,\s*)?"features"\s*:\s*\[')
_ARRAY_HEAD = re.compile(rb"\A\s*\[")

# Skip reasons (docs/layers.md lists them).
NOT_A_FEATURE = "not a feature object"
NO_GEOMETRY = "no geometry"
MALFORMED = "malformed coordinates"
NON_FINITE = "non-finite coordinates"
TOO_FEW = "an outline of fewer than 3 vertices"
TOO_MANY = f"an outline of over {MAX_RING} vertices"
DEGENERATE = "degenerate outline (no area)"
OUTSIDE = "centroid outside the slide"
FAR = "outline reaching far outside the slide"


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
    xy: list[tuple[float, float]] = field(default_factory=list)  # float32 values
    deltas: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)


@dataclass(slots=True)
class _Rings:
    """A batch of single rings, flattened: their kept vertices and where each ring starts."""

    ok: np.ndarray  # per ring: usable
    reasons: list[str | None]  # per ring: why not
    coords: np.ndarray  # vertices of the usable rings, closing vertices dropped
    sizes: np.ndarray  # vertices per usable ring


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
        self._head = b""
        self._splitter: ArraySplitter | None = None
        self._in_object = False  # the array is a FeatureCollection's `features`
        self._coro: Any = None
        self._items: list[Any] = []
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._buffered = 0
        # Vertices this far outside the slide cannot be packed (and are nobody's cell).
        self._far = 4 * max(width, height, 1.0)

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
        if self._splitter is None and self._coro is None:
            if not self._head.strip():
                raise ParseError("empty body: expected a GeoJSON FeatureCollection")
            self._choose_layout(out)
        if self._splitter is not None:
            self._finish_split()
        else:
            try:
                self._coro.close()
            except ijson.JSONError as exc:
                raise ParseError(f"not valid JSON: {exc}") from exc
            self._take(self._drain_items())
        for key in list(self._pending):
            out.extend(self._flush_tile(key))
        return out

    def _feed_json(self, data: bytes, out: list[Chunk]) -> None:
        if not data:
            return
        if self._splitter is None and self._coro is None:
            self._head += data
            if len(self._head) < _HEAD_BYTES:
                return
            self._choose_layout(out)
        elif self._splitter is not None:
            self._take(self._split(data))
        else:
            try:
                self._coro.send(data)
            except ijson.JSONError as exc:
                raise ParseError(f"not valid JSON: {exc}") from exc
            self._take(self._drain_items())
        self._flush_full(out)

    def _choose_layout(self, out: list[Chunk]) -> None:
        head, self._head = self._head, b""
        match = _COLLECTION_HEAD.match(head) or _ARRAY_HEAD.match(head)
        if match is not None:
            self._splitter = ArraySplitter()
            self._in_object = match.re is _COLLECTION_HEAD
            self._take(self._split(head[match.end() :]))
        else:
            # Another layout (keys before "features", say): ijson finds the features wherever.
            prefix = "item" if head.lstrip()[:1] == b"[" else "features.item"
            self._coro = ijson.items_coro(_Sink(self._items), prefix, use_float=True)
            try:
                self._coro.send(head)
            except ijson.JSONError as exc:
                raise ParseError(f"not valid JSON: {exc}") from exc
            self._take(self._drain_items())
        self._flush_full(out)

    def _split(self, data: bytes) -> list[Any]:
        assert self._splitter is not None
        span = self._splitter.feed(data)
        if not span.strip():
            return []
        try:
            return orjson.loads(b"[" + span + b"]")
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not valid JSON: {exc}") from exc

    def _finish_split(self) -> None:
        splitter = self._splitter
        assert splitter is not None
        if not splitter.closed:
            raise ParseError("not valid JSON: the body ends inside the features array")
        tail = bytes(splitter.tail)
        try:
            rest = orjson.loads(b'{"features":[]' + tail) if self._in_object else orjson.loads(b"0" + tail)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"not valid JSON after the features: {exc}") from exc
        if self._in_object and not isinstance(rest, dict):
            raise ParseError("not valid JSON after the features")

    def _drain_items(self) -> list[Any]:
        items = list(self._items)
        self._items.clear()
        return items

    def _flush_full(self, out: list[Chunk]) -> None:
        if self._buffered >= self.buffer_max:
            for key in list(self._pending):
                out.extend(self._flush_tile(key))
            return
        for key, pending in list(self._pending.items()):
            if len(pending.ids) >= self.chunk_max:
                out.extend(self._flush_tile(key))

    # --- features -------------------------------------------------------------------------

    def _take(self, features: list[Any]) -> None:
        """Sort a batch: the common single-ring features go through the vectorized path, the
        others (and every unusable one) one by one."""
        classes: list[int] = []
        outlines: list[Any] = []
        nuclei: list[Any] = []
        for feature in features:
            if not isinstance(feature, dict):
                self.skipped[NOT_A_FEATURE] += 1
                continue
            props = feature.get("properties")
            props = props if isinstance(props, dict) else {}
            kind = props.get("objectType", feature.get("objectType", "detection"))
            if kind not in DETECTION_TYPES:
                self.skipped[f"objectType {str(kind)[:40]} is not a detection or cell"] += 1
                continue
            geometry = feature.get("geometry")
            nucleus = feature.get("nucleusGeometry", props.get("nucleusGeometry"))
            ring = _single_ring(geometry)
            nucleus_ring = _single_ring(nucleus) if nucleus is not None else None
            if ring is None or (nucleus is not None and nucleus_ring is None):
                reason = self._add_one(feature, props, geometry, nucleus)
                if reason is not None:
                    self.skipped[reason] += 1
                continue
            classes.append(self._class_of(props.get("classification", feature.get("classification"))))
            outlines.append(ring)
            nuclei.append(nucleus_ring)
        if outlines:
            self._add_batch(classes, outlines, nuclei)

    def _add_batch(self, classes: list[int], outlines: list[Any], nuclei: list[Any]) -> None:
        rings = self._rings(outlines)
        if rings is None:  # a malformed vertex somewhere: one by one, to name the culprits
            for cls, outline, nucleus in zip(classes, outlines, nuclei, strict=True):
                reason = self._add_rings(cls, outline, nucleus)
                if reason is not None:
                    self.skipped[reason] += 1
            return
        kept = np.flatnonzero(rings.ok)
        polygons = shapely.polygons(shapely.linearrings(rings.coords, indices=np.repeat(np.arange(len(kept)),
                                                                                         rings.sizes)))
        areas = shapely.area(polygons)
        centroids = shapely.get_coordinates(shapely.centroid(polygons))
        xy32 = centroids.astype(np.float32)
        origins = quantize(xy32)
        q = quantize(rings.coords)
        deltas = np.diff(q, axis=0, prepend=q[:1])
        starts = np.concatenate([[0], np.cumsum(rings.sizes)[:-1]]).astype(np.int64)
        if len(kept):
            deltas[starts] = q[starts] - origins
        deltas = deltas.astype("<i4")
        for reason in rings.reasons:
            if reason is not None:
                self.skipped[reason] += 1
        nucleus_of = self._nuclei([nuclei[i] for i in kept.tolist()], origins)
        for j, i in enumerate(kept.tolist()):
            if not areas[j] > 0:
                self.skipped[DEGENERATE] += 1
                continue
            outline = deltas[starts[j] : starts[j] + rings.sizes[j]]
            reason = self._add(classes[i], float(xy32[j, 0]), float(xy32[j, 1]), outline, nucleus_of[j])
            if reason is not None:
                self.skipped[reason] += 1

    def _rings(self, raw: list[Any]) -> _Rings | None:
        """Flatten single rings of [x, y] vertices and judge each; None when some vertex is not
        a pair of numbers."""
        sizes = np.fromiter((len(r) for r in raw), np.int64, len(raw))
        try:
            coords = np.array(list(chain.from_iterable(raw)), np.float64)
        except (ValueError, TypeError):
            return None
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != sizes.sum():
            return None
        ends = np.cumsum(sizes)
        starts = ends - sizes
        closed = np.zeros(len(raw), bool)
        has = sizes > 1
        closed[has] = (coords[starts[has]] == coords[ends[has] - 1]).all(axis=1)
        usable_sizes = sizes - closed
        ring_of = np.repeat(np.arange(len(raw)), sizes)
        finite = np.bincount(ring_of, ~np.isfinite(coords).all(axis=1), minlength=len(raw)) == 0
        with np.errstate(invalid="ignore"):
            far = np.bincount(ring_of, (np.abs(coords) > self._far).any(axis=1), minlength=len(raw)) > 0
        ok = finite & ~far & (usable_sizes >= 3) & (usable_sizes <= MAX_RING)
        reasons: list[str | None] = [None] * len(raw)
        for i in np.flatnonzero(~ok).tolist():
            reasons[i] = (NON_FINITE if not finite[i] else FAR if far[i]
                          else TOO_FEW if usable_sizes[i] < 3 else TOO_MANY)
        keep = np.repeat(ok, sizes)
        keep[ends[closed] - 1] = False  # closing vertices
        return _Rings(ok, reasons, coords[keep], usable_sizes[ok])

    def _nuclei(self, raw: list[Any], origins: np.ndarray) -> list[np.ndarray | None]:
        """The nuclei of a batch as deltas from their cells' quantized centroids, vectorized; a
        nucleus that cannot be used is dropped, its cell kept."""
        present = [j for j, r in enumerate(raw) if r is not None]
        out: list[np.ndarray | None] = [None] * len(raw)
        rings = self._rings([raw[j] for j in present]) if present else None
        if rings is None:
            for j in present:
                out[j] = self._nucleus_deltas(raw[j], origins[j])
            return out
        owners = np.asarray(present, np.int64)[rings.ok]
        q = quantize(rings.coords)
        deltas = np.diff(q, axis=0, prepend=q[:1])
        starts = np.concatenate([[0], np.cumsum(rings.sizes)[:-1]]).astype(np.int64)
        if len(owners):
            deltas[starts] = q[starts] - origins[owners]
        deltas = deltas.astype("<i4")
        for k, j in enumerate(owners.tolist()):
            out[j] = deltas[starts[k] : starts[k] + rings.sizes[k]]
        return out

    def _nucleus_deltas(self, raw: Any, origin: np.ndarray) -> np.ndarray | None:
        """A nucleus that cannot be used is dropped; its cell is kept."""
        if raw is None:
            return None
        try:
            return ring_deltas(self._ring(raw), origin)
        except _Unusable:
            return None

    # --- one feature at a time ---------------------------------------------------------------

    def _add_one(self, feature: dict[str, Any], props: dict[str, Any], geometry: Any, nucleus: Any) -> str | None:
        """A feature the batch path does not take: holes or parts, or something wrong with it."""
        if not isinstance(geometry, dict):
            return NO_GEOMETRY
        gtype = geometry.get("type")
        if gtype not in ("Polygon", "MultiPolygon"):
            return f"geometry type {str(gtype)[:40]} (only Polygon and MultiPolygon)"
        try:
            outline = self._outer_ring(geometry)
        except _Unusable as exc:
            return str(exc)
        try:
            nucleus_ring = self._outer_ring(nucleus) if isinstance(nucleus, dict) else None
        except _Unusable:
            nucleus_ring = None
        try:
            shape = shapely.geometry.shape(geometry)
        except Exception:  # nesting that _outer_ring let through
            return MALFORMED
        if shape.is_empty or not shape.area > 0:
            return DEGENERATE
        c = shape.centroid
        cls = self._class_of(props.get("classification", feature.get("classification")))
        return self._add_xy(cls, c.x, c.y, outline, nucleus_ring)

    def _add_rings(self, cls: int, outline: Any, nucleus: Any) -> str | None:
        try:
            ring = self._ring(outline)
        except _Unusable as exc:
            return str(exc)
        try:
            nucleus_ring = self._ring(nucleus) if nucleus is not None else None
        except _Unusable:
            nucleus_ring = None
        shape = shapely.Polygon(ring)
        if not shape.area > 0:
            return DEGENERATE
        c = shape.centroid
        return self._add_xy(cls, c.x, c.y, ring, nucleus_ring)

    def _add_xy(self, cls: int, cx: float, cy: float, outline: np.ndarray, nucleus: np.ndarray | None) -> str | None:
        xy32 = np.array([cx, cy], np.float32)
        origin = quantize(xy32)
        return self._add(cls, float(xy32[0]), float(xy32[1]), ring_deltas(outline, origin),
                         ring_deltas(nucleus, origin) if nucleus is not None else None)

    def _outer_ring(self, geometry: dict[str, Any]) -> np.ndarray:
        """The exterior ring kept for drawing: the largest part's."""
        gtype, coords = geometry.get("type"), geometry.get("coordinates")
        if not isinstance(coords, list) or not coords:
            raise _Unusable("no coordinates")
        polygons = [coords] if gtype == "Polygon" else coords if gtype == "MultiPolygon" else None
        if polygons is None:
            raise _Unusable(f"geometry type {str(gtype)[:40]} (only Polygon and MultiPolygon)")
        best, best_area = None, -1.0
        for polygon in polygons:
            if not isinstance(polygon, list) or not polygon:
                raise _Unusable(MALFORMED)
            ring = self._ring(polygon[0])
            area = _area(ring) if len(polygons) > 1 else 0.0
            if area > best_area:
                best, best_area = ring, area
        assert best is not None
        return best

    def _ring(self, raw: Any) -> np.ndarray:
        try:
            ring = np.asarray(raw, np.float64)
        except (ValueError, TypeError) as exc:
            raise _Unusable(MALFORMED) from exc
        if ring.ndim != 2 or ring.shape[1] < 2:
            raise _Unusable(MALFORMED)
        ring = ring[:, :2]
        if not np.isfinite(ring).all():
            raise _Unusable(NON_FINITE)
        if (np.abs(ring) > self._far).any():
            raise _Unusable(FAR)
        if len(ring) > 1 and (ring[0] == ring[-1]).all():
            ring = ring[:-1]
        if len(ring) < 3:
            raise _Unusable(TOO_FEW)
        if len(ring) > MAX_RING:
            raise _Unusable(TOO_MANY)
        return ring

    # --- buffering by tile ----------------------------------------------------------------------

    def _add(self, cls: int, cx: float, cy: float, outline: np.ndarray, nucleus: np.ndarray | None) -> str | None:
        if not (0 <= cx <= self.width and 0 <= cy <= self.height):
            return OUTSIDE
        key = (int(cx // self.tile), int(cy // self.tile))
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        pending.ids.append(self.count)
        pending.classes.append(cls)
        pending.xy.append((cx, cy))
        pending.deltas.append((outline, nucleus))
        self.count += 1
        self.class_counts[self.class_names[cls]] += 1
        self._buffered += 1
        return None

    def _class_of(self, classification: Any) -> int:
        name, color = UNCLASSIFIED, None
        if isinstance(classification, dict):
            raw_name = classification.get("name")
            if isinstance(raw_name, str) and raw_name:
                name = raw_name[:200]
            elif isinstance(classification.get("names"), list):  # older QuPath: derived classes
                name = ": ".join(str(n) for n in classification["names"])[:200] or UNCLASSIFIED
            index = self._class_index.get(name)
            if index is not None and self.class_colors[index] is not None:
                return index  # the usual case: a class seen before, with its color
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
        classes = np.asarray(pending.classes, np.uint16)
        xy32 = np.asarray(pending.xy, np.float32)
        points = Points(np.asarray(pending.ids, np.uint32), classes, xy32)
        bbox = (float(xy32[:, 0].min()), float(xy32[:, 1].min()), float(xy32[:, 0].max()), float(xy32[:, 1].max()))
        return [Chunk(
            tile=key, count=len(points), bbox=bbox, points=encode_points(points),
            shapes=encode_shapes(pending.deltas),
            class_counts=np.bincount(classes, minlength=len(self.class_names)),
        )]


class _Unusable(Exception):
    """Internal: why a feature's geometry cannot be stored (its skip reason)."""


def _single_ring(geometry: Any) -> list[Any] | None:
    """The one ring of a Polygon without holes, as parsed; None for anything else."""
    if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
        return None
    coords = geometry.get("coordinates")
    if not isinstance(coords, list) or len(coords) != 1 or not isinstance(coords[0], list):
        return None
    return coords[0]


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


class _Sink:
    """ijson's coroutine target: it appends each Feature as it is built."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def send(self, value: Any) -> None:
        self._items.append(value)

"""LayerParser: a QuPath detection/cell GeoJSON export, parsed incrementally (sans I/O).

Bytes go in as they arrive (gzip or not); packed chunks of objects come out, grouped by tile
of the slide so that each chunk covers a small area. Memory is bounded by the buffered objects
(`buffer_max`) and the JSON of one input piece, never by the file.

Two ways through the JSON. The usual export (`{"type": "FeatureCollection", "features": [...`
or a bare array) is cut into whole Features by ArraySplitter, a piece at a time; msgspec decodes
the common Feature (one outline ring, maybe one nucleus ring) into typed structs
(feature_decoder.py), which are then converted in vectorized batches, and hands the others over
as orjson parses them. Any other layout goes through ijson's C backend one Feature at a time.
Unusable features are counted by reason, never raised.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any

import ijson
import msgspec
import numpy as np
import orjson
import shapely

from collab.layers.codec import MAX_RING, Points, encode_points, encode_shape_arrays, quantize, ring_deltas
from collab.layers.feature_decoder import Decoded, decode_features
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



# Distinct classifications remembered by their raw JSON (an export has a few; one whose
# classification carries a per-object field, a probability say, would have one per object).
_RAW_CLASSES_KEPT = 4096

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
class _Rings:
    """A batch of single rings, flattened: their kept vertices and where each ring starts."""

    ok: np.ndarray  # per ring: usable
    reasons: list[str | None]  # per ring: why not
    coords: np.ndarray  # vertices of the usable rings, closing vertices dropped
    sizes: np.ndarray  # vertices per usable ring


class LayerParser:
    def __init__(self, *, width: float, height: float, gzip: bool = False, tile: int = 1024,
                 chunk_max: int = 4096, buffer_max: int = 32_768) -> None:
        self.width, self.height = width, height
        self.tile, self.chunk_max, self.buffer_max = tile, chunk_max, buffer_max
        self.count = 0
        self.class_names: list[str] = []
        self.class_colors: list[list[int] | None] = []
        self.class_counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.bytes_in = 0
        self._class_index: dict[str, int] = {}
        self._raw_classes: dict[bytes, int] = {}  # a classification's JSON -> its class index
        self._inflate = zlib.decompressobj(wbits=31) if gzip else None
        self._head = b""
        self._splitter: ArraySplitter | None = None
        self._in_object = False  # the array is a FeatureCollection's `features`
        self._coro: Any = None
        self._items: list[Any] = []
        self._batches: list[tuple[np.ndarray, ...]] = []  # (ids, classes, xy, counts, coords)
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
        out.extend(self._flush_all())
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
            self._take_decoded(self._split(data))
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
            self._take_decoded(self._split(head[match.end() :]))
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

    def _split(self, data: bytes) -> Decoded | None:
        assert self._splitter is not None
        span = self._splitter.feed(data)
        if not span.strip():
            return None
        try:
            return decode_features(span)
        except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:  # orjson: a number past float64
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
            out.extend(self._flush_all())

    # --- features -------------------------------------------------------------------------

    def _take_decoded(self, decoded: Decoded | None) -> None:
        """A piece cut out by the splitter: the uncommon Features one by one, then the common
        ones (typed already) in one batch."""
        if decoded is None:
            return
        self._take(decoded.others)
        if decoded.outlines:
            classes = [self._class_of_raw(raw) for raw in decoded.classifications]
            self._add_batch(classes, decoded.outlines, decoded.nuclei, pairs=True)

    def _class_of_raw(self, raw: bytes) -> int:
        """_class_of for a classification's raw JSON (b"": absent), remembered by its bytes: an
        export repeats the same few classifications over and over."""
        index = self._raw_classes.get(raw)
        if index is None:
            # Exact: asking _class_of again with the same JSON would change nothing.
            index = self._class_of(orjson.loads(raw) if raw else None)
            if len(self._raw_classes) < _RAW_CLASSES_KEPT:  # per-object fields would make it grow with the file
                self._raw_classes[raw] = index
        return index

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

    def _add_batch(self, classes: list[int], outlines: list[Any], nuclei: list[Any], *, pairs: bool = False) -> None:
        """`pairs`: every vertex is known to be a pair of floats (decode_features typed them)."""
        rings = self._rings(outlines, pairs=pairs)
        if rings is None:  # a malformed vertex somewhere: one by one, to name the culprits
            for cls, outline, nucleus in zip(classes, outlines, nuclei, strict=True):
                reason = self._add_rings(cls, outline, nucleus)
                if reason is not None:
                    self.skipped[reason] += 1
            return
        kept = np.flatnonzero(rings.ok)
        for reason in rings.reasons:
            if reason is not None:
                self.skipped[reason] += 1
        if not len(kept):
            return
        polygons = shapely.polygons(shapely.linearrings(rings.coords, indices=np.repeat(np.arange(len(kept)),
                                                                                         rings.sizes)))
        areas = shapely.area(polygons)
        xy32 = shapely.get_coordinates(shapely.centroid(polygons)).astype(np.float32)
        origins = quantize(xy32)
        deltas, starts = _deltas(rings.coords, rings.sizes, origins)
        nuclei_coords, nuclei_starts, nuclei_sizes = self._nuclei([nuclei[i] for i in kept.tolist()], origins,
                                                                  pairs=pairs)
        good = areas > 0
        inside = (xy32[:, 0] >= 0) & (xy32[:, 0] <= self.width) & (xy32[:, 1] >= 0) & (xy32[:, 1] <= self.height)
        for reason, n in ((DEGENERATE, int((~good).sum())), (OUTSIDE, int((good & ~inside).sum()))):
            if n:
                self.skipped[reason] += n
        sel = np.flatnonzero(good & inside)
        # Each object's outline then its nucleus, one after the other, in object order.
        combined = np.concatenate([deltas, nuclei_coords])
        seg_starts = np.column_stack([starts[sel], len(deltas) + nuclei_starts[sel]]).ravel()
        seg_sizes = np.column_stack([rings.sizes[sel], nuclei_sizes[sel]]).ravel()
        coords = combined[_gather(seg_starts, seg_sizes)]
        counts = np.column_stack([rings.sizes[sel], nuclei_sizes[sel]])
        self._push(np.asarray(classes, np.int64)[kept[sel]], xy32[sel], counts, coords)

    def _rings(self, raw: list[Any], *, pairs: bool = False) -> _Rings | None:
        """Flatten single rings of [x, y] vertices and judge each; None when some vertex is not
        a pair of numbers."""
        sizes = np.fromiter((len(r) for r in raw), np.int64, len(raw))
        try:
            if pairs:  # twice as fast as building the array from the vertices
                total = 2 * int(sizes.sum())
                coords = np.fromiter(chain.from_iterable(chain.from_iterable(raw)), np.float64, total).reshape(-1, 2)
            else:
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

    def _nuclei(self, raw: list[Any], origins: np.ndarray, *, pairs: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nuclei of a batch as deltas from their cells' quantized centroids, vectorized:
        (vertices, start and size of each object's nucleus; size 0 for none). A nucleus that
        cannot be used is dropped, its cell kept."""
        n = len(raw)
        starts = np.zeros(n, np.int64)
        sizes = np.zeros(n, np.int64)
        present = [j for j, r in enumerate(raw) if r is not None]
        rings = self._rings([raw[j] for j in present], pairs=pairs) if present else None
        if rings is None:  # none, or a malformed one: one by one
            parts, at = [], 0
            for j in present:
                d = self._nucleus_deltas(raw[j], origins[j])
                if d is not None:
                    starts[j], sizes[j] = at, len(d)
                    parts.append(d)
                    at += len(d)
            return (np.concatenate(parts) if parts else np.zeros((0, 2), "<i4")), starts, sizes
        owners = np.asarray(present, np.int64)[rings.ok]
        deltas, ring_starts = _deltas(rings.coords, rings.sizes, origins[owners])
        starts[owners] = ring_starts
        sizes[owners] = rings.sizes
        return deltas, starts, sizes

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
        """One object (the one-by-one path)."""
        if not (0 <= cx <= self.width and 0 <= cy <= self.height):
            return OUTSIDE
        parts = [outline] if nucleus is None else [outline, nucleus]
        counts = np.array([[len(outline), 0 if nucleus is None else len(nucleus)]], np.int64)
        self._push(np.array([cls]), np.array([[cx, cy]], np.float32), counts, np.concatenate(parts))
        return None

    def _push(self, classes: np.ndarray, xy32: np.ndarray, counts: np.ndarray, coords: np.ndarray) -> None:
        """Buffer accepted objects (arrays of one batch); they are grouped by tile when flushed."""
        k = len(classes)
        if not k:
            return
        ids = np.arange(self.count, self.count + k, dtype=np.int64)
        self.count += k
        for index, n in enumerate(np.bincount(classes, minlength=len(self.class_names)).tolist()):
            if n:
                self.class_counts[self.class_names[index]] += n
        self._batches.append((ids, classes.astype(np.uint16), xy32, counts.astype(np.int64),
                              coords.astype("<i4", copy=False)))
        self._buffered += k

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

    def _flush_all(self) -> list[Chunk]:
        """Every buffered object, grouped by tile (and at most chunk_max a chunk)."""
        if not self._batches:
            return []
        batches, self._batches = self._batches, []
        self._buffered = 0
        ids, classes, xy, counts, coords = (np.concatenate(part) for part in zip(*batches, strict=True))
        sizes = counts.sum(axis=1)
        starts = np.cumsum(sizes) - sizes
        tx = (xy[:, 0] // self.tile).astype(np.int64)
        ty = (xy[:, 1] // self.tile).astype(np.int64)
        order = np.lexsort((ids, ty, tx))
        coords = coords[_gather(starts[order], sizes[order])]
        ids, classes, xy, counts, tx, ty, sizes = (a[order] for a in (ids, classes, xy, counts, tx, ty, sizes))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        new_tile = np.flatnonzero((np.diff(tx) != 0) | (np.diff(ty) != 0)) + 1
        bounds = [0, *new_tile.tolist(), len(ids)]
        chunks = []
        for a0, b0 in pairwise(bounds):
            for a in range(a0, b0, self.chunk_max):
                b = min(a + self.chunk_max, b0)
                part = xy[a:b]
                chunks.append(Chunk(
                    tile=(int(tx[a]), int(ty[a])), count=b - a,
                    bbox=(float(part[:, 0].min()), float(part[:, 1].min()),
                          float(part[:, 0].max()), float(part[:, 1].max())),
                    points=encode_points(Points(ids[a:b].astype(np.uint32), classes[a:b], part)),
                    shapes=encode_shape_arrays(counts[a:b], coords[offsets[a] : offsets[b]]),
                    class_counts=np.bincount(classes[a:b], minlength=len(self.class_names)),
                ))
        return chunks


def _gather(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of the segments [start, start + size), one after the other."""
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(sizes) - sizes
    return np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, sizes)


def _deltas(coords: np.ndarray, sizes: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rings (flattened, `sizes` vertices each) as int32 deltas in 1/QUANTUM px: the first
    vertex of ring i from origins[i], each next from the previous. Also where each ring starts."""
    q = quantize(coords)
    deltas = np.diff(q, axis=0, prepend=q[:1])
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    if len(starts):
        deltas[starts] = q[starts] - origins
    return deltas.astype("<i4"), starts


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

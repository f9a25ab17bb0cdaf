"""Packed detection objects: pure functions over bytes and numpy arrays, no I/O.

A chunk is a group of objects of one layer, stored as two blobs:
- points: per object its id (u32), class index (u16) and centroid (2 x f32), little-endian,
  as parallel arrays; read whole into memory for box queries and counts (14 bytes an object).
- shapes: zlib of, per object, the vertex counts of its outline and nucleus rings (2 x u16),
  then every vertex as int32 deltas in 1/8 pixel (the first relative to the quantized centroid,
  each next one relative to the previous; the closing vertex is not stored). Cell outlines are
  small and smooth, so the deltas are small numbers that zlib packs to a byte or two each.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

QUANTUM = 8  # vertices are kept to 1/8 pixel
MAX_RING = 65_535  # vertices per stored ring (u16 counts)
_POINTS_HEAD = struct.Struct("<I")


class CodecError(ValueError):
    """A stored blob that does not decode (a bug or a damaged store)."""


@dataclass(slots=True)
class Points:
    """The point part of objects: parallel arrays of the same length."""

    ids: np.ndarray  # uint32
    classes: np.ndarray  # uint16
    xy: np.ndarray  # float32, shape (n, 2)

    def __len__(self) -> int:
        return len(self.ids)


def encode_points(points: Points) -> bytes:
    n = len(points)
    return b"".join((
        _POINTS_HEAD.pack(n),
        points.ids.astype("<u4", copy=False).tobytes(),
        points.classes.astype("<u2", copy=False).tobytes(),
        points.xy.astype("<f4", copy=False).tobytes(),
    ))


def decode_points(blob: bytes) -> Points:
    if len(blob) < 4:
        raise CodecError("points blob too short")
    (n,) = _POINTS_HEAD.unpack_from(blob)
    if len(blob) != 4 + n * 14:
        raise CodecError(f"points blob of {len(blob)} bytes for {n} objects")
    ids = np.frombuffer(blob, "<u4", n, 4)
    classes = np.frombuffer(blob, "<u2", n, 4 + 4 * n)
    xy = np.frombuffer(blob, "<f4", 2 * n, 4 + 6 * n).reshape(n, 2)
    return Points(ids, classes, xy)


def quantize(xy: np.ndarray) -> np.ndarray:
    """Points (float, level-0 px) in 1/QUANTUM pixel (int64)."""
    return np.round(np.asarray(xy, np.float64) * QUANTUM).astype(np.int64)


def ring_deltas(ring: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """One ring (m, 2; no closing vertex) as int32 deltas from `origin` (the quantized centroid)."""
    return np.diff(quantize(ring), axis=0, prepend=origin.reshape(1, 2)).astype("<i4")


def encode_shape_arrays(counts: np.ndarray, coords: np.ndarray) -> bytes:
    """`counts` (n, 2): vertices of each object's outline and nucleus; `coords`: their deltas
    (ring_deltas), each object's outline then nucleus, in object order."""
    return zlib.compress(counts.astype("<u2").tobytes() + coords.astype("<i4", copy=False).tobytes(), 1)


@dataclass(slots=True)
class Shapes:
    """The rings of a chunk's objects: ring j (0 outline, 1 nucleus) of object i is
    coords[offsets[i, j] : offsets[i, j] + counts[i, j]] (no closing vertex; 0 vertices: none)."""

    counts: np.ndarray  # int64 (n, 2)
    offsets: np.ndarray  # int64 (n, 2)
    coords: np.ndarray  # float64 (total, 2), level-0 pixels


def decode_shapes(blob: bytes, xy: np.ndarray) -> Shapes:
    """Undo encode_shape_arrays for the objects whose stored centroids are `xy` (float32),
    vectorized: one running sum over every vertex, restarted at each ring."""
    try:
        raw = zlib.decompress(blob)
    except zlib.error as exc:
        raise CodecError(f"shapes blob: {exc}") from exc
    n = len(xy)
    if len(raw) < 4 * n:
        raise CodecError("shapes blob too short")
    counts = np.frombuffer(raw, "<u2", 2 * n).reshape(n, 2).astype(np.int64)
    total = int(counts.sum())
    if len(raw) != 4 * n + 8 * total:
        raise CodecError("shapes blob does not match its vertex counts")
    deltas = np.frombuffer(raw, "<i4", 2 * total, 4 * n).reshape(total, 2).astype(np.int64)
    sizes = counts.ravel()
    starts = np.cumsum(sizes) - sizes
    used = sizes > 0
    deltas[starts[used]] += np.repeat(quantize(xy), 2, axis=0)[used]  # first vertex: from the centroid
    running = np.cumsum(deltas, axis=0)
    before = np.zeros((len(sizes), 2), np.int64)
    later = used & (starts > 0)
    before[later] = running[starts[later] - 1]
    running -= np.repeat(before, sizes, axis=0)
    return Shapes(counts, starts.reshape(n, 2), running / QUANTUM)


def concat_points(parts: list[Points]) -> Points:
    return Points(
        np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.uint32),
        np.concatenate([p.classes for p in parts]) if parts else np.zeros(0, np.uint16),
        np.concatenate([p.xy for p in parts]) if parts else np.zeros((0, 2), np.float32),
    )


def concat_shapes(blobs: list[bytes], sizes: list[int]) -> bytes:
    """Shapes blobs of several chunks as one (the counts first, then the vertices, in order)."""
    counts, coords = [], []
    for blob, n in zip(blobs, sizes, strict=True):
        raw = zlib.decompress(blob)
        counts.append(raw[: 4 * n])
        coords.append(raw[4 * n :])
    return zlib.compress(b"".join(counts) + b"".join(coords), 1)

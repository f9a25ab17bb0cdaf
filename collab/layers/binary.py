"""The compact binary form of a box query, for the browser (docs/layers.md gives it byte by
byte). Pure functions over arrays and bytes, no I/O; little-endian throughout."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"CLY1"
FLAG_OUTLINES = 1
_HEAD = struct.Struct("<4sBBHI")  # magic, flags, reserved, class count, object count


@dataclass(slots=True)
class Decoded:
    classes: list[tuple[str, tuple[int, int, int]]]
    ids: np.ndarray
    class_index: np.ndarray
    xy: np.ndarray
    outlines: list[np.ndarray] | None


def encode(classes: list[tuple[str, tuple[int, int, int]]], ids: np.ndarray, class_index: np.ndarray,
           xy: np.ndarray, outlines: tuple[np.ndarray, np.ndarray] | None) -> bytes:
    """`outlines`: (vertex count of each object's outline, all their vertices one after the
    other), or None for points only."""
    parts = [_HEAD.pack(MAGIC, FLAG_OUTLINES if outlines is not None else 0, 0, len(classes), len(ids))]
    for name, (r, g, b) in classes:
        raw = name.encode()[:255]
        parts.append(struct.pack("<BBBB", r, g, b, len(raw)) + raw)
    parts.append(ids.astype("<u4").tobytes())
    parts.append(class_index.astype("<u2").tobytes())
    parts.append(xy.astype("<f4").tobytes())
    if outlines is not None:
        sizes, coords = outlines
        parts.append(sizes.astype("<u2").tobytes())
        parts.append(coords.astype("<f4").tobytes())
    return b"".join(parts)


def decode(blob: bytes) -> Decoded:
    magic, flags, _reserved, nclass, n = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a layer binary")
    at = _HEAD.size
    classes = []
    for _ in range(nclass):
        r, g, b, length = struct.unpack_from("<BBBB", blob, at)
        at += 4
        classes.append((blob[at : at + length].decode(), (r, g, b)))
        at += length
    ids = np.frombuffer(blob, "<u4", n, at)
    at += 4 * n
    class_index = np.frombuffer(blob, "<u2", n, at)
    at += 2 * n
    xy = np.frombuffer(blob, "<f4", 2 * n, at).reshape(n, 2)
    at += 8 * n
    outlines = None
    if flags & FLAG_OUTLINES:
        sizes = np.frombuffer(blob, "<u2", n, at).astype(np.int64)
        at += 2 * n
        coords = np.frombuffer(blob, "<f4", 2 * int(sizes.sum()), at).reshape(-1, 2)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        outlines = [coords[bounds[i] : bounds[i + 1]] for i in range(n)]
    return Decoded(classes, ids, class_index, xy, outlines)

"""Regrouping an import's pieces (pure, no I/O; both layer stores use it).

The parser writes a tile's objects in pieces as its buffer fills: an export not in tile order
gives many small pieces per tile. At the end of an import, consecutive pieces of one tile become
chunks of up to MERGED_CHUNK_MAX objects, so that a query touches few rows.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from collab.layers.codec import concat_points, concat_shapes, decode_points, encode_points

MERGED_CHUNK_MAX = 8192  # objects per chunk once an import's pieces of a tile are regrouped

T = TypeVar("T")


@dataclass(slots=True)
class TileGroups(Generic[T]):
    """Pieces go in in (tile, piece) order; groups of pieces to merge come out, each of one tile
    and at most MERGED_CHUNK_MAX objects (a single piece larger than that stays alone)."""

    _group: list[T] = field(default_factory=list)
    _tile: Hashable = None
    _count: int = 0

    def add(self, tile: Hashable, count: int, piece: T) -> list[T] | None:
        """Take one piece; answer the group it closes, if any."""
        done = None
        if self._group and (tile != self._tile or self._count + count > MERGED_CHUNK_MAX):
            done = self.last()
        self._group.append(piece)
        self._tile = tile
        self._count += count
        return done

    def last(self) -> list[T] | None:
        """The group still open (at the end of the pieces)."""
        done, self._group, self._count = self._group, [], 0
        return done or None


@dataclass(frozen=True, slots=True)
class Piece:
    count: int
    bbox: tuple[float, float, float, float]
    points: bytes
    shapes: bytes


def merge_pieces(pieces: list[Piece]) -> Piece:
    """One chunk of several pieces: points and shapes concatenated in piece order."""
    if len(pieces) == 1:
        return pieces[0]
    points = concat_points([decode_points(p.points) for p in pieces])
    shapes = concat_shapes([p.shapes for p in pieces], [p.count for p in pieces])
    bbox = (min(p.bbox[0] for p in pieces), min(p.bbox[1] for p in pieces),
            max(p.bbox[2] for p in pieces), max(p.bbox[3] for p in pieces))
    return Piece(len(points), bbox, encode_points(points), shapes)

"""Check, repair and measure one annotation geometry (pure functions, no I/O).

The input is whatever a client put in an annotation's ``geometry`` field, so anything may
arrive: the check never raises, it answers a :class:`GeometryVerdict`.

Verdicts are stable: the geometry stored after a repair checks ``ok`` with nothing to
rewrite, and the same input always gives the same output, so a server that writes its
corrections back never loops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import shapely
from shapely.errors import GEOSException

__all__ = [
    "ALLOWED_TYPES",
    "DEFAULT_MAX_VERTICES",
    "MEASUREMENT_KEYS",
    "GeometryVerdict",
    "check_geometry",
    "closed_rings",
    "coordinates_depth_problem",
    "describe_value",
    "measure",
    "merge_measurements",
    "nesting_depth",
    "to_geojson",
]

Status = Literal["ok", "repaired", "invalid"]

DEFAULT_MAX_VERTICES = 100_000
ALLOWED_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)
# The measurement names the server owns; any other key in `measurements` (QuPath's own
# "Area µm^2", say) belongs to whoever wrote it and is left alone by merge_measurements.
# "cells": counts of detection layers inside the outline (collab.layers), server-written too.
MEASUREMENT_KEYS = ("area_um2", "perimeter_um", "length_um", "cells")

_DIMENSION = {
    "Point": 0,
    "MultiPoint": 0,
    "LineString": 1,
    "MultiLineString": 1,
    "Polygon": 2,
    "MultiPolygon": 2,
}
# How deeply positions are nested in each type's "coordinates" (0: a single position).
_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}
# Coordinates nested deeper than this are reported as such, not by the first odd position.
_DEEP = 32
# A polygon thinner than this (its mean width, in pixels) or a line shorter than this has
# no size: see _degenerate_parts.
_MIN_EXTENT = 1e-9
_ZERO = {0: "no position", 1: "zero length", 2: "zero area"}
# Members of a geometry object that describe its coordinates and so are rebuilt, not copied,
# when a repaired geometry is written ("bbox" would be stale).
_REBUILT_MEMBERS = ("type", "coordinates", "bbox")


@dataclass(frozen=True, slots=True)
class GeometryVerdict:
    """What the check said about one geometry, and what to store and index."""

    status: Status
    problem: str | None = None
    geometry: dict[str, Any] | None = None  # set only when the stored value must change
    shape: shapely.Geometry | None = None  # for the spatial index; None when invalid
    measurements: dict[str, float] = field(default_factory=dict)


class _Invalid(Exception):
    """Internal: the geometry cannot be used; the message is the user-facing problem."""


def check_geometry(
    geom: object,
    *,
    width: float,
    height: float,
    max_vertices: int = DEFAULT_MAX_VERTICES,
    mpp: float | None = None,
) -> GeometryVerdict:
    """Check a client's GeoJSON geometry against a slide of ``width`` x ``height`` pixels.

    ``ok``: usable as is (``geometry`` is None). ``repaired``: ``geometry`` holds the GeoJSON
    to store instead (z dropped, or made valid with ``make_valid`` keeping only parts of the
    input's dimension; an open ring alone is not a repair: see :func:`closed_rings`).
    ``invalid``: unusable, ``problem`` says why.
    ``measurements`` come from :func:`measure` with ``mpp`` (empty without a usable mpp).
    """
    shape = _plain_polygon(geom, width, height, max_vertices)
    if shape is not None:
        return GeometryVerdict(status="ok", shape=shape, measurements=measure(shape, mpp))
    return check_geometry_general(geom, width=width, height=height, max_vertices=max_vertices, mpp=mpp)


def check_geometry_general(
    geom: object, *, width: float, height: float, max_vertices: int = DEFAULT_MAX_VERTICES, mpp: float | None = None
) -> GeometryVerdict:
    """check_geometry for any geometry (the reference its fast path is tested against)."""
    try:
        kind, parts, fixes = _parse(geom, max_vertices)
        _check_bounds(parts, width, height)
        shape = _build(kind, parts)
        dimension = _DIMENSION[kind]
        if not shape.is_valid:
            with np.errstate(divide="ignore", invalid="ignore"):  # see _repair
                reason = _human_reason(shapely.is_valid_reason(shape))
        elif _degenerate_parts(shape, dimension).any():
            # GEOS calls some zero-area rings valid (three nearly collinear corners).
            reason = f"a part with {_ZERO[dimension]}"
        else:
            reason = None
        if reason is not None:
            shape = _repair(shape, kind, reason)
            fixes.append(f"{reason}, made valid as {_describe(shape)}")
            count = shapely.get_num_coordinates(shape)
            if count > max_vertices:
                raise _Invalid(
                    f"The repaired geometry has {count} vertices, over the limit of {max_vertices}."
                )
    except _Invalid as exc:
        return GeometryVerdict(status="invalid", problem=coordinates_depth_problem(geom, _DEEP) or str(exc))

    measurements = measure(shape, mpp)
    if not fixes:
        return GeometryVerdict(status="ok", shape=shape, measurements=measurements)
    source = cast(Mapping[str, Any], geom)  # _parse accepted it as a mapping
    stored = {k: v for k, v in source.items() if k not in _REBUILT_MEMBERS}
    stored.update(to_geojson(shape))
    problem = "Repaired: " + "; ".join(fixes) + "."
    return GeometryVerdict(
        status="repaired", problem=problem, geometry=stored, shape=shape, measurements=measurements
    )


def _plain_polygon(geom: object, width: float, height: float, max_vertices: int) -> shapely.Geometry | None:
    """The shape of what drawing clients write nearly always, a valid Polygon of one ring of
    [x, y] numbers inside the slide, built in a few numpy and GEOS calls (a third of the general
    path's cost); None for anything else, which the general path checks, words and repairs."""
    if not isinstance(geom, Mapping) or geom.get("type") != "Polygon":
        return None
    coords = geom.get("coordinates")
    if type(coords) is not list or len(coords) != 1:
        return None
    ring = coords[0]
    if type(ring) is not list or not 3 <= len(ring) <= max_vertices:
        return None
    try:
        arr = np.array(ring)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "fi" or _has_bool(ring, arr):
        return None
    arr = arr.astype(np.float64, copy=False)
    low, high = arr.min(axis=0), arr.max(axis=0)  # NaN propagates: refused below, as not finite
    if not (low[0] >= 0 and low[1] >= 0 and high[0] <= width and high[1] <= height):
        return None
    if arr[0, 0] != arr[-1, 0] or arr[0, 1] != arr[-1, 1]:
        arr = np.vstack([arr, arr[:1]])  # an open ring, read as closed (see _rings)
    if len(arr) < 4:
        return None
    shape = shapely.polygons(arr)
    if not shape.is_valid or 2 * shape.area <= _MIN_EXTENT * shape.length:
        return None
    return shape


def measure(shape: shapely.Geometry | None, mpp: float | None) -> dict[str, float]:
    """Measurements in microns: area and perimeter of polygons, length of lines.

    Rounded to 3 decimals so that measuring the same geometry again gives equal values and
    the server has nothing to rewrite. Empty without a positive, finite ``mpp``.
    """
    if shape is None or shape.is_empty or not _usable_mpp(mpp):
        return {}
    mpp = cast(float, mpp)
    dimension = shapely.get_dimensions(shape)
    if dimension == 2:
        return {
            "area_um2": round(shape.area * mpp * mpp, 3),
            "perimeter_um": round(shape.length * mpp, 3),
        }
    if dimension == 1:
        return {"length_um": round(shape.length * mpp, 3)}
    return {}


def merge_measurements(existing: object, computed: Mapping[str, float]) -> dict[str, Any]:
    """The ``measurements`` value to store: foreign keys kept, the server's keys replaced.

    Imported QuPath measurements survive, while a stale ``area_um2`` of a polygon redrawn as
    a line does not. Compare the result with the stored value to decide whether to write.
    """
    merged: dict[str, Any] = {}
    if isinstance(existing, Mapping):
        merged = {k: v for k, v in existing.items() if k not in MEASUREMENT_KEYS}
    merged.update(computed)
    return merged


def closed_rings(geometry: Any) -> Any:
    """The geometry with every open polygon ring closed (GeoJSON requires closed rings), for
    export; anything else, malformed input included, comes back as it is."""
    try:
        if not isinstance(geometry, Mapping):
            return geometry
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        if kind == "Polygon" and _is_list(coordinates):
            closed: Any = [_closed_ring(r) for r in coordinates]
        elif kind == "MultiPolygon" and _is_list(coordinates):
            closed = [[_closed_ring(r) for r in p] if _is_list(p) else p for p in coordinates]
        else:
            return geometry
        return geometry if closed == coordinates else {**geometry, "coordinates": closed}
    except Exception:  # a value no client should write: export it untouched
        return geometry


def _closed_ring(ring: Any) -> Any:
    if _is_list(ring) and len(ring) > 2 and ring[0] != ring[-1]:
        return [*ring, ring[0]]
    return ring


def to_geojson(shape: shapely.Geometry) -> dict[str, Any]:
    """GeoJSON of a 2D shapely geometry, with plain lists of floats (orjson-friendly)."""
    kind = shape.geom_type
    if kind == "Point":
        return {"type": kind, "coordinates": shapely.get_coordinates(shape)[0].tolist()}
    if kind in ("LineString", "MultiPoint"):
        return {"type": kind, "coordinates": shapely.get_coordinates(shape).tolist()}
    if kind == "Polygon":
        return {"type": kind, "coordinates": _polygon_rings(shape)}
    if kind == "MultiLineString":
        return {
            "type": kind,
            "coordinates": [shapely.get_coordinates(g).tolist() for g in shape.geoms],
        }
    if kind == "MultiPolygon":
        return {"type": kind, "coordinates": [_polygon_rings(g) for g in shape.geoms]}
    raise ValueError(f"no GeoJSON form for {kind}")


# --- parsing -------------------------------------------------------------------------------


def _parse(geom: object, max_vertices: int) -> tuple[str, list[Any], list[str]]:
    """Validate the structure; answer the type, coordinate arrays and the fixes made.

    ``parts`` nests like GeoJSON but ends in (n, 2) float arrays: one array for Point,
    MultiPoint and LineString, a list of them for MultiLineString and Polygon (rings),
    a list of lists for MultiPolygon.
    """
    if not isinstance(geom, Mapping):
        raise _Invalid(f"The geometry must be a GeoJSON object, not {describe_value(geom)}.")
    kind = geom.get("type")
    if kind not in ALLOWED_TYPES:
        shown = repr(kind) if isinstance(kind, str) else describe_value(kind)
        raise _Invalid(
            f"The geometry type {shown[:80]} is not supported; use one of "
            f"{', '.join(ALLOWED_TYPES)}."
        )
    coords = geom.get("coordinates")
    # Structure first, counting vertices before converting anything, so that a geometry
    # with millions of vertices is refused without paying for them.
    depth = _DEPTH[kind]
    sequences = _sequences(coords, depth, "coordinates")
    count = 1 if depth == 0 else sum(len(s) for s in sequences)
    if count > max_vertices:
        raise _Invalid(f"The {kind} has {count} vertices, over the limit of {max_vertices}.")
    if count == 0:
        raise _Invalid(f"The {kind} is empty.")

    fixes: list[str] = []
    if depth == 0:
        return kind, [_positions([coords], "", fixes)], fixes
    if depth == 1:
        arr = _positions(coords, "coordinates", fixes)
        if kind == "LineString" and len(arr) < 2:
            raise _Invalid("The LineString needs at least 2 positions.")
        return kind, [arr], fixes
    if kind == "MultiLineString":
        lines = [_positions(c, f"coordinates[{i}]", fixes) for i, c in enumerate(coords)]
        for i, line in enumerate(lines):
            if len(line) < 2:
                raise _Invalid(f"Line {i} of the MultiLineString needs at least 2 positions.")
        return kind, lines, fixes
    if kind == "Polygon":
        return kind, _rings(coords, "coordinates", fixes), fixes
    polygons = [_rings(p, f"coordinates[{i}]", fixes) for i, p in enumerate(coords)]
    return kind, polygons, fixes


def nesting_depth(value: object, limit: int) -> int:
    """How deeply lists and objects nest in `value` (a scalar: 0, ``[1]``: 1), counting no
    further than ``limit + 1``. Iterative: a value nested thousands deep (which a client may
    send) would break any recursive walk, orjson's and repr's included."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif _is_list(item):
            children = item
        else:
            continue
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def coordinates_depth_problem(geom: object, limit: int = 0) -> str | None:
    """Why a geometry's coordinates nest deeper than its type has (and than `limit`), if they
    do. Worth asking only of a geometry that failed the check: well-formed coordinates were
    read into arrays of the right shape, and walking millions of numbers in Python is not free."""
    kind = geom.get("type") if isinstance(geom, Mapping) else None
    if not isinstance(kind, str) or kind not in _DEPTH:
        return None
    needed = _DEPTH[kind] + 1  # list levels down to the numbers
    limit = max(limit, needed)
    if nesting_depth(cast(Mapping[str, Any], geom).get("coordinates"), limit) > limit:
        return f"The {kind}'s coordinates nest deeper than the {needed} levels of lists a {kind} has."
    return None


def _sequences(value: object, depth: int, where: str) -> list[Sequence[Any]]:
    """The innermost position lists of a ``depth``-deep nesting of lists (0: a position)."""
    if depth == 0:
        return []
    if not _is_list(value):
        raise _Invalid(f"The geometry's {where} must be a list, not {describe_value(value)}.")
    if depth == 1:
        return [value]  # type: ignore[list-item]
    out: list[Sequence[Any]] = []
    for i, item in enumerate(value):  # type: ignore[arg-type]
        out.extend(_sequences(item, depth - 1, f"{where}[{i}]"))
    return out


def _rings(value: Sequence[Any], where: str, fixes: list[str]) -> list[np.ndarray]:
    """The rings of one polygon, closed; a ring needs 3 corners plus the closing point."""
    if len(value) == 0:
        raise _Invalid(f"The polygon at {where} has no rings.")
    rings = []
    for i, ring in enumerate(value):
        arr = _positions(ring, f"{where}[{i}]", fixes)
        if len(arr) and not np.array_equal(arr[0], arr[-1]):
            # Many drawing clients leave rings open, and the closing edge is unambiguous (Shapely
            # and QuPath read them so too): the ring is closed here and on export, but the stored
            # value is left as written, so it is neither rewritten nor flagged as repaired.
            arr = np.vstack([arr, arr[:1]])
        if len(arr) < 4:
            raise _Invalid(
                f"Ring {where}[{i}] has {len(arr)} positions; a ring needs at least 4 "
                "(3 corners and the closing point)."
            )
        rings.append(arr)
    return rings


def _positions(value: Sequence[Any], where: str, fixes: list[str]) -> np.ndarray:
    """An (n, 2) float array from a list of [x, y] positions, or _Invalid saying which one.

    The fast path lets numpy convert the whole list; the slow path walks it only to name
    the culprit. A z value is dropped (the slide is 2D), which counts as a repair.
    """
    arr: np.ndarray | None = None
    try:
        candidate = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged or unconvertible
        candidate = None
    if (
        candidate is not None
        and candidate.ndim == 2
        and candidate.shape[1] in (2, 3)
        and candidate.dtype.kind in "fi"
        and not _has_bool(value, candidate)
    ):
        arr = candidate.astype(np.float64, copy=False)
    if arr is None:
        arr = _positions_slow(value, where)
    if not np.isfinite(arr).all():
        i = int(np.nonzero(~np.isfinite(arr).all(axis=1))[0][0])
        raise _Invalid(f"Position {_at(where, i)} is not finite: {_show(arr[i])}.")
    if arr.shape[1] == 3:
        fixes.append(f"dropped the z values in {where} (slides are 2D)")
        arr = np.ascontiguousarray(arr[:, :2])
    return arr


def _at(where: str, i: int) -> str:
    """Where a position sits, for messages ("" is a Point's lone position)."""
    return f"{where}[{i}]" if where else "coordinates"


def _has_bool(value: Sequence[Any], arr: np.ndarray) -> bool:
    """Whether numpy silently turned a JSON true/false into 1/0.

    A bool can only hide where the array holds 0 or 1, which real coordinates rarely do,
    so only those few entries are looked at in Python.
    """
    rows, cols = np.nonzero((arr == 0) | (arr == 1))
    return any(type(value[r][c]) is bool for r, c in zip(rows.tolist(), cols.tolist(), strict=True))


def _positions_slow(value: Sequence[Any], where: str) -> np.ndarray:
    width = None
    rows: list[list[float]] = []
    for i, pos in enumerate(value):
        if not _is_list(pos) or len(pos) not in (2, 3):
            raise _Invalid(
                f"Position {_at(where, i)} must be a list of 2 numbers [x, y], not {describe_value(pos)}."
            )
        if width is not None and len(pos) != width:
            raise _Invalid(f"Positions in {where} mix 2 and 3 numbers.")
        width = len(pos)
        row = []
        for v in pos:
            if type(v) not in (int, float):  # bool is an int subclass: refused here
                raise _Invalid(f"Position {_at(where, i)} holds {describe_value(v)}, not a number.")
            try:
                row.append(float(v))
            except OverflowError:
                raise _Invalid(f"Position {_at(where, i)} holds a number too large.") from None
        rows.append(row)
    # Only reached with an invalid value or an exotic but valid one (an int over 64 bits).
    return np.array(rows, dtype=np.float64).reshape(-1, width or 2)


def _check_bounds(parts: list[Any], width: float, height: float) -> None:
    for arr in _flatten(parts):
        inside = (arr[:, 0] >= 0) & (arr[:, 0] <= width) & (arr[:, 1] >= 0) & (arr[:, 1] <= height)
        if not inside.all():
            i = int(np.nonzero(~inside)[0][0])
            raise _Invalid(
                f"Position {_show(arr[i])} is outside the slide "
                f"(x in 0..{_num(width)}, y in 0..{_num(height)})."
            )


def _flatten(parts: list[Any]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for p in parts:
        out.extend(_flatten(p) if isinstance(p, list) else [p])
    return out


# --- building and repairing ----------------------------------------------------------------


def _build(kind: str, parts: list[Any]) -> shapely.Geometry:
    try:
        if kind == "Point":
            return shapely.points(parts[0][0])
        if kind == "MultiPoint":
            return shapely.multipoints(parts[0])
        if kind == "LineString":
            return shapely.linestrings(parts[0])
        if kind == "MultiLineString":
            return shapely.multilinestrings([shapely.linestrings(p) for p in parts])
        if kind == "Polygon":
            return _polygon(parts)
        return shapely.multipolygons([_polygon(p) for p in parts])
    except (GEOSException, ValueError) as exc:  # defensive: _parse should prevent these
        raise _Invalid(f"The {kind} could not be built: {exc}.") from None


def _polygon(rings: list[np.ndarray]) -> shapely.Geometry:
    # Holes go in as rings: the vectorised shapely.polygons() wants equal-length holes.
    return shapely.polygons(rings[0], holes=[shapely.linearrings(h) for h in rings[1:]] or None)


def _repair(shape: shapely.Geometry, kind: str, reason: str) -> shapely.Geometry:
    """make_valid, keeping only the parts of the input's dimension.

    The "structure" method unions shells and subtracts holes, which is what a pathologist
    means by an outline that crosses itself or a hole drawn over the edge (the default
    "linework" method turns overlapping loops into holes). keep_collapsed=False drops
    spikes and zero-area slivers instead of turning them into lines.
    """
    dimension = _DIMENSION[kind]
    noun = {0: "point", 1: "line", 2: "polygon"}[dimension]
    try:
        # Subnormal coordinates (1e-300) make GEOS divide by zero: numpy would warn, but the
        # result is judged below like any other, so the warning would tell nobody anything.
        with np.errstate(divide="ignore", invalid="ignore"):
            fixed = shapely.make_valid(shape, method="structure", keep_collapsed=False)
            fixed = _keep_dimension(fixed, dimension)
            if not fixed.is_empty and not fixed.is_valid:  # guard against GEOS corner cases
                fixed = _keep_dimension(shapely.make_valid(fixed), dimension)
    except GEOSException as exc:
        raise _Invalid(
            f"The {noun} is not valid ({reason}) and could not be repaired: {exc}."
        ) from None
    if fixed.is_empty:
        why = "" if reason.startswith("a part with") else f" ({reason})"
        raise _Invalid(
            f"The {noun} has {_ZERO[dimension]}{why}: nothing of it is left once made valid."
        )
    if not fixed.is_valid:
        raise _Invalid(f"The {noun} is not valid ({reason}) and could not be repaired.")
    return fixed


def _keep_dimension(shape: shapely.Geometry, dimension: int) -> shapely.Geometry:
    """The parts of ``dimension`` that have a size: make_valid can leave a polygon of zero
    area (a sliver whose corners round onto one line), which must not pass for a repair."""
    parts = [g for g in shapely.get_parts(shape) if shapely.get_dimensions(g) == dimension]
    parts = [p for q in parts for p in shapely.get_parts(q)]  # flatten Multi* parts
    if parts:
        parts = [p for p, bad in zip(parts, _degenerate_parts(parts, dimension), strict=True) if not bad]
    if dimension == 2:
        if len(parts) == 1:
            return parts[0]
        collected = shapely.multipolygons(parts) if parts else shapely.Polygon()
        # make_valid's polygon parts never overlap, but a union makes sure of it.
        return collected if collected.is_valid else shapely.union_all(parts)
    if dimension == 1:
        if len(parts) == 1:
            return parts[0]
        return shapely.multilinestrings(parts) if parts else shapely.LineString()
    return shapely.multipoints(parts) if parts else shapely.MultiPoint()


def _degenerate_parts(shape: Any, dimension: int) -> np.ndarray:
    """Which parts of ``shape`` (a geometry or a list of single parts) have no size: no
    area for polygons, no length for lines. "No" allows for rounding: a part thinner or
    shorter than _MIN_EXTENT pixels is a floating-point remnant, not something anyone drew."""
    parts = shapely.get_parts(shape) if isinstance(shape, shapely.Geometry) else np.asarray(shape)
    if dimension == 2:
        # Mean width of a polygon: twice its area over its perimeter.
        return 2 * shapely.area(parts) <= _MIN_EXTENT * shapely.length(parts)
    if dimension == 1:
        return shapely.length(parts) <= _MIN_EXTENT
    return shapely.is_empty(parts)


def _polygon_rings(polygon: shapely.Polygon) -> list[list[list[float]]]:
    rings = [polygon.exterior, *polygon.interiors]
    return [shapely.get_coordinates(r).tolist() for r in rings]


# --- wording -------------------------------------------------------------------------------

_REASON = re.compile(r"^(?P<what>[^\[]+)\[(?P<x>\S+) (?P<y>\S+)\]$")


def _human_reason(reason: str | None) -> str:
    """'Self-intersection[5 5]' -> 'self-intersection at (5, 5)'."""
    match = _REASON.match(reason or "")
    if not match:
        return (reason or "unknown reason").lower()
    what = match["what"].strip().lower()
    return f"{what} at ({_num(float(match['x']))}, {_num(float(match['y']))})"


def _describe(shape: shapely.Geometry) -> str:
    kind = shape.geom_type
    if kind.startswith("Multi"):
        return f"a {kind} of {shapely.get_num_geometries(shape)} parts"
    return f"a {kind}"


def describe_value(value: object) -> str:
    """What a client sent, for error messages: "null", "the string 'x'", "a list of 3 items"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, Mapping):
        return "an object"
    if _is_list(value):
        n = len(value)  # type: ignore[arg-type]
        return f"a list of {n} item{'' if n == 1 else 's'}"
    return f"a {type(value).__name__}"


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple)


def _num(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"


def _show(position: np.ndarray) -> str:
    return "(" + ", ".join(_num(float(v)) for v in position) + ")"


def _usable_mpp(mpp: object) -> bool:
    return type(mpp) in (int, float) and math.isfinite(mpp) and mpp > 0  # type: ignore[arg-type]

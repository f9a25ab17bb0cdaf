"""QuPath-compatible GeoJSON <-> annotation records (the slide document layout, the HTTP API).

QuPath writes each object as a Feature: a UUID ``id`` (since v0.4), the ``geometry``, and
``properties`` holding ``objectType``, ``name``, ``classification`` (``{"name", "color"}``,
or ``{"names": [...], "color"}`` for a derived class), ``isLocked`` (written only when
true), ``measurements`` (an object; a list of ``{"name", "value"}`` before v0.4) and
anything else (``color``, ``metadata``...). Import is checked whole before anything is
applied: a bad body raises :class:`GeoJSONError` naming the feature and the problem.
The geometry itself is judged later, by ``collab.annotations.geometry.check_geometry``.

Unknown properties are stored as fields of the record and exported back as properties,
so they survive a round trip; the few that would clash with a record field are kept
under ``extraProperties``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import orjson

from collab.annotations.geometry import closed_rings, describe_value, nesting_depth

__all__ = [
    "MAX_DEPTH",
    "GeoJSONError",
    "annotation_to_feature",
    "feature_collection",
    "feature_to_annotation",
    "parse_feature_collection",
    "parse_features_piecewise",
    "writable_feature",
]

# Properties with a meaning here; everything else is carried through untouched.
# (name, classification and measurements keep their names in the record.)
_MAPPED = {"objectType", "isLocked", "name", "classification", "measurements"}
_CARRIED = ("author", "status", "problem", "comments", "created", "updated")
_KNOWN_PROPERTIES = _MAPPED | set(_CARRIED)
# Record fields that are not properties of the same name: an unknown property called
# like one of these cannot live at the top of the record.
_STASH = "extraProperties"
_RESERVED = {"geometry", "locked", _STASH}
# QuPath v0.2 stored the Java class in "id"; such an id names no object.
_LEGACY_TYPE_IDS = {
    "PathAnnotationObject",
    "PathDetectionObject",
    "PathCellObject",
    "PathTileObject",
    "TMACoreObject",
    "PathRootObject",
}
_MAX_ID_LENGTH = 256
# How deeply a feature's properties (and a geometry's members besides its coordinates) may
# nest. QuPath writes 3 or 4 levels; orjson refuses to write past 254, and a stored value it
# cannot write would break the export of the whole slide.
MAX_DEPTH = 32


class GeoJSONError(ValueError):
    """The body is not importable GeoJSON; the message says where and why."""


def parse_feature_collection(
    body: object, *, new_id: Callable[[], str] = lambda: str(uuid.uuid4()), max_depth: int = MAX_DEPTH
) -> list[tuple[str, dict[str, Any]]]:
    """Validate a whole import body and convert it to ``(id, record)`` pairs, in order.

    Accepts a FeatureCollection, a bare list of Features or a single Feature (QuPath
    writes all three). Features without an id get ``new_id()``. Raises GeoJSONError on
    the first problem, before anything could have been applied.
    """
    features = _features_of(body)
    out: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for index, feature in enumerate(features):
        try:
            key, record = feature_to_annotation(feature, new_id=new_id, max_depth=max_depth)
        except GeoJSONError as exc:
            raise GeoJSONError(f"feature {index}: {exc}") from None
        if key in seen:
            raise GeoJSONError(f"feature {index}: id {key!r} repeats the id of feature {seen[key]}")
        seen[key] = index
        out.append((key, record))
    return out


def feature_to_annotation(
    feature: object, *, new_id: Callable[[], str] = lambda: str(uuid.uuid4()), max_depth: int = MAX_DEPTH
) -> tuple[str, dict[str, Any]]:
    """One Feature as ``(id, record)``; raises GeoJSONError if it is not one."""
    if not isinstance(feature, Mapping):
        raise GeoJSONError(f"a Feature must be an object, not {describe_value(feature)}")
    if feature.get("type") != "Feature":
        raise GeoJSONError(f'"type" must be "Feature", not {_shown(feature.get("type"))}')
    key = _feature_id(feature.get("id"), new_id)
    geometry = feature.get("geometry")
    if not isinstance(geometry, Mapping) or not isinstance(geometry.get("type"), str):
        raise GeoJSONError(
            f'"geometry" must be a GeoJSON geometry object, not {describe_value(geometry)}'
        )
    properties = feature.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, Mapping):
        raise GeoJSONError(f'"properties" must be an object, not {describe_value(properties)}')
    if nesting_depth(properties, max_depth) > max_depth:
        raise GeoJSONError(f'"properties" nest deeper than {max_depth} levels')
    # The coordinates' own depth is judged with the geometry (see the import route).
    members = {k: v for k, v in geometry.items() if k != "coordinates"}
    if nesting_depth(members, max_depth) > max_depth:
        raise GeoJSONError(f'"geometry" nests deeper than {max_depth} levels')
    return key, _record(dict(geometry), properties)


def annotation_to_feature(key: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The QuPath Feature for one stored annotation.

    Never raises: a field holding a value of the wrong type (a client may write anything)
    is left out rather than handed to QuPath, which would refuse the whole file.
    """
    props: dict[str, Any] = {"objectType": "annotation"}
    if isinstance(record.get("name"), str):
        props["name"] = record["name"]
    classification = record.get("classification")
    if classification is not None and _classification_problem(classification) is None:
        props["classification"] = _qupath_classification(classification)
    if isinstance(record.get("locked"), bool):
        props["isLocked"] = record["locked"]
    if isinstance(record.get("measurements"), Mapping | list):
        props["measurements"] = record["measurements"]
    for field in _CARRIED:
        if field in record:
            props[field] = record[field]
    for field, value in record.items():
        if field not in _KNOWN_PROPERTIES and field not in _RESERVED:
            props[field] = value
    stash = record.get(_STASH)
    if isinstance(stash, Mapping):
        props.update(stash)
    geometry = closed_rings(record.get("geometry"))
    return {"type": "Feature", "id": key, "geometry": geometry, "properties": props}


def writable_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """The feature without the members JSON cannot hold (a client may have stored a value
    nested thousands deep): such a geometry becomes null, such a property is left out."""
    def writable(value: Any) -> bool:
        try:
            orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            return False
        return True

    out = dict(feature)
    if not writable(out["geometry"]):
        out["geometry"] = None
    out["properties"] = {k: v for k, v in out["properties"].items() if writable(v)}
    return out


def feature_collection(items: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """A FeatureCollection of ``(id, record)`` pairs, as QuPath imports it."""
    return {
        "type": "FeatureCollection",
        "features": [annotation_to_feature(key, record) for key, record in items],
    }


# --- import --------------------------------------------------------------------------------

# Where a Feature object starts. Its quotes cannot occur unescaped inside a JSON string, so every
# match is structural; one nested deeper than the features list makes a piece that does not parse.
_FEATURE_START = re.compile(rb'\{\s*"type"\s*:\s*"Feature"\s*[,}]')
_COLLECTION_HEAD = re.compile(rb'\s*(?:\{\s*"type"\s*:\s*"FeatureCollection"\s*,\s*"features"\s*:\s*)?\[\s*')
_COLLECTION_TAIL = re.compile(rb'\s*\]\s*(?:\}\s*)?')


def parse_features_piecewise(raw: bytes) -> Any | None:
    """Parse a large FeatureCollection (or list of Features) one Feature at a time.

    One ``orjson.loads`` of a 150 MB body holds the GIL for seconds, stalling the event loop
    even from a worker thread; pieces of a few KB let it run in between. Answers exactly what
    ``orjson.loads(raw)`` would, or None when the body is not in the plain form this expects
    (other members, a piece that does not parse...): then parse it whole.
    """
    starts = [m.start() for m in _FEATURE_START.finditer(raw)]
    if not starts:
        return None
    head = _COLLECTION_HEAD.fullmatch(raw, 0, starts[0])
    if head is None:
        return None
    tail = None
    for end in range(len(raw), starts[-1], -1):  # the closing "]" (and "}") after the last Feature
        if raw[end - 1 : end] == b"]":
            tail = _COLLECTION_TAIL.fullmatch(raw, end - 1)
            break
        if raw[end - 1 : end] not in (b"}", b" ", b"\n", b"\r", b"\t"):
            return None
    if tail is None:
        return None
    bounds = [*starts, tail.start()]
    features = []
    try:
        for i in range(len(starts)):
            piece = raw[bounds[i] : bounds[i + 1]].rstrip()
            if i + 1 < len(starts):
                if not piece.endswith(b","):
                    return None
                piece = piece[:-1]
            feature = orjson.loads(piece)
            if not isinstance(feature, dict):
                return None
            features.append(feature)
    except orjson.JSONDecodeError:
        return None
    if head.group().lstrip().startswith(b"["):
        return features if tail.group().strip() == b"]" else None
    if b"".join(tail.group().split()) != b"]}":
        return None
    return {"type": "FeatureCollection", "features": features}


def _features_of(body: object) -> list[Any]:
    if isinstance(body, list):
        return body
    if not isinstance(body, Mapping):
        raise GeoJSONError(
            f"the body must be a GeoJSON FeatureCollection, Feature or list of Features, "
            f"not {describe_value(body)}"
        )
    kind = body.get("type")
    if kind == "Feature":
        return [body]
    if kind != "FeatureCollection":
        raise GeoJSONError(f'"type" must be "FeatureCollection" or "Feature", not {_shown(kind)}')
    features = body.get("features")
    if not isinstance(features, list):
        raise GeoJSONError(f'"features" must be a list, not {describe_value(features)}')
    return features


def _feature_id(value: object, new_id: Callable[[], str]) -> str:
    if value is None or value in _LEGACY_TYPE_IDS:
        return new_id()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # GeoJSON allows numeric ids; Y map keys are strings
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise GeoJSONError(
            f'"id" must be a non-empty string of at most {_MAX_ID_LENGTH} characters, '
            f"not {describe_value(value)}"
        )
    return value


def _record(geometry: dict[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    object_type = props.get("objectType", "annotation")
    if object_type not in ("annotation", "PathAnnotationObject"):
        raise GeoJSONError(
            f"objectType {_shown(object_type)} cannot be imported; only annotations can "
            "(detections belong in a bulk layer)"
        )
    record: dict[str, Any] = {"geometry": geometry}
    if "name" in props and props["name"] is not None:
        if not isinstance(props["name"], str):
            raise GeoJSONError(f'"name" must be a string, not {describe_value(props["name"])}')
        record["name"] = props["name"]
    record["classification"] = _classification(props.get("classification"))
    if "isLocked" in props:
        if not isinstance(props["isLocked"], bool):
            raise GeoJSONError(
                f'"isLocked" must be true or false, not {describe_value(props["isLocked"])}'
            )
        record["locked"] = props["isLocked"]
    if "measurements" in props:
        record["measurements"] = _measurements(props["measurements"])
    for field in ("author", "status", "problem"):
        if field in props:
            if props[field] is not None and not isinstance(props[field], str):
                raise GeoJSONError(f'"{field}" must be a string, not {describe_value(props[field])}')
            record[field] = props[field]
    for field in ("created", "updated"):
        if field in props:
            if not _is_number(props[field]):
                raise GeoJSONError(
                    f'"{field}" must be a time in ms since the epoch, not {describe_value(props[field])}'
                )
            record[field] = props[field]
    if "comments" in props:
        record["comments"] = _comments(props["comments"])
    for field, value in props.items():
        if field in _KNOWN_PROPERTIES:
            continue
        if field in _RESERVED:
            record.setdefault(_STASH, {})[field] = value
        else:
            record[field] = value
    return record


def _classification(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    problem = _classification_problem(value)
    if problem:
        raise GeoJSONError(problem)
    out = dict(cast(Mapping[str, Any], value))
    # QuPath before v0.4 wrote the color as a packed (A)RGB int, "colorRGB" or "color".
    packed = out.pop("colorRGB", None)
    if isinstance(out.get("color"), int):
        packed = out["color"]
    if packed is not None:
        out["color"] = [(packed >> 16) & 255, (packed >> 8) & 255, packed & 255]
    if "name" not in out:
        out = {"name": ": ".join(out["names"]), **out}  # QuPath's own spelling of the path
    return out


def _qupath_classification(value: Mapping[str, Any]) -> dict[str, Any]:
    """QuPath's own spelling: a derived class as "names" alone, as it wrote it."""
    out = dict(value)
    names = out.get("names")
    if names is not None and "name" in out:
        if ": ".join(names) == out["name"]:
            del out["name"]  # added on import for our clients; QuPath reads "names"
        else:
            del out["names"]  # renamed here since: the name is what users see
    return out


def _classification_problem(value: object) -> str | None:
    """Why a value is not a QuPath classification, or None if it is one."""
    if not isinstance(value, Mapping):
        return f'"classification" must be an object or null, not {describe_value(value)}'
    name, names = value.get("name"), value.get("names")
    if name is None and names is None:
        return '"classification" needs a "name" (or QuPath\'s "names")'
    if name is not None and (not isinstance(name, str) or not name):
        return f'"classification.name" must be a non-empty string, not {describe_value(name)}'
    if names is not None and (
        not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names)
    ):
        return '"classification.names" must be a list of non-empty strings'
    for field in ("color", "colorRGB"):
        if field not in value:
            continue
        color = value[field]
        if isinstance(color, int) and not isinstance(color, bool):
            continue
        if field == "colorRGB" or not (
            isinstance(color, list)
            and len(color) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
        ):
            return f'"classification.{field}" must be [r, g, b] with integers 0..255'
    return None


def _measurements(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise GeoJSONError('"measurements" keys must be strings')
        return dict(value)
    if isinstance(value, list):  # QuPath before v0.4: [{"name": ..., "value": ...}]
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise GeoJSONError(f'"measurements[{i}]" must be an object with a "name"')
            out[item["name"]] = item.get("value")
        return out
    raise GeoJSONError(f'"measurements" must be an object or a list, not {describe_value(value)}')


def _comments(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise GeoJSONError(f'"comments" must be a list, not {describe_value(value)}')
    for i, comment in enumerate(value):
        if not isinstance(comment, Mapping):
            raise GeoJSONError(f'"comments[{i}]" must be an object, not {describe_value(comment)}')
        if not isinstance(comment.get("text"), str):
            raise GeoJSONError(f'"comments[{i}].text" must be a string')
        for field in ("id", "author"):
            if field in comment and not isinstance(comment[field], str):
                raise GeoJSONError(f'"comments[{i}].{field}" must be a string')
        if "created" in comment and not _is_number(comment["created"]):
            raise GeoJSONError(f'"comments[{i}].created" must be a time in ms since the epoch')
    return [dict(c) for c in value]


# --- wording -------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _shown(value: object) -> str:
    return repr(value[:40]) if isinstance(value, str) else describe_value(value)

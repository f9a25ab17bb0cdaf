"""decode_features: the Features of a piece of a QuPath export, the common ones already typed.

msgspec decodes a piece of the `features` array straight into small typed structs, reading only
what an import keeps (geometry, nucleus, object type, classification) and skipping the rest
(ids, measurements: most of a real export's bytes) without building Python objects for it.
A Feature that does not fit the common form (one outline ring of [x, y] pairs, maybe one nucleus
ring likewise) is handed back as orjson parses it, for the general path of LayerParser to judge:
nothing is refused or judged here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson

# A vertex that is not a pair of numbers, a second ring or another geometry type fails these
# types: such a Feature takes the general path.
_Ring = list[tuple[float, float]]


class _Polygon(msgspec.Struct):
    type: Literal["Polygon"]
    coordinates: tuple[_Ring]


class _Properties(msgspec.Struct):
    objectType: Any = msgspec.UNSET
    classification: msgspec.Raw = msgspec.Raw()
    nucleusGeometry: _Polygon | msgspec.UnsetType | None = msgspec.UNSET


class _Feature(msgspec.Struct):
    geometry: _Polygon
    properties: _Properties = msgspec.field(default_factory=_Properties)
    nucleusGeometry: _Polygon | msgspec.UnsetType | None = msgspec.UNSET
    objectType: Any = msgspec.UNSET
    classification: msgspec.Raw = msgspec.Raw()


_PIECE = msgspec.json.Decoder(list[_Feature])
_ONE = msgspec.json.Decoder(_Feature)
_RAW = msgspec.json.Decoder(list[msgspec.Raw])
DETECTION_TYPES = ("detection", "cell")


@dataclass(slots=True)
class Decoded:
    """A piece's Features: the common ones as parallel lists, the others as parsed JSON."""

    classifications: list[bytes]  # the raw JSON of each one's classification (b"" when absent)
    outlines: list[_Ring]
    nuclei: list[_Ring | None]
    others: list[Any]


def decode_features(span: bytes) -> Decoded:
    """`span`: whole elements of the features array, comma-separated, without brackets.
    Raises msgspec.DecodeError when it is not valid JSON."""
    body = b"[" + span + b"]"
    out = Decoded([], [], [], [])
    try:
        features = _PIECE.decode(body)
    except msgspec.ValidationError:  # valid JSON, but some Feature is not of the common form
        for raw in _RAW.decode(body):
            try:
                _add(out, _ONE.decode(raw), raw)
            except msgspec.ValidationError:
                out.others.append(orjson.loads(bytes(raw)))
        return out
    raws: list[msgspec.Raw] | None = None
    for i, feature in enumerate(features):
        if not _add(out, feature, None):
            raws = raws if raws is not None else _RAW.decode(body)
            out.others.append(orjson.loads(bytes(raws[i])))
    return out


def _add(out: Decoded, feature: _Feature, raw: msgspec.Raw | None) -> bool:
    """Take a typed Feature of the common form; False (or, given its raw JSON, add it to the
    others) when it is not: an object type other than a detection's, for instance."""
    props = feature.properties
    kind = props.objectType
    if kind is msgspec.UNSET:
        kind = feature.objectType if feature.objectType is not msgspec.UNSET else "detection"
    nucleus = feature.nucleusGeometry
    if nucleus is msgspec.UNSET:
        nucleus = props.nucleusGeometry if props.nucleusGeometry is not msgspec.UNSET else None
    if kind not in DETECTION_TYPES:
        if raw is not None:
            out.others.append(orjson.loads(bytes(raw)))
            return True
        return False
    classification = props.classification if props.classification else feature.classification
    out.classifications.append(bytes(classification))
    out.outlines.append(feature.geometry.coordinates[0])
    out.nuclei.append(nucleus.coordinates[0] if nucleus is not None else None)
    return True

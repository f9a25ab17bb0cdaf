"""The fields of an annotation: what the server owns, what it last knew, and what a user changed.

Pure functions over plain values (an annotation as Python data), so the audit trail and the
server's corrections can be tested without a document, a room or a socket.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pycrdt import Array, Map

from collab.annotations.geometry import merge_measurements

# Written by the server only (a client's value is replaced).
SERVER_FIELDS = ("status", "problem", "measurements", "author", "created", "updated")

# A client may write the server's own values itself (the web client does): what the server would
# write is kept as written, so such an edit costs no correction. Measurements agree within a
# rounding of their 3 decimals; `updated` is the client's clock, kept when this change wrote it and
# it is at most UPDATED_TOLERANCE_MS behind the server's clock and UPDATED_AHEAD_MS ahead of it,
# and later than the annotation's previous `updated` (else the server stamps its own time): a
# client cannot date its change into the future, nor make `updated` go back.
MEASUREMENT_TOLERANCE = 0.002
UPDATED_TOLERANCE_MS = 30_000
UPDATED_AHEAD_MS = 1_000

# Audit actions for what users change, and the server's verdicts.
CREATED = "created"
DELETED = "deleted"
GEOMETRY_CHANGED = "geometry_changed"
CLASSIFICATION_CHANGED = "classification_changed"
RENAMED = "renamed"
LOCKED = "locked"
UNLOCKED = "unlocked"
COMMENTED = "commented"
REPAIRED = "repaired"
MARKED_INVALID = "marked_invalid"


@dataclass(slots=True)
class Known:
    """What the server last saw of one annotation."""

    fingerprint: bytes | None = None
    status: str | None = None
    problem: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    author: str | None = None
    classification: Any = None
    name: Any = None
    locked: bool = False
    comments: int = 0
    updated: Any = None  # the `updated` the server last saw or wrote


def to_py(value: Any) -> Any:
    if isinstance(value, Map | Array):
        return value.to_py()
    return value


def fingerprint(geometry: Any) -> bytes:
    """Of a geometry as read back from the doc (key order does not matter). orjson writes NaN
    and infinity as null: such geometries are invalid whichever it was."""
    return fingerprint_and_size(geometry)[0]


def fingerprint_and_size(geometry: Any) -> tuple[bytes, int]:
    """The fingerprint, and the length of the JSON it was taken from (what a check will cost)."""
    try:
        text = orjson.dumps(geometry, option=orjson.OPT_SORT_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        # Nested past orjson's limit (repr would recurse too): such a geometry is invalid
        # whatever it holds; its type and size tell versions apart well enough.
        text = b"unwritable:" + type(geometry).__name__.encode() + b":" + str(sys.getsizeof(geometry)).encode()
    return hashlib.blake2b(text, digest_size=16).digest(), len(text)


def class_name(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"]
    return None


def comment_count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def known_from_record(record: Any, fp: bytes | None) -> Known:
    """What a stored annotation says of itself (after a reload)."""
    rec = record if isinstance(record, Mapping) else {}
    measurements = rec.get("measurements")
    return Known(
        fingerprint=fp,
        status=rec.get("status") if isinstance(rec.get("status"), str) else None,
        problem=rec.get("problem"),
        measurements=dict(measurements) if isinstance(measurements, Mapping) else {},
        author=rec.get("author") if isinstance(rec.get("author"), str) else None,
        classification=rec.get("classification"),
        name=rec.get("name"),
        locked=rec.get("locked") is True,
        comments=comment_count(rec.get("comments")),
        updated=rec.get("updated"),
    )


def field_changes(record: Mapping[str, Any], known: Known, created: bool) -> list[tuple[str, dict[str, Any] | None]]:
    """The audit entries (action, detail) for what a user changed beside the geometry, and
    `known` brought up to date. A new annotation's own fields are part of its creation."""
    changes: list[tuple[str, dict[str, Any] | None]] = []
    classification = record.get("classification")
    if not created and classification != known.classification:
        changes.append((CLASSIFICATION_CHANGED, {
            "from": class_name(known.classification), "to": class_name(classification),
        }))
    known.classification = classification
    name = record.get("name")
    if not created and name != known.name:
        changes.append((RENAMED, {"from": known.name, "to": name}))
    known.name = name
    locked = record.get("locked") is True
    if not created and locked != known.locked:
        changes.append((LOCKED if locked else UNLOCKED, None))
    known.locked = locked
    comments = comment_count(record.get("comments"))
    if comments > known.comments:
        changes.append((COMMENTED, {"count": comments - known.comments}))
    known.comments = comments
    return changes


def server_fields(record: Mapping[str, Any], known: Known, created: bool, at: int) -> dict[str, Any]:
    """The server-owned fields that differ from what the record holds (none when the client
    wrote them as the server would)."""
    fields: dict[str, Any] = {}
    if known.status is not None and record.get("status") != known.status:
        fields["status"] = known.status
    if known.problem is None:
        if "problem" in record:
            fields["problem"] = None
    elif record.get("problem") != known.problem:
        fields["problem"] = known.problem
    written = record.get("measurements")
    measurements = merge_measurements(written, known.measurements)
    if not measurements_agree(written, measurements) and (measurements or written is not None):
        fields["measurements"] = measurements
    if record.get("author") != known.author:
        fields["author"] = known.author
    if created and not _is_number(record.get("created")):
        fields["created"] = at
    updated = record.get("updated")
    if (
        _is_number(updated)
        and (not _is_number(known.updated) or updated > known.updated)  # written with this change
        and at - UPDATED_TOLERANCE_MS <= updated <= at + UPDATED_AHEAD_MS  # by a clock that agrees with ours
    ):
        known.updated = updated
    else:
        fields["updated"] = known.updated = at
    return fields


def measurements_agree(written: Any, computed: Mapping[str, Any]) -> bool:
    """Whether a client's `measurements` are the server's, within rounding."""
    if written == computed:
        return True
    if not isinstance(written, Mapping) or set(written) != set(computed):
        return False
    for key, value in computed.items():
        mine = written[key]
        if _is_number(value) and _is_number(mine):
            if abs(mine - value) > max(MEASUREMENT_TOLERANCE, 1e-9 * abs(value)):
                return False
        elif mine != value:
            return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def normalized(record: dict[str, Any]) -> dict[str, Any]:
    """Yjs keeps every number as a float: give QuPath integer colors and times back."""
    classification = record.get("classification")
    if isinstance(classification, dict) and isinstance(classification.get("color"), list):
        color = classification["color"]
        if all(isinstance(c, float) and c.is_integer() for c in color):
            record["classification"] = {**classification, "color": [int(c) for c in color]}
    for name in ("created", "updated"):
        value = record.get(name)
        if isinstance(value, float) and value.is_integer():
            record[name] = int(value)
    return record

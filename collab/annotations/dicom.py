"""Annotation records <-> one DICOM Microscopy Bulk Simple Annotations instance (highdicom).

Export: one annotation group per (classification, graphic type), labelled with the class
name (``Unclassified`` for none) and carrying its color; geometries in the image's total
pixel matrix (2D, level-0 pixels, the frame annotations are stored in): Point -> POINT,
LineString -> POLYLINE, Polygon -> POLYGON (outer ring; DICOM polygons are implicitly closed
and have no holes), Multi* -> one annotation per part. The server's measurements (area,
perimeter, length, in µm) travel as the group's measurements; the exporter and site are the
content creator and institution, the annotations' authors the group description.

Import: the reverse, one record per annotation, with ids derived from the instance and the
annotation's place in it, so importing the same instance twice replaces rather than doubles.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from collab.annotations.geometry import MEASUREMENT_KEYS

__all__ = ["UNCLASSIFIED", "from_dicom", "to_dicom"]

UNCLASSIFIED = "Unclassified"
ANNOTATED_CATEGORY = Code("91723000", "SCT", "Anatomical Structure")
_CLASS_SCHEME = "99COLLAB"  # a private coding scheme for class names (DICOM allows 99 prefixes)
_MEASUREMENTS = {
    "area_um2": (Code("42798000", "SCT", "Area"), Code("um2", "UCUM", "square micrometer")),
    "perimeter_um": (Code("131191004", "SCT", "Perimeter"), Code("um", "UCUM", "micrometer")),
    "length_um": (Code("410668003", "SCT", "Length"), Code("um", "UCUM", "micrometer")),
}
_BY_CODE = {code.value: key for key, (code, _unit) in _MEASUREMENTS.items()}
_GRAPHIC = {"Point": "POINT", "LineString": "POLYLINE", "Polygon": "POLYGON"}
_GEOJSON = {"POINT": "Point", "POLYLINE": "LineString", "POLYGON": "Polygon"}
_PARTS = {"MultiPoint": "Point", "MultiLineString": "LineString", "MultiPolygon": "Polygon"}


def _parts(geometry: object) -> list[tuple[str, Any]]:
    """(GeoJSON type, coordinates) of each simple part of a geometry; [] if unusable."""
    if not isinstance(geometry, Mapping):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind in _GRAPHIC:
        return [(kind, coords)]
    if kind in _PARTS and isinstance(coords, list):
        return [(_PARTS[kind], part) for part in coords]
    return []


def _points(kind: str, coords: Any) -> np.ndarray | None:
    """The vertices DICOM stores for one part, or None when it cannot hold it."""
    try:
        if kind == "Point":
            array = np.array([coords[:2]], dtype=np.float64)
        elif kind == "LineString":
            array = np.array([c[:2] for c in coords], dtype=np.float64)
        else:
            ring = [c[:2] for c in coords[0]]
            if len(ring) > 1 and ring[0] == ring[-1]:
                ring = ring[:-1]  # DICOM polygons are closed implicitly
            array = np.array(ring, dtype=np.float64)
    except (TypeError, IndexError, ValueError):
        return None
    minimum = {"Point": 1, "LineString": 2, "Polygon": 3}[kind]
    if array.ndim != 2 or array.shape[0] < minimum or array.shape[1] != 2 or not np.isfinite(array).all():
        return None
    return array


def class_code(name: str) -> Code:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return Code(digest, _CLASS_SCHEME, name[:64])


def class_color(classification: Mapping[str, Any] | None) -> hd.color.CIELabColor | None:
    rgb = classification.get("color") if classification else None
    if isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
        return hd.color.CIELabColor.from_rgb(*rgb)
    return None


def to_dicom(
    records: Iterable[tuple[str, Mapping[str, Any]]],
    source_image: Dataset,
    *,
    series_uid: str,
    instance_uid: str,
    creator: str,
    site: str,
    description: str,
) -> tuple[Dataset, int]:
    """The Bulk Simple Annotations instance of `records` (and how many annotations it holds)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for _key, record in records:
        if record.get("status") == "invalid":
            continue
        classification = record.get("classification") if isinstance(record.get("classification"), Mapping) else None
        name = classification.get("name") if classification else None
        name = name if isinstance(name, str) and name else UNCLASSIFIED
        measurements = record.get("measurements") if isinstance(record.get("measurements"), Mapping) else {}
        for kind, coords in _parts(record.get("geometry")):
            points = _points(kind, coords)
            if points is None:
                continue
            group = groups.setdefault((name, _GRAPHIC[kind]), {
                "points": [], "measurements": defaultdict(list), "authors": set(),
                "color": class_color(classification),
            })
            group["points"].append(points)
            for key in MEASUREMENT_KEYS:
                value = measurements.get(key)
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                group["measurements"][key].append(float(value) if ok else math.nan)
            if isinstance(record.get("author"), str):
                group["authors"].add(record["author"])
    annotation_groups = []
    count = 0
    for number, ((name, graphic), group) in enumerate(sorted(groups.items()), start=1):
        measured = [
            hd.ann.Measurements(name=code, values=np.array(group["measurements"][key], dtype=np.float32), unit=unit)
            for key, (code, unit) in _MEASUREMENTS.items()
            if not all(math.isnan(v) for v in group["measurements"][key])
        ]
        authors = ", ".join(sorted(group["authors"]))
        annotation_groups.append(hd.ann.AnnotationGroup(
            number=number,
            uid=hd.UID(),
            label=name[:64],
            annotated_property_category=ANNOTATED_CATEGORY,
            annotated_property_type=class_code(name),
            graphic_type=graphic,
            graphic_data=group["points"],
            algorithm_type="MANUAL",
            measurements=measured or None,
            description=f"authors: {authors}"[:1024] if authors else None,
            display_color=group["color"],
        ))
        count += len(group["points"])
    if not annotation_groups:
        raise ValueError("the slide has no annotation DICOM can hold")
    dataset = bulk_annotations(
        source_image, annotation_groups, series_uid=series_uid, instance_uid=instance_uid, series_number=900,
        description=description, label="ANNOTATIONS", creator=creator, site=site,
        series_description=f"collab annotations ({site})",
    )
    return dataset, count


def bulk_annotations(
    source_image: Any, groups: list[Any], *, series_uid: str, instance_uid: str, series_number: int,
    description: str, label: str, creator: str, site: str, series_description: str,
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    """One Bulk Simple Annotations instance from collab (annotations or a detection layer)."""
    dataset = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source_image],
        annotation_coordinate_type="2D",
        annotation_groups=groups,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer="collab",
        manufacturer_model_name="collab annotation server",
        software_versions="0.1",
        device_serial_number="collab",
        content_description=description[:64],
        content_label=label,
        content_creator_name=person_name(creator),
    )
    dataset.InstitutionName = site[:64]
    dataset.SeriesDescription = series_description[:64]
    return dataset


def person_name(user: str) -> str:
    # A PN component may not hold '^' or '=' (component and group separators); the trailing
    # caret says the whole name is one component (a user name, not family^given).
    return ("".join(c for c in user if c not in "^=\\")[:63] or "collab") + "^"


def from_dicom(dataset: Dataset) -> list[tuple[str, dict[str, Any]]]:
    """The annotations of a Bulk Simple Annotations dataset as (id, record) pairs."""
    annotations = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(dataset)
    coordinate_type = annotations.annotation_coordinate_type
    if coordinate_type.value != "2D":
        raise ValueError("only 2D (image) annotation coordinates can be imported")
    instance = str(dataset.SOPInstanceUID)
    out: list[tuple[str, dict[str, Any]]] = []
    for group in annotations.get_annotation_groups():
        graphic = group.graphic_type.value
        if graphic not in _GEOJSON:
            continue  # ELLIPSE and RECTANGLE: not a geometry of the slide document
        classification = _classification(group)
        names, values, _units = group.get_measurements()
        keys = [_BY_CODE.get(n.value) for n in names]
        for index, points in enumerate(group.get_graphic_data(coordinate_type)):
            record: dict[str, Any] = {"geometry": _geometry(graphic, points), "classification": classification}
            measured = {
                key: float(values[index, column])
                for column, key in enumerate(keys)
                if key is not None and values.size and not math.isnan(values[index, column])
            }
            if measured:
                record["measurements"] = measured
            key = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{instance}/{group.uid}/{index}"))
            out.append((key, record))
    return out


def _classification(group: Any) -> dict[str, Any] | None:
    name = str(group.label)
    if name == UNCLASSIFIED:
        return None
    color = [255, 255, 0]
    lab = getattr(group, "RecommendedDisplayCIELabValue", None)
    if lab is not None:
        color = [int(c) for c in hd.color.CIELabColor(*_lab(lab)).to_rgb(clip=True)]
    return {"name": name, "color": color}


def _lab(encoded: Sequence[int]) -> tuple[float, float, float]:
    # Encoded as 16-bit values: L in 0-100, a and b in -128-127.
    return (encoded[0] / 0xFFFF * 100, encoded[1] / 0xFFFF * 255 - 128, encoded[2] / 0xFFFF * 255 - 128)


def _geometry(graphic: str, points: np.ndarray) -> dict[str, Any]:
    coords = [[float(x), float(y)] for x, y in points[:, :2]]
    if graphic == "POINT":
        return {"type": "Point", "coordinates": coords[0]}
    if graphic == "POLYLINE":
        return {"type": "LineString", "coordinates": coords}
    return {"type": "Polygon", "coordinates": [[*coords, coords[0]]]}

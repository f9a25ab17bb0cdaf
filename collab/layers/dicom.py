"""A detection layer -> one DICOM Microscopy Bulk Simple Annotations instance (highdicom).

One annotation group per class (and graphic type): POLYGON from each object's stored outline,
POINT from its centroid when it has no usable outline. A layer holds up to a million objects, so
nothing here makes a Python object per object or per vertex: chunks are decoded to numpy arrays
(codec.py) and each group's coordinates and point index list are written as the bulk attributes
DICOM keeps them in (Point Coordinates Data, Long Primitive Point Index List). highdicom's
AnnotationGroup takes a list of one array per annotation and checks them one by one in Python;
the group is built from its first annotation and its bulk data replaced with the whole class.
Vertices are kept to 1/8 px in the layer store: float32 holds them exactly up to 2**21 px.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from collab.annotations.dicom import ANNOTATED_CATEGORY, UNCLASSIFIED, bulk_annotations, class_code, class_color
from collab.layers.codec import decode_points, decode_shapes
from collab.layers.store import LayerMeta

__all__ = ["layer_to_dicom"]


@dataclass(slots=True)
class _Group:
    """The objects of one class and graphic type, as pieces of bulk arrays (one per chunk)."""

    sizes: list[np.ndarray] = field(default_factory=list)  # vertices per annotation
    coords: list[np.ndarray] = field(default_factory=list)  # float32 (m, 2)

    def add(self, sizes: np.ndarray, coords: np.ndarray) -> None:
        if len(sizes):
            self.sizes.append(sizes)
            self.coords.append(coords.astype(np.float32))


def _gather(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of the vertices of rings that start at `starts` and have `sizes` vertices."""
    offsets = np.cumsum(sizes) - sizes
    return np.arange(int(sizes.sum()), dtype=np.int64) + np.repeat(starts - offsets, sizes)


def _split(count: int, points: bytes, shapes: bytes, polygons: dict[int, _Group], dots: dict[int, _Group]) -> None:
    """Add one stored chunk's objects to the groups of their class."""
    decoded = decode_points(points)
    if len(decoded) != count:
        raise ValueError(f"a chunk says {count} objects and holds {len(decoded)}")
    rings = decode_shapes(shapes, decoded.xy)
    sizes, starts = rings.counts[:, 0].copy(), rings.offsets[:, 0]
    # DICOM polygons are closed implicitly and their first and last vertex must differ: the store
    # never keeps the closing vertex, but two vertices closer than 1/8 px became one. A sliver
    # left with fewer than 3 vertices is exported as a POINT at its centroid.
    closed = np.zeros(len(sizes), bool)
    long = sizes >= 3
    closed[long] = np.all(rings.coords[starts[long]] == rings.coords[starts[long] + sizes[long] - 1], axis=1)
    sizes[closed] -= 1
    outlined = sizes >= 3
    for cls in np.unique(decoded.classes).tolist():
        mine = decoded.classes == cls
        poly = mine & outlined
        polygons.setdefault(cls, _Group()).add(sizes[poly], rings.coords[_gather(starts[poly], sizes[poly])])
        dot = mine & ~outlined
        dots.setdefault(cls, _Group()).add(np.ones(int(dot.sum()), np.int64), decoded.xy[dot])


def _annotation_group(number: int, name: str, color: object, graphic: str, group: _Group,
                      algorithm: hd.AlgorithmIdentificationSequence) -> hd.ann.AnnotationGroup:
    sizes = np.concatenate(group.sizes)
    coords = np.concatenate(group.coords)
    out = hd.ann.AnnotationGroup(
        number=number,
        uid=hd.UID(),
        label=name[:64],
        annotated_property_category=ANNOTATED_CATEGORY,
        annotated_property_type=class_code(name),
        graphic_type=graphic,
        graphic_data=[coords[: int(sizes[0])]],  # checked by highdicom, then replaced by the whole group
        algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm,
        display_color=class_color({"color": color}),
    )
    out.NumberOfAnnotations = len(sizes)
    out.PointCoordinatesData = coords.astype("<f4", copy=False).tobytes()
    if graphic == "POLYGON":
        # 1-based positions of each annotation's first value (2 values a vertex), as int32.
        first = (np.cumsum(sizes) - sizes) * 2 + 1
        if first[-1] > np.iinfo(np.int32).max:
            raise ValueError("a class with over 2**30 vertices does not fit one annotation group")
        out.LongPrimitivePointIndexList = first.astype("<i4").tobytes()
    out._graphic_data = {}  # highdicom decodes the bulk data again when asked for it
    return out


def layer_to_dicom(
    meta: LayerMeta,
    chunks: Iterable[tuple[int, bytes, bytes]],
    source_image: Dataset,
    *,
    series_uid: str,
    instance_uid: str,
    creator: str,
    site: str,
) -> tuple[Dataset, int]:
    """The Bulk Simple Annotations instance of a layer's stored chunks (and its object count)."""
    polygons: dict[int, _Group] = {}
    dots: dict[int, _Group] = {}
    for count, points, shapes in chunks:
        _split(count, points, shapes, polygons, dots)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=meta.name[:64], family=codes.cid7162.ArtificialIntelligence, version="unknown",
    )
    groups = []
    total = 0
    for cls in sorted(set(polygons) | set(dots)):
        entry = meta.classes[cls] if cls < len(meta.classes) else {"name": UNCLASSIFIED, "color": None}
        for graphic, group in (("POLYGON", polygons.get(cls)), ("POINT", dots.get(cls))):
            if group is None or not group.sizes:
                continue
            groups.append(_annotation_group(len(groups) + 1, entry["name"], entry.get("color"), graphic, group,
                                            algorithm))
            total += groups[-1].NumberOfAnnotations
    if not groups:
        raise ValueError("the layer holds no objects")
    dataset = bulk_annotations(
        source_image, groups, series_uid=series_uid, instance_uid=instance_uid, series_number=901,
        description=f"layer {meta.name}", label="LAYER", creator=creator, site=site,
        series_description=f"collab layer {meta.name} ({site})",
    )
    return dataset, total

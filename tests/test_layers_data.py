"""Generated QuPath detection exports for the layer tests and the benchmark (no tests here).

Cells: an 8-vertex outline (cell boundary) and an 8-vertex nucleus inside it, three classes,
QuPath 0.4's GeoJSON form (`nucleusGeometry` beside `geometry`, `objectType` in properties).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

CLASSES = [("Tumor", [200, 0, 0]), ("Lymphocyte", [160, 90, 160]), ("Stroma", [150, 200, 150])]


def cell_features(n: int, *, seed: int = 1, box: tuple[float, float, float, float] = (1000, 1000, 20_000, 16_000),
                  first_id: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    centers = np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    radii = rng.uniform(5, 11, (n, 8))
    cell = centers[:, None, :] + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=2)
    nucleus = centers[:, None, :] + 0.5 * np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=2)
    cell = np.round(cell, 2)
    nucleus = np.round(nucleus, 2)
    kinds = rng.integers(0, 3, n)
    features = []
    for i in range(n):
        name, color = CLASSES[int(kinds[i])]
        ring = cell[i].tolist()
        ring.append(ring[0])
        nring = nucleus[i].tolist()
        nring.append(nring[0])
        has_nucleus = (first_id + i) % 10 != 0  # every tenth a plain detection
        feature: dict[str, Any] = {
            "type": "Feature",
            "id": str(uuid.UUID(int=first_id + i + 1)),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "cell" if has_nucleus else "detection",
                "classification": {"name": name, "color": color},
                "measurements": {"Nucleus: Area": float(radii[i].mean() ** 2), "Cell: Circularity": 0.9},
            },
        }
        if has_nucleus:
            feature["nucleusGeometry"] = {"type": "Polygon", "coordinates": [nring]}
        features.append(feature)
    return features


def unusable_features() -> tuple[list[Any], dict[str, int]]:
    """Features the import must skip, and the reasons it must give for them."""
    square = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    features = [
        {"type": "Feature", "properties": {"objectType": "cell"}},  # no geometry
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [2, 2], [1, 1]]]},
         "properties": {"objectType": "detection"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 1], ["a", 2], [3, 1], [1, 1]]]},
         "properties": {"objectType": "detection"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x + 150_000, y] for x, y in square]]},
         "properties": {"objectType": "detection"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
         "properties": {"objectType": "annotation"}},
        "not a feature",
        # Its centroid is on the slide, but vertices 1/8 px apart that far out overflow int32.
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [3e8, 0], [-3e8, 30], [0, 0]]]}, "properties": {"objectType": "detection"}},
    ]
    reasons = {
        "no geometry": 1,
        "geometry type Point (only Polygon and MultiPolygon)": 1,
        "an outline of fewer than 3 vertices": 1,
        "malformed coordinates": 1,
        "centroid outside the slide": 1,
        "objectType annotation is not a detection or cell": 1,
        "not a feature object": 1,
        "outline reaching far outside the slide": 1,
    }
    return features, reasons


def export_bytes(features: list[Any]) -> bytes:
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def export_pieces(n: int, *, seed: int = 7, batch: int = 10_000, **kw: Any) -> Iterator[bytes]:
    """A large export, generated piece by piece (never whole in memory)."""
    yield b'{"type": "FeatureCollection", "features": ['
    for start in range(0, n, batch):
        features = cell_features(min(batch, n - start), seed=seed + start, first_id=start, **kw)
        body = b",".join(orjson.dumps(f) for f in features)
        yield (b"," if start else b"") + body
    yield b"]}"

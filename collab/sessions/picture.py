"""A session record's picture of a slide: its thumbnail with the annotations' outlines."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

NO_CLASS_COLOR = (255, 200, 0)  # outlines of unclassified annotations
THUMBNAIL_PX = 1024  # the longer side of a record's slide picture
BLANK_BACKGROUND = (236, 236, 236)  # slides the server does not open itself have no picture


def class_color(record: Mapping[str, Any] | None) -> tuple[int, int, int]:
    cls = (record or {}).get("classification")
    color = cls.get("color") if isinstance(cls, Mapping) else None
    # Clients write the color: anything but three finite numbers is drawn as unclassified.
    if (
        isinstance(color, list | tuple)
        and len(color) == 3
        and all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in color)
    ):
        r, g, b = (max(0, min(255, int(c))) for c in color)
        return (r, g, b)
    return NO_CLASS_COLOR


def render_slide_png(
    slide: Mapping[str, Any], annotations: Iterable[Mapping[str, Any]], max_px: int = THUMBNAIL_PX
) -> bytes:
    """The slide's thumbnail (OpenSlide, for slides the server opens) with every annotation's
    outline drawn in its class color. Blocking: call it in a thread."""
    import openslide
    from PIL import Image, ImageDraw

    width, height = float(slide["width"]), float(slide["height"])
    scale = max_px / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = None
    if slide.get("path"):
        try:
            with openslide.OpenSlide(str(slide["path"])) as opened:
                image = opened.get_thumbnail(size).convert("RGB")
        except (openslide.OpenSlideError, OSError) as exc:
            log.warning("no thumbnail for the record: %s", exc, extra={"slide": slide.get("id")})
    if image is None:
        image = Image.new("RGB", size, BLANK_BACKGROUND)
    # get_thumbnail keeps the aspect ratio within `size`: scale to what came back.
    sx, sy = image.width / width, image.height / height
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 400))
    for record in annotations:
        color = class_color(record)
        for kind, points in _outlines(record.get("geometry")):
            xy = [(x * sx, y * sy) for x, y in points]
            if kind == "point":
                x, y = xy[0]
                r = line * 2
                draw.ellipse((x - r, y - r, x + r, y + r), outline=color, width=line)
            elif len(xy) >= 2:
                draw.line(xy, fill=color, width=line, joint="curve")
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def _outlines(geometry: Any) -> list[tuple[str, list[tuple[float, float]]]]:
    """Rings, lines and points of a GeoJSON geometry with finite coordinates."""
    if not isinstance(geometry, Mapping):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")

    def pts(seq: Any) -> list[tuple[float, float]]:
        out = []
        for p in seq if isinstance(seq, list) else []:
            if isinstance(p, list | tuple) and len(p) >= 2:
                x, y = p[0], p[1]
                if isinstance(x, int | float) and isinstance(y, int | float) and math.isfinite(x) and math.isfinite(y):
                    out.append((float(x), float(y)))
        return out

    def closed(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return ring + ring[:1] if ring and ring[0] != ring[-1] else ring

    if not isinstance(coords, list):
        return []
    if kind == "Point":
        p = pts([coords])
        return [("point", p)] if p else []
    if kind == "MultiPoint":
        return [("point", [p]) for p in pts(coords)]
    if kind == "LineString":
        return [("line", pts(coords))]
    if kind == "MultiLineString":
        return [("line", pts(part)) for part in coords]
    if kind == "Polygon":
        return [("line", closed(pts(ring))) for ring in coords]
    if kind == "MultiPolygon":
        return [("line", closed(pts(ring))) for poly in coords if isinstance(poly, list) for ring in poly]
    return []

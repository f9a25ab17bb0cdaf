"""Registered slides (and later sessions): small JSON records kept in the store."""

from __future__ import annotations

import re
from typing import Any

from collab.errors import BadRequest, NotFound
from collab.store import Store

SLIDE = "slide"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# What GET /api/slides shows; `path` and the archive's address stay on the server.
PUBLIC_SLIDE_FIELDS = ("id", "title", "width", "height", "mpp", "tiles")


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise BadRequest(f"{what} must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return value


def _positive(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise BadRequest(f"{name} must be a positive number")
    return kind(value)


def validate_slide(body: object) -> dict[str, Any]:
    """A slide record from a POST body, or BadRequest naming what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    slide_id = check_id(body.get("id"))
    title = body.get("title", slide_id)
    if not isinstance(title, str):
        raise BadRequest("title must be a string")
    record: dict[str, Any] = {"id": slide_id, "title": title[:500]}
    path = body.get("path")
    tiles = body.get("tiles")
    dicomweb = body.get("dicomweb")
    if dicomweb is not None:
        if path is not None or tiles is not None:
            raise BadRequest("give one of path, tiles or dicomweb")
        # Checked against the configured archives by the route (parse_series_ref).
        record["dicomweb"] = dicomweb
        record["tiles"] = f"/slides/{slide_id}.dzi"
    elif path is not None:
        if not isinstance(path, str) or not path:
            raise BadRequest("path must be a file path the server can open")
        record["path"] = path
        record["tiles"] = f"/slides/{slide_id}.dzi"
    elif tiles is not None:
        if not isinstance(tiles, str) or not tiles:
            raise BadRequest("tiles must be a DZI URL")
        record["tiles"] = tiles
    else:
        record["tiles"] = None
    for name, kind in (("width", int), ("height", int), ("mpp", float)):
        if name in body or (path is None and dicomweb is None):
            record[name] = _positive(body, name, kind)
    return record


class SlideRegistry:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, slide_id: str) -> dict[str, Any]:
        record = await self._store.get_record(SLIDE, slide_id)
        if record is None:
            raise NotFound(f"slide {slide_id!r} is not registered")
        return record

    async def exists(self, slide_id: str) -> bool:
        return await self._store.get_record(SLIDE, slide_id) is not None

    async def put(self, record: dict[str, Any]) -> None:
        await self._store.put_record(SLIDE, record["id"], record)

    async def list(self) -> list[dict[str, Any]]:
        return await self._store.list_records(SLIDE)


def public_slide(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in PUBLIC_SLIDE_FIELDS}

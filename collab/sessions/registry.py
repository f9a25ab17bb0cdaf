"""Tumor-board sessions: an agenda of slides, a presenter, and a document everyone follows.

A session document holds `slides` (Y.Array of slide ids, the agenda) and `state` (Y.Map:
`current` slide id, `presenter` user id). Only the current presenter changes it; a
presenter-role participant may take over by naming themselves presenter. Everyone else is
refused like a viewer (collab/sessions/policy.py). Handovers go to the audit trail.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from pycrdt import Array, Doc, Map

from collab.auth import Principal
from collab.errors import BadRequest, Forbidden, NotFound
from collab.live.keys import RoomKey
from collab.live.room import SERVER_ORIGIN
from collab.slides.registry import SlideRegistry, check_id
from collab.store import Store

log = logging.getLogger(__name__)

SESSION = "session"

def session_key(session_id: str) -> str:
    """The session room's name in the store and audit trail."""
    return str(RoomKey.session(session_id))


class SessionRegistry:
    """Session records (title, agenda, creator) in the store, beside the slides."""

    def __init__(self, store: Store, slides: SlideRegistry) -> None:
        self._store = store
        self._slides = slides

    async def get(self, session_id: str) -> dict[str, Any]:
        record = await self._store.get_record(SESSION, session_id)
        if record is None:
            raise NotFound(f"session {session_id!r} is not registered")
        return record

    async def list(self, principal: Principal) -> list[dict[str, Any]]:
        records = await self._store.list_records(SESSION)
        return [r for r in records if may_join(principal, r)]

    async def create(self, principal: Principal, body: object) -> tuple[dict[str, Any], bytes]:
        """Validate and store a new session; return it and its initial document update."""
        if not principal.can_present:
            raise Forbidden("only a presenter may create a session")
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise BadRequest("title must be a non-empty string")
        slides = body.get("slides")
        if not isinstance(slides, list) or not slides:
            raise BadRequest("slides must be a non-empty list of slide ids")
        for slide_id in slides:
            check_id(slide_id, "each slide id")
            principal.require_slide(slide_id)
            await self._slides.get(slide_id)
        if len(set(slides)) != len(slides):
            raise BadRequest("slides must not repeat")
        record = {
            "id": uuid.uuid4().hex[:12],
            "title": title.strip()[:300],
            "slides": slides,
            "created_by": principal.user_id,
            "created_by_name": principal.name,
            "created_at": int(time.time() * 1000),
        }
        await self._store.put_record(SESSION, record["id"], record)
        return record, initial_document(record)


def initial_document(record: dict[str, Any]) -> bytes:
    """The first update of a session document: the agenda, its first slide, its presenter."""
    doc: Doc = Doc()
    with doc.transaction(origin=SERVER_ORIGIN):
        doc["slides"] = Array(list(record["slides"]))
        doc["state"] = Map({"current": record["slides"][0], "presenter": record["created_by"]})
    return doc.get_update()


def may_join(principal: Principal, record: dict[str, Any]) -> bool:
    """A participant must be allowed to see every slide on the agenda."""
    return all(principal.may_open(s) for s in record["slides"])

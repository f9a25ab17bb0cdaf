"""Tumor-board sessions: an agenda of slides, a presenter, and a document everyone follows.

A session document holds `slides` (Y.Array of slide ids, the agenda) and `state` (Y.Map:
`current` slide id, `presenter` user id). Only the current presenter changes it; a
presenter-role participant may take over by naming themselves presenter. Everyone else is
refused like a viewer (collab/sessions/policy.py). Handovers go to the audit trail.
"""

from __future__ import annotations

import html
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

# Audit actions that count as "made or changed during the session" in a summary.
ANNOTATION_ACTIONS = frozenset(
    {"created", "geometry_changed", "classification_changed", "deleted", "commented", "updated"}
)


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


async def build_summary(
    record: dict[str, Any], slides: SlideRegistry, store: Store, *, until_ms: int | None = None
) -> dict[str, Any]:
    """Per slide of the agenda: the annotations made or changed during the session."""
    start = record["created_at"]
    end = until_ms or int(time.time() * 1000)
    out: list[dict[str, Any]] = []
    for slide_id in record["slides"]:
        try:
            title = (await slides.get(slide_id)).get("title", slide_id)
        except NotFound:
            title = slide_id
        changes = [
            {
                "annotation": a.target,
                "action": a.action,
                "user": a.user_id,
                "name": (a.detail or {}).get("name", a.user_id),
                "site": a.site,
                "at": a.at_ms,
            }
            for a in await store.list_audit(f"slide:{slide_id}", limit=100_000)
            if start <= a.at_ms <= end and a.action in ANNOTATION_ACTIONS
        ]
        out.append({"slide": slide_id, "title": title, "changes": changes})
    handovers = [
        {"from": (a.detail or {}).get("from"), "to": a.user_id, "site": a.site, "at": a.at_ms}
        for a in await store.list_audit(session_key(record["id"]))
        if a.action == "handover"
    ]
    return {"session": record, "from": start, "until": end, "slides": out, "handovers": handovers}


def summary_html(summary: dict[str, Any]) -> str:
    """A printable page of the summary."""
    e = html.escape
    session = summary["session"]

    def when(ms: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) + " UTC"

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Tumor board: {e(session['title'])}</title>",
        "<style>body{font:14px/1.45 system-ui,sans-serif;max-width:900px;margin:2em auto;color:#111}"
        "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}"
        "th,td{border-bottom:1px solid #ccc;padding:4px 8px;text-align:left}"
        "h2{margin-top:1.5em}@media print{a{color:inherit}}</style></head><body>",
        f"<h1>Tumor board: {e(session['title'])}</h1>",
        f"<p>Session {e(session['id'])}, led by {e(session.get('created_by_name', session['created_by']))}, "
        f"{when(summary['from'])} to {when(summary['until'])}.</p>",
    ]
    for slide in summary["slides"]:
        parts.append(f"<h2>{e(slide['title'])} <small>({e(slide['slide'])})</small></h2>")
        if not slide["changes"]:
            parts.append("<p>No annotation was made or changed.</p>")
            continue
        parts.append("<table><tr><th>Time</th><th>Annotation</th><th>Change</th><th>By</th><th>Site</th></tr>")
        for c in slide["changes"]:
            parts.append(
                f"<tr><td>{when(c['at'])}</td><td>{e(str(c['annotation']))}</td><td>{e(c['action'])}</td>"
                f"<td>{e(str(c['name']))}</td><td>{e(c['site'])}</td></tr>"
            )
        parts.append("</table>")
    if summary["handovers"]:
        parts.append("<h2>Presenter handovers</h2><ul>")
        for h in summary["handovers"]:
            parts.append(f"<li>{when(h['at'])}: {e(str(h['from']))} to {e(h['to'])} ({e(h['site'])})</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)

"""The record of a tumor board: who attended and presented, what was shown, drawn and said.

Read from the audit trail (the session room's `joined`, `left`, `handover`, `shown`,
`slide_shown`; each slide room's annotation changes within the session) and from each slide's
current document. Times are shown in the participants' time zone; people by name, not by id;
actions in words. Printed by sessions/printing.py; each slide's picture drawn by sessions/picture.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pycrdt import Map

from collab.annotations.catalog import AnnotationCatalog
from collab.errors import BadRequest, NotFound
from collab.live.keys import RoomKey
from collab.sessions.picture import class_color
from collab.store import AuditRecord, Store

log = logging.getLogger(__name__)

# Audit actions of a slide room that count as "made or changed during the session".
ANNOTATION_ACTIONS = frozenset(
    {"created", "geometry_changed", "classification_changed", "deleted", "commented", "updated"}
)
_WORDS = {
    "created": "drew",
    "geometry_changed": "edited the outline",
    "deleted": "deleted",
    "commented": "commented",
    "updated": "edited",
}


def time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest(f"unknown time zone {name!r}") from exc


class People:
    """Names and sites of user ids, as the session's attendance records give them."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, str]] = {}

    def learn(self, user: str, name: str | None, site: str | None, role: str | None = None) -> None:
        entry = self._known.setdefault(user, {"name": user, "site": "", "role": ""})
        if name:
            entry["name"] = name
        if site:
            entry["site"] = site
        if role:
            entry["role"] = role

    def name(self, user: str | None) -> str:
        if not user:
            return "unknown"
        return self._known.get(user, {}).get("name", user)

    def site(self, user: str | None, default: str = "") -> str:
        return self._known.get(user or "", {}).get("site") or default

    def role(self, user: str) -> str:
        return self._known.get(user, {}).get("role", "")

    def person(self, user: str | None, site: str = "") -> dict[str, str]:
        return {"user": user or "", "name": self.name(user), "site": self.site(user, site)}


async def build_record(
    session: dict[str, Any],
    *,
    slides: Any,
    store: Store,
    rooms: Any,
    zone: ZoneInfo,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The record of `session` as JSON-ready data (times as ISO 8601 in `zone`)."""
    await store.flush()  # audit records are queued like updates: read what was committed
    now = now_ms or int(time.time() * 1000)
    key = f"session:{session['id']}"
    audit = await store.list_audit(key, limit=100_000)
    people = People()
    people.learn(session["created_by"], session.get("created_by_name"), None)
    for a in audit:
        if a.action in ("joined", "left"):
            d = a.detail or {}
            people.learn(a.user_id, d.get("name"), a.site, d.get("role"))
        elif a.action == "handover":
            people.learn(a.user_id, None, a.site)

    start = int(session["created_at"])

    def iso(ms: int | float | None) -> str | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")

    attendees, still_there = _attendance(audit, people, iso)
    lefts = [a.at_ms for a in audit if a.action == "left"]
    end = None if still_there or not lefts else max(lefts)
    until = end if end is not None else now

    handovers = [
        {
            "from": (a.detail or {}).get("from"), "to": a.user_id, "site": a.site, "at": iso(a.at_ms),
            "from_name": people.name((a.detail or {}).get("from")), "to_name": people.name(a.user_id),
        }
        for a in audit if a.action == "handover"
    ]
    presenters = _presenters(session, audit, people, iso, end)
    shown: dict[str, dict[str, list[AuditRecord]]] = {}  # slide -> annotation -> when and by whom shown
    slide_times: dict[str, list[int]] = {session["slides"][0]: [start]}  # the first is current at the start
    for a in audit:
        d = a.detail or {}
        if a.action == "slide_shown" and isinstance(d.get("slide"), str):
            slide_times.setdefault(d["slide"], []).append(a.at_ms)
        elif a.action == "shown" and isinstance(d.get("slide"), str):
            slide_times.setdefault(d["slide"], [])
            if isinstance(d.get("annotation"), str):
                shown.setdefault(d["slide"], {}).setdefault(d["annotation"], []).append(a)
        elif a.action == "handover" and isinstance(d.get("current"), str):
            slide_times.setdefault(d["current"], [])

    out_slides = []
    for slide_id in session["slides"]:
        entry = await _slide_record(
            session["id"], slide_id, slides=slides, store=store, rooms=rooms, people=people,
            window=(start, until), shown=shown.get(slide_id, {}), iso=iso, discussed=slide_id in slide_times,
        )
        if entry is not None:
            entry["shown_at"] = [iso(t) for t in sorted(slide_times.get(slide_id, []))]
            out_slides.append(entry)
    creator = session["created_by"]
    log.info("session record built", extra={"session": session["id"], "slides": len(out_slides),
                                            "attendees": len(attendees)})
    return {
        "session": session,
        "title": session["title"],
        "led_by": people.person(creator),
        "time_zone": zone.key,
        "start": iso(start),
        "end": iso(end),
        "from": start,  # ms, as the summary had them
        "until": until,
        "attendees": attendees,
        "presenters": presenters,
        "handovers": handovers,
        "slides": out_slides,
    }


def _attendance(audit: list[AuditRecord], people: People, iso: Any) -> tuple[list[dict[str, Any]], bool]:
    """Per person: first joined, last left (None while connected), and how many times they came."""
    open_conns: dict[str, int] = {}
    rows: dict[str, dict[str, Any]] = {}
    for a in audit:
        if a.action not in ("joined", "left"):
            continue
        row = rows.setdefault(a.user_id, {"joined": a.at_ms, "left": None, "visits": 0})
        if a.action == "joined":
            open_conns[a.user_id] = open_conns.get(a.user_id, 0) + 1
            row["visits"] += 1
            row["left"] = None
        else:
            open_conns[a.user_id] = max(0, open_conns.get(a.user_id, 0) - 1)
            if open_conns[a.user_id] == 0:
                row["left"] = a.at_ms
    out = []
    for user, row in rows.items():
        info = people.person(user)
        out.append({**info, "role": people.role(user), "joined": iso(row["joined"]), "left": iso(row["left"]),
                    "visits": row["visits"]})
    return out, any(n > 0 for n in open_conns.values())


def _presenters(
    session: dict[str, Any], audit: list[AuditRecord], people: People, iso: Any, end: int | None
) -> list[dict[str, Any]]:
    spans = [{"user": session["created_by"], "from_ms": int(session["created_at"])}]
    for a in audit:
        if a.action == "handover":
            spans.append({"user": a.user_id, "from_ms": a.at_ms})
    out = []
    for i, span in enumerate(spans):
        until = spans[i + 1]["from_ms"] if i + 1 < len(spans) else end
        out.append({**people.person(span["user"]), "from": iso(span["from_ms"]), "until": iso(until)})
    return out


async def _slide_record(
    session_id: str,
    slide_id: str,
    *,
    slides: Any,
    store: Store,
    rooms: Any,
    people: People,
    window: tuple[int, int],
    shown: Mapping[str, list[AuditRecord]],
    iso: Any,
    discussed: bool,
) -> dict[str, Any] | None:
    """One slide's part of the record; None when it was neither on screen nor changed."""
    start, until = window
    changes = [
        a for a in await store.list_audit(str(RoomKey.slide(slide_id)), limit=100_000)
        if start <= a.at_ms <= until and a.action in ANNOTATION_ACTIONS
    ]
    if not changes and not discussed:
        return None  # not worth loading its room
    try:
        title = (await slides.get(slide_id)).get("title") or slide_id
    except NotFound:
        title = slide_id
    current = await current_annotations(rooms, slide_id)
    ids = list(dict.fromkeys([*(a.target for a in changes if a.target), *shown]))
    annotations = []
    for n, ann_id in enumerate(ids, 1):
        rec = current.get(ann_id)
        history = [c for c in changes if c.target == ann_id]
        annotations.append(_annotation(ann_id, n, rec, history, shown.get(ann_id, []), people, iso))
    return {
        "slide": slide_id,
        "title": title,
        "image": f"/api/sessions/{session_id}/record/slides/{slide_id}.png",
        "changes": [  # every change, as the summary listed them
            {
                "annotation": c.target, "action": c.action, "words": _words(c), "user": c.user_id,
                "name": people.name(c.user_id), "site": c.site, "at": c.at_ms,
            }
            for c in changes
        ],
        "annotations": annotations,
    }


async def current_annotations(rooms: Any, slide_id: str) -> dict[str, dict[str, Any]]:
    """The slide's annotations as its live document holds them now (loading the room if needed)."""
    room = await rooms.open(RoomKey.slide(slide_id))
    catalog = getattr(room.policy, "catalog", None)
    if isinstance(catalog, AnnotationCatalog):
        await catalog.wait_indexed()
        return dict(catalog.records())
    value = room.doc.get("annotations", type=Map).to_py() or {}
    return {k: v for k, v in value.items() if isinstance(v, dict)}


def _class_name(record: Mapping[str, Any] | None) -> str | None:
    cls = (record or {}).get("classification")
    if isinstance(cls, Mapping) and isinstance(cls.get("name"), str):
        return cls["name"]
    return None


def _words(a: AuditRecord) -> str:
    d = a.detail or {}
    if a.action == "classification_changed":
        return f"changed the class to {d['to']}" if d.get("to") else "removed the class"
    if a.action == "created" and d.get("import"):
        return "imported"
    return _WORDS.get(a.action, a.action.replace("_", " "))


def _annotation(
    ann_id: str,
    n: int,
    rec: Mapping[str, Any] | None,
    history: list[AuditRecord],
    shown: list[AuditRecord],
    people: People,
    iso: Any,
) -> dict[str, Any]:
    rec = rec or {}
    cls = _class_name(rec)
    if cls is None:
        # A deleted annotation keeps the last class the audit named.
        for a in reversed(history):
            if a.action == "classification_changed" and (a.detail or {}).get("to"):
                cls = a.detail["to"]  # type: ignore[index]
                break
    measurements = rec.get("measurements") if isinstance(rec.get("measurements"), Mapping) else {}
    author = rec.get("author") or next((a.user_id for a in history if a.action == "created"), None)
    author_site = next((a.site for a in history if a.user_id == author), "")
    changed_by: dict[str, dict[str, str]] = {}
    for a in history:
        if a.action != "created" and a.user_id != author:
            changed_by.setdefault(a.user_id, people.person(a.user_id, a.site))
    comments = []
    for c in rec.get("comments") or []:
        if not isinstance(c, Mapping):
            continue
        who = str(c.get("author") or "")
        created = c.get("created")
        comments.append({
            "author": who, "name": str(c.get("name") or people.name(who)), "site": people.site(who),
            "text": str(c.get("text") or ""),
            "at": iso(created) if isinstance(created, int | float) and math.isfinite(created) else None,
        })
    name = rec.get("name") if isinstance(rec.get("name"), str) and rec.get("name") else None
    return {
        "id": ann_id,
        "name": name,
        "label": name or (f"{cls} annotation {n}" if cls else f"Annotation {n}"),
        "class": cls,
        "color": "#{:02x}{:02x}{:02x}".format(*class_color(rec)),
        "area_um2": measurements.get("area_um2"),
        "length_um": measurements.get("length_um"),
        "author": people.person(author, author_site) if author else None,
        "changed_by": list(changed_by.values()),
        "history": [
            {"at": iso(a.at_ms), "user": a.user_id, "name": people.name(a.user_id), "site": a.site,
             "action": a.action, "words": _words(a)}
            for a in history
        ],
        "comments": comments,
        "shown": [{"at": iso(a.at_ms), "by": people.person(a.user_id, a.site)} for a in shown],
        "deleted": not rec,
    }

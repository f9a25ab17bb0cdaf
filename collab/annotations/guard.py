"""AnnotationGuard: check, repair, measure, stamp and index the annotations of a slide room.

The guard follows the room's `annotations` map (observe_deep). While a client's update is
applied it only notes which annotation ids changed (its after_apply hook queues them); a few
milliseconds later, normally after that update has been relayed, it checks the changed ones and
writes what the server owns (status, problem, measurements, author, updated, a repaired
geometry) in ONE transaction with origin "collab-server", which is stored and relayed like any
other update. The server never reacts to its own transactions, and a
geometry is re-checked only when it changed (a fingerprint per id), so there are no loops and
a stored `repaired` is not turned back into `ok` by a later edit of another field.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pycrdt import Array, Doc, Map

from collab.annotations.geometry import GeometryVerdict, check_geometry, merge_measurements
from collab.annotations.spatial import SpatialIndex
from collab.auth import Principal
from collab.gc_pause import paused_gc
from collab.live.connection import Connection
from collab.live.room import Room, RoomHooks
from collab.store import AuditRecord, Store

log = logging.getLogger(__name__)

STORED_READ_DELAY = 1.0  # seconds between a room's load and reading its stored annotations
# The server's corrections are written this long after the client's update arrived: off its
# relay path (the commit and relay of an update take a millisecond or so), and together with the
# other changes made meanwhile (one transaction and one frame per client for a burst of writes).
CORRECTION_DELAY = 0.010
# Geometries of up to this much JSON (about 400 vertices, under a millisecond to check even when
# make_valid has to repair them) are checked on the event loop, up to the budget per correction
# transaction; the others in a worker thread, corrected when done.
INLINE_CHECK_MAX_BYTES = 16 * 1024
INLINE_CHECK_BUDGET = 64 * 1024


def now_ms() -> int:
    return int(time.time() * 1000)


def to_py(value: Any) -> Any:
    if isinstance(value, Map | Array):
        return value.to_py()
    return value


def fingerprint(geometry: Any) -> bytes:
    """Of a geometry as read back from the doc (key order does not matter). orjson writes NaN
    and infinity as null: such geometries are invalid whichever it was."""
    return _fingerprint_and_size(geometry)[0]


def _fingerprint_and_size(geometry: Any) -> tuple[bytes, int]:
    """The fingerprint, and the length of the JSON it was taken from (what a check will cost)."""
    try:
        text = orjson.dumps(geometry, option=orjson.OPT_SORT_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        # Nested past orjson's limit (repr would recurse too): such a geometry is invalid
        # whatever it holds; its type and size tell versions apart well enough.
        text = b"unwritable:" + type(geometry).__name__.encode() + b":" + str(sys.getsizeof(geometry)).encode()
    return hashlib.blake2b(text, digest_size=16).digest(), len(text)


def _read_stored(state: bytes) -> dict[str, tuple[Any, bytes]]:
    """In a worker thread: the annotations of a document state, with geometry fingerprints.
    A Doc of its own, so the room's Doc is never touched off the event loop."""
    with paused_gc():
        doc: Doc = Doc()
        doc.apply_update(state)
        out: dict[str, tuple[Any, bytes]] = {}
        annotations = doc.get("annotations", type=Map)
        for key in annotations.keys():
            try:  # one unreadable annotation must not cost the slide all the others
                record = to_py(annotations.get(key))
                geometry = record.get("geometry") if isinstance(record, Mapping) else None
                out[key] = (record, fingerprint(geometry))
            except Exception:
                log.exception("reading stored annotation %s failed", key, extra={"annotation": key})
        return out


def _stored_geometry(annotations: Map, key: str) -> Any:
    value = annotations.get(key)
    if isinstance(value, Map | Mapping):
        return to_py(value.get("geometry"))
    return None


def _normalized(record: dict[str, Any]) -> dict[str, Any]:
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


def _class_name(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"]
    return None


def _comment_count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


@dataclass(frozen=True, slots=True)
class Check:
    """One changed geometry to check, and what it was when the check was decided."""

    key: str
    fingerprint: bytes
    created: bool
    geometry: Any
    value: Any  # the annotation's value and its Python form when the check was decided
    record: Mapping[str, Any]
    size: int  # bytes of JSON: what checking it will cost
    principal: Principal  # who changed it, when (audit, `updated`)
    at: int


@dataclass(slots=True)
class Batch:
    """Server writes and audit records gathered for one correction transaction."""

    writes: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    audits: list[AuditRecord] = field(default_factory=list)

    def write(self, key: str, value: Any, fields: dict[str, Any]) -> None:
        """Set `fields` on annotation `key` (whose current value is `value`); a later call for
        the same key adds to the earlier one's fields."""
        earlier = self.writes.get(key)
        if earlier is not None:
            merged = {**earlier[1], **fields}
            if "updated" in earlier[1] and "updated" in fields:  # a verdict may come after a later edit
                merged["updated"] = max(earlier[1]["updated"], fields["updated"])
            fields = merged
        self.writes[key] = (value, fields)

    def audit(
        self, room: str, principal: Principal, at: int, action: str, key: str, detail: dict[str, Any] | None = None
    ) -> None:
        self.audits.append(AuditRecord(room, at, principal.user_id, principal.site, action, key, detail))


@dataclass(slots=True)
class Known:
    """What the server last saw of one annotation."""

    fingerprint: bytes | None = None
    status: str | None = None
    problem: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    author: str | None = None
    classification: Any = None
    comments: int = 0


class AnnotationGuard(RoomHooks):
    def __init__(
        self,
        room: Room,
        store: Store,
        *,
        width: float,
        height: float,
        mpp: float | None,
        max_vertices: int,
    ) -> None:
        self.room = room
        self.doc: Doc = room.doc
        self.store = store
        self.width = width
        self.height = height
        self.mpp = mpp
        self.max_vertices = max_vertices
        self.annotations: Map = self.doc.get("annotations", type=Map)
        self.index = SpatialIndex()
        self.known: dict[str, Known] = {}
        self._pending: set[str] = set()
        self._touched: set[str] = set()  # ids changed since the room was loaded
        self._indexed = asyncio.Event()
        self._known_ready = False  # the stored annotations have been read
        self._deferred: list[tuple[set[str], Principal, int]] = []  # edits that arrived before that, when
        self._queued: list[tuple[set[str], Principal, int]] = []  # changes for the next correction
        self._flush_timer: asyncio.TimerHandle | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._check_tasks: set[asyncio.Task[None]] = set()  # geometries being checked in a thread
        self._closed = False
        self._subscription: Any = None  # the observe_deep subscription, off while the server writes
        self._tasks: set[asyncio.Task[None]] = set()
        self.corrections = 0  # server transactions written (tests, metrics)

    # --- attaching -------------------------------------------------------------------------

    async def attach(self) -> None:
        """Follow the room's changes at once; read and index what the stored document holds in
        worker threads meanwhile.

        Clients may join before that is done (a reload of a 5,000-annotation slide must not
        wait for reading and checking 5,000 annotations): edits arriving meanwhile are processed
        once the stored state is known, and spatial queries wait for the index (`wait_indexed`).
        """
        state = self.doc.get_update()
        self.room.prime_full_state(state)  # the first joiners need this very encoding
        self._subscription = self.annotations.observe_deep(self._on_change)
        self.room.hooks = self
        self._load_task = self._spawn(self._load_stored(state))

    async def _load_stored(self, state: bytes) -> None:
        try:
            # Let the first joiners' initial sync go out first: reading 5,000 annotations holds
            # the GIL for a good part of a second, which would slow that sync down.
            if len(state) > 2:  # an empty document has nothing to read
                await asyncio.sleep(STORED_READ_DELAY)
            stored = await asyncio.to_thread(_read_stored, state)
            for key, (record, fp) in stored.items():
                rec = record if isinstance(record, Mapping) else {}
                measurements = rec.get("measurements")
                self.known.setdefault(key, Known(
                    fingerprint=fp,
                    status=rec.get("status") if isinstance(rec.get("status"), str) else None,
                    problem=rec.get("problem"),
                    measurements=dict(measurements) if isinstance(measurements, Mapping) else {},
                    author=rec.get("author") if isinstance(rec.get("author"), str) else None,
                    classification=rec.get("classification"),
                    comments=_comment_count(rec.get("comments")),
                ))
        except Exception:
            log.exception("reading the stored annotations failed", extra={"room": self.room.key})
            stored = {}
        finally:
            self._known_ready = True
            deferred, self._deferred = self._deferred, []
            self._process_safely(deferred)
        await self._index_stored({key: record for key, (record, _fp) in stored.items()})

    async def _index_stored(self, records: dict[str, Any]) -> None:
        try:
            verdicts = await asyncio.to_thread(self._check_all, records)
            for key, verdict in verdicts.items():
                known = self.known.get(key)
                if key in self._touched or known is None:
                    continue  # changed since the load: its queued check indexes its current state
                if known.status is None:
                    known.status, known.problem = verdict.status, verdict.problem
                known.measurements = verdict.measurements
                if verdict.shape is not None:
                    self.index.upsert(key, verdict.shape)
            if self.index.needs_rebuild:
                await self.index.refresh()
        except Exception:
            log.exception("indexing the stored annotations failed", extra={"room": self.room.key})
        finally:
            self._indexed.set()

    async def wait_indexed(self) -> None:
        await self._indexed.wait()

    def _check_all(self, records: Mapping[str, Any]) -> dict[str, GeometryVerdict]:
        verdicts = {}
        for key, record in records.items():
            try:  # each on its own: one failing check leaves the others indexed
                verdicts[key] = self.check(record)
            except Exception:
                log.exception("checking stored annotation %s failed", key,
                              extra={"room": self.room.key, "annotation": key})
        return verdicts

    def check(self, record: Any) -> GeometryVerdict:
        geometry = record.get("geometry") if isinstance(record, Mapping) else None
        return check_geometry(
            geometry, width=self.width, height=self.height, max_vertices=self.max_vertices, mpp=self.mpp
        )

    # --- following client changes --------------------------------------------------------

    def _on_change(self, events: list[Any]) -> None:
        for event in events:
            path = event.path
            if path:
                self._pending.add(str(path[0]))
            else:
                keys = getattr(event, "keys", None) or {}
                self._pending.update(str(k) for k in keys)

    def after_apply(self, conn: Connection) -> None:
        """Queue what a client's update changed; the server's corrections follow shortly after.

        Nothing is checked before the client's update is committed and relayed: its frame
        goes out as fast as with checks off. The queued changes are processed together
        CORRECTION_DELAY later, and their corrections written in one transaction.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        self._touched |= pending
        self._queued.append((pending, conn.principal, now_ms()))
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(CORRECTION_DELAY, self.flush_corrections)

    def before_apply(self, conn: Connection) -> None:
        """Another user's update is about to be applied: process what is queued first, while the
        document still shows only the queued users' changes, so that each change (and its audit
        record) is credited to whoever made it."""
        user = (conn.principal.user_id, conn.principal.site)
        if any((p.user_id, p.site) != user for _ids, p, _at in self._queued):
            self.flush_corrections()

    def flush_corrections(self) -> None:
        """Process the queued changes now (the timer's callback; also before an unload)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        queued, self._queued = self._queued, []
        if self._closed or not queued:
            return
        if not self._known_ready:
            self._deferred.extend(queued)  # processed once the stored annotations are known
            return
        self._process_safely(queued)

    async def settle(self) -> None:
        """Write every correction still pending (before the room is unloaded or the server stops)."""
        self.flush_corrections()
        if self._deferred and self._load_task is not None:  # edits made while the room loaded
            await asyncio.gather(self._load_task, return_exceptions=True)
        while self._check_tasks:
            await asyncio.gather(*self._check_tasks, return_exceptions=True)
        self.flush_corrections()

    def close(self) -> None:
        """The room is gone (unloaded, or dropped after a store failure): write nothing more."""
        self._closed = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _process_safely(self, changes: list[tuple[set[str], Principal, int]]) -> None:
        try:
            self._process(changes)
        except Exception:
            log.exception("annotation corrections failed", extra={"room": self.room.key})

    def _process(self, changes: list[tuple[set[str], Principal, int]]) -> None:
        """Note what changed and write the server's fields in ONE transaction. Small changed
        geometries are checked here, on the event loop (cheaper than a thread hop); large
        ones in a worker thread, corrected when done, so the loop never stalls on Shapely."""
        batch = Batch()
        inline: list[Check] = []
        later: list[Check] = []
        budget = INLINE_CHECK_BUDGET
        for ids, principal, at in changes:
            try:
                for check in self._note_changes(ids, principal, at, batch):
                    if check.size <= min(budget, INLINE_CHECK_MAX_BYTES):
                        budget -= check.size
                        inline.append(check)
                    else:
                        later.append(check)
            except Exception:
                log.exception("noting annotation changes failed", extra={"room": self.room.key})
        if inline:
            verdicts = [self._check_safely(c) for c in inline]
            self._collect_verdicts(inline, verdicts, batch, changed_since=False)
        self._commit(batch)
        if later:
            task = self._spawn(self._check_later(later))
            self._check_tasks.add(task)
            task.add_done_callback(self._check_tasks.discard)

    def _check_safely(self, check: Check) -> GeometryVerdict | None:
        """check_geometry answers anything with a verdict; should Shapely raise regardless, the
        annotation is left unchecked and checked again at its next change."""
        try:
            return self.check({"geometry": check.geometry})
        except Exception:
            log.exception("geometry check failed", extra={"room": self.room.key, "annotation": check.key})
            return None

    def _note_changes(self, ids: Iterable[str], principal: Principal, at: int, batch: Batch) -> list[Check]:
        """Note one client update's changes in `batch`; answer the geometries to check.
        `at` is when the change arrived (audit and `updated` times)."""
        checks: list[Check] = []
        audit = functools.partial(batch.audit, self.room.key, principal, at)
        for key in sorted(ids):
            value = self.annotations.get(key)
            if value is None:
                if self.known.pop(key, None) is not None:
                    self.index.remove(key)
                    audit("deleted", key)
                continue
            record = to_py(value)
            if not isinstance(record, Mapping):
                record = {}
            known = self.known.get(key)
            created = known is None
            if known is None:
                known = self.known[key] = Known(author=principal.user_id)
                audit("created", key)
            self._note_fields(key, record, known, created, audit)
            geometry = record.get("geometry")
            fp, size = _fingerprint_and_size(geometry)
            if fp != known.fingerprint:
                if not created:
                    audit("geometry_changed", key)
                known.fingerprint = fp  # this version is being checked: do not check it twice
                checks.append(Check(key, fp, created, geometry, value, record, size, principal, at))
                continue  # its whole correction is written once the check is done
            batch.write(key, value, self._fields(record, known, created, at))
        return checks

    async def _check_later(self, checks: list[Check]) -> None:
        try:
            verdicts = await asyncio.to_thread(lambda: [self._check_safely(c) for c in checks])
            batch = Batch()
            self._collect_verdicts(checks, verdicts, batch, changed_since=True)
            self._commit(batch)
        except Exception:
            log.exception("annotation check failed", extra={"room": self.room.key})

    def _collect_verdicts(
        self, checks: list[Check], verdicts: list[GeometryVerdict | None], batch: Batch, *, changed_since: bool
    ) -> None:
        """Index what the checks said and add the corrections and audit entries to `batch`.
        `changed_since`: the document may have changed since the checks were decided (they ran
        in a thread), so each annotation is read again and a stale verdict dropped."""
        for check, verdict in zip(checks, verdicts, strict=True):
            key = check.key
            known = self.known.get(key)
            value, record = check.value, check.record
            if changed_since:
                value = self.annotations.get(key)
                if value is None or known is None:
                    continue  # deleted meanwhile
                record = to_py(value)
                if not isinstance(record, Mapping):
                    record = {}
                if fingerprint(record.get("geometry")) != check.fingerprint:
                    continue  # changed again meanwhile: a newer check will write
            elif known is None:
                continue
            if verdict is None:
                known.fingerprint = None  # the check failed: check it again at its next change
                continue
            known.status, known.problem = verdict.status, verdict.problem
            known.measurements = verdict.measurements
            if verdict.shape is not None:
                self.index.upsert(key, verdict.shape)
            else:
                self.index.remove(key)
            if verdict.status in ("repaired", "invalid"):
                action = "repaired" if verdict.status == "repaired" else "marked_invalid"
                batch.audit(self.room.key, check.principal, check.at, action, key, {"problem": verdict.problem})
            fields = self._fields(record, known, check.created, check.at)
            if verdict.geometry is not None:
                fields["geometry"] = verdict.geometry
            batch.write(key, value, fields)

    def _commit(self, batch: Batch) -> None:
        self._write(batch.writes)
        for record in batch.audits:
            self.store.audit(record)
        self._maybe_refresh()

    def _note_fields(
        self, key: str, record: Mapping[str, Any], known: Known, created: bool, audit: Callable[..., None],
    ) -> None:
        """Audit classification changes and new comments, from what the server last saw."""
        classification = record.get("classification")
        if not created and classification != known.classification:
            audit("classification_changed", key, {
                "from": _class_name(known.classification), "to": _class_name(classification),
            })
        known.classification = classification
        comments = _comment_count(record.get("comments"))
        if comments > known.comments:
            audit("commented", key, {"count": comments - known.comments})
        known.comments = comments

    def _fields(self, record: Mapping[str, Any], known: Known, created: bool, at: int) -> dict[str, Any]:
        """The server-owned fields that differ from what the record holds."""
        fields: dict[str, Any] = {}
        if known.status is not None and record.get("status") != known.status:
            fields["status"] = known.status
        if known.problem is None:
            if "problem" in record:
                fields["problem"] = None
        elif record.get("problem") != known.problem:
            fields["problem"] = known.problem
        measurements = merge_measurements(record.get("measurements"), known.measurements)
        if record.get("measurements") != measurements and (measurements or record.get("measurements") is not None):
            fields["measurements"] = measurements
        if record.get("author") != known.author:
            fields["author"] = known.author
        if created and not isinstance(record.get("created"), int | float):
            fields["created"] = at
        fields["updated"] = at
        return fields

    def _write(self, writes: Mapping[str, tuple[Any, dict[str, Any]]]) -> None:
        if not writes or self._closed:
            return
        with self._not_observing(), self.room.server_transaction():
            for key, (value, fields) in writes.items():
                if isinstance(value, Map):
                    for name, field_value in fields.items():
                        if value.get(name) != field_value or name not in value:
                            value[name] = field_value
                else:
                    record = dict(value) if isinstance(value, Mapping) else {}
                    record.update(fields)
                    self.annotations[key] = record
        for key, (_value, fields) in writes.items():
            known = self.known.get(key)
            if "geometry" in fields and known is not None:
                known.fingerprint = fingerprint(_stored_geometry(self.annotations, key))
        self.corrections += 1

    @contextlib.contextmanager
    def _not_observing(self) -> Iterator[None]:
        """The server does not react to its own writes: unsubscribed, pycrdt does not even build
        the change events (converting every replaced value to Python, a fifth of the CPU of a busy
        room when subscribed)."""
        self.annotations.unobserve(self._subscription)
        try:
            yield
        finally:
            self._subscription = self.annotations.observe_deep(self._on_change)

    def _maybe_refresh(self) -> None:
        if self.index.needs_rebuild:
            self._spawn(self.index.refresh())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in the background, held here until it ends (the loop keeps weak references)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- server-side imports ---------------------------------------------------------------

    def import_records(
        self, items: list[tuple[str, dict[str, Any]]], verdicts: list[GeometryVerdict], principal: Principal
    ) -> list[dict[str, Any]]:
        """Write checked, stamped records as Y.Map values in ONE server transaction."""
        self._touched.update(key for key, _record in items)
        at = now_ms()
        results = []
        audits: list[tuple[str, str, dict[str, Any] | None]] = []
        with self._not_observing(), self.room.server_transaction():
            for (key, record), verdict in zip(items, verdicts, strict=True):
                rec = dict(record)
                if verdict.geometry is not None:
                    rec["geometry"] = verdict.geometry
                rec["status"] = verdict.status
                rec["problem"] = verdict.problem
                rec["measurements"] = merge_measurements(rec.get("measurements"), verdict.measurements)
                rec["author"] = principal.user_id
                rec.setdefault("created", at)
                rec["updated"] = at
                comments = rec.pop("comments", None) or []
                ymap = Map(rec)
                self.annotations[key] = ymap
                ymap["comments"] = Array(list(comments))
                existed = self.known.get(key) is not None
                self.known[key] = Known(
                    fingerprint=None, status=verdict.status,
                    problem=verdict.problem, measurements=verdict.measurements,
                    author=principal.user_id, classification=rec.get("classification"),
                    comments=len(comments),
                )
                if verdict.shape is not None:
                    self.index.upsert(key, verdict.shape)
                else:
                    self.index.remove(key)
                audits.append(("geometry_changed" if existed else "created", key, {"import": True}))
                if verdict.status == "repaired":
                    audits.append(("repaired", key, {"problem": verdict.problem}))
                elif verdict.status == "invalid":
                    audits.append(("marked_invalid", key, {"problem": verdict.problem}))
                results.append({"id": key, "status": verdict.status, "problem": verdict.problem})
        for key, _record in items:
            # As it reads back from the doc (Yjs keeps every number as a float).
            self.known[key].fingerprint = fingerprint(_stored_geometry(self.annotations, key))
        if items:
            self.corrections += 1
        for action, key, detail in audits:
            self.store.audit(AuditRecord(self.room.key, at, principal.user_id, principal.site, action, key, detail))
        self._maybe_refresh()
        return results

    # --- queries -----------------------------------------------------------------------------

    def records(self, ids: Iterable[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
        keys = sorted(self.annotations.keys()) if ids is None else ids
        out = []
        for key in keys:
            try:  # one unreadable annotation must not fail the whole answer
                value = to_py(self.annotations.get(key))
                if value is None:
                    continue
                out.append((key, _normalized(value) if isinstance(value, dict) else {}))
            except Exception:
                log.exception("reading annotation %s failed", key, extra={"room": self.room.key, "annotation": key})
        return out

    def is_invalid(self, key: str) -> bool:
        known = self.known.get(key)
        return (known is not None and known.status == "invalid") or key not in self.index

    def classification_of(self, key: str) -> str | None:
        known = self.known.get(key)
        return _class_name(known.classification) if known else None


def slide_hook(slides: Any, store: Store, max_vertices: int) -> Any:
    """A RoomManager.on_load hook attaching an AnnotationGuard to every slide room."""

    async def attach(room: Room) -> None:
        if not room.key.startswith("slide:"):
            return
        record = await slides.get(room.key.removeprefix("slide:"))
        guard = AnnotationGuard(
            room, store, width=record["width"], height=record["height"], mpp=record.get("mpp"),
            max_vertices=max_vertices,
        )
        await guard.attach()
        room.annotation_guard = guard  # type: ignore[attr-defined]

    return attach

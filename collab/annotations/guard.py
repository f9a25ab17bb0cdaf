"""AnnotationGuard: check, repair, measure, stamp and index the annotations of a slide room.

The guard follows the room's `annotations` map (observe_deep). While a client's update is
applied it only notes which annotation ids changed (its after_apply hook queues them); just
before the store's next group commit is taken (the one that will hold that update), it checks the
changed ones and writes what the server owns (status, problem, measurements, author, updated, a
repaired geometry) in ONE transaction with origin "collab-server". That transaction commits with
the updates it corrects and goes out in the same frame to the other clients: one frame, one commit
for a burst of writes and their corrections. The server never reacts to its own transactions,
and a geometry is re-checked only when it changed (a fingerprint per id), so there are no loops
and a stored `repaired` is not turned back into `ok` by a later edit of another field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import shapely
from pycrdt import Array, Doc, Map

from collab import metrics
from collab.annotations.catalog import AnnotationCatalog, read_stored
from collab.annotations.fields import (
    CREATED,
    DELETED,
    GEOMETRY_CHANGED,
    MARKED_INVALID,
    REPAIRED,
    Known,
    field_changes,
    fingerprint,
    fingerprint_and_size,
    known_from_record,
    server_fields,
    to_py,
)
from collab.annotations.geometry import GeometryVerdict, merge_measurements
from collab.auth import Principal
from collab.gc_pause import paused_gc
from collab.live.policy import RoomPolicy
from collab.live.room import Room
from collab.store import AuditRecord, Store

log = logging.getLogger(__name__)

STORED_READ_DELAY = 1.0  # seconds between a room's load and reading its stored annotations
# 0: the server's corrections join the group commit of the updates they correct (one commit,
# one frame per client). A positive delay holds them that long instead (tests use it to keep a
# correction pending); measured in bench/RESULTS.md "Issue 14".
CORRECTION_DELAY = 0.0
# Geometries of up to this much JSON (about 400 vertices, under a millisecond to check even when
# make_valid has to repair them) are checked on the event loop, up to the budget per correction
# transaction; the others in a worker thread, corrected when done.
INLINE_CHECK_MAX_BYTES = 16 * 1024
INLINE_CHECK_BUDGET = 64 * 1024
# Positions written per server transaction by an import (about 2 MB of GeoJSON).
IMPORT_CHUNK_COORDINATES = 100_000


class CellCounts(Protocol):
    """The detection layers of a slide, as the guard counts them (collab.layers.registry)."""

    @property
    def inline_ok(self) -> bool:
        """Small enough to count on the event loop."""

    @property
    def has_layers(self) -> bool:
        """The slide has at least one layer."""

    def counts(self, shape: Any) -> dict[str, dict[str, Any]]:
        """{layer_id: {"total", "classes"}} inside a polygonal shape; {} without layers."""

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when a layer is added or removed; answers the unsubscribe."""


POLYGONAL = ("Polygon", "MultiPolygon")


def now_ms() -> int:
    return int(time.time() * 1000)


def _stored_geometry(annotations: Map, key: str) -> Any:
    value = annotations.get(key)
    if isinstance(value, Map | Mapping):
        return to_py(value.get("geometry"))
    return None


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
        the same key adds to the earlier one's fields. Nothing to set: nothing written."""
        earlier = self.writes.get(key)
        if earlier is None and not fields:
            return
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


class AnnotationGuard(RoomPolicy):
    """The policy of a slide room: writers by role; every change checked, corrected and audited."""

    def __init__(self, store: Store, catalog: AnnotationCatalog, cells: CellCounts | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.cells = cells  # live counts of detection layers inside outlines
        self._unsubscribe_cells: Callable[[], None] | None = None
        self._recount_again = False
        self._recounting = False
        self._stored_cells = False  # some stored annotation carries cell counts
        self.index = catalog.index  # kept current here, read by the HTTP routes
        self.known = catalog.known
        self.check = catalog.check
        self._room: Room | None = None
        self._pending: set[str] = set()
        self._touched: set[str] = set()  # ids changed since the room was loaded
        self._known_ready = False  # the stored annotations have been read
        self._deferred: list[tuple[set[str], Principal, int]] = []  # edits that arrived before that, when
        self._queued: list[tuple[set[str], Principal, int]] = []  # changes for the next correction
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_armed = False  # a flush waits for the store's next group commit
        self._load_task: asyncio.Task[None] | None = None
        self._check_tasks: set[asyncio.Task[None]] = set()  # geometries being checked in a thread
        self._closed = False
        self._subscription: Any = None  # the observe_deep subscription, off while the server writes
        self._tasks: set[asyncio.Task[None]] = set()
        self.corrections = 0  # server transactions written (tests, metrics)

    # --- attaching -------------------------------------------------------------------------

    @property
    def room(self) -> Room:
        assert self._room is not None, "AnnotationGuard used before attach()"
        return self._room

    async def attach(self, room: Room) -> None:
        """Follow the room's changes at once; read and index what the stored document holds in
        worker threads meanwhile.

        Clients may join before that is done (a reload of a 5,000-annotation slide must not
        wait for reading and checking 5,000 annotations): edits arriving meanwhile are processed
        once the stored state is known, and spatial queries wait for the index (`wait_indexed`).
        """
        self._room = room
        self.doc: Doc = room.doc
        self.annotations: Map = self.doc.get("annotations", type=Map)
        self.catalog.annotations = self.annotations
        state = self.doc.get_update()
        room.prime_full_state(state)  # the first joiners need this very encoding
        self._subscription = self._observe()
        self._load_task = self._spawn(self._load_stored(state))
        if self.cells is not None:
            self._unsubscribe_cells = self.cells.subscribe(self.recount_cells)

    async def _load_stored(self, state: bytes) -> None:
        try:
            # Let the first joiners' initial sync go out first: reading 5,000 annotations holds
            # the GIL for a good part of a second, which would slow that sync down.
            if len(state) > 2:  # an empty document has nothing to read
                await asyncio.sleep(STORED_READ_DELAY)
            stored = await asyncio.to_thread(read_stored, state)
            for key, (record, fp) in stored.items():
                if key in self.annotations:  # not deleted since the load (by another node, say)
                    self.known.setdefault(key, known_from_record(record, fp))
                measurements = record.get("measurements") if isinstance(record, Mapping) else None
                if isinstance(measurements, Mapping) and "cells" in measurements:
                    self._stored_cells = True
        except Exception:
            log.exception("reading the stored annotations failed", extra={"room": self.room.name})
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
            log.exception("indexing the stored annotations failed", extra={"room": self.room.name})
        finally:
            self.catalog.mark_indexed()
        # Layers may have come or gone while the room was unloaded: bring stored counts up to date.
        if self.cells is not None and (self._stored_cells or self.cells.has_layers):
            self.recount_cells()

    def _check_all(self, records: Mapping[str, Any]) -> dict[str, GeometryVerdict]:
        verdicts = {}
        for key, record in records.items():
            try:
                verdicts[key] = self.check(record)
            except Exception:  # one annotation never takes the index of the others down
                log.exception("checking stored annotation %s failed", key, extra={"room": self.room.name})
        return verdicts

    # --- following client changes --------------------------------------------------------

    def _observe(self) -> Any:
        """Follow the annotations map through Yrs' own deep subscription. pycrdt's observe_deep
        wraps every event in Python objects, walking each value it carries in Python (~45 µs
        for a 50-vertex polygon, per update); the guard only needs the changed keys."""
        return self.annotations.integrated.observe_deep(self._on_change)

    def _on_change(self, events: list[Any]) -> None:
        try:
            for event in events:
                path = event.path
                if path:
                    self._pending.add(str(path[0]))
                else:
                    keys = getattr(event, "keys", None) or {}
                    self._pending.update(str(k) for k in keys)
        except BaseException as exc:  # raised into Yrs, it would be lost: log it here
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            log.exception("reading a change event failed", extra={"room": self.room.name})

    def after_apply(self, principal: Principal) -> None:
        """Queue what a client's update changed; the server's corrections follow in the same
        group commit (the update is already queued in the store: the commit waits for nothing
        else), so they reach the other clients in the update's own frame."""
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        self._touched |= pending
        self._queued.append((pending, principal, now_ms()))
        if CORRECTION_DELAY > 0:
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(CORRECTION_DELAY, self.flush_corrections)
        elif not self._flush_armed:
            self._flush_armed = True
            self.store.before_next_commit(self._flush_before_commit)

    def _flush_before_commit(self) -> None:
        self._flush_armed = False
        self.flush_corrections()

    def before_apply(self, principal: Principal) -> None:
        """Another user's update is about to be applied: process what is queued first, while the
        document still shows only the queued users' changes, so that each change (and its audit
        record) is credited to whoever made it."""
        user = (principal.user_id, principal.site)
        if any((p.user_id, p.site) != user for _ids, p, _at in self._queued):
            self.flush_corrections()

    def before_remote_apply(self) -> None:
        """Another node's update is about to be applied: this node's queued changes first."""
        self.flush_corrections()

    def after_remote_apply(self) -> None:
        """Another node's update was applied. That node checked, corrected and audited it; this
        one only follows: what it knows of each changed annotation, and the spatial index."""
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        self._touched |= pending
        later: list[tuple[str, bytes, Any]] = []
        for key in pending:
            value = self.annotations.get(key)
            if value is None:
                self.known.pop(key, None)
                self.index.remove(key)
                continue
            record = to_py(value)
            geometry = record.get("geometry") if isinstance(record, Mapping) else None
            fp, size = fingerprint_and_size(geometry)
            earlier = self.known.get(key)
            self.known[key] = known_from_record(record, fp)
            if earlier is not None and earlier.fingerprint == fp and key in self.index:
                continue
            if size <= INLINE_CHECK_MAX_BYTES:
                self._index_verdict(key, fp, self._check_safely_record(key, record))
            else:
                later.append((key, fp, record))
        if later:
            self._spawn(self._index_later(later))
        self._maybe_refresh()

    def _check_safely_record(self, key: str, record: Any) -> GeometryVerdict | None:
        try:
            return self.check(record)
        except Exception:
            log.exception("geometry check failed", extra={"room": self.room.name, "annotation": key})
            return None

    def _index_verdict(self, key: str, fp: bytes, verdict: GeometryVerdict | None) -> None:
        known = self.known.get(key)
        if known is None or known.fingerprint != fp:
            return  # changed or deleted meanwhile
        if verdict is not None and verdict.shape is not None and verdict.status != "invalid":
            self.index.upsert(key, verdict.shape)
        else:
            self.index.remove(key)

    async def _index_later(self, items: list[tuple[str, bytes, Any]]) -> None:
        verdicts = await asyncio.to_thread(lambda: [self._check_safely_record(k, r) for k, _fp, r in items])
        for (key, fp, _record), verdict in zip(items, verdicts, strict=True):
            self._index_verdict(key, fp, verdict)
        self._maybe_refresh()

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
        if self._unsubscribe_cells is not None:
            self._unsubscribe_cells()
            self._unsubscribe_cells = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _process_safely(self, changes: list[tuple[set[str], Principal, int]]) -> None:
        try:
            self._process(changes)
        except Exception:
            log.exception("annotation corrections failed", extra={"room": self.room.name})

    def _process(self, changes: list[tuple[set[str], Principal, int]]) -> None:
        """Note what changed and write the server's fields in ONE transaction. Small changed
        geometries are checked here, on the event loop (cheaper than a thread hop); large
        ones in a worker thread, corrected when done, so the loop never stalls on Shapely."""
        batch = Batch()
        inline: list[Check] = []
        later: list[Check] = []
        # Counting cells over large layers is done in a worker thread along with the check.
        budget = INLINE_CHECK_BUDGET if self.cells is None or self.cells.inline_ok else 0
        for ids, principal, at in changes:
            try:
                for check in self._note_changes(ids, principal, at, batch):
                    if check.size <= min(budget, INLINE_CHECK_MAX_BYTES):
                        budget -= check.size
                        inline.append(check)
                    else:
                        later.append(check)
            except Exception:
                log.exception("noting annotation changes failed", extra={"room": self.room.name})
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
            return self._with_cells(self.check({"geometry": check.geometry}))
        except Exception:
            log.exception("geometry check failed", extra={"room": self.room.name, "annotation": check.key})
            return None

    # --- live counts of detection layers ----------------------------------------------------

    def _cells_of(self, shape: Any) -> dict[str, Any] | None:
        if self.cells is None or shape is None or shape.geom_type not in POLYGONAL:
            return None
        return self.cells.counts(shape) or None

    def _with_cells(self, verdict: GeometryVerdict) -> GeometryVerdict:
        cells = self._cells_of(verdict.shape)
        if cells is None:
            return verdict
        return dataclasses.replace(verdict, measurements={**verdict.measurements, "cells": cells})

    def recount_cells(self) -> None:
        """A layer of the slide was added or removed (or the room just loaded): count again
        inside every valid outline, in a worker thread, and write the counts that changed."""
        if self.cells is None or self._closed or not self._known_ready:
            return
        if self._recounting:
            self._recount_again = True
            return
        self._recounting = True
        self._spawn(self._recount())

    def _count_all(self, shapes: list[tuple[str, Any]]) -> list[tuple[str, Any, dict[str, Any] | None]]:
        return [(key, shape, self._cells_of(shape)) for key, shape in shapes]

    async def _recount(self) -> None:
        try:
            while True:
                self._recount_again = False
                shapes = [(k, shape) for k in list(self.known) if (shape := self.index.get(k)) is not None]
                counts = await asyncio.to_thread(self._count_all, shapes)
                if self._closed:
                    return
                batch = Batch()
                for key, shape, cells in counts:
                    known, value = self.known.get(key), self.annotations.get(key)
                    if known is None or value is None or self.index.get(key) is not shape:
                        continue  # changed meanwhile: its own check counted it
                    computed = {k: v for k, v in known.measurements.items() if k != "cells"}
                    if cells is not None:
                        computed["cells"] = cells
                    known.measurements = computed
                    current = to_py(value.get("measurements")) if isinstance(value, Map | Mapping) else None
                    merged = merge_measurements(current, computed)
                    if merged != current:
                        batch.write(key, value, {"measurements": merged})
                self._commit(batch)
                if not self._recount_again:
                    return
        except Exception:
            log.exception("recounting cells failed", extra={"room": self.room.name})
        finally:
            self._recounting = False

    def _note_changes(self, ids: Iterable[str], principal: Principal, at: int, batch: Batch) -> list[Check]:
        """Note one client update's changes in `batch`; answer the geometries to check.
        `at` is when the change arrived (audit and `updated` times)."""
        checks: list[Check] = []
        audit = functools.partial(batch.audit, self.room.name, principal, at)
        for key in sorted(ids):
            value = self.annotations.get(key)
            if value is None:
                if self.known.pop(key, None) is not None:
                    self.index.remove(key)
                    audit(DELETED, key)
                continue
            record = to_py(value)
            if not isinstance(record, Mapping):
                record = {}
            known = self.known.get(key)
            created = known is None
            if known is None:
                known = self.known[key] = Known(author=principal.user_id)
                audit(CREATED, key)
            for action, detail in field_changes(record, known, created):
                audit(action, key, detail)
            geometry = record.get("geometry")
            fp, size = fingerprint_and_size(geometry)
            if fp != known.fingerprint:
                if not created:
                    audit(GEOMETRY_CHANGED, key)
                known.fingerprint = fp  # this version is being checked: do not check it twice
                checks.append(Check(key, fp, created, geometry, value, record, size, principal, at))
                continue  # its whole correction is written once the check is done
            batch.write(key, value, server_fields(record, known, created, at))
        return checks

    async def _check_later(self, checks: list[Check]) -> None:
        try:
            verdicts = await asyncio.to_thread(lambda: [self._check_safely(c) for c in checks])
            batch = Batch()
            self._collect_verdicts(checks, verdicts, batch, changed_since=True)
            self._commit(batch)
        except Exception:
            log.exception("annotation check failed", extra={"room": self.room.name})

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
                action = REPAIRED if verdict.status == "repaired" else MARKED_INVALID
                batch.audit(self.room.name, check.principal, check.at, action, key, {"problem": verdict.problem})
            fields = server_fields(record, known, check.created, check.at)
            if verdict.geometry is not None:
                fields["geometry"] = verdict.geometry
            batch.write(key, value, fields)

    def _commit(self, batch: Batch) -> None:
        self._write(batch.writes)
        for record in batch.audits:
            self.store.audit(record)
        self._maybe_refresh()

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
        metrics.CORRECTIONS.inc()

    @contextlib.contextmanager
    def _not_observing(self) -> Iterator[None]:
        """The server does not react to its own writes: unsubscribed, pycrdt does not even build
        the change events (converting every replaced value to Python, a fifth of the CPU of a busy
        room when subscribed)."""
        self._subscription.drop()
        try:
            yield
        finally:
            self._subscription = self._observe()

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

    async def import_records(
        self, items: list[tuple[str, dict[str, Any]]], verdicts: list[GeometryVerdict], principal: Principal
    ) -> list[dict[str, Any]]:
        """Write checked, stamped records as Y.Map values: one server transaction for an import of
        up to IMPORT_CHUNK_COORDINATES positions (most imports), else one per chunk of that size,
        in order, the event loop running between them. Building a 150 MB import's Y.Maps and its
        commit in one go held the loop for 2-4 s (bench/RESULTS.md, "Fuzz (issue 11)")."""
        results: list[dict[str, Any]] = []
        start, budget = 0, IMPORT_CHUNK_COORDINATES
        for end, verdict in enumerate(verdicts, start=1):
            budget -= shapely.get_num_coordinates(verdict.shape) if verdict.shape is not None else 1
            if budget <= 0 or end == len(verdicts):
                with paused_gc():
                    results.extend(self._import_chunk(items[start:end], verdicts[start:end], principal))
                start, budget = end, IMPORT_CHUNK_COORDINATES
                if end < len(verdicts):
                    await asyncio.sleep(0)  # relays, other clients and other rooms go on meanwhile
        return results

    def _import_chunk(
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
                    name=rec.get("name"), locked=rec.get("locked") is True, comments=len(comments),
                )
                if verdict.shape is not None:
                    self.index.upsert(key, verdict.shape)
                else:
                    self.index.remove(key)
                audits.append((GEOMETRY_CHANGED if existed else CREATED, key, {"import": True}))
                if verdict.status == "repaired":
                    audits.append((REPAIRED, key, {"problem": verdict.problem}))
                elif verdict.status == "invalid":
                    audits.append((MARKED_INVALID, key, {"problem": verdict.problem}))
                results.append({"id": key, "status": verdict.status, "problem": verdict.problem})
        for key, _record in items:
            # As it reads back from the doc (Yjs keeps every number as a float).
            self.known[key].fingerprint = fingerprint(_stored_geometry(self.annotations, key))
        if items:
            self.corrections += 1
        for action, key, detail in audits:
            self.store.audit(AuditRecord(self.room.name, at, principal.user_id, principal.site, action, key, detail))
        self._maybe_refresh()
        return results

"""Group commit: writes queued while a commit is in flight share the next commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from collab import metrics
from collab.errors import StoreError

if TYPE_CHECKING:
    from collab.store import AuditRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Op:
    kind: str  # "append" | "compact" | "audit" | "claim" | "record"
    room: str
    payload: Any
    future: asyncio.Future[Any] = field(default=None)  # type: ignore[arg-type]  # set by submit()
    result: Any = None  # what the future resolves to once committed (an append's sequence number)


class GroupCommitWriter:
    """Runs `commit(ops)` for batches of queued ops, one batch at a time, in submission order.

    Futures resolve in submission order after their batch committed, so callbacks attached to
    them (relays to clients) also run in that order. A failed batch fails every future in it.
    """

    def __init__(self, commit: Callable[[list[Op]], Awaitable[None]], *, name: str) -> None:
        self._commit = commit
        self._name = name
        self._queue: list[Op] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last: asyncio.Future[Any] | None = None
        self._before_batch: list[Callable[[], None]] = []
        self.committed = 0  # ops committed since start
        self.batches = 0  # transactions committed since start

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self._name}-writer")

    def submit(self, op: Op) -> asyncio.Future[Any]:
        if self._closing:
            raise StoreError("store is closed")
        op.future = asyncio.get_running_loop().create_future()
        self._queue.append(op)
        self._last = op.future
        self._wakeup.set()
        return op.future

    def before_next_batch(self, callback: Callable[[], None]) -> None:
        """Run `callback` (once) just before the next batch is taken, so the ops it submits share
        that batch: a correction joins the commit of the update it corrects, and one frame."""
        self._before_batch.append(callback)
        self._wakeup.set()

    def _run_before_batch(self) -> None:
        callbacks, self._before_batch = self._before_batch, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback before a store commit failed")

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        last = self._last
        if last is not None and not last.done():
            await asyncio.shield(last)

    async def stop(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if self._before_batch:
                self._run_before_batch()
            if not self._queue:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch, self._queue = self._queue, []
            started = time.perf_counter()
            try:
                await self._commit(batch)
            except Exception as exc:
                log.exception("store commit of %d ops failed", len(batch))
                # Nothing of the batch was committed: every write in it fails, with collab's error.
                error = exc if isinstance(exc, StoreError) else StoreError(f"store commit failed: {exc}")
                if error is not exc:
                    error.__cause__ = exc
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(error)
                continue
            self.committed += len(batch)
            self.batches += 1
            metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.STORE_BATCH_OPS.observe(len(batch))
            for op in batch:
                if not op.future.done():
                    op.future.set_result(op.result)


# -- helpers every backend's batch uses -------------------------------------------------------


def runs_of_kind(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    """Consecutive ops of one kind, so each run is one executemany while order is kept."""
    runs: list[tuple[str, list[Op]]] = []
    for op in ops:
        if runs and runs[-1][0] == op.kind:
            runs[-1][1].append(op)
        else:
            runs.append((op.kind, [op]))
    return runs


def appends_by_room(ops: list[Op]) -> list[tuple[str, list[Op]]]:
    """The batch's appends grouped by room, rooms in sorted order (every batch takes its rooms'
    counters in the same order, so two nodes' batches never wait on each other in a cycle)."""
    rooms: dict[str, list[Op]] = {}
    for op in ops:
        if op.kind == "append":
            rooms.setdefault(op.room, []).append(op)
    return sorted(rooms.items())


def number_appends(appends: list[Op], last: int) -> None:
    """Number a room's appends of one batch, in submission order, ending at `last`."""
    for offset, op in enumerate(appends):
        op.result = last - len(appends) + 1 + offset


class QueuedWrites:
    """The write half every backend shares: each write is an Op queued on the backend's
    GroupCommitWriter (`self._writer`), whose `_commit_batch` commits a batch in one transaction."""

    _writer: GroupCommitWriter

    def append(self, room: str, update: bytes) -> asyncio.Future[int]:
        return self._writer.submit(Op("append", room, update))

    def before_next_commit(self, callback: Callable[[], None]) -> None:
        self._writer.before_next_batch(callback)

    def compact(self, room: str, snapshot: bytes, upto: int) -> asyncio.Future[None]:
        return self._writer.submit(Op("compact", room, (snapshot, upto)))

    def audit(self, record: AuditRecord) -> asyncio.Future[None]:
        return self._writer.submit(Op("audit", record.room, record))

    def claim_clients(self, room: str, owners: dict[int, str]) -> asyncio.Future[None]:
        return self._writer.submit(Op("claim", room, dict(owners)))

    def put_record(self, kind: str, record_id: str, record: dict[str, Any]) -> asyncio.Future[None]:
        # Serialised now: the caller may change its dict before the batch runs.
        return self._writer.submit(Op("record", "", (kind, record_id, orjson.dumps(record))))

    async def flush(self) -> None:
        await self._writer.flush()

    @property
    def committed_writes(self) -> int:
        return self._writer.committed

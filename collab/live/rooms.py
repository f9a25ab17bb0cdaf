"""RoomManager: load each room once (single flight), unload idle rooms, flush on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from pycrdt import Doc

from collab import metrics
from collab.errors import ShuttingDown, StoreError, TooManyConnections
from collab.live.bus import Bus
from collab.live.connection import Connection
from collab.live.keys import RoomKey
from collab.live.policy import PolicyFactory
from collab.live.room import Room
from collab.settings import Settings
from collab.store import Store

log = logging.getLogger(__name__)

class RoomManager:
    """Owns every loaded Room and the background tasks that unload them."""

    def __init__(self, store: Store, bus: Bus, settings: Settings, policy_for: PolicyFactory) -> None:
        self._store = store
        self._bus = bus
        self._settings = settings
        self._policy_for = policy_for
        self._rooms: dict[RoomKey, Room] = {}
        self._locks: dict[RoomKey, asyncio.Lock] = {}
        self._idle_since: dict[RoomKey, float] = {}
        self._timers: dict[RoomKey, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    def get(self, key: RoomKey) -> Room | None:
        return self._rooms.get(key)

    def __len__(self) -> int:
        return len(self._rooms)

    async def join(self, key: RoomKey, conn: Connection) -> Room:
        async with self._lock(key):
            room = self._rooms.get(key)
            if room is not None and room.failed:
                # The store refused a write this room had applied in memory: what it holds is
                # not what is saved. Drop it; the joiner gets the stored truth.
                self._drop(room)
                room = None
            if room is None:
                room = await self._load(key)
            if self.closing:
                # The drain started while this room loaded: it closed everyone else already.
                raise ShuttingDown("server shutting down")
            if len(room.connections) >= self._settings.max_connections_per_room:
                raise TooManyConnections("room is full")
            self._cancel_unload(key)
            self._idle_since.pop(key, None)  # busy again: not a candidate for eviction
            room.add(conn)
            metrics.CONNECTIONS.inc()
        return room

    def leave(self, room: Room, conn: Connection) -> None:
        if conn not in room.connections:
            return
        room.remove(conn)
        metrics.CONNECTIONS.dec()
        if not room.connections:
            self._idle_since[room.key] = time.monotonic()
            self._schedule_unload(room.key, self._settings.room_idle_seconds)

    async def open(self, key: RoomKey) -> Room:
        """The loaded room for `key` (loading it if needed), for server-side changes."""
        async with self._lock(key):
            room = self._rooms.get(key)
            if room is None:
                room = await self._load(key)
                self._idle_since[key] = time.monotonic()
                self._schedule_unload(key, self._settings.room_idle_seconds)
            return room

    def _lock(self, key: RoomKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _load(self, key: RoomKey) -> Room:
        started = time.perf_counter()
        loaded = await self._store.load(str(key))
        doc: Doc = Doc()
        try:
            for update in loaded.updates:
                doc.apply_update(update)
        except ValueError as exc:
            raise StoreError(f"stored document {key} cannot be read: {exc}") from exc
        room = Room(
            key,
            doc,
            policy=await self._policy_for(key),
            store=self._store,
            bus=self._bus,
            settings=self._settings,
            log_entries=loaded.log_entries,
            log_bytes=loaded.log_bytes,
            snapshot_bytes=loaded.snapshot_bytes,
            client_owners=loaded.client_owners,
            seq=loaded.seq,
        )
        await room.policy.attach(room)
        self._rooms[key] = room
        metrics.ROOMS_LOADED.set(len(self._rooms))
        metrics.ROOM_LOAD_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "room loaded in %.1f ms (%d stored updates)",
            (time.perf_counter() - started) * 1000,
            len(loaded.updates),
            extra={"room": str(key)},
        )
        self._evict_if_over_capacity()
        return room

    def _drop(self, room: Room) -> None:
        for conn in list(room.connections):
            conn.close_soon(1011, "room reloaded after a store failure")
        room.close()
        self._rooms.pop(room.key, None)
        metrics.ROOMS_LOADED.set(len(self._rooms))

    def _evict_if_over_capacity(self) -> None:
        excess = len(self._rooms) - self._settings.max_rooms_loaded
        if excess <= 0:
            return
        idle = sorted(
            (since, key) for key, since in self._idle_since.items() if key in self._rooms
        )
        for _since, key in idle[:excess]:
            self._schedule_unload(key, 0)

    def _schedule_unload(self, key: RoomKey, delay: float) -> None:
        self._cancel_unload(key)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._start_unload, key)

    def _cancel_unload(self, key: RoomKey) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _start_unload(self, key: RoomKey) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._unload(key), name=f"unload-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unload(self, key: RoomKey) -> None:
        async with self._lock(key):
            room = self._rooms.get(key)
            if room is None or room.connections:
                return
            try:
                await self._retire(room)
            except Exception:
                log.exception("unloading room %s failed; it stays loaded", key)
                return
            del self._rooms[key]
            self._idle_since.pop(key, None)
            self._locks.pop(key, None)
            metrics.ROOMS_LOADED.set(len(self._rooms))
            log.info("room unloaded", extra={"room": str(key)})

    async def _retire(self, room: Room) -> None:
        """Flush what is pending and fold the log, so the next load is one snapshot."""
        if not room.failed:
            await room.policy.settle()
        if room.log_entries > 0 and not room.failed:
            room.compact()
        await room.flush()
        room.close()

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> tuple[int, int]:
        """Close every connection with `code`, flush and compact every room, and wait until every
        close frame is out. Answers (sockets closed, rooms flushed)."""
        self.closing = True
        closed = [conn for room in self._rooms.values() for conn in room.connections]
        for conn in closed:
            conn.close_soon(code, reason)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        for lock in list(self._locks.values()):
            async with lock:
                pass  # a join or load in progress ends (a join is refused: we are closing)
        rooms = list(self._rooms.values())
        for room in rooms:
            try:
                await self._retire(room)
            except Exception:
                log.exception("flushing room %s at shutdown failed", room.name)
        await self._store.flush()
        # Whatever socket has not sent its close frame when this returns, uvicorn's own shutdown
        # closes with 1012 (a client that never wrote used to get that: nothing above yielded).
        await asyncio.gather(*(conn.wait_close_sent() for conn in closed))
        return len(closed), len(rooms)

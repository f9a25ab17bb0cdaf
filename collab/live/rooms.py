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

GAP_GRACE_SECONDS = 0.5  # a missing entry's message may still be on its way
POLL_SECONDS = 2.0  # several nodes: how often loaded rooms are compared with the store

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
        self._catching_up: set[RoomKey] = set()
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
            if room is not None and room.failed:
                self._drop(room)  # never serve (or write through) what may not be stored
                room = None
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
        room.on_gap = self._on_gap
        self._bus.attach(room.name, room)
        self._bus.query_presence(room.name)  # other nodes answer with their clients' presence
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

    # -- other nodes ---------------------------------------------------------------------------

    def _on_gap(self, room: Room) -> None:
        """An entry below what arrived is missing: wait a moment for its message (they may arrive
        out of order), then read what is still missing from the store."""
        if room.key in self._catching_up:
            return
        self._catching_up.add(room.key)
        asyncio.get_running_loop().call_later(GAP_GRACE_SECONDS, self._start_catch_up, room.key)

    def _start_catch_up(self, key: RoomKey) -> None:
        task = asyncio.get_running_loop().create_task(self.catch_up(key), name=f"catch-up-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def catch_up(self, key: RoomKey) -> None:
        """Apply what the store committed for a loaded room that it has not heard of."""
        self._catching_up.discard(key)
        room = self._rooms.get(key)
        if room is None or room.failed:
            return
        try:
            since = await self._store.read_since(room.name, room.seq)
        except Exception:
            log.exception("catching up from the store failed", extra={"room": room.name})
            return
        if self._rooms.get(key) is not room:
            return
        room.learn_owners(since.client_owners)
        if since.updates:
            log.info("caught up %d entries from the store", len(since.updates), extra={"room": room.name})
        if room.apply_committed(since.updates):
            room.caught_up(since.seq)

    def catch_up_all(self) -> None:
        """Messages flow again after a loss: every loaded room reads what it missed."""
        for key in list(self._rooms):
            self._start_catch_up(key)

    async def poll_store(self) -> None:
        """Several nodes: every POLL_SECONDS, compare each loaded room with the store's latest
        entry, and catch up a room that stays behind (a message lost in Redis, or Redis away)."""
        suspects: dict[RoomKey, int] = {}
        while True:
            await asyncio.sleep(POLL_SECONDS)
            rooms = {room.name: room for room in self._rooms.values() if not room.failed}
            if not rooms:
                continue
            try:
                latest = await self._store.latest_seqs(list(rooms))
            except Exception:
                log.warning("reading the rooms' latest entries failed", exc_info=True)
                continue
            behind = {}
            for name, seq in latest.items():
                room = rooms.get(name)
                if room is None or seq <= room.seq:
                    continue
                earlier = suspects.get(room.key)
                if earlier is not None and room.seq < earlier:
                    self._start_catch_up(room.key)  # committed a poll ago and still not here
                else:
                    behind[room.key] = seq  # its messages may be on their way
            suspects = behind

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

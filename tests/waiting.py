"""Waiting for conditions with a deadline, never a fixed sleep followed by an assert."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Map


async def wait_for(predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Return as soon as `predicate()` holds; fail (TimeoutError) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.01)


async def wait_for_async(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition"
) -> None:
    """wait_for with a predicate that must await (an HTTP request, say)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.02)


def _content(annotations: Map) -> str:
    return json.dumps(annotations.to_py(), sort_keys=True)  # NaN != NaN: compare serialized


async def settled(live: Any, room_key: str, *clients: Any, timeout: float = 10) -> None:
    """Wait until the server has nothing left to do for a room and every client has caught up:
    no queued or running geometry check, every write and audit record committed, and each
    client's annotations equal to the room's."""
    from collab.annotations.guard import AnnotationGuard
    from collab.live.keys import RoomKey

    collab = live.app.state.collab
    room = collab.rooms.get(RoomKey(*room_key.split(":", 1)))
    assert room is not None, f"room {room_key} is not loaded"
    guard = room.policy
    if isinstance(guard, AnnotationGuard):
        # Private state, read only: the guard has no public "idle" (the server never needs one).
        await wait_for(
            lambda: not (guard._pending or guard._queued or guard._deferred or guard._check_tasks)
            and guard._flush_timer is None and not guard._flush_armed,
            timeout,
            "geometry checks done",
        )
    await collab.store.flush()
    server = room.doc.get("annotations", type=Map)
    await wait_for(
        lambda: all(_content(c.annotations) == _content(server) for c in clients), timeout, "clients caught up"
    )

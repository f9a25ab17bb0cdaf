"""LayerRegistry against a real layer store (SQLite): what a node keeps of each slide's layers.

A refresh racing an import here never drops the new layer; a committed layer is announced and
counted even when its index fails to load; indexes are loaded only for slides with a room loaded
here; a lost "layers changed" message is recovered by the slow poll while Redis is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.layers.registry import LayerRegistry
from collab.layers.sqlite import SqliteLayerStore
from tests.test_layer_stores import BODY, import_whole
from tests.waiting import wait_for


class Node:
    """A registry on a real store, with what it announces and what its rooms hear."""

    def __init__(self, store: SqliteLayerStore) -> None:
        self.store = store
        self.announced: list[str] = []
        self.heard: list[str] = []
        self.registry = LayerRegistry(store, announce=self.announced.append)

    async def room(self, slide_id: str) -> object:
        """A room of the slide loads here: it follows the slide's layers. Answers its release."""
        cells = await self.registry.follow(slide_id)
        return cells.subscribe(lambda: self.heard.append(slide_id))

    def ids(self, slide_id: str) -> list[str]:
        return [index.id for index in self.registry.loaded(slide_id)]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    store = SqliteLayerStore(tmp_path / "layers.sqlite3")
    await store.open()
    try:
        yield Node(store)
    finally:
        await store.close()


async def test_a_refresh_racing_an_import_here_keeps_the_new_layer(node: Node) -> None:
    """The refresh reads the list (A, C), then waits loading C; meanwhile B is imported here.
    The refresh must not write its older list over B."""
    await import_whole(node.store, "A", BODY)
    await node.room("s")
    await import_whole(node.store, "C", BODY)  # another node's import: heard of by the refresh only
    c_loading = node.registry._locks["C"]  # held: the refresh stops inside its load of C
    await c_loading.acquire()
    refresh = asyncio.create_task(node.registry.refresh_slide("s"))
    await wait_for(lambda: bool(getattr(c_loading, "_waiters", None)), what="the refresh loading C")
    await import_whole(node.store, "B", BODY)
    meta_b = await node.store.get_layer("s", "B")
    assert meta_b is not None
    added = asyncio.create_task(node.registry.added(meta_b))
    await asyncio.wait([added], timeout=0.5)  # finished here unless it waits for the refresh
    c_loading.release()
    await asyncio.gather(refresh, added)
    assert sorted(node.ids("s")) == ["A", "B", "C"]


async def test_a_committed_layer_whose_index_fails_to_load_is_still_announced(node: Node) -> None:
    await node.room("s")
    await import_whole(node.store, "B", BODY)
    meta_b = await node.store.get_layer("s", "B")
    assert meta_b is not None
    await node.store.close()  # the store is away: the index cannot load
    await node.registry.added(meta_b)  # never raises: the layer is committed
    assert node.announced == ["s"] and node.heard == ["s"]
    await node.store.open()
    await node.registry.refresh_slide("s")  # the next refresh loads it
    assert node.ids("s") == ["B"]


async def test_indexes_are_loaded_only_for_slides_with_a_room_loaded_here(node: Node) -> None:
    await import_whole(node.store, "A", BODY, slide="t")
    release = await node.room("t")
    assert node.ids("t") == ["A"]
    release()  # the room of t unloads: its indexes are freed
    assert "A" not in node.registry._indexes
    await import_whole(node.store, "B", BODY, slide="t")
    meta_b = await node.store.get_layer("t", "B")
    assert meta_b is not None
    await node.registry.added(meta_b)
    await import_whole(node.store, "C", BODY, slide="t")
    await node.registry.refresh_slide("t")  # another node's import
    assert "B" not in node.registry._indexes and "C" not in node.registry._indexes
    assert node.ids("t") == []
    await node.room("t")  # a room loads again: every layer, read again from the store
    assert node.ids("t") == ["A", "B", "C"]


async def test_a_lost_message_is_recovered_by_the_poll_while_messages_flow(node: Node) -> None:
    await node.room("s")
    poll = asyncio.create_task(node.registry.poll(lambda: True, every=0.02, anyway_every=0.1))
    try:
        await import_whole(node.store, "B", BODY)  # another node's; its message never arrives
        await wait_for(lambda: node.ids("s") == ["B"], what="the poll loading the new layer")
        assert node.heard == ["s"]
    finally:
        poll.cancel()


async def test_indexes_queried_without_a_room_are_few(node: Node) -> None:
    """Queries of slides no room holds here keep only the most recent few indexes."""
    from collab.layers.registry import UNHELD_INDEXES_KEPT

    for n in range(UNHELD_INDEXES_KEPT + 3):
        await import_whole(node.store, f"L{n}", BODY, slide=f"q{n}")
        await node.registry.index(f"q{n}", f"L{n}")
    kept = set(node.registry._indexes)
    assert kept == {f"L{n}" for n in range(3, UNHELD_INDEXES_KEPT + 3)}

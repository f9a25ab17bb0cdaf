"""LayerRegistry: the layers of each slide, their query indexes in memory, and who follows them.

Indexes are loaded once per layer (single flight) and shared by the HTTP routes and the live
counts of the slide's room. A room's guard subscribes to its slide: when a layer is added or
removed it recounts its outlines.

Several nodes (a shared PostgreSQL layer store): a node that adds or removes a layer announces
"the layers of slide S changed" (`announce`, a message on the Redis bus); the other nodes hear it
(`changed_elsewhere`) and read that slide's list again: they load the new layers, drop the
deleted ones' indexes, and their rooms of that slide recount. The message carries no data, so a
lost one costs only time: `refresh_all` reads every followed slide again (Redis back, or its
poll while Redis is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from collab.errors import NotFound
from collab.layers.index import LayerIndex
from collab.layers.store import LayerMeta, LayerStore

log = logging.getLogger(__name__)

# Outlines are counted on the event loop while a slide's layers hold at most this many objects
# in all; past it, in a worker thread (the loop never stalls on a large count).
INLINE_COUNT_MAX_OBJECTS = 200_000

# Several nodes, Redis away: how often a node reads the layers of the slides it follows again.
POLL_SECONDS = 5.0

Listener = Callable[[], None]


class LayerRegistry:
    def __init__(self, store: LayerStore, announce: Callable[[str], None] | None = None) -> None:
        self.store = store
        self._announce = announce  # tells the other nodes that a slide's layers changed
        self._refreshes: set[asyncio.Task[None]] = set()
        self._indexes: dict[str, LayerIndex] = {}
        self._by_slide: dict[str, list[str]] = {}  # slide -> layer ids, once loaded
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    async def load_slide(self, slide_id: str) -> list[LayerIndex]:
        """The indexes of every layer of a slide, loaded if need be."""
        async with self._locks["slide:" + slide_id]:
            if slide_id not in self._by_slide:
                metas = await self.store.list_layers(slide_id)
                for meta in metas:
                    await self._load(meta)
                self._by_slide[slide_id] = [m.id for m in metas]
        return self.loaded(slide_id)

    async def index(self, slide_id: str, layer_id: str) -> LayerIndex:
        index = self._indexes.get(layer_id)
        if index is not None and index.meta.slide_id == slide_id:
            return index
        meta = await self.store.get_layer(slide_id, layer_id)
        if meta is None:
            raise NotFound(f"no layer {layer_id} on slide {slide_id}")
        return await self._load(meta)

    async def _load(self, meta: LayerMeta) -> LayerIndex:
        async with self._locks[meta.id]:
            index = self._indexes.get(meta.id)
            if index is None:
                rows = await self.store.load_points(meta.id)
                index = await asyncio.to_thread(LayerIndex, meta, rows)
                self._indexes[meta.id] = index
                log.info("layer index loaded: %d objects", len(index),
                         extra={"layer": meta.id, "slide_id": meta.slide_id})
            return index

    def loaded(self, slide_id: str) -> list[LayerIndex]:
        return [self._indexes[i] for i in self._by_slide.get(slide_id, ()) if i in self._indexes]

    async def added(self, meta: LayerMeta) -> None:
        await self._load(meta)
        if meta.slide_id in self._by_slide:
            if meta.id not in self._by_slide[meta.slide_id]:  # a refresh may have listed it already
                self._by_slide[meta.slide_id].append(meta.id)
        else:
            await self.load_slide(meta.slide_id)
        self._notify(meta.slide_id)
        if self._announce is not None:
            self._announce(meta.slide_id)

    def removed(self, slide_id: str, layer_id: str) -> None:
        self._indexes.pop(layer_id, None)
        if slide_id in self._by_slide:
            self._by_slide[slide_id] = [i for i in self._by_slide[slide_id] if i != layer_id]
        self._notify(slide_id)
        if self._announce is not None:
            self._announce(slide_id)

    # --- changes made by other nodes --------------------------------------------------------

    def changed_elsewhere(self, slide_id: str) -> None:
        """Another node added or removed a layer of the slide: read its list again, soon."""
        task = asyncio.get_running_loop().create_task(self.refresh_slide(slide_id), name="layers-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    def followed(self) -> set[str]:
        """Slides this node holds anything of: a list of layers, or a layer's index."""
        return set(self._by_slide) | {index.meta.slide_id for index in self._indexes.values()}

    async def poll(self, messages_flow: Callable[[], bool], every: float = POLL_SECONDS) -> None:
        """Several nodes: while messages do not flow (Redis away), read every followed slide's
        layers again every `every` seconds."""
        while True:
            await asyncio.sleep(every)
            if not messages_flow():
                await self.refresh_all()

    async def refresh_all(self) -> None:
        """Read every followed slide's list again (messages may have been lost)."""
        for slide_id in sorted(self.followed()):
            await self.refresh_slide(slide_id)

    async def refresh_slide(self, slide_id: str) -> None:
        """Bring what this node holds of the slide to what the store lists: new layers loaded
        (if the slide's list was loaded), deleted ones' indexes dropped; rooms told if it changed."""
        try:
            async with self._locks["slide:" + slide_id]:
                metas = await self.store.list_layers(slide_id)
                ids = [m.id for m in metas]
                gone = [i for i, index in self._indexes.items() if index.meta.slide_id == slide_id and i not in ids]
                for layer_id in gone:
                    self._indexes.pop(layer_id, None)
                changed = bool(gone)
                if slide_id in self._by_slide:
                    for meta in metas:
                        await self._load(meta)
                    changed = changed or ids != self._by_slide[slide_id]
                    self._by_slide[slide_id] = ids
        except Exception:  # the store is away: the next message, or the next refresh, retries
            log.warning("reading the layers of a slide again failed", exc_info=True, extra={"slide_id": slide_id})
            return
        if changed:
            log.info("layers changed on another node: %d now", len(ids), extra={"slide_id": slide_id})
            self._notify(slide_id)

    def subscribe(self, slide_id: str, listener: Listener) -> Callable[[], None]:
        self._listeners[slide_id].add(listener)
        return lambda: self._listeners[slide_id].discard(listener)

    def _notify(self, slide_id: str) -> None:
        for listener in list(self._listeners.get(slide_id, ())):
            try:
                listener()
            except Exception:  # one room's failure never stops the others hearing of it
                log.exception("a layer listener failed", extra={"slide_id": slide_id})

    def cells_of(self, slide_id: str) -> SlideCells:
        return SlideCells(self, slide_id)


class SlideCells:
    """What the annotation guard of one slide asks: counts of objects inside an outline."""

    def __init__(self, registry: LayerRegistry, slide_id: str) -> None:
        self._registry = registry
        self.slide_id = slide_id

    def counts(self, shape: Any) -> dict[str, dict[str, Any]]:
        """{layer_id: {"total", "classes"}} for a polygonal shape; {} when the slide has no layers."""
        return {index.id: index.count_inside(shape) for index in self._registry.loaded(self.slide_id)}

    @property
    def inline_ok(self) -> bool:
        return sum(len(i) for i in self._registry.loaded(self.slide_id)) <= INLINE_COUNT_MAX_OBJECTS

    @property
    def has_layers(self) -> bool:
        return bool(self._registry.loaded(self.slide_id))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._registry.subscribe(self.slide_id, listener)

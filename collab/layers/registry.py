"""LayerRegistry: the layers of each slide, their query indexes in memory, and who follows them.

Indexes are loaded once per layer (single flight) and shared by the HTTP routes and the live
counts of the slide's room. A room's guard subscribes to its slide: when a layer is added or
removed it recounts its outlines.

Several nodes (a shared PostgreSQL layer store): a node that adds or removes a layer announces
"the layers of slide S changed" (`announce`, a message on the Redis bus); the other nodes hear it
(`changed_elsewhere`) and read that slide's list again: they load the new layers, drop the
deleted ones' indexes, and their rooms of that slide recount. The message carries no data, so a
lost one costs only time: `refresh_all` reads every followed slide again (Redis back, its poll
every 5 s while Redis is away, every 60 s while it is up). Indexes are loaded for the slides
with a room loaded here (`follow`); for another slide a change only drops the cached list.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
# Several nodes, Redis up: the same, as seldom (a message may be lost: the publisher drops them
# under backlog). A list of layers per followed slide: cheap.
POLL_CONNECTED_SECONDS = 60.0

# Indexes of layers queried over HTTP on slides no room holds on this node, kept for the next
# query (a viewer panning over a layer asks many times); past this many the oldest go.
UNHELD_INDEXES_KEPT = 4

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
        self._holders: dict[str, int] = {}  # slide -> rooms loaded here (SlideCells not yet released)

    async def follow(self, slide_id: str) -> SlideCells:
        """A loaded room's counts of the slide: its layers' indexes in memory, kept up to date
        while the answer's subscription lasts (pinned from now, before the load: a layer added
        meanwhile is loaded too)."""
        cells = SlideCells(self, slide_id)
        try:
            await self.load_slide(slide_id)
        except BaseException:
            self._release(slide_id)
            raise
        return cells

    async def load_slide(self, slide_id: str) -> list[LayerIndex]:
        """The indexes of every layer of a slide, loaded if need be."""
        async with self._slide_lock(slide_id):
            if slide_id not in self._by_slide:
                metas = await self.store.list_layers(slide_id)
                for meta in metas:
                    await self._load(meta)
                self._by_slide[slide_id] = [m.id for m in metas]
        return self.loaded(slide_id)

    def _slide_lock(self, slide_id: str) -> asyncio.Lock:
        # Whoever changes a slide's list (load, refresh, added, removed) holds it: a refresh that
        # read the store's list before an import here finished never writes over the import.
        return self._locks["slide:" + slide_id]

    async def index(self, slide_id: str, layer_id: str) -> LayerIndex:
        index = self._indexes.get(layer_id)
        if index is not None and index.meta.slide_id == slide_id:
            return index
        meta = await self.store.get_layer(slide_id, layer_id)
        if meta is None:
            raise NotFound(f"no layer {layer_id} on slide {slide_id}")
        index = await self._load(meta)
        if not self._live(slide_id):
            self._indexes.pop(layer_id, None)
            self._indexes[layer_id] = index  # the most recent last
            self._evict_unheld()
        return index

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

    def _live(self, slide_id: str) -> bool:
        """A room of the slide is loaded here: its layers' indexes are kept in memory."""
        return self._holders.get(slide_id, 0) > 0

    async def added(self, meta: LayerMeta) -> None:
        """A layer published here (committed): the other nodes are told first, then the slide's
        rooms here count it. Never raises: the layer is in the store whatever happens here (an
        index that fails to load is loaded on first use, or by the next refresh)."""
        if self._announce is not None:
            self._announce(meta.slide_id)
        try:
            async with self._slide_lock(meta.slide_id):
                if meta.slide_id in self._by_slide:
                    if self._live(meta.slide_id):
                        await self._load(meta)
                        if meta.id not in self._by_slide[meta.slide_id]:  # a refresh may have listed it
                            self._by_slide[meta.slide_id].append(meta.id)
                    else:
                        del self._by_slide[meta.slide_id]  # no room here: read again when one loads
        except Exception:
            log.warning("loading a new layer's index failed; it loads on first use", exc_info=True,
                        extra={"layer": meta.id, "slide_id": meta.slide_id})
        self._notify(meta.slide_id)

    async def removed(self, slide_id: str, layer_id: str) -> None:
        if self._announce is not None:
            self._announce(slide_id)
        async with self._slide_lock(slide_id):
            self._indexes.pop(layer_id, None)
            if slide_id in self._by_slide:
                self._by_slide[slide_id] = [i for i in self._by_slide[slide_id] if i != layer_id]
        self._notify(slide_id)

    # --- changes made by other nodes --------------------------------------------------------

    def changed_elsewhere(self, slide_id: str) -> None:
        """Another node added or removed a layer of the slide: read its list again, soon."""
        task = asyncio.get_running_loop().create_task(self.refresh_slide(slide_id), name="layers-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    def followed(self) -> set[str]:
        """Slides this node holds anything of: a list of layers, or a layer's index."""
        return set(self._by_slide) | {index.meta.slide_id for index in self._indexes.values()}

    async def poll(self, messages_flow: Callable[[], bool], every: float = POLL_SECONDS,
                   anyway_every: float = POLL_CONNECTED_SECONDS) -> None:
        """Several nodes: while messages do not flow (Redis away), read every followed slide's
        layers again every `every` seconds; while they flow, every `anyway_every` seconds (the
        publisher drops messages under backlog: a lost one is recovered within that time)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(every)
            if not messages_flow() or time.monotonic() - last >= anyway_every:
                last = time.monotonic()
                await self.refresh_all()

    async def refresh_all(self) -> None:
        """Read every followed slide's list again (messages may have been lost)."""
        for slide_id in sorted(self.followed()):
            await self.refresh_slide(slide_id)

    async def refresh_slide(self, slide_id: str) -> None:
        """Bring what this node holds of the slide to what the store lists: new layers loaded
        (if a room of the slide is loaded here), deleted ones' indexes dropped; rooms told if it
        changed."""
        try:
            async with self._slide_lock(slide_id):
                metas = await self.store.list_layers(slide_id)
                ids = [m.id for m in metas]
                gone = [i for i, index in self._indexes.items() if index.meta.slide_id == slide_id and i not in ids]
                for layer_id in gone:
                    self._indexes.pop(layer_id, None)
                changed = bool(gone)
                if slide_id in self._by_slide:
                    changed = changed or ids != self._by_slide[slide_id]
                    if not self._live(slide_id):
                        del self._by_slide[slide_id]  # no room here: read again when one loads
                    else:
                        for meta in metas:
                            await self._load(meta)
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

    def _hold(self, slide_id: str) -> None:
        self._holders[slide_id] = self._holders.get(slide_id, 0) + 1

    def _release(self, slide_id: str) -> None:
        left = self._holders.get(slide_id, 0) - 1
        if left > 0:
            self._holders[slide_id] = left
            return
        self._holders.pop(slide_id, None)
        # The slide's last room here unloaded: its indexes go too (a node that opened hundreds of
        # slides with large layers would otherwise keep them all); a query loads them again.
        self._by_slide.pop(slide_id, None)
        for layer_id in [i for i, index in self._indexes.items() if index.meta.slide_id == slide_id]:
            del self._indexes[layer_id]

    def _evict_unheld(self) -> None:
        """Indexes loaded for queries of slides no room holds here: the most recent few kept."""
        unheld = [i for i, index in self._indexes.items() if not self._live(index.meta.slide_id)]
        for layer_id in unheld[:-UNHELD_INDEXES_KEPT]:
            del self._indexes[layer_id]

    def _notify(self, slide_id: str) -> None:
        for listener in list(self._listeners.get(slide_id, ())):
            try:
                listener()
            except Exception:  # one room's failure never stops the others hearing of it
                log.exception("a layer listener failed", extra={"slide_id": slide_id})


class SlideCells:
    """What the annotation guard of one slide asks: counts of objects inside an outline. Holds
    the slide's layers in memory from its creation until its subscription is released (or, if
    it never subscribes, for good: a room that failed to load)."""

    def __init__(self, registry: LayerRegistry, slide_id: str) -> None:
        self._registry = registry
        self.slide_id = slide_id
        registry._hold(slide_id)

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
        unsubscribe = self._registry.subscribe(self.slide_id, listener)
        released = False

        def release() -> None:
            nonlocal released
            unsubscribe()
            if not released:
                released = True
                self._registry._release(self.slide_id)

        return release

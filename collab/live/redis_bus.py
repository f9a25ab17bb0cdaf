"""RedisBus: rooms on several nodes hear each other through Redis pub/sub (redis-py asyncio).

Every node subscribes to `collab:room:*` and keeps the messages of the rooms it has loaded. A
message is `<node id>\\0<JSON header>\\0<bytes>`: the sending node first (a node drops its own
messages unparsed), then a header naming the kind ("update" with the room's sequence numbers,
"presence", "query"; "layers": the slide's detection layers changed) and the room. A "layers"
message goes to every node, the slide's room loaded there or not (`on_layers`). Pub/sub delivers
at most once: a node that misses a message (Redis away, a slow subscriber) sees the gap in the
sequence numbers or hears nothing, and reads what it lacks from the store (RoomManager.catch_up;
layers: LayerRegistry.refresh_all), so Redis only ever carries messages, never the only copy of
anything.

Each node keeps a key `collab:node:<id>` alive (TTL NODE_TTL); when a node's key is gone, the
others drop the presence of its clients (a node killed with -9 says goodbye to no one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collab import metrics
from collab.live.bus import RemoteRoom
from collab.live.keys import RoomKey

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "collab:room:"
NODE_KEY_PREFIX = "collab:node:"
NODE_TTL = 10  # seconds a node's key lives without a heartbeat
HEARTBEAT_SECONDS = 3.0
NODE_CHECK_SECONDS = 3.0
OUTBOX_MAX = 20_000  # messages waiting for Redis; past it the oldest are dropped (the store has them)
RETRY_SECONDS = 1.0


class RedisBus:
    def __init__(self, url: str, *, on_reconnect: Callable[[], None] | None = None) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self._node_prefix = self.node_id.encode() + b"\0"
        self._url = url
        self._redis: aioredis.Redis | None = None
        self._listeners: dict[str, RemoteRoom] = {}
        self._outbox: asyncio.Queue[bytes | tuple[str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._nodes: set[str] = set()  # other nodes heard from
        self._connected = False
        self._subscribed = False
        self._found_at = -float(NODE_TTL)  # when messages last started flowing again
        self.on_reconnect = on_reconnect  # called when messages flow again after a loss
        self.on_layers: Callable[[str], None] | None = None  # another node changed a slide's layers

    @property
    def connected(self) -> bool:
        return self._connected and self._subscribed

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=5
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._subscribe_loop(), name="redis-subscribe"),
            loop.create_task(self._publish_loop(), name="redis-publish"),
            loop.create_task(self._heartbeat_loop(), name="redis-heartbeat"),
        ]
        log.info("cross-node fan-out through Redis as node %s", self.node_id)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(NODE_KEY_PREFIX + self.node_id)
            await self._redis.aclose()
            self._redis = None

    # -- rooms --------------------------------------------------------------------------------

    def attach(self, room: str, listener: RemoteRoom) -> None:
        self._listeners[room] = listener

    def detach(self, room: str) -> None:
        self._listeners.pop(room, None)

    def publish_update(self, room: str, first: int, last: int, update: bytes, owners: dict[int, str]) -> None:
        header = {"k": "update", "room": room, "first": first, "last": last, "owners": owners}
        self._send(header, update)

    def publish_presence(self, room: str, message: bytes) -> None:
        self._send({"k": "presence", "room": room}, message)

    def query_presence(self, room: str) -> None:
        self._send({"k": "query", "room": room}, b"")

    def publish_layers(self, slide_id: str) -> None:
        self._send({"k": "layers", "room": str(RoomKey.slide(slide_id)), "slide": slide_id}, b"")

    def _send(self, header: dict[str, Any], payload: bytes) -> None:
        if not self._tasks:
            return
        if self._outbox.qsize() >= OUTBOX_MAX:
            self._outbox.get_nowait()  # the oldest: a node that misses it reads it from the store
            metrics.BUS_DROPPED.inc()
        # The sending node first: every node hears its own messages too (pattern subscription),
        # and drops them before parsing anything.
        message = self._node_prefix + orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS) + b"\0" + payload
        self._outbox.put_nowait((header["room"], message))

    # -- loops ----------------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        assert self._redis is not None
        while True:
            room, message = await self._outbox.get()  # type: ignore[misc]
            while True:
                try:
                    await self._redis.publish(CHANNEL_PREFIX + room, message)
                    metrics.BUS_PUBLISHED.inc()
                    break
                except (RedisError, OSError) as exc:
                    self._lost(exc)
                    if self._outbox.qsize() >= OUTBOX_MAX // 2:
                        break  # Redis has been away for a while: let the store carry it
                    await asyncio.sleep(RETRY_SECONDS)

    async def _subscribe_loop(self) -> None:
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self._subscribed = True
                self._found()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed = False
                self._lost(exc)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _heartbeat_loop(self) -> None:
        assert self._redis is not None
        key = NODE_KEY_PREFIX + self.node_id
        while True:
            try:
                await self._redis.set(key, b"1", ex=NODE_TTL)
                # Right after an outage every node's key may have expired: wait one TTL for the
                # others to heartbeat again before calling any of them gone.
                recovering = asyncio.get_running_loop().time() - self._found_at < NODE_TTL
                for node in [] if recovering else list(self._nodes):
                    if not await self._redis.exists(NODE_KEY_PREFIX + node):
                        self._nodes.discard(node)
                        log.warning("node %s stopped answering: dropping its clients' presence", node)
                        for listener in list(self._listeners.values()):
                            listener.on_node_gone(node)
                self._found()
            except (RedisError, OSError) as exc:
                self._lost(exc)
            await asyncio.sleep(min(HEARTBEAT_SECONDS, NODE_CHECK_SECONDS))

    def _deliver(self, data: bytes) -> None:
        if data.startswith(self._node_prefix):
            return  # our own
        sender, _, rest = data.partition(b"\0")
        head, sep, payload = rest.partition(b"\0")
        try:
            node = sender.decode()
            header = orjson.loads(head)
            room, kind = header["room"], header["k"]
        except (UnicodeDecodeError, orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed message on the bus")
            return
        if not sep:
            return
        self._nodes.add(node)
        if kind == "layers":
            self._layers_changed(node, header.get("slide"))
            return
        listener = self._listeners.get(room)
        if listener is None:
            return
        metrics.BUS_RECEIVED.inc()
        try:
            if kind == "update":
                owners = {int(k): str(v) for k, v in (header.get("owners") or {}).items()}
                listener.on_remote_update(int(header["first"]), int(header["last"]), payload, owners)
            elif kind == "presence":
                listener.on_remote_presence(node, payload)
            elif kind == "query":
                listener.on_presence_query(node)
        except Exception:
            log.exception("handling a %s message from node %s failed", kind, node, extra={"room": room})

    def _layers_changed(self, node: str, slide_id: Any) -> None:
        if not isinstance(slide_id, str) or self.on_layers is None:
            return
        metrics.BUS_RECEIVED.inc()
        try:
            self.on_layers(slide_id)
        except Exception:
            log.exception("handling a layers message from node %s failed", node, extra={"slide_id": slide_id})

    def _lost(self, exc: BaseException) -> None:
        if self._connected:
            log.error("Redis is unreachable (%s): serving this node's clients alone until it is back", exc)
        self._connected = False

    def _found(self) -> None:
        if not self._connected and self._subscribed:
            self._connected = True
            self._found_at = asyncio.get_running_loop().time()
            log.info("Redis answers: cross-node fan-out resumed")
            if self.on_reconnect is not None:
                self.on_reconnect()

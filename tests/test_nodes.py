"""Several `collab serve` nodes on one PostgreSQL and one Redis: clients of one slide on
different nodes co-edit live, and a node's or Redis's death loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET, ServerProcess
from tests.test_live_rooms import annotation
from tests.waiting import wait_for_async
from tests.yclient import YClient

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.slow


def _pg_answers() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 5432), timeout=1):
        return True
    return False


if not _pg_answers() or shutil.which("redis-server") is None:
    if os.environ.get("CI"):
        raise RuntimeError("the multi-node tests need PostgreSQL on 127.0.0.1:5432 and redis-server")
    pytest.skip("PostgreSQL on 127.0.0.1:5432 and redis-server are needed", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, on a free port, that the test may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    import asyncpg

    name = f"collab_nodes_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


class Cluster:
    def __init__(self, tmp_path: Path, database: str, redis: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self.redis = redis
        self.nodes: list[ServerProcess] = []

    def node(self) -> ServerProcess:
        index = len(self.nodes)
        node = ServerProcess(
            self.tmp_path / f"node{index}" / "data",
            "--database-url", self.database, "--redis-url", self.redis.url,
        )
        self.nodes.append(node)
        return node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path, database: str, redis_server: RedisServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, database, redis_server)
    try:
        yield c
    finally:
        c.stop()


def token(role: str = "reviewer", *, user: str, site: str = "Roubaix") -> str:
    from collab.auth import TokenAuthenticator

    return TokenAuthenticator(SECRET).mint(user=user, name=user.title(), site=site, role=role, slides="*", ttl=600)


def client(node: ServerProcess, slide: str, user: str, role: str = "reviewer") -> YClient:
    return YClient(f"{node.ws_url}/ws/slides/{slide}?token={token(role, user=user)}")


async def register(node: ServerProcess, slide: str) -> None:
    headers = {"authorization": f"Bearer {token('admin', user='adm')}"}
    async with httpx.AsyncClient(base_url=node.base_url, headers=headers) as http:
        r = await http.post("/api/slides", json={"id": slide, "title": slide, "width": 10000, "height": 10000,
                                                 "mpp": 0.25, "tiles": "/x.dzi"})
        assert r.status_code in (200, 201), r.text


@contextlib.asynccontextmanager
async def connected(*clients: YClient) -> AsyncIterator[list[YClient]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(c) for c in clients]


def keys(c: YClient) -> set[str]:
    return set(c.annotations.keys())


async def test_two_nodes_co_edit_a_slide_and_see_each_others_presence(cluster: Cluster) -> None:
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with connected(client(n1, "s", "alice"), client(n2, "s", "bob")) as (a, b):
        a.annotations["from-a"] = annotation(1)
        await b.wait_for(lambda: "from-a" in b.annotations)
        b.annotations["from-b"] = annotation(2)
        await a.wait_for(lambda: "from-b" in a.annotations)
        # The server's verdict is written once, by the node that received the update.
        await b.wait_for(lambda: b.annotations["from-a"].get("status") == "ok")
        await a.wait_for(lambda: a.annotations["from-b"].get("status") == "ok")
        a.set_presence({"cursor": {"x": 1, "y": 2}})
        await b.wait_for(lambda: any(s.get("user", {}).get("id") == "alice" for s in b.presence.values()))
        async with client(n2, "s", "late") as late:  # a late joiner on the other node
            await late.wait_for(lambda: any(s.get("user", {}).get("id") == "alice" for s in late.presence.values()))
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {token('admin', user='adm')}"}) as http:
        audits = []
        for node in (n1, n2):
            audits.append((await http.get(f"{node.base_url}/api/slides/s/audit")).json())
            exported = (await http.get(f"{node.base_url}/api/slides/s/annotations?bbox=0,0,10000,10000")).json()
            assert {f["id"] for f in exported["features"]} == {"from-a", "from-b"}
    assert audits[0] == audits[1]
    created = [(e["annotation"], e["user"]) for e in audits[0] if e["action"] == "created"]
    assert sorted(created) == [("from-a", "alice"), ("from-b", "bob")]  # once each, not once per node


async def test_clients_spread_over_three_nodes_converge(cluster: Cluster) -> None:
    nodes = [cluster.node() for _ in range(3)]
    await register(nodes[0], "s")
    clients = [client(nodes[i % 3], "s", f"u{i}") for i in range(20)]
    async with connected(*clients) as cs:
        for i, c in enumerate(cs):
            c.annotations[f"k{i}"] = annotation(i)
        # Concurrent edits of one annotation on two nodes.
        await cs[1].wait_for(lambda: "k0" in cs[1].annotations)
        cs[0].annotations["k0"]["name"] = "from node 0"
        cs[1].annotations["k0"]["classification"] = {"name": "Stroma", "color": [0, 0, 200]}
        want = {f"k{i}" for i in range(20)}
        for c in cs:
            await c.wait_for(lambda c=c: keys(c) == want, timeout=20)

        def view(c: YClient) -> Any:
            k0 = c.annotations["k0"]
            return (k0.get("name"), k0.get("classification"))

        await cs[0].wait_for(lambda: all(view(c) == view(cs[0]) for c in cs), timeout=20)
        assert view(cs[0]) == ("from node 0", {"name": "Stroma", "color": [0.0, 0.0, 200.0]})


async def test_import_on_one_node_reaches_clients_on_another(cluster: Cluster) -> None:
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with client(n2, "s", "watcher") as w:
        body = {"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "imp", "geometry": {"type": "Point", "coordinates": [5, 5]},
             "properties": {"objectType": "annotation", "name": "imported"}}]}
        async with httpx.AsyncClient(base_url=n1.base_url,
                                     headers={"authorization": f"Bearer {token('reviewer', user='imp')}"}) as http:
            r = await http.post("/api/slides/s/annotations", json=body)
            assert r.status_code == 201, r.text
        await w.wait_for(lambda: "imp" in w.annotations)


async def test_kill_9_of_a_node_loses_nothing_and_its_presence_goes(cluster: Cluster) -> None:
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with client(n2, "s", "bob") as b:
        a = await client(n1, "s", "alice").connect()
        a.set_presence({"cursor": {"x": 1, "y": 1}})
        await b.wait_for(lambda: any(s.get("user", {}).get("id") == "alice" for s in b.presence.values()))
        for i in range(30):
            a.annotations[f"a{i}"] = annotation(i)
        await b.wait_for(lambda: len(b.annotations) >= 10)
        received_by_b = keys(b)
        n1.kill9()
        gone_at = time.monotonic()
        await a.wait_closed()
        # Alice reconnects to the survivor with what she has: nothing she wrote is lost.
        again = YClient(f"{n2.ws_url}/ws/slides/s?token={token(user='alice')}", doc=a.doc)
        async with again:
            await b.wait_for(lambda: keys(b) >= {f"a{i}" for i in range(30)}, timeout=20)
        await b.wait_for(lambda: not any(s.get("user", {}).get("id") == "alice" for s in b.presence.values()),
                         timeout=15)
        assert time.monotonic() - gone_at < 15 + 2
        assert received_by_b <= keys(b)
    async with client(n2, "s", "check") as c:
        assert keys(c) >= {f"a{i}" for i in range(30)}


async def test_redis_down_and_back_nothing_lost_and_nodes_converge(cluster: Cluster) -> None:
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with connected(client(n1, "s", "alice"), client(n2, "s", "bob")) as (a, b):
        a.annotations["before"] = annotation(1)
        await b.wait_for(lambda: "before" in b.annotations)
        cluster.redis.kill()
        async with httpx.AsyncClient() as http:
            async def redis_reported_down() -> bool:
                body = (await http.get(f"{n1.base_url}/healthz")).json()
                return body.get("redis") == "unreachable" and body["status"] == "degraded"
            await wait_for_async(redis_reported_down, 15, "healthz reports Redis down")
        a.annotations["during-a"] = annotation(2)  # each node keeps serving its own clients
        b.annotations["during-b"] = annotation(3)
        await a.wait_for(lambda: a.annotations["during-a"].get("status") == "ok")
        cluster.redis.start()
        back = time.monotonic()
        want = {"before", "during-a", "during-b"}
        await a.wait_for(lambda: keys(a) == want, timeout=20)
        await b.wait_for(lambda: keys(b) == want, timeout=20)
        assert time.monotonic() - back < 15
        async with httpx.AsyncClient() as http:
            async def redis_reported_back() -> bool:
                return (await http.get(f"{n2.base_url}/healthz")).json() == {
                    "status": "ok", "store": "ok", "redis": "ok"}
            await wait_for_async(redis_reported_back, 15, "healthz reports Redis back")


async def test_presence_removal_crosses_nodes_and_nothing_loops(cluster: Cluster) -> None:
    """Hocuspocus's Redis extension had awareness removals that never crossed nodes and an
    infinite sync loop between instances: a removal arrives at once (not after the heartbeat),
    and once edits stop, no node publishes anything more."""
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with client(n2, "s", "bob") as b:
        a = await client(n1, "s", "alice").connect()
        a.set_presence({"cursor": {"x": 3, "y": 4}})
        a.annotations["k"] = annotation(1)
        await b.wait_for(lambda: any(s.get("user", {}).get("id") == "alice" for s in b.presence.values()))
        await b.wait_for(lambda: "k" in b.annotations and b.annotations["k"].get("status") == "ok")
        await a.close()
        started = time.monotonic()
        await b.wait_for(lambda: not any(s.get("user", {}).get("id") == "alice" for s in b.presence.values()))
        assert time.monotonic() - started < 5  # the removal itself, not the 10 s heartbeat

        async def published() -> list[float]:
            counts = []
            async with httpx.AsyncClient() as http:
                for node in (n1, n2):
                    text = (await http.get(f"{node.base_url}/metrics")).text
                    counts.append(next(float(line.split()[-1]) for line in text.splitlines()
                                       if line.startswith("collab_bus_published_total")))
            return counts

        await asyncio.sleep(1.0)  # let the last corrections go out
        before = await published()
        await asyncio.sleep(2.0)  # nothing is being edited: nothing may be published
        assert await published() == before


async def test_a_client_id_belongs_to_its_first_writer_on_every_node(cluster: Cluster) -> None:
    from pycrdt import Doc

    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with client(n2, "s", "observer") as watcher:  # node 2 has the room loaded
        victim = YClient(f"{n1.ws_url}/ws/slides/s?token={token(user='victim')}", doc=Doc(client_id=424242))
        async with victim:
            victim.annotations["a"] = annotation(1)
            await watcher.wait_for(lambda: "a" in watcher.annotations)
            forger = YClient(f"{n2.ws_url}/ws/slides/s?token={token(user='forger')}", doc=Doc(client_id=424242))
            async with forger:
                forger.annotations["x"] = annotation(2)
                await forger.wait_for(lambda: forger.denied)
                assert "belongs to another user" in forger.denied[0]
            victim.annotations["b"] = annotation(3)
            await watcher.wait_for(lambda: "b" in watcher.annotations)
            assert "x" not in watcher.annotations


async def test_a_ticket_from_one_node_opens_a_socket_on_another_once(cluster: Cluster) -> None:
    """Behind a load balancer the WebSocket rarely reaches the node that issued its ticket."""
    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {token(user='dr-t')}"}) as http:
        ticket = (await http.post(f"{n1.base_url}/api/tickets")).json()["ticket"]
    async with YClient(f"{n2.ws_url}/ws/slides/s?ticket={ticket}") as joined:
        assert joined.synced.is_set()
    again = await YClient(f"{n1.ws_url}/ws/slides/s?ticket={ticket}").connect(wait_sync=False)
    assert await again.wait_closed() == 4401  # single use across nodes (Redis)


# --- detection layers on several nodes -----------------------------------------------------------


def _admin_http(node: ServerProcess, role: str = "admin") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.base_url, timeout=60,
                             headers={"authorization": f"Bearer {token(role, user=f'{role}-user')}"})


async def _layer_view(node: ServerProcess, layer: str, outline: dict[str, Any]) -> tuple[Any, ...]:
    """What one node answers of a layer: the list, a box query's objects, a count."""
    async with _admin_http(node) as http:
        listed = [(m["id"], m["count"]) for m in (await http.get("/api/slides/s/layers")).json()]
        r = await http.get(f"/api/slides/s/layers/{layer}/objects", params={"bbox": "0,0,5000,5000"})
        ids = sorted(f["id"] for f in r.json()["features"]) if r.status_code == 200 else r.status_code
        r = await http.post(f"/api/slides/s/layers/{layer}/count", json={"geometry": outline})
        count = r.json() if r.status_code == 200 else r.status_code
    return listed, ids, count


async def test_a_layer_imported_on_one_node_is_listed_queried_and_counted_live_on_another(cluster: Cluster) -> None:
    """Node 1 imports and later deletes a layer; node 2 lists, queries and counts it, and the
    outline a client of node 2 draws gets its `measurements.cells` from node 2's own guard (no
    client is on node 1, so nothing else counts), which drop once node 1 deletes the layer."""
    from pycrdt import Array, Map

    from tests.test_layers import _ints, cells_of, square
    from tests.test_layers_data import cell_features, export_bytes

    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    outline = square(1000, 1000, 3000)
    async with client(n2, "s", "bob") as b:  # node 2 has the slide's room (and its layers) loaded
        async with _admin_http(n1, "reviewer") as http:
            r = await http.post("/api/slides/s/layers", params={"name": "cells"},
                                content=export_bytes(cell_features(3000, seed=5, box=(500, 500, 9500, 9500))))
            assert r.status_code == 201, r.text
            layer = r.json()["id"]
        on_1 = await _layer_view(n1, layer, outline)
        assert on_1[0] == [(layer, 3000)] and len(on_1[1]) > 100 and on_1[2]["total"] > 100
        assert await _layer_view(n2, layer, outline) == on_1
        b.annotations["roi"] = Map({"geometry": outline, "name": "roi", "comments": Array([])})
        await b.wait_for(lambda: _ints(cells_of(b, "roi")) == {layer: on_1[2]}, timeout=15)

        async with _admin_http(n1) as http:
            assert (await http.delete(f"/api/slides/s/layers/{layer}")).status_code == 200
        await b.wait_for(lambda: cells_of(b, "roi") is None
                         and "area_um2" in b.annotations["roi"]["measurements"], timeout=15)
        assert await _layer_view(n2, layer, outline) == ([], 404, 404)


async def test_a_layer_deleted_while_redis_is_away_leaves_the_other_node_by_its_poll(cluster: Cluster) -> None:
    """No message can cross while Redis is down: node 2 reads the slide's layers again every few
    seconds meanwhile, so its live counts still drop a layer node 1 deleted; once Redis is back,
    the next import reaches node 2 again."""
    from pycrdt import Array, Map

    from tests.test_layers import _ints, cells_of, square
    from tests.test_layers_data import cell_features, export_bytes

    n1, n2 = cluster.node(), cluster.node()
    await register(n1, "s")
    outline = square(1000, 1000, 3000)
    async with client(n2, "s", "bob") as b:
        async with _admin_http(n1, "reviewer") as http:
            r = await http.post("/api/slides/s/layers", params={"name": "cells"},
                                content=export_bytes(cell_features(500, seed=6, box=(500, 500, 9500, 9500))))
            layer = r.json()["id"]
        b.annotations["roi"] = Map({"geometry": outline, "name": "roi", "comments": Array([])})
        await b.wait_for(lambda: (_ints(cells_of(b, "roi")) or {}).keys() == {layer}, timeout=15)
        cluster.redis.kill()
        async with httpx.AsyncClient() as http:
            async def redis_down_on_2() -> bool:
                return (await http.get(f"{n2.base_url}/healthz")).json().get("redis") == "unreachable"
            await wait_for_async(redis_down_on_2, 15, "node 2 sees Redis down")
        async with _admin_http(n1) as http:
            assert (await http.delete(f"/api/slides/s/layers/{layer}")).status_code == 200
        await b.wait_for(lambda: cells_of(b, "roi") is None, timeout=15)
        # Redis back: messages carry the next change again.
        cluster.redis.start()
        async with httpx.AsyncClient() as http:
            async def redis_back_on_2() -> bool:
                return (await http.get(f"{n2.base_url}/healthz")).json().get("redis") == "ok"
            await wait_for_async(redis_back_on_2, 15, "node 2 sees Redis back")
        async with _admin_http(n1, "reviewer") as http:
            r = await http.post("/api/slides/s/layers", params={"name": "again"},
                                content=export_bytes(cell_features(500, seed=7, box=(500, 500, 9500, 9500))))
            again = r.json()["id"]
        await b.wait_for(lambda: (_ints(cells_of(b, "roi")) or {}).keys() == {again}, timeout=15)

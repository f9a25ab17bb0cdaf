"""Stock yjs + y-websocket (Node) and the pycrdt test client in the same room, both ways."""

from __future__ import annotations

import pytest

from tests.conftest import LiveServer
from tests.nodepeer import NodePeer
from tests.test_live_rooms import annotation

pytestmark = pytest.mark.node


async def node_peer(live: LiveServer, slide: str, **token_kw) -> NodePeer:
    peer = await NodePeer(f"{live.ws_url}/ws/slides", slide, live.token(**token_kw)).start()
    return peer


async def test_node_and_python_clients_share_annotations_and_presence(live: LiveServer, slide: str) -> None:
    peer = await node_peer(live, slide, user="node-user", name="Dr Node", site="Mouscron")
    try:
        await peer.wait_event("synced")
        async with live.client(slide, user="py-user", name="Dr Python") as py:
            # Node -> Python: a Y.Map annotation and a plain JSON one
            await peer.call(
                "set",
                key="from-node",
                value={
                    "name": "node region",
                    "locked": False,
                    "classification": {"name": "Stroma", "color": [150, 200, 150]},
                },
            )
            await peer.call(
                "set_json",
                key="plain",
                value={"name": "plain json", "geometry": {"type": "Point", "coordinates": [5, 5]}},
            )
            await py.wait_for(lambda: "from-node" in py.annotations and "plain" in py.annotations)
            assert py.annotations["from-node"]["classification"]["name"] == "Stroma"
            assert py.annotations["plain"]["name"] == "plain json"
            # Python -> Node
            py.annotations["from-py"] = annotation(3)
            got = await peer.call("wait_key", key="from-py")
            assert got["value"]["name"] == "region 3"
            assert got["value"]["geometry"]["type"] == "Polygon"
            # Presence both ways, with the server-stamped identity
            await peer.call("presence", state={"cursor": {"x": 10, "y": 20}, "user": {"name": "forged"}})
            await py.wait_for(lambda: any(s.get("cursor") == {"x": 10, "y": 20} for s in py.presence.values()))
            node_state = next(s for s in py.presence.values() if s.get("cursor") == {"x": 10, "y": 20})
            assert node_state["user"]["name"] == "Dr Node" and node_state["user"]["site"] == "Mouscron"
            py.set_presence(
                {"cursor": {"x": 1, "y": 2}, "viewport": {"x": 0, "y": 0, "width": 100, "height": 50, "rotation": 0}}
            )
            seen = await peer.call("wait_presence", name="Dr Python")
            assert seen["state"]["cursor"] == {"x": 1, "y": 2}
    finally:
        await peer.stop()


async def test_node_viewer_is_refused_and_stays_connected(live: LiveServer, slide: str) -> None:
    peer = await node_peer(live, slide, role="viewer", user="trainee")
    try:
        await peer.wait_event("synced")
        await peer.call("set", key="nope", value={"name": "x"})
        denied = await peer.wait_event("denied")
        assert "permission-denied" in denied["reason"]
        async with live.client(slide) as py:
            py.annotations["later"] = annotation(1)
            await peer.call("wait_key", key="later")
            assert "nope" not in py.annotations
    finally:
        await peer.stop()


async def test_node_client_sees_refusal_close_code(live: LiveServer) -> None:
    peer = await node_peer(live, "unregistered-slide")
    try:
        ev = await peer.wait_event("close")
        assert ev["code"] == 4404
    finally:
        await peer.stop()


async def test_node_late_joiner_gets_bulk_state(live: LiveServer, slide: str) -> None:
    writer = await node_peer(live, slide, user="writer")
    try:
        await writer.wait_event("synced")
        await writer.call("bulk", n=2000, prefix="b", timeout=60)
        async with live.client(slide, user="py") as py:
            await py.wait_for(lambda: len(py.annotations) == 2000, timeout=30)
        late = await node_peer(live, slide, user="late")
        try:
            await late.wait_event("synced")
            dump = await late.call("dump")
            assert len(dump["annotations"]) == 2000
        finally:
            await late.stop()
    finally:
        await writer.stop()

"""Live slide rooms over real sockets: sync, late join, convergence, presence, read-only."""

from __future__ import annotations

import asyncio

from pycrdt import Map

from tests.conftest import LiveServer
from tests.waiting import wait_for


def annotation(i: int, **extra: object) -> Map:
    return Map({
        "geometry": {"type": "Polygon", "coordinates": [[[i, i], [i + 10, i], [i + 10, i + 10], [i, i]]]},
        "classification": {"name": "Tumor", "color": [200, 0, 0]},
        "name": f"region {i}",
        **extra,
    })


async def test_two_clients_see_each_others_annotations(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a, live.client(slide, user="bob", site="Mouscron") as b:
        a.annotations["a1"] = annotation(1)
        await b.wait_for(lambda: "a1" in b.annotations)
        b.annotations["b1"] = annotation(2)
        await a.wait_for(lambda: "b1" in a.annotations)
        assert a.annotations["b1"]["name"] == "region 2"
        assert b.annotations["a1"]["classification"]["name"] == "Tumor"


async def test_late_joiner_gets_full_state(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as a:
        for i in range(20):
            a.annotations[f"id-{i}"] = annotation(i)
        observer = await live.client(slide, user="obs").connect()
        await observer.wait_for(lambda: len(observer.annotations) == 20)
        await observer.close()
    # Everyone left; a newcomer still gets everything (from memory or after reload).
    async with live.client(slide, user="late") as late:
        assert len(late.annotations) == 20


async def test_concurrent_edits_converge(live: LiveServer, slide: str) -> None:
    clients = [await live.client(slide, user=f"u{i}").connect() for i in range(5)]
    try:
        for round_ in range(10):
            for i, c in enumerate(clients):
                c.annotations[f"c{i}-r{round_}"] = annotation(round_)
        # Same key edited concurrently: last-writer-wins must pick the same value everywhere.
        for i, c in enumerate(clients):
            c.annotations["shared"] = annotation(100 + i)
        for c in clients:
            await c.wait_for(lambda c=c: len(c.annotations) == 51)
        # Converged: every client ends with the same value for the shared key, and the same map
        # (a timeout here is the failure).
        await wait_for(lambda: all(c.annotations.to_py() == clients[0].annotations.to_py() for c in clients),
                       what="convergence")
        assert len({c.annotations["shared"]["name"] for c in clients}) == 1
    finally:
        for c in clients:
            await c.close()


async def test_fifty_clients_converge(live: LiveServer, slide: str) -> None:
    clients = await asyncio.gather(*(live.client(slide, user=f"u{i}").connect() for i in range(50)))
    try:
        for i in range(0, 50, 5):
            clients[i].annotations[f"from-{i}"] = annotation(i)
        for c in clients:
            await c.wait_for(lambda c=c: len(c.annotations) == 10, timeout=20)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_viewer_updates_are_refused_not_applied(live: LiveServer, slide: str) -> None:
    async with live.client(slide) as reviewer, live.client(slide, role="viewer", site="Mouscron") as viewer:
        viewer.annotations["sneaky"] = annotation(1)
        await viewer.wait_for(lambda: viewer.denied)
        assert "permission-denied" in viewer.denied[0]
        reviewer.annotations["ok"] = annotation(2)
        await viewer.wait_for(lambda: "ok" in viewer.annotations)  # still connected, still live
        assert "sneaky" not in reviewer.annotations
        assert viewer.close_code is None
    async with live.client(slide, user="later") as later:
        assert "sneaky" not in later.annotations and "ok" in later.annotations


async def test_presence_is_stamped_and_relayed(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice", site="Roubaix", name="Dr Alice") as a, \
            live.client(slide, role="viewer", user="tom", site="Mouscron") as b:
        a.set_presence({"user": {"name": "Forged"}, "cursor": {"x": 5, "y": 6}, "viewport": None})
        await b.wait_for(lambda: a.doc.client_id in b.presence)
        state = b.presence[a.doc.client_id]
        assert state["cursor"] == {"x": 5, "y": 6}
        assert state["user"]["name"] == "Dr Alice" and state["user"]["site"] == "Roubaix"
        assert state["user"]["role"] == "reviewer" and state["user"]["color"].startswith("#")
        # A newcomer receives current presence right after sync.
        async with live.client(slide, user="carol") as c:
            await c.wait_for(lambda: a.doc.client_id in c.presence)
            # When a leaves, its presence is removed for everyone.
            await a.close()
            await b.wait_for(lambda: a.doc.client_id not in b.presence)
            await c.wait_for(lambda: a.doc.client_id not in c.presence)


async def test_presence_removed_when_client_leaves(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="obs") as observer:
        a = await live.client(slide, user="alice").connect()
        a.set_presence({"cursor": {"x": 1, "y": 1}})
        await observer.wait_for(lambda: a.doc.client_id in observer.presence)
        await a.close()
        await observer.wait_for(lambda: a.doc.client_id not in observer.presence)


async def test_foreign_client_id_presence_is_refused(live: LiveServer, slide: str) -> None:
    async with live.client(slide, user="alice") as a, live.client(slide, user="mallory") as m, \
            live.client(slide, user="obs") as obs:
        a.set_presence({"cursor": {"x": 1, "y": 1}})
        await obs.wait_for(lambda: a.doc.client_id in obs.presence)
        # mallory forges an update for alice's client id with a newer clock
        from collab.live.protocol import AwarenessEntry, encode_awareness, encode_awareness_update
        forged = AwarenessEntry(a.doc.client_id, 99, '{"cursor":{"x":666,"y":666}}')
        await m.send_raw(encode_awareness(encode_awareness_update([forged])))
        removal = AwarenessEntry(a.doc.client_id, 100, "null")
        await m.send_raw(encode_awareness(encode_awareness_update([removal])))
        a.set_presence({"cursor": {"x": 2, "y": 2}})
        await obs.wait_for(lambda: obs.presence.get(a.doc.client_id, {}).get("cursor") == {"x": 2, "y": 2})
        assert a.doc.client_id in obs.presence

"""What a room does with a client's update before applying it: a resend is no write, an update
pycrdt cannot apply closes only its sender, and sessions leave their record in the audit."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from pycrdt import Doc, Map

from collab.errors import ProtocolError
from collab.live.protocol import encode_update
from collab.live.updates import changes_nothing
from tests.conftest import LiveServer, make_settings, serving
from tests.test_live_rooms import annotation
from tests.test_sessions import create_session, session_client, state
from tests.yclient import YClient


def refusals(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if (line.startswith("collab_refusals_total{") and 'reason="read_only"' in line) or
        (line.startswith("collab_refusals_total{") and 'reason="policy"' in line)
    )


async def read_refusals(live: LiveServer) -> float:
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        return refusals((await http.get("/metrics")).text)


def test_changes_nothing_reads_structs_and_delete_sets() -> None:
    doc: Doc = Doc()
    doc.get("annotations", type=Map)["a"] = {"x": 1}
    doc.get("annotations", type=Map)["b"] = {"x": 2}
    del doc.get("annotations", type=Map)["a"]
    copy: Doc = Doc()
    copy.apply_update(doc.get_update())
    assert changes_nothing(doc, copy.get_update())  # all of it, delete set included
    assert changes_nothing(doc, copy.get_update(doc.get_state()))  # what a reconnect sends
    before = copy.get_state()
    del copy.get("annotations", type=Map)["b"]
    assert not changes_nothing(doc, copy.get_update(before))  # a new deletion
    before = copy.get_state()
    copy.get("annotations", type=Map)["c"] = {"x": 3}
    assert not changes_nothing(doc, copy.get_update(before))  # a new struct


async def test_a_viewer_reconnecting_is_not_refused(live: LiveServer, slide: str) -> None:
    """After a blip the stock provider sends what it has (at least its delete set): no refusal."""
    async with live.client(slide, user="writer") as writer:
        writer.annotations["a"] = annotation(1)
        writer.annotations["b"] = annotation(2)
        del writer.annotations["a"]  # the document now has a delete set
        viewer = await live.client(slide, "viewer", user="trainee").connect()
        await viewer.wait_for(lambda: "b" in viewer.annotations)
        await viewer.close()
        before = await read_refusals(live)
        again = YClient(viewer.url, doc=viewer.doc)  # same document, as after a Wi-Fi blip
        async with again:
            await again.flush()
            writer.annotations["c"] = annotation(3)  # a frame after the resend was handled
            await again.wait_for(lambda: "c" in again.annotations)
            assert again.denied == []
            assert await read_refusals(live) == before
            # A real change is still refused.
            again.annotations["v"] = annotation(4)
            await again.wait_for(lambda: again.denied)
            assert "read-only" in again.denied[0]


async def test_a_session_follower_reconnecting_is_not_refused(live: LiveServer) -> None:
    await live.register_slide("s1")
    session = await create_session(live, ["s1"], user="dr-p")
    async with session_client(live, session["id"], "presenter", user="dr-p") as presenter:
        follower = await session_client(live, session["id"], "reviewer", user="rev").connect()
        presenter.doc.get("state", type=Map)["current"] = "s1"
        await follower.wait_for(lambda: state(follower)["current"] == "s1")
        await follower.close()
        again = YClient(follower.url, doc=follower.doc)
        async with again:
            await again.flush()
            presenter.doc.get("state", type=Map)["marker"] = 1
            await again.wait_for(lambda: state(again).get("marker") == 1)
            assert again.denied == []


# Found by a fuzzing run: the second frame makes a map entry under a string item, which Yrs
# refuses half-way through its integration (pycrdt raises RuntimeError, older versions panicked).
CRDT_BREAKERS = [
    bytes.fromhex("0002170101a9b62f00040101740b6162636465666768696a6b00"),
    bytes.fromhex("0002150101a9b62f0b2800a9b62f00017a017c3f80000000"),
]


async def test_an_update_the_crdt_library_rejects_closes_only_its_sender(
    live: LiveServer, slide: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collab.live.room")
    async with live.client(slide, user="a") as a, live.client(slide, user="b") as b:
        a.annotations["before"] = annotation(1)
        await b.wait_for(lambda: "before" in b.annotations)
        hostile = await live.client(slide, user="mallory").connect()
        for frame in CRDT_BREAKERS:
            await hostile.send_raw(frame)
        assert await hostile.wait_closed() == 1002  # a close frame, not a dropped socket (1006)
        assert "update rejected" in (hostile.close_reason or "")
        assert any("pycrdt cannot apply" in r.getMessage() for r in caplog.records)
        a.annotations["after"] = annotation(2)
        await b.wait_for(lambda: "after" in b.annotations)
        assert b.close_code is None and a.close_code is None
    async with live.client(slide, user="c") as c:
        assert set(c.annotations.keys()) == {"before", "after"}


async def test_nothing_relayed_is_missing_after_a_restart_when_bad_updates_arrive(tmp_path) -> None:
    """Every update a good client received is in the store, whatever a hostile one sent."""
    settings = make_settings(tmp_path / "data")
    received: set[str] = set()
    async with serving(settings) as live:
        await live.register_slide("s")
        async with live.client("s", user="a") as a, live.client("s", user="b") as b:
            for i in range(20):
                a.annotations[f"k{i}"] = annotation(i)
                if i % 5 == 0:
                    hostile = await live.client("s", user="mallory").connect()
                    await hostile.send_raw(CRDT_BREAKERS[0])
                    await hostile.send_raw(CRDT_BREAKERS[1])
                    await hostile.wait_closed()
            await b.wait_for(lambda: len(b.annotations) == 20)
            received = set(b.annotations.keys())
    async with serving(settings) as live, live.client("s", user="c") as c:
        assert set(c.annotations.keys()) == received


async def test_session_room_audits_attendance_slides_and_what_was_shown(live: LiveServer) -> None:
    for s in ("s1", "s2"):
        await live.register_slide(s)
    session = await create_session(live, ["s1", "s2"], user="dr-p", name="Dr P")
    async with session_client(live, session["id"], "presenter", user="dr-p", name="Dr P") as p:
        async with session_client(live, session["id"], "viewer", user="t1", name="Trainee One") as t:
            s = p.doc.get("state", type=Map)
            s["current"] = "s2"
            s["focus"] = {"slide": "s2", "annotation": "ann-1"}
            await t.wait_for(lambda: state(t).get("focus") is not None)
        await asyncio.sleep(0)  # the trainee's leaving is handled when its socket closes

    async def trail() -> list[tuple[str, str, object]]:
        async with live.http("admin") as http:
            await http.get("/healthz")
        store = live.app.state.collab.store
        await store.flush()
        return [(r.action, r.user_id, r.detail) for r in await store.list_audit(f"session:{session['id']}")]

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        entries = await trail()
        if sum(1 for a, _u, _d in entries if a == "left") >= 2 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    actions = [(a, u) for a, u, _d in entries]
    assert ("joined", "dr-p") in actions and ("joined", "t1") in actions
    assert ("left", "t1") in actions and ("left", "dr-p") in actions
    assert ("slide_shown", "dr-p") in actions
    shown = [d for a, _u, d in entries if a == "shown"]
    assert shown == [{"slide": "s2", "annotation": "ann-1"}]
    joined = next(d for a, u, d in entries if a == "joined" and u == "t1")
    assert joined == {"name": "Trainee One", "role": "viewer"}


async def test_another_users_client_id_is_refused_and_the_owner_keeps_writing(tmp_path) -> None:
    """Reusing a victim's Yjs client id would make the victim's next edit vanish (same id, same
    clock): the id belongs to whoever first wrote with it, across restarts."""
    settings = make_settings(tmp_path / "data")
    async with serving(settings) as live:
        await live.register_slide("s")
        victim = YClient(live.slide_url("s", live.token(user="victim")), doc=Doc(client_id=424242))
        async with victim:
            victim.annotations["a"] = annotation(1)
            await victim.flush()
            async with live.client("s", user="observer") as observer:
                await observer.wait_for(lambda: "a" in observer.annotations)
            forged: Doc = Doc(client_id=424242)
            forger = YClient(live.slide_url("s", live.token(user="forger")), doc=forged)
            async with forger:
                forger.annotations["x"] = annotation(2)  # the victim's id, the victim's next clock
                await forger.wait_for(lambda: forger.denied)
                assert "belongs to another user" in forger.denied[0]
            victim.annotations["b"] = annotation(3)
            await victim.flush()
            async with live.client("s", user="observer") as observer:
                await observer.wait_for(lambda: "b" in observer.annotations)
                assert "x" not in observer.annotations
    async with serving(settings) as live:
        forged = Doc(client_id=424242)
        forger = YClient(live.slide_url("s", live.token(user="forger")), doc=forged)
        async with forger:
            forger.annotations["y"] = annotation(4)
            await forger.wait_for(lambda: forger.denied)  # the binding survived the restart
        async with live.client("s", user="observer") as observer:
            assert set(observer.annotations.keys()) == {"a", "b"}


async def test_structs_the_room_has_may_come_back_from_anyone(live: LiveServer, slide: str) -> None:
    """A client restoring its offline copy (y-indexeddb) resends other users' structs: not a forgery."""
    async with live.client(slide, user="a") as a, live.client(slide, user="b") as b:
        a.annotations["k"] = annotation(1)
        await b.wait_for(lambda: "k" in b.annotations)
        await b.send_raw(encode_update(b.doc.get_update()))  # everything b has, a's structs included
        b.annotations["mine"] = annotation(2)
        await a.wait_for(lambda: "mine" in a.annotations)
        assert b.denied == [] and b.close_code is None


def deep_any_update(depth: int) -> bytes:
    """One map entry whose value is an array nested `depth` deep (lib0 `any`), built by hand:
    pycrdt itself cannot encode it."""
    from collab.live.protocol import write_var_string, write_var_uint

    head = b"\x01\x01" + write_var_uint(123456) + b"\x00"  # 1 client, 1 struct, client, clock 0
    head += b"\x28" + b"\x01" + write_var_string("annotations") + write_var_string("k")  # any, map entry
    return head + b"\x01" + b"\x75\x01" * depth + b"\x7e" + b"\x00"  # 1 value; arrays; null; no deletes


async def test_a_value_nested_too_deep_is_refused_before_pycrdt_sees_it(live: LiveServer, slide: str) -> None:
    """An array nested 100,000 deep overflowed Yrs's stack: the whole server died (SIGSEGV)."""
    async with live.client(slide, user="a") as a:
        hostile = await live.client(slide, user="mallory").connect()
        await hostile.send_raw(encode_update(deep_any_update(100_000)))
        assert await hostile.wait_closed() == 1002
        assert "nested too deep" in (hostile.close_reason or "")
        a.annotations["after"] = annotation(1)
        async with live.client(slide, user="b") as b:
            await b.wait_for(lambda: "after" in b.annotations)
    async with live.client(slide, "viewer", user="v") as v:  # a viewer's bytes are read first too
        await v.send_raw(encode_update(deep_any_update(100_000)))
        assert await v.wait_closed() == 1002


def test_deep_values_within_the_limit_are_read() -> None:
    from collab.live.updates import struct_ranges

    assert struct_ranges(deep_any_update(500)) == {123456: (0, 1)}
    with pytest.raises(ProtocolError):
        struct_ranges(deep_any_update(5000))


async def test_an_update_that_would_wait_for_missing_content_is_refused(live: LiveServer, slide: str) -> None:
    """Yrs keeps an update whose dependencies are missing pending: stored and relayed, it would be
    in no snapshot, and a compaction would drop it. It is refused and the room reloaded."""
    source: Doc = Doc()
    source.get("annotations", type=Map)["a"] = {"x": 1}
    first = source.get_state()
    source.get("annotations", type=Map)["a"] = {"x": 2}  # depends on the first write
    second = source.get_update(first)
    async with live.client(slide, user="a") as good:
        hostile = await live.client(slide, user="mallory").connect()
        await hostile.send_raw(encode_update(second))  # without the first
        assert await hostile.wait_closed() == 1002
        assert "does not have" in (hostile.close_reason or "")
        assert await good.wait_closed() == 1012  # the room reloads from the store
    async with live.client(slide, user="b") as b:
        assert "a" not in b.annotations
        b.annotations["after"] = annotation(1)
        await b.flush()
    async with live.client(slide, user="c") as c:
        await c.wait_for(lambda: "after" in c.annotations)

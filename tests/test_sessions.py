"""Tumor-board sessions: agenda and state sync, presenter-only changes, takeover, summary."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from pycrdt import Array, Map

from tests.conftest import SECRET, LiveServer
from tests.test_live_rooms import annotation
from tests.yclient import YClient


async def create_session(live: LiveServer, slides: list[str], **token_kw) -> dict:
    async with live.http("presenter", **token_kw) as http:
        r = await http.post("/api/sessions", json={"title": "Board 2026-11-28", "slides": slides})
        assert r.status_code == 201, r.text
        return r.json()


def session_client(live: LiveServer, session_id: str, role: str, **kw) -> YClient:
    return YClient(f"{live.ws_url}/ws/sessions/{session_id}?token={live.token(role, **kw)}")


def state(c: YClient) -> dict:
    return c.doc.get("state", type=Map).to_py()


async def test_agenda_and_state_sync_and_only_presenter_changes(live: LiveServer) -> None:
    for s in ("s1", "s2"):
        await live.register_slide(s)
    session = await create_session(live, ["s1", "s2"], user="dr-p", name="Dr P")
    async with (
        session_client(live, session["id"], "presenter", user="dr-p") as presenter,
        session_client(live, session["id"], "reviewer", user="rev", site="Mouscron") as follower,
    ):
        assert follower.doc.get("slides", type=Array).to_py() == ["s1", "s2"]
        assert state(follower) == {"current": "s1", "presenter": "dr-p"}
        # The presenter moves on; everyone follows.
        presenter.doc.get("state", type=Map)["current"] = "s2"
        await follower.wait_for(lambda: state(follower)["current"] == "s2")
        # A reviewer's attempt is refused, not applied, not stored.
        follower.doc.get("state", type=Map)["current"] = "s1"
        await follower.wait_for(lambda: follower.denied)
        await asyncio.sleep(0.2)
        assert state(presenter)["current"] == "s2"
    async with session_client(live, session["id"], "viewer", user="late") as late:
        assert state(late) == {"current": "s2", "presenter": "dr-p"}


async def test_presenter_role_can_take_over_and_it_is_audited(live: LiveServer) -> None:
    await live.register_slide("s1")
    session = await create_session(live, ["s1"], user="dr-p")
    async with (
        session_client(live, session["id"], "presenter", user="dr-p") as p,
        session_client(live, session["id"], "presenter", user="dr-q", site="Mouscron") as q,
    ):
        # Another presenter may not just change the slide...
        q.doc.get("state", type=Map)["current"] = "s1-x"
        await q.wait_for(lambda: q.denied)
        # ...but may take over by naming themselves presenter.
        with q.doc.transaction():
            q.doc.get("state", type=Map)["presenter"] = "dr-q"
        await p.wait_for(lambda: state(p)["presenter"] == "dr-q")
        # Now the former presenter is refused.
        p.doc.get("state", type=Map)["current"] = "zzz"
        await p.wait_for(lambda: p.denied)
    async with live.http("presenter", user="dr-q") as http:
        summary = (await http.get(f"/api/sessions/{session['id']}/summary")).json()
    assert [(h["from"], h["to"], h["site"]) for h in summary["handovers"]] == [("dr-p", "dr-q", "Mouscron")]


async def test_session_refusals(live: LiveServer) -> None:
    await live.register_slide("s1")
    await live.register_slide("secret")
    async with live.http("reviewer") as http:
        r = await http.post("/api/sessions", json={"title": "x", "slides": ["s1"]})
        assert r.status_code == 403
    async with live.http("presenter") as http:
        assert (await http.post("/api/sessions", json={"title": "x", "slides": ["nope"]})).status_code == 404
        assert (await http.post("/api/sessions", json={"title": "", "slides": ["s1"]})).status_code == 400
        assert (await http.post("/api/sessions", json={"title": "x", "slides": []})).status_code == 400
    session = await create_session(live, ["s1", "secret"])
    outsider = YClient(f"{live.ws_url}/ws/sessions/{session['id']}?token={live.token('viewer', slides=['s1'])}")
    await outsider.connect(wait_sync=False)
    assert await outsider.wait_closed() == 4403
    unknown = YClient(f"{live.ws_url}/ws/sessions/nope?token={live.token('viewer')}")
    await unknown.connect(wait_sync=False)
    assert await unknown.wait_closed() == 4404


async def test_summary_lists_changes_made_during_the_session(live: LiveServer) -> None:
    for s in ("s1", "s2"):
        await live.register_slide(s)
    async with live.client("s1", user="before") as early:
        early.annotations["old"] = annotation(1)
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.05)
    session = await create_session(live, ["s1", "s2"])
    async with (
        live.client("s1", user="dr-a", site="Roubaix") as a,
        live.client("s2", user="dr-b", site="Mouscron") as b,
    ):
        a.annotations["tumor-1"] = annotation(5)
        b.annotations["necrosis-1"] = annotation(7)
        await a.wait_for(lambda: "status" in a.annotations["tumor-1"])
        await b.wait_for(lambda: "status" in b.annotations["necrosis-1"])
        await asyncio.sleep(0.3)
    async with live.http("viewer") as http:
        summary = (await http.get(f"/api/sessions/{session['id']}/summary")).json()
        page = await http.get(f"/api/sessions/{session['id']}/summary", params={"format": "html"})
    by_slide = {s["slide"]: s["changes"] for s in summary["slides"]}
    assert {(c["annotation"], c["action"], c["user"], c["site"]) for c in by_slide["s1"]} >= {
        ("tumor-1", "created", "dr-a", "Roubaix")
    }
    assert all(c["annotation"] != "old" for c in by_slide["s1"])
    assert ("necrosis-1", "created", "dr-b", "Mouscron") in {
        (c["annotation"], c["action"], c["user"], c["site"]) for c in by_slide["s2"]
    }
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "region 5" in page.text and "Mouscron" in page.text


def test_cli_session_create_prints_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"COLLAB_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    # Register a slide through the store the server would use, via the CLI's own process.
    code = (
        "import asyncio\n"
        "from collab.settings import Settings\n"
        "from collab.store import open_store\n"
        "async def main():\n"
        f"    async with open_store(Settings(data=__import__('pathlib').Path({str(data)!r}))) as s:\n"
        "        rec = {'id': 's1', 'title': 's1', 'width': 10, 'height': 10, 'mpp': 0.5}\n"
        "        await s.put_record('slide', 's1', rec)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collab",
            "session",
            "create",
            "--title",
            "Board",
            "--slides",
            "s1",
            "--data",
            str(data),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert out.startswith("session ")
    assert out.count("/app/?session=") == 5 and "trainee" in out
    bad = subprocess.run(
        [sys.executable, "-m", "collab", "session", "create", "--title", "B", "--slides", "nope", "--data", str(data)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert "not registered" in bad.stderr

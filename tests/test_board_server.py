"""The tumor board in practice, server side: tickets, renewals, printed links, the board's record."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
from pycrdt import Array, Map

from collab.auth import TokenAuthenticator
from collab.errors import Unauthorized
from collab.sessions.picture import NO_CLASS_COLOR, class_color
from collab.slides.demo import ensure_demo_slide
from collab.store import AuditRecord
from collab.tickets import Tickets
from tests.conftest import SECRET, LiveServer, make_settings, serving
from tests.yclient import YClient

HOUR = 3600


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[LiveServer]:
    settings = make_settings(tmp_path / "data", ticket_seconds=3, room_idle_seconds=60)
    async with serving(settings) as live:
        yield live


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


async def ticket_for(live: LiveServer, token: str) -> str:
    async with live.http(None) as http:
        r = await http.post("/api/tickets", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"ticket", "expires_in"} and re.fullmatch(r"[A-Za-z0-9_.-]{20,}", body["ticket"])
    return body["ticket"]


async def refused(url: str) -> tuple[int | None, str | None]:
    client = YClient(url)
    await client.connect(wait_sync=False)
    code = await client.wait_closed()
    return code, client.close_reason


# --- tickets ------------------------------------------------------------------------------------

async def test_a_ticket_joins_once_and_stands_for_the_token(board: LiveServer) -> None:
    live = board
    await live.register_slide("s1")
    token = live.token("reviewer", user="dr-m", name="Dr Leroy (Mouscron)", site="Mouscron")
    ticket = await ticket_for(live, token)
    async with (
        YClient(f"{live.ws_url}/ws/slides/s1?ticket={ticket}") as joined,
        live.client("s1", user="watcher") as watcher,
    ):
        joined.set_presence({"cursor": None})
        await watcher.wait_for(lambda: any(p.get("user", {}).get("id") == "dr-m" for p in watcher.presence.values()))
        user = next(p["user"] for p in watcher.presence.values() if p["user"]["id"] == "dr-m")
        assert (user["name"], user["site"], user["role"]) == ("Dr Leroy (Mouscron)", "Mouscron", "reviewer")
        # The same ticket again: refused, as are made-up and empty ones.
        for bad in (ticket, "made-up", ""):
            assert await refused(f"{live.ws_url}/ws/slides/s1?ticket={bad}") == (4401, "invalid or expired ticket")
    # Stock clients with ?token= are unchanged.
    async with live.client("s1", user="stock") as stock:
        assert stock.synced.is_set()


async def test_an_expired_ticket_is_refused(board: LiveServer) -> None:
    live = board
    await live.register_slide("s1")
    ticket = await ticket_for(live, live.token("viewer"))
    await asyncio.sleep(3.2)  # past COLLAB_TICKET_SECONDS (3 here): the passing of time is what is tested
    assert await refused(f"{live.ws_url}/ws/slides/s1?ticket={ticket}") == (4401, "invalid or expired ticket")
    async with live.http(None) as http:
        assert (await http.post("/api/tickets")).status_code == 401
        r = await http.post("/api/tickets", headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and "error" in r.json()


async def test_a_ticket_connection_ends_when_the_token_expires(board: LiveServer) -> None:
    live = board
    await live.register_slide("s1")
    ticket = await ticket_for(live, live.token("reviewer", ttl=2))
    client = await YClient(f"{live.ws_url}/ws/slides/s1?ticket={ticket}").connect()
    try:
        assert await client.wait_closed(timeout=15) == 4401
    finally:
        await client.close()


async def test_tickets_are_single_use_short_lived_signed_and_never_tokens() -> None:
    auth = TokenAuthenticator(SECRET)
    principal = auth.authenticate(auth.mint(user="u", name="U", site="Roubaix", role="viewer", slides=["s1"]))
    tickets = Tickets(auth, 30)
    first = tickets.issue(principal)
    assert await tickets.redeem(first) == principal
    with pytest.raises(Unauthorized, match="invalid or expired ticket"):
        await tickets.redeem(first)  # single use
    # Another node (same secret) redeems a ticket it did not issue: no stickiness needed.
    elsewhere = Tickets(TokenAuthenticator(SECRET), 30)
    assert await elsewhere.redeem(tickets.issue(principal)) == principal
    short = Tickets(auth, 0.2)
    late = short.issue(principal)
    await asyncio.sleep(1.1)  # JWT expiry has a one-second resolution
    with pytest.raises(Unauthorized, match="invalid or expired ticket"):
        await short.redeem(late)
    with pytest.raises(Unauthorized, match="not a token"):
        auth.authenticate(tickets.issue(principal))  # a ticket in ?token= is refused
    with pytest.raises(Unauthorized):
        await tickets.redeem(auth.mint(user="u", name="U", site="Roubaix", role="viewer"))  # a token is no ticket
    other = TokenAuthenticator("another secret, long enough for HS256 keys")
    forged = other.mint_ticket(principal, ttl=30, ticket_id="x")
    with pytest.raises(Unauthorized):
        await tickets.redeem(forged)


# --- renewal ------------------------------------------------------------------------------------

async def renew(live: LiveServer, token: str) -> Any:
    async with live.http(None) as http:
        return await http.post("/api/tokens/renew", headers={"Authorization": f"Bearer {token}"})


async def test_renewal_keeps_identity_and_slides_and_extends_to_the_link_ttl(board: LiveServer) -> None:
    live = board
    old = live.auth.mint(user="dr-p", name="Dr Peeters", site="Roubaix", role="presenter",
                         slides=["s1", "s2"], ttl=60)
    r = await renew(live, old)
    assert r.status_code == 200, r.text
    body = r.json()
    new, before = claims(body["token"]), claims(old)
    for key in ("sub", "name", "site", "role", "slides", "iat"):
        assert new[key] == before[key], key
    assert body["expires_at"] == new["exp"]
    assert abs(new["exp"] - (time.time() + 4 * HOUR)) < 60
    # A token minted before `iat` existed counts from its own expiry minus the link TTL.
    legacy = jwt.encode({"sub": "u", "role": "viewer", "slides": "*", "exp": int(time.time() + 60)}, SECRET)
    r = await renew(live, legacy)
    assert r.status_code == 200 and claims(r.json()["token"])["iat"] == claims(legacy)["exp"] - 4 * HOUR


async def test_renewal_refuses_expired_invalid_and_capped_tokens(board: LiveServer) -> None:
    live = board
    expired = live.auth.mint(user="u", name="U", site="Roubaix", role="viewer", ttl=-5)
    assert (await renew(live, expired)).status_code == 401
    assert (await renew(live, "garbage")).status_code == 401
    other = TokenAuthenticator("another-secret-entirely-0123456789abcdef")
    forged = other.mint(user="u", name="U", site="R", role="admin")
    assert (await renew(live, forged)).status_code == 401
    # 100 s short of the 12 h cap: one renewal reaches the cap, not now + 4 h...
    issued = int(time.time()) - 12 * HOUR + 100
    near = live.auth.mint(user="u", name="U", site="Roubaix", role="reviewer", ttl=10, issued_at=issued)
    r = await renew(live, near)
    assert r.status_code == 200
    capped = r.json()["token"]
    assert claims(capped)["exp"] == issued + 12 * HOUR and claims(capped)["iat"] == issued
    # ...and the next is refused: renewals cannot extend a link forever.
    r = await renew(live, capped)
    assert r.status_code == 403 and r.json() == {"error": "this link cannot be renewed further"}


# --- printed links ------------------------------------------------------------------------------

def register_slide_offline(data: Path, env: dict[str, str]) -> None:
    code = (
        "import asyncio, pathlib\n"
        "from collab.settings import Settings\n"
        "from collab.store import open_store\n"
        "async def main():\n"
        f"    async with open_store(Settings(data=pathlib.Path({str(data)!r}))) as s:\n"
        "        rec = {'id': 's1', 'title': 's1', 'width': 10, 'height': 10, 'mpp': 0.5}\n"
        "        await s.put_record('slide', 's1', rec)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_session_create_prints_distinct_presenter_and_trainee_links(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"COLLAB_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    register_slide_offline(data, env)

    def create(*extra: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "collab", "session", "create", "--title", "Board", "--slides", "s1",
             "--data", str(data), "--user", "dr-p", "--name", "Dr Peeters (Roubaix)", *extra],
            check=True, capture_output=True, text=True, env=env,
        ).stdout
        links = re.findall(r"/app/\?session=\w+&token=(\S+)", out)
        assert "/record?format=html&token=" in out
        return [claims(t) for t in links]

    people = create()
    assert [(c["sub"], c["name"], c["site"], c["role"]) for c in people] == [
        ("dr-p", "Dr Peeters (Roubaix)", "Roubaix", "presenter"),
        ("dr-mouscron", "Dr Leroy (Mouscron)", "Mouscron", "presenter"),
        ("reviewer-roubaix", "Reviewer (Roubaix)", "Roubaix", "reviewer"),
        ("trainee-1", "Trainee 1 (Mouscron)", "Mouscron", "viewer"),
        ("trainee-2", "Trainee 2 (Mouscron)", "Mouscron", "viewer"),
    ]
    for c in people:
        assert c["slides"] == ["s1"] and abs(c["exp"] - c["iat"] - 4 * HOUR) <= 1
    people = create("--presenter", "dr-a:Dr A: Lille:Lille", "--presenter", "dr-b:Dr B:Gent", "--trainees", "3")
    presenters = [(c["sub"], c["name"], c["site"]) for c in people if c["role"] == "presenter"]
    assert presenters == [("dr-p", "Dr Peeters (Roubaix)", "Roubaix"), ("dr-a", "Dr A: Lille", "Lille"),
                          ("dr-b", "Dr B", "Gent")]
    assert [c["sub"] for c in people if c["role"] == "viewer"] == ["trainee-1", "trainee-2", "trainee-3"]
    token = subprocess.run(
        [sys.executable, "-m", "collab", "token", "--user", "u", "--name", "U", "--site", "S", "--role", "viewer",
         "--data", str(data)], check=True, capture_output=True, text=True, env=env,
    ).stdout.strip()
    assert abs(claims(token)["exp"] - time.time() - 4 * HOUR) < 60


# --- the record ---------------------------------------------------------------------------------

class Page(HTMLParser):
    """The text and images of an HTML page (and proof that it parses)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.sections = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag == "section":
            self.sections += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def body(self) -> str:
        return " ".join(self.text)


def polygon(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def chromium_pdf(html_path: Path, pdf_path: Path) -> None:
    from tests.browser_support import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(html_path.as_uri())
            page.pdf(path=str(pdf_path), format="A4", print_background=True)
        finally:
            browser.close()


async def test_the_record_names_people_classes_areas_comments_in_local_time(
    board: LiveServer, tmp_path: Path
) -> None:
    live = board
    picture = await asyncio.to_thread(ensure_demo_slide, tmp_path / "data" / "slides", width=2000, height=1500)
    async with live.http("admin") as http:
        r = await http.post("/api/slides", json={"id": "tissue", "title": "Colon biopsy, block A",
                                                 "path": str(picture.path)})
        assert r.status_code == 201, r.text
    await live.register_slide("second", title="Lymph node")
    store = live.app.state.collab.store
    old_id, tumor_id, fresh_id = (str(uuid.uuid4()) for _ in range(3))
    # Drawn before the session by someone who never joins it.
    async with live.client("tissue", user="u-early", site="Roubaix") as early:
        early.annotations[old_id] = Map({"geometry": polygon(100, 100, 300, 300), "name": "Earlier margin",
                                         "classification": {"name": "Stroma", "color": [0, 150, 0]}})
        await early.wait_for(lambda: "status" in early.annotations[old_id])
    async with live.http("presenter", user="u-p", name="Dr Peeters (Roubaix)") as http:
        r = await http.post("/api/sessions", json={"title": "Board 1 December", "slides": ["tissue", "second"]})
        session = r.json()
    sid = session["id"]

    def session_client(role: str, user: str, name: str, site: str) -> YClient:
        token = live.token(role, user=user, name=name, site=site)
        return YClient(f"{live.ws_url}/ws/sessions/{sid}?token={token}")

    async with (
        session_client("presenter", "u-p", "Dr Peeters (Roubaix)", "Roubaix") as presenter,
        session_client("presenter", "u-m", "Dr Leroy (Mouscron)", "Mouscron") as second,
        session_client("viewer", "u-t1", "Trainee 1 (Mouscron)", "Mouscron"),
        live.client("tissue", user="u-m", name="Dr Leroy (Mouscron)", site="Mouscron") as leroy,
        live.client("tissue", "presenter", user="u-p", name="Dr Peeters (Roubaix)", site="Roubaix") as peeters,
    ):
        leroy.annotations[tumor_id] = Map({
            "geometry": polygon(1000, 600, 1600, 1200), "name": "Invasive front",
            "classification": {"name": "Tumor", "color": [200, 0, 0]}, "comments": Array(),
        })
        leroy.annotations[fresh_id] = Map({"geometry": {"type": "LineString", "coordinates": [[0, 0], [400, 0]]},
                                           "classification": None})
        await leroy.wait_for(lambda: "measurements" in leroy.annotations[tumor_id])
        await peeters.wait_for(lambda: tumor_id in peeters.annotations)
        peeters.annotations[tumor_id]["classification"] = {"name": "Necrosis", "color": [120, 0, 200]}
        peeters.annotations[tumor_id]["comments"].append(
            {"id": "c1", "author": "u-p", "text": "Grade 2, margin clear", "created": int(time.time() * 1000)})
        await leroy.wait_for(lambda: len(leroy.annotations[tumor_id]["comments"]) == 1)
        # Leroy takes over the board.
        second.doc.get("state", type=Map)["presenter"] = "u-m"
        await presenter.wait_for(lambda: presenter.doc.get("state", type=Map)["presenter"] == "u-m")
        # What the session policy records when the presenter shows things (written here directly).
        now = int(time.time() * 1000)
        store.audit(AuditRecord(f"session:{sid}", now, "u-m", "Mouscron", "shown",
                                None, {"slide": "tissue", "annotation": old_id}))
        store.audit(AuditRecord(f"session:{sid}", now, "u-m", "Mouscron", "slide_shown", None, {"slide": "second"}))
        await leroy.wait_for(lambda: "status" in leroy.annotations[fresh_id])
        await asyncio.sleep(0.1)  # let the guard's corrections commit before everyone leaves
    area = leroy.annotations[tumor_id]["measurements"]["area_um2"]
    token = live.token("viewer", user="u-t1")

    async def ended() -> bool:
        async with live.http(None) as http:
            r = await http.get(f"/api/sessions/{sid}/record", params={"token": token, "tz": "Europe/Paris"})
        return r.json()["end"] is not None

    await wait_until(ended)
    async with live.http("viewer", user="u-t1") as http:
        record = (await http.get(f"/api/sessions/{sid}/record", params={"tz": "Europe/Paris"})).json()
        page = await http.get(f"/api/sessions/{sid}/record", params={"format": "html", "tz": "Europe/Paris"})
        alias = await http.get(f"/api/sessions/{sid}/summary")
        png = await http.get(f"/api/sessions/{sid}/record/slides/tissue.png")
        assert (await http.get(f"/api/sessions/{sid}/record", params={"tz": "Mars/Olympus"})).status_code == 400
        assert (await http.get(f"/api/sessions/{sid}/record/slides/nope.png")).status_code == 404
    assert alias.status_code == 200 and alias.json()["title"] == "Board 1 December"

    # Times in the participants' zone (December in Paris: UTC+1).
    assert record["time_zone"] == "Europe/Paris"
    for stamp in (record["start"], record["end"]):
        assert stamp.endswith("+01:00"), stamp
    start_utc = time.gmtime(session["created_at"] / 1000)
    assert int(record["start"][11:13]) == (start_utc.tm_hour + 1) % 24
    assert record["led_by"]["name"] == "Dr Peeters (Roubaix)"
    people = {(p["name"], p["site"], p["role"]) for p in record["attendees"]}
    assert people == {
        ("Dr Peeters (Roubaix)", "Roubaix", "presenter"),
        ("Dr Leroy (Mouscron)", "Mouscron", "presenter"),
        ("Trainee 1 (Mouscron)", "Mouscron", "viewer"),
    }
    assert all(p["left"] and p["joined"] <= p["left"] for p in record["attendees"])
    assert [p["name"] for p in record["presenters"]] == ["Dr Peeters (Roubaix)", "Dr Leroy (Mouscron)"]
    assert [s["slide"] for s in record["slides"]] == ["tissue", "second"]
    tissue = {a["id"]: a for a in record["slides"][0]["annotations"]}
    tumor = tissue[tumor_id]
    assert (tumor["name"], tumor["class"], tumor["area_um2"]) == ("Invasive front", "Necrosis", area)
    assert area == pytest.approx(600 * 600 * picture.mpp**2, rel=1e-3)
    assert tumor["author"] == {"user": "u-m", "name": "Dr Leroy (Mouscron)", "site": "Mouscron"}
    assert [p["name"] for p in tumor["changed_by"]] == ["Dr Peeters (Roubaix)"]
    words = [h["words"] for h in tumor["history"]]
    assert "drew" in words and "changed the class to Necrosis" in words and "commented" in words
    assert [(c["name"], c["text"]) for c in tumor["comments"]] == [("Dr Peeters (Roubaix)", "Grade 2, margin clear")]
    assert tumor["comments"][0]["at"].endswith("+01:00")
    assert tissue[fresh_id]["length_um"] == pytest.approx(400 * picture.mpp, rel=1e-3)
    # Made before the session, changed by no one, but shown: listed.
    earlier = tissue[old_id]
    assert earlier["name"] == "Earlier margin" and not earlier["history"]
    assert [x["by"]["name"] for x in earlier["shown"]] == ["Dr Leroy (Mouscron)"]

    # The printable page: parses, names people and actions in words, no ids, the picture embedded.
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parsed = Page(page.text)
    text = parsed.body
    for expected in ("Board 1 December", "Dr Leroy (Mouscron)", "Trainee 1 (Mouscron)", "Europe/Paris",
                     "Invasive front", "Necrosis", "changed the class to Necrosis", "drew", "Earlier margin",
                     "Grade 2, margin clear", "Colon biopsy, block A", "Lymph node", "µm²",
                     "shown by Dr Leroy (Mouscron)"):
        assert expected in text, expected
    for hidden in (tumor_id, old_id, fresh_id, "u-m", "u-p", "u-t1", "classification_changed", "(Roubaix) (Roubaix)"):
        assert hidden not in page.text, hidden
    assert parsed.sections == 2 and "page-break-before:always" in page.text and "@media print" in page.text
    assert len(parsed.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parsed.images)

    # The picture: a PNG of the slide (its tissue, not a blank) with the outline in the class color.
    from PIL import Image

    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png.content)).convert("RGB")
    assert max(image.size) == 1024
    scale = image.width / 2000
    assert abs(image.height - 1500 * scale) <= 1
    purple = (120, 0, 200)
    top_edge = [image.getpixel((round(x * scale), round(600 * scale) + dy))
                for x in range(1100, 1500, 50) for dy in (-1, 0, 1)]
    assert top_edge.count(purple) >= 8
    inside = image.crop((round(1100 * scale), round(700 * scale), round(1500 * scale), round(1100 * scale)))
    pixels = np.asarray(image).reshape(-1, 3)
    assert not (np.asarray(inside).reshape(-1, 3) == purple).all(axis=1).any(), "outlines only, not filled"
    assert len(np.unique(pixels, axis=0)) > 500, "the slide's own picture is under the outlines"

    # Printed to PDF by Chromium, as a participant's browser would.
    from tests.browser_support import CHROMIUM

    if await asyncio.to_thread(Path(CHROMIUM).exists):
        html_path, pdf_path = tmp_path / "record.html", tmp_path / "record.pdf"
        html_path.write_text(page.text, encoding="utf-8")
        await asyncio.to_thread(chromium_pdf, html_path, pdf_path)
        pdf = pdf_path.read_bytes()
        # Two slides, each on its own page after the attendance page.
        assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 3


async def test_the_record_is_for_participants_only(board: LiveServer) -> None:
    live = board
    await live.register_slide("s1")
    await live.register_slide("secret")
    async with live.http("presenter") as http:
        sid = (await http.post("/api/sessions", json={"title": "B", "slides": ["s1", "secret"]})).json()["id"]
    async with live.http(None) as http:
        assert (await http.get(f"/api/sessions/{sid}/record")).status_code == 401
        outsider = live.token("viewer", slides=["s1"])
        assert (await http.get(f"/api/sessions/{sid}/record", params={"token": outsider})).status_code == 403
        r = await http.get(f"/api/sessions/{sid}/record/slides/s1.png", params={"token": outsider})
        assert r.status_code == 403
        assert (await http.get("/api/sessions/nope/record", params={"token": live.token("viewer")})).status_code == 404



def test_outline_colors_come_from_the_class_and_tolerate_what_clients_write() -> None:
    def color(value: object) -> tuple[int, int, int]:
        return class_color({"classification": {"name": "X", "color": value}})

    assert color([200, 0, 0]) == (200, 0, 0)
    assert color([300, -4, 2.5]) == (255, 0, 2)
    for odd in ([float("nan"), 0, 0], [float("inf"), 0, 0], [True, 0, 0], "red", [1, 2], None):
        assert color(odd) == NO_CLASS_COLOR
    assert class_color({"classification": None}) == NO_CLASS_COLOR

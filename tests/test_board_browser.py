"""The tumor board in practice, in a real Chromium (Debian's `chromium`, driven by Playwright)
against a real `collab serve --demo` process: what the meeting hit, each with two or more pages.

Reconnects are made by closing a page's WebSocket from the test (the provider reconnects by
itself); short-lived links are minted with the app's authenticator. Tests of routes another
branch adds (tickets, token renewal) are skipped while the server answers them 404.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collab.auth import TokenAuthenticator
from collab.slides.demo import DEMO_ID
from tests.browser_support import SESSION_READY, BrowserPage, viewport_close, wait_until
from tests.conftest import SECRET, ServerProcess

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

AUTH = TokenAuthenticator(SECRET)
READY = (
    "() => window.collab && window.collab.state().ready"
    " && window.collab.state().connection === 'connected'"
)
CLOSE_MY_SOCKET = "() => { const ws = window.collab.provider.ws; if (ws) ws.close() }"
CLOSE_MY_SESSION_SOCKET = "() => { const ws = window.collab.session.room.provider.ws; if (ws) ws.close() }"


def mint(user: str, name: str, site: str, role: str, ttl: float = 3600, slides: Any = None) -> str:
    return AUTH.mint(user=user, name=name, site=site, role=role,
                     slides=[DEMO_ID] if slides is None else slides, ttl=ttl)


def route_missing(server: ServerProcess, path: str, token: str) -> bool:
    """True while the server has no such route (another branch adds it)."""
    r = httpx.post(f"{server.base_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return r.status_code in (404, 405)


class Page(BrowserPage):
    def toasts(self) -> list[str]:
        return self.page.locator(".toast").all_inner_texts()


def slide_page(browser: Any, server: ServerProcess, token: str, name: str) -> Page:
    return Page(browser, server, f"/app/?slide={DEMO_ID}&token={token}", READY, name)


def session_page(browser: Any, server: ServerProcess, session_id: str, token: str, name: str) -> Page:
    return Page(browser, server, f"/app/?session={session_id}&token={token}", SESSION_READY, name)


def create_session(server: ServerProcess, token: str, title: str) -> str:
    r = httpx.post(f"{server.base_url}/api/sessions", headers={"Authorization": f"Bearer {token}"},
                   json={"title": title, "slides": [DEMO_ID]}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture
def pages() -> Iterator[list[Page]]:
    """Pages opened by a test; closed after it, and none may have thrown."""
    opened: list[Page] = []
    yield opened
    try:
        for p in opened:
            assert not p.errors, (p.name, p.errors)
    finally:
        for p in opened:
            p.close()


def still_close(page: Page, ref: dict[str, float], seconds: float) -> bool:
    """The page's viewport stays close to `ref` for `seconds` (sampled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not viewport_close(page.state()["viewport"], ref):
            return False
        page.page.wait_for_timeout(100)
    return True


# ---- 1. follow survives a blip ------------------------------------------------------------------


def test_following_survives_the_followed_users_reconnect(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    leader = slide_page(browser, server, mint("dr-martin", "Dr Martin", "Roubaix", "reviewer"), "leader")
    follower = slide_page(browser, server, mint("trainee-a", "Trainee A", "Mouscron", "viewer"), "follower")
    pages += [leader, follower]
    follower.page.wait_for_function("() => window.collab.state().participants.length >= 2", timeout=10_000)
    leader_client = leader.state()["me"]["clientId"]
    row = follower.page.locator(f"[data-testid=participant][data-client-id='{leader_client}']")
    row.locator("[data-testid=follow-button]").click()
    assert follower.state()["following"] == leader_client

    # The leader's connection drops; the provider reconnects by itself.
    leader.js(CLOSE_MY_SOCKET)
    leader.page.wait_for_function("() => window.collab.state().connection !== 'connected'", timeout=5_000)
    leader.page.wait_for_function(READY, timeout=15_000)
    # The follower sees them back (same user) and still follows, without a click.
    follower.page.wait_for_function(
        "c => window.collab.state().participants.some(p => p.clientId === c)", arg=leader_client, timeout=10_000)
    assert follower.state()["following"] is not None
    assert not any("no longer following" in t for t in follower.toasts()), follower.toasts()

    # And mirrors the leader's next move.
    leader.drag(-150, -80)
    matched = wait_until(lambda: viewport_close(follower.state()["viewport"], leader.state()["viewport"]), 8)
    assert matched, (follower.state()["viewport"], leader.state()["viewport"])
    assert not any("left" in t for t in follower.toasts()), follower.toasts()
    banner = follower.testid("follow-banner").inner_text()
    assert "Dr Martin" in banner and "reconnecting" not in banner


def test_session_followers_keep_following_through_the_presenters_reconnect(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    presenter_token = mint("dr-blip", "Dr Martin", "Roubaix", "presenter")
    sid = create_session(server, presenter_token, "Blip board")
    presenter = session_page(browser, server, sid, presenter_token, "presenter")
    follower = session_page(browser, server, sid, mint("dr-m", "Dr M", "Mouscron", "reviewer"), "follower")
    pages += [presenter, follower]
    follower.page.wait_for_function("() => window.collab.state().session.presenterClientId !== null", timeout=10_000)
    badges: list[str] = []

    def sample() -> bool:
        badges.append(follower.testid("session-follow-badge").inner_text())
        return bool(follower.js("() => window.collab.state().session.presenterClientId !== null"))

    presenter.js(CLOSE_MY_SESSION_SOCKET)
    # The badge is read in the page, as it changes: the presenter may be back within a few
    # hundred milliseconds, before a read from here would see the transient state.
    seen = follower.page.wait_for_function(
        "() => { const t = document.querySelector('[data-testid=session-follow-badge]').innerText;"
        " return t.includes('reconnecting') ? t : null }",
        timeout=10_000,
    ).json_value()
    badges.append(seen)
    assert "reconnecting" in seen and "Dr Martin" in seen, seen
    assert wait_until(sample, 15), "the presenter did not come back"
    assert follower.state()["session"]["following"]
    assert all("left" not in b and "dr-blip" not in b for b in badges), badges
    assert not any("no longer following" in t for t in follower.toasts()), follower.toasts()
    # The presenter moves: the follower mirrors it, no click needed.
    presenter.drag(-140, -70)
    matched = wait_until(lambda: viewport_close(follower.state()["viewport"], presenter.state()["viewport"]), 8)
    assert matched, (follower.state()["viewport"], presenter.state()["viewport"])


# ---- 2. a presenter's reload moves nobody ---------------------------------------------------------


def test_presenter_reload_comes_back_where_it_was_and_followers_do_not_jump(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    presenter_token = mint("dr-lefebvre", "Dr Lefebvre", "Roubaix", "presenter")
    sid = create_session(server, presenter_token, "Reload board")
    presenter = session_page(browser, server, sid, presenter_token, "presenter")
    follower = session_page(browser, server, sid, mint("dr-b", "Dr B", "Mouscron", "reviewer"), "follower")
    pages += [presenter, follower]
    follower.page.wait_for_function("() => window.collab.state().session.presenterClientId !== null", timeout=10_000)

    # The presenter zooms in and pans; the follower mirrors it.
    x, y = presenter.viewer_center()
    presenter.page.mouse.move(x + 80, y - 40)
    for _ in range(3):
        presenter.page.mouse.wheel(0, -120)
        presenter.page.wait_for_timeout(60)
    presenter.drag(-120, -60)
    presenter.page.wait_for_timeout(1500)  # the view settles, the page remembers it
    before = presenter.state()["viewport"]
    assert wait_until(lambda: viewport_close(follower.state()["viewport"], before), 8)
    followed = follower.state()["viewport"]

    presenter.page.reload()
    # While the presenter's page reloads and reopens, the follower does not move.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert viewport_close(follower.state()["viewport"], followed), (follower.state()["viewport"], followed)
        try:
            if presenter.js(f"({SESSION_READY})()"):
                break
        except sync_api.Error:
            pass  # the page is navigating
        follower.page.wait_for_timeout(100)
    presenter.page.wait_for_function(SESSION_READY, timeout=5_000)
    # The presenter is back where it was; the follower is still there too.
    back = wait_until(lambda: viewport_close(presenter.state()["viewport"], before), 5)
    assert back, (presenter.state()["viewport"], before)
    assert still_close(follower, followed, 2.0), (follower.state()["viewport"], followed)
    assert follower.state()["session"]["following"]

    # Until the presenter moves again.
    presenter.drag(150, 90)
    moved = wait_until(lambda: viewport_close(follower.state()["viewport"], presenter.state()["viewport"])
                       and not viewport_close(follower.state()["viewport"], followed), 8)
    assert moved, (follower.state()["viewport"], presenter.state()["viewport"])


# ---- 3. links expire mid-meeting ------------------------------------------------------------------


def test_an_expiring_link_is_renewed_by_continue(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    token = mint("dr-renew", "Dr Renew", "Roubaix", "reviewer", ttl=20)
    if route_missing(server, "/api/tokens/renew", token):
        pytest.skip("the server has no POST /api/tokens/renew yet")
    page = slide_page(browser, server, token, "renewing")
    other = slide_page(browser, server, mint("dr-c", "Dr C", "Mouscron", "viewer"), "other")
    pages += [page, other]
    old_exp = page.js("window.collab.credentials.expiresAt")
    warning = page.testid("expiry-warning")
    warning.wait_for(state="visible", timeout=25_000)
    warning.locator("button.toast-action").click()
    page.page.wait_for_function("t => window.collab.credentials.token !== t", arg=token, timeout=10_000)
    new_token = page.js("window.collab.credentials.token")
    assert f"token={new_token}" in page.page.url
    # Past the old link's expiry, the page still works and shows no expiry dialog.
    page.page.wait_for_function("e => Date.now() > e + 2000", arg=old_exp, timeout=30_000)
    page.page.wait_for_function(READY, timeout=15_000)
    assert page.testid("fatal").count() == 0
    assert other.state()["participants"] and any(
        p["user"]["id"] == "dr-renew" for p in other.state()["participants"])


def test_an_expired_link_says_so_and_offers_no_try_again(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    token = mint("dr-expired", "Dr Expired", "Roubaix", "reviewer", ttl=12)
    page = slide_page(browser, server, token, "expiring")
    other = slide_page(browser, server, mint("dr-d", "Dr D", "Mouscron", "viewer"), "other")
    pages += [page, other]
    # A warning comes first, with the action that would keep the page working.
    warning = page.testid("expiry-warning")
    warning.wait_for(state="visible", timeout=15_000)
    assert "Continue" in warning.inner_text()
    # Not renewed: the server ends the connection (4401); the dialog says why, no "Try again".
    fatal = page.testid("fatal")
    fatal.wait_for(state="visible", timeout=20_000)
    assert "expired" in fatal.inner_text().lower(), fatal.inner_text()
    assert fatal.locator("button", has_text="Try again").count() == 0, fatal.inner_text()


# ---- 4. no token in WebSocket URLs ------------------------------------------------------------------


def test_websocket_urls_carry_tickets_not_the_token(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    token = mint("dr-ticket", "Dr Ticket", "Roubaix", "reviewer")
    if route_missing(server, "/api/tickets", token):
        pytest.skip("the server has no POST /api/tickets yet")
    viewer_token = mint("dr-e", "Dr E", "Mouscron", "viewer")
    urls: list[str] = []
    page = Page.__new__(Page)
    page.name = "ticket"
    page.context = browser.new_context(viewport={"width": 1280, "height": 720})
    page.page = page.context.new_page()
    page.errors = []
    page.page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.page.on("websocket", lambda ws: urls.append(ws.url))
    page.page.goto(f"{server.base_url}/app/?slide={DEMO_ID}&token={token}")
    pages.append(page)
    page.page.wait_for_function(READY, timeout=30_000)
    other = slide_page(browser, server, viewer_token, "other")
    pages.append(other)
    # A reconnect gets a fresh ticket too.
    n = len(urls)
    with page.page.expect_event("websocket", timeout=15_000):  # Playwright delivers events while it waits
        page.js(CLOSE_MY_SOCKET)
    assert len(urls) > n
    page.page.wait_for_function(READY, timeout=15_000)
    assert urls and all("token=" not in u and "ticket=" in u for u in urls), urls
    assert len({re.sub(r".*ticket=", "", u) for u in urls}) == len(urls), "a ticket was used twice"


# ---- 5. handover: one presenter label -----------------------------------------------------------------


def test_after_a_handover_only_the_new_presenter_is_labelled_presenter(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    first = mint("dr-first", "Dr First", "Roubaix", "presenter")
    sid = create_session(server, first, "Handover board")
    a = session_page(browser, server, sid, first, "first")
    b = session_page(browser, server, sid, mint("dr-second", "Dr Second", "Mouscron", "presenter"), "second")
    pages += [a, b]
    b.page.wait_for_function("() => window.collab.state().session.presenterClientId !== null", timeout=10_000)
    b.testid("take-over").click()
    for p in (a, b):
        p.page.wait_for_function("() => window.collab.state().session.presenter.id === 'dr-second'", timeout=10_000)
        p.page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=participant]').length >= 2", timeout=10_000)
        labelled = p.page.locator("[data-testid=participant] [data-testid=participant-presenter]")
        assert wait_until(lambda p=p: p.page.locator(
            "[data-testid=participant][data-presenter=true]").count() == 1, 5)
        assert labelled.count() == 1, p.name
        row = p.page.locator("[data-testid=participant][data-presenter=true]")
        assert row.get_attribute("data-user-id") == "dr-second"
        other = p.page.locator("[data-testid=participant][data-user-id=dr-first]")
        assert "Presenter" not in other.locator(".p-name").inner_text()
        assert "presenter" not in other.locator("[data-testid=participant-role]").inner_text()
        # One follow control in a session: no per-participant Follow buttons.
        assert p.page.locator("[data-testid=follow-button]").count() == 0


# ---- 6. names while the server is down ------------------------------------------------------------------


def test_while_the_server_is_down_the_session_shows_names_not_ids(
    browser: Any, tmp_path: Any, pages: list[Page]
) -> None:
    own = ServerProcess(tmp_path / "data", "--demo")
    own.start(timeout=180)
    try:
        presenter_token = mint("dr-mouscron", "Dr Martin", "Mouscron", "presenter")
        sid = create_session(own, presenter_token, "Outage board")
        presenter = session_page(browser, own, sid, presenter_token, "presenter")
        follower = session_page(browser, own, sid, mint("dr-f", "Dr F", "Roubaix", "reviewer"), "follower")
        pages += [presenter, follower]
        wait = follower.page.wait_for_function
        wait("() => window.collab.state().session.presenterClientId !== null", timeout=10_000)
        own.kill9()
        wait("() => window.collab.state().session.connection !== 'connected'", timeout=20_000)
        wait("() => window.collab.state().session.presenterClientId === null", timeout=10_000)
        name = follower.testid("presenter-name").inner_text()
        badge = follower.testid("session-follow-badge").inner_text()
        assert name.startswith("Dr Martin"), name
        assert "Dr Martin" in badge and "dr-mouscron" not in badge, badge
        assert "reconnecting" in follower.testid("presenter").inner_text()
    finally:
        own.stop()


# ---- 7. damaged links -----------------------------------------------------------------------------------


def test_damaged_links_say_what_is_wrong_and_show_no_unverified_identity(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    good = mint("dr-g", "Dr Genuine", "Roubaix", "reviewer")
    header, payload, signature = good.split(".")
    cut = f"{header}.{payload[: len(payload) // 2]}"  # a link cut while copying
    forged = AUTH.mint(user="dr-h", name="Dr Forged", site="Nowhere", role="admin", slides="*", ttl=3600)
    forged = ".".join([*forged.split(".")[:2], signature])  # another token's signature
    other_slide = mint("dr-i", "Dr Elsewhere", "Roubaix", "reviewer", slides=["another-slide"])
    cases = [
        (f"/app/?slide={DEMO_ID}&token={cut}", "damaged"),
        (f"/app/?token={forged}", "could not verify"),
        (f"/app/?slide={DEMO_ID}&token={forged}", "could not verify"),
        (f"/app/?slide={DEMO_ID}&token={other_slide}", "does not give access"),
    ]
    for path, expected in cases:
        p = Page(browser, server, path, "() => window.collab && window.collab.page", path)
        pages.append(p)
        p.page.wait_for_function(
            "() => document.querySelector('[data-testid=fatal]') || document.querySelector('.slide-list .error')",
            timeout=15_000)
        text = p.page.locator("body").inner_text()
        assert expected in text, (path, text)
        assert "A link with a token is needed" not in text, (path, text)
        assert "Dr Forged" not in text and "Nowhere" not in text, (path, text)
        assert p.testid("me").count() == 0 or not p.testid("me").is_visible(), path
    # The valid token of a slide that is not granted: not "Slide not found".
    assert "Slide not found" not in pages[-1].page.locator("body").inner_text()


# ---- 8. drawing past the edge -----------------------------------------------------------------------------


def test_drawing_past_the_slides_edge_is_clipped_to_it(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    drawer = slide_page(browser, server, mint("dr-j", "Dr Draw", "Roubaix", "reviewer"), "drawer")
    watcher = slide_page(browser, server, mint("dr-k", "Dr Watch", "Mouscron", "viewer"), "watcher")
    pages += [drawer, watcher]
    drawer.page.click("[data-testid=zoom-out]")  # room around the slide to draw past its edge
    drawer.settle()
    w, h = drawer.state()["slide"]["width"], drawer.state()["slide"]["height"]
    # From inside the slide to well past its bottom-right corner.
    x0, y0 = drawer.client_xy(w * 0.8, h * 0.8)
    x1, y1 = drawer.client_xy(w * 1.08, h * 1.08)
    drawer.draw_rectangle(x0, y0, x1, y1, steps=10)
    drawer.page.wait_for_function("() => window.collab.state().annotationCount === 1", timeout=5_000)
    aid = drawer.state()["annotationIds"][0]
    # The server checks it: ok, not invalid, and every client agrees.
    watcher.page.wait_for_function(
        "id => { const a = window.collab.annotation(id); return a && a.status }", arg=aid, timeout=10_000)
    a = watcher.js("id => window.collab.annotation(id)", aid)
    assert a["status"] == "ok", a
    b = a["bbox"]
    assert b[0] >= 0 and b[1] >= 0 and b[2] <= w and b[3] <= h, (b, w, h)
    assert b[2] == pytest.approx(w, abs=1) and b[3] == pytest.approx(h, abs=1), (b, w, h)


# ---- 9. small things -------------------------------------------------------------------------------------


def test_small_things_color_edited_one_row_per_person_tooltips(
    browser: Any, server: ServerProcess, pages: list[Page]
) -> None:
    long_name = "Dr Anne-Sophie Vandenberghe-Delacroix-Lemaire"
    token = mint("dr-long", long_name, "Centre hospitalier de Roubaix", "reviewer")
    tab1 = slide_page(browser, server, token, "tab1")
    tab2 = slide_page(browser, server, token, "tab2")
    watcher = slide_page(browser, server, mint("dr-l", "Dr Watch", "Mouscron", "viewer"), "watcher")
    pages += [tab1, tab2, watcher]
    watcher.page.wait_for_function("() => window.collab.state().participants.length >= 3", timeout=10_000)
    # The same person in two tabs: one row.
    rows = watcher.page.locator("[data-testid=participant][data-user-id=dr-long]")
    assert wait_until(lambda: rows.count() == 1, 5), rows.count()
    assert len(rows.get_attribute("data-client-ids").split()) == 2
    # Long names have a tooltip.
    assert rows.locator(".p-name").get_attribute("title").startswith(long_name)

    # An unclassified shape is not drawn in (almost) Tumor's red.
    tab1.settle()
    w, h = tab1.state()["slide"]["width"], tab1.state()["slide"]["height"]
    x0, y0 = tab1.client_xy(w * 0.3, h * 0.3)
    x1, y1 = tab1.client_xy(w * 0.45, h * 0.45)
    tab1.draw_rectangle(x0, y0, x1, y1, steps=6)
    tab1.page.wait_for_function("() => window.collab.state().annotationCount >= 1", timeout=5_000)
    aid = tab1.state()["selected"]
    a = tab1.js("id => window.collab.annotation(id)", aid)
    assert a["classification"] is None
    r, g, b = a["colorRGB"]
    assert not (r > 180 and g < 80 and b < 80), a["colorRGB"]
    # A brand-new annotation, even once the server measured it, is not "edited".
    tab1.page.wait_for_function("id => window.collab.annotation(id).status === 'ok'", arg=aid, timeout=10_000)
    tab1.page.wait_for_timeout(500)
    meta = tab1.testid("selection-meta").inner_text()
    assert "edited" not in meta, meta

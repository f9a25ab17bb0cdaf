"""A tumor-board session in a real Chromium (Debian's `chromium`, driven by Playwright) against a
real `collab serve --demo` process: a presenter from Roubaix and two followers (a reviewer and a
read-only trainee) on a two-slide agenda.

Screenshots and the presenter-to-follower latency land in test-artifacts/sessions/ (gitignored).
Set COLLAB_CHROMIUM to use another Chromium binary.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collab.auth import TokenAuthenticator
from collab.slides.demo import DEMO_FILENAME, DEMO_ID
from tests.browser_support import SESSION_READY, BrowserPage, viewport_close, wait_until
from tests.conftest import SECRET, ServerProcess

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "sessions"
SECOND = "demo-2"
ON_SLIDE = """id => {
    const s = window.collab.state()
    return s.ready && s.slide && s.slide.id === id && s.connection === 'connected'
}"""


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    auth = TokenAuthenticator(SECRET)
    agenda = [DEMO_ID, SECOND]
    return {
        "admin": auth.mint(user="admin", name="Admin", site="Roubaix", role="admin", slides="*", ttl=3600),
        "presenter": auth.mint(user="dr-lefebvre", name="Dr Lefebvre", site="Roubaix",
                               role="presenter", slides=agenda, ttl=3600),
        "reviewer": auth.mint(user="dr-martin", name="Dr Martin", site="Mouscron",
                              role="reviewer", slides=agenda, ttl=3600),
        "viewer": auth.mint(user="trainee-dubois", name="Trainee Dubois", site="Mouscron",
                            role="viewer", slides=agenda, ttl=3600),
        "presenter2": auth.mint(user="dr-peeters", name="Dr Peeters", site="Mouscron",
                                role="presenter", slides=agenda, ttl=3600),
    }


@pytest.fixture(scope="module")
def second_slide(server: ServerProcess, tokens: dict[str, str]) -> str:
    """`demo-2`: the demo slide's file registered a second time, as another slide."""
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    r = httpx.post(f"{server.base_url}/api/slides", headers=headers, timeout=30, json={
        "id": SECOND, "title": "Second slide (demo tissue)", "path": str(server.data / DEMO_FILENAME),
    })
    assert r.status_code in (200, 201), r.text
    return SECOND


def create_session(server: ServerProcess, token: str, slides: list[str], title: str) -> dict[str, Any]:
    r = httpx.post(f"{server.base_url}/api/sessions", headers={"Authorization": f"Bearer {token}"},
                   json={"title": title, "slides": slides}, timeout=30)
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["slides"] == slides and record["title"] == title
    return record


class Page(BrowserPage):
    """One participant of the session in one browser context."""

    artifacts = ARTIFACTS
    settle_timeout = 20_000.0

    def __init__(self, browser: Any, server: ServerProcess, session_id: str, token: str, name: str) -> None:
        super().__init__(browser, server, f"/app/?session={session_id}&token={token}", SESSION_READY, name)

    def session(self) -> dict[str, Any]:
        return self.page.evaluate("window.collab.state().session")

    def on_slide(self, slide_id: str, timeout: float = 20_000) -> None:
        self.page.wait_for_function(ON_SLIDE, arg=slide_id, timeout=timeout)


# ---- helpers ---------------------------------------------------------------------------------


def wait_still(page: Page, timeout: float = 10) -> dict[str, float]:
    """The page's viewport once it stopped changing (animations done)."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page.page.wait_for_timeout(250)
        vp = page.state()["viewport"]
        if vp == last:
            return vp
        last = vp
    return last


def latency_stats(sent: list[dict[str, Any]], received: list[dict[str, Any]]) -> dict[str, Any]:
    """Match each viewport the follower received to the moment the presenter published it."""
    sent_at: dict[str, float] = {}
    for s in sent:
        sent_at.setdefault(s["key"], s["t"])
    delays = sorted(r["t"] - sent_at[r["key"]] for r in received if r["key"] in sent_at)
    if not delays:
        return {"matched": 0}

    def q(p: float) -> float:
        return round(delays[min(len(delays) - 1, int(p * len(delays)))], 1)

    return {"matched": len(delays), "sent": len(sent), "p50_ms": q(0.5), "p95_ms": q(0.95),
            "p99_ms": q(0.99), "max_ms": round(delays[-1], 1), "mean_ms": round(statistics.fmean(delays), 1)}


# ---- the scenario ------------------------------------------------------------------------------


@pytest.fixture
def board(
    browser: Any, server: ServerProcess, tokens: dict[str, str], second_slide: str
) -> Iterator[tuple[Page, Page, Page, dict[str, Any]]]:
    record = create_session(server, tokens["presenter"], [DEMO_ID, second_slide], "Tumor board: case 1")
    pages: list[Page] = []
    try:
        presenter = Page(browser, server, record["id"], tokens["presenter"], "presenter")
        pages.append(presenter)
        reviewer = Page(browser, server, record["id"], tokens["reviewer"], "reviewer")
        pages.append(reviewer)
        viewer = Page(browser, server, record["id"], tokens["viewer"], "viewer")
        pages.append(viewer)
        # Everyone sees the presenter connected before the scenario starts.
        for p in (reviewer, viewer):
            p.page.wait_for_function(
                "() => window.collab.state().session.presenterClientId !== null", timeout=10_000)
        yield presenter, reviewer, viewer, record
        for p in pages:
            assert not p.errors, (p.name, p.errors)
    finally:
        for p in pages:
            p.close()


def test_followers_follow_the_presenter_across_slides_and_come_back(
    board: tuple[Page, Page, Page, dict[str, Any]],
) -> None:
    presenter, reviewer, viewer, record = board

    # The creator presents; the others follow by default and see who presents, from where.
    ps = presenter.session()
    assert ps["isPresenter"] and not ps["following"], ps
    assert ps["agenda"] == [DEMO_ID, SECOND] and ps["current"] == DEMO_ID
    assert presenter.testid("take-over").is_hidden()
    assert presenter.testid("follow-presenter").is_hidden()
    for p in (reviewer, viewer):
        s = p.session()
        assert s["following"] and not s["isPresenter"] and s["viewSlide"] == DEMO_ID, s
        assert p.testid("presenter-name").inner_text().startswith("Dr Lefebvre")
        assert p.testid("presenter-site").inner_text() == "Roubaix"
        assert p.testid("follow-presenter").get_attribute("aria-pressed") == "true"
        assert p.testid("take-over").is_hidden(), f"{p.name} may not present"
        assert p.testid("back-to-presenter").is_hidden()
        assert p.testid("session-title").inner_text() == record["title"]
        items = p.page.locator("[data-testid=agenda-item]")
        assert items.count() == 2
        assert p.page.locator(f"[data-testid=agenda-item][data-slide-id={DEMO_ID}]").get_attribute(
            "data-current") == "true"
    assert reviewer.state()["canEdit"] and not viewer.state()["canEdit"]

    # The presenter moves to slide 2 from the agenda...
    presenter.page.click(f"[data-testid=agenda-item][data-slide-id={SECOND}] button")
    presenter.on_slide(SECOND)
    assert presenter.session()["current"] == SECOND
    presenter.settle()
    # ...and zooms into a region with the wheel, pans by dragging, and rotates.
    x, y = presenter.viewer_center()
    presenter.page.mouse.move(x + 140, y - 70)
    for _ in range(5):
        presenter.page.mouse.wheel(0, -120)
        presenter.page.wait_for_timeout(60)
    presenter.drag(-150, -80, steps=10)
    presenter.page.click("[data-testid=rotate-right]")
    target = wait_still(presenter)
    slide_w = presenter.state()["slide"]["width"]
    assert target["width"] < slide_w / 3, "the presenter did not zoom in"
    assert target["rotation"] == pytest.approx(90, abs=0.5)

    # Both followers end on slide 2 at that viewport, with slide 2 highlighted in the agenda.
    for p in (reviewer, viewer):
        p.on_slide(SECOND)
        matched = wait_until(lambda p=p: viewport_close(p.state()["viewport"], presenter.state()["viewport"]), 8)
        assert matched, (p.name, p.state()["viewport"], presenter.state()["viewport"])
        assert p.session()["following"]
        assert p.page.locator(f"[data-testid=agenda-item][data-slide-id={SECOND}]").get_attribute(
            "data-current") == "true"

    # The presenter's pointer is shown to the followers (from the session room).
    sw, sh = presenter.state()["slide"]["width"], presenter.state()["slide"]["height"]
    vp = presenter.state()["viewport"]
    px, py = vp["x"] + vp["width"] * 0.45, vp["y"] + vp["height"] * 0.55
    presenter.page.mouse.move(*presenter.client_xy(px, py), steps=4)
    for p in (reviewer, viewer):
        def pointer(p: Page = p) -> dict[str, Any] | None:
            ptrs = p.js("() => window.collab.view.extraPointers()") or []
            near = [q for q in ptrs if math.dist((q["cursor"]["x"], q["cursor"]["y"]), (px, py)) < 0.01 * max(sw, sh)]
            return near[0] if near else None
        ptr = wait_until(pointer, 5)
        assert ptr, (p.name, p.js("() => window.collab.view.extraPointers()"), (px, py))
        assert ptr["user"]["id"] == "dr-lefebvre" and "Presenter" in ptr["label"]

    for p in (presenter, reviewer, viewer):
        p.settle()
    presenter.screenshot("presenter-slide2.png")
    reviewer.screenshot("follower-reviewer-slide2.png")
    viewer.screenshot("follower-viewer-slide2.png")

    # The reviewer pans by themselves: they leave follow mode and get a "Back to presenter" button.
    reviewer.drag(220, 140)
    reviewer.page.wait_for_function("() => !window.collab.state().session.following", timeout=3_000)
    assert reviewer.testid("back-to-presenter").is_visible()
    assert reviewer.testid("follow-presenter").get_attribute("aria-pressed") == "false"
    away = wait_still(reviewer)
    assert not viewport_close(away, presenter.state()["viewport"])

    # The presenter moves on; the viewer follows, the reviewer stays where they went.
    presenter.page.click("[data-testid=zoom-in]")
    target = wait_still(presenter)
    assert wait_until(lambda: viewport_close(viewer.state()["viewport"], target), 8), \
        (viewer.state()["viewport"], target)
    assert viewport_close(wait_still(reviewer), away)
    reviewer.settle()
    reviewer.screenshot("follower-reviewer-left-follow.png")

    # "Back to presenter": the reviewer is back on the presenter's view, following again.
    reviewer.testid("back-to-presenter").click()
    assert wait_until(lambda: viewport_close(reviewer.state()["viewport"], presenter.state()["viewport"]), 8), \
        (reviewer.state()["viewport"], presenter.state()["viewport"])
    assert reviewer.session()["following"]
    assert reviewer.testid("back-to-presenter").is_hidden()
    reviewer.settle()
    reviewer.screenshot("follower-reviewer-back.png")

    # Presenter-to-follower viewport latency in the browsers: the presenter pans at a natural
    # rate (a mouse drag); each follower logs when each published viewport arrives.
    for p in (presenter, reviewer, viewer):
        p.js("() => { const l = window.collab.session.log; l.sent.length = 0; l.received.length = 0;"
             " l.applied.length = 0 }")
    x, y = presenter.viewer_center()
    presenter.page.mouse.move(x, y)
    presenter.page.mouse.down()
    for i in range(1, 81):
        presenter.page.mouse.move(x - 3 * i, y - 2 * i)
        presenter.page.wait_for_timeout(16)
    presenter.page.mouse.up()
    final = wait_still(presenter)
    for p in (reviewer, viewer):
        assert wait_until(lambda p=p: viewport_close(p.state()["viewport"], final), 8), p.name
    sent = presenter.js("() => window.collab.session.log.sent")
    results: dict[str, Any] = {"followers": {}, "publish_rate_hz": None}
    if len(sent) > 1:
        span = (sent[-1]["t"] - sent[0]["t"]) / 1000
        results["publish_rate_hz"] = round((len(sent) - 1) / span, 1) if span > 0 else None
    for p in (reviewer, viewer):
        received = p.js("() => window.collab.session.log.received")
        results["followers"][p.name] = latency_stats(sent, received)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "latency.json").write_text(json.dumps(results, indent=2))
    print("presenter-to-follower viewport latency:", json.dumps(results, indent=2))
    for name, st in results["followers"].items():
        assert st["matched"] >= 5, (name, st)
        assert st["p50_ms"] < 500, (name, st)


def test_a_followers_change_to_the_session_is_refused(
    board: tuple[Page, Page, Page, dict[str, Any]],
) -> None:
    presenter, reviewer, viewer, _record = board
    # Bypass the UI: the read-only trainee tries to switch everyone to slide 2.
    viewer.js(f"""() => {{
        const s = window.collab.session
        s.room.doc.transact(() => s.stateMap.set('current', '{SECOND}'))
    }}""")
    viewer.page.wait_for_selector("[data-testid=session-denied]", timeout=5_000)
    # The page reloads the shared state: the session is still on slide 1, for everyone.
    viewer.page.wait_for_function(
        f"() => {{ const s = window.collab.state().session; return s.synced && s.current === '{DEMO_ID}' }}",
        timeout=10_000)
    viewer.on_slide(DEMO_ID)
    presenter.page.wait_for_timeout(300)
    assert presenter.session()["current"] == DEMO_ID
    assert reviewer.session()["current"] == DEMO_ID and reviewer.state()["slide"]["id"] == DEMO_ID


def test_another_presenter_takes_over(
    board: tuple[Page, Page, Page, dict[str, Any]], browser: Any, server: ServerProcess,
    tokens: dict[str, str],
) -> None:
    presenter, reviewer, viewer, record = board
    other = Page(browser, server, record["id"], tokens["presenter2"], "presenter2")
    try:
        assert other.session()["following"]
        assert other.testid("take-over").is_visible()
        # Dr Peeters looks at slide 2 on their own, then takes over there.
        other.page.click(f"[data-testid=agenda-item][data-slide-id={SECOND}] button")
        other.on_slide(SECOND)
        assert not other.session()["following"]
        other.testid("take-over").click()
        other.page.wait_for_function("() => window.collab.state().session.isPresenter", timeout=3_000)
        assert other.testid("take-over").is_hidden()
        # Everyone, the former presenter included, follows the new presenter to slide 2.
        for p in (presenter, reviewer, viewer):
            p.page.wait_for_function(
                "() => window.collab.state().session.presenter?.id === 'dr-peeters'", timeout=5_000)
            p.on_slide(SECOND)
            assert p.testid("presenter-name").inner_text().startswith("Dr Peeters")
            assert p.testid("presenter-site").inner_text() == "Mouscron"
        ps = presenter.session()
        assert not ps["isPresenter"] and ps["following"]
        assert presenter.testid("take-over").is_visible()
        other.settle()
        target = wait_still(other)
        assert wait_until(lambda: viewport_close(presenter.state()["viewport"], target), 8)
        presenter.settle()
        presenter.screenshot("former-presenter-follows.png")
        assert not other.errors, other.errors
    finally:
        other.close()


def test_summary_link_opens_the_printable_summary(
    board: tuple[Page, Page, Page, dict[str, Any]],
) -> None:
    _presenter, reviewer, _viewer, record = board
    with reviewer.page.expect_popup() as info:
        reviewer.testid("summary-link").click()
    popup = info.value
    popup.wait_for_load_state()
    popup.wait_for_function("() => document.body && document.body.innerText.includes('Tumor board')",
                            timeout=10_000)
    assert record["title"] in popup.inner_text("body")

"""create_app(settings) -> Starlette: routes, static web client, and a lifespan owning the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from collab import metrics
from collab.annotations.api import AnnotationsApi
from collab.annotations.guard import slide_hook
from collab.auth import Principal, TokenAuthenticator, load_or_create_secret
from collab.errors import CollabError, Forbidden
from collab.http import JSONResponse, OriginCheck, RequestAuth, error_response
from collab.live.bus import LocalBus
from collab.live.room import Room
from collab.live.rooms import RoomManager
from collab.live.ws import RoomEndpoint
from collab.sessions.api import SessionsApi
from collab.sessions.registry import SessionGuard, SessionRegistry, may_join
from collab.settings import Settings
from collab.slides.api import SlidesApi
from collab.slides.demo import ensure_demo_slide
from collab.slides.registry import SlideRegistry
from collab.slides.tiles import SlideImages
from collab.store import AuditRecord, open_store

log = logging.getLogger(__name__)

STATIC_APP = Path(__file__).parent / "static" / "app"


class Collab:
    """Everything one server process owns, wired together."""

    def __init__(self, settings: Settings) -> None:
        if settings.redis_url:
            # Several nodes without a shared fan-out would each show a different room.
            raise ValueError("COLLAB_REDIS_URL (cross-node fan-out) is not supported by this version yet")
        self.settings = settings
        self.authenticator = TokenAuthenticator(load_or_create_secret(settings.secret, settings.data))
        self.store = open_store(settings)
        self.bus = LocalBus()
        self.rooms = RoomManager(self.store, self.bus, settings)  # type: ignore[arg-type]
        self.slides = SlideRegistry(self.store)  # type: ignore[arg-type]
        self.images = SlideImages()
        self.api = RequestAuth(self.authenticator)
        self.slides_api = SlidesApi(self.api, self.slides, self.images)
        if settings.geometry_checks:
            self.rooms.on_load(slide_hook(self.slides, self.store, settings.max_vertices))  # type: ignore[arg-type]
        self.annotations_api = AnnotationsApi(self.api, self.rooms, self.slides, self.store, settings)  # type: ignore[arg-type]
        self.sessions = SessionRegistry(self.store, self.slides)  # type: ignore[arg-type]
        self.sessions_api = SessionsApi(self.api, self.sessions, self.slides, self.store)  # type: ignore[arg-type]
        self.rooms.on_load(self.guard_session)

    def guard_session(self, room: Room) -> None:
        """Session rooms: only the presenter (or a presenter taking over) changes the document."""
        if room.key.startswith("session:"):
            room.write_guard = SessionGuard(room, self.store)  # type: ignore[arg-type]

    async def check_session(self, session_id: str, principal: Principal) -> None:
        if not may_join(principal, await self.sessions.get(session_id)):
            raise Forbidden("token does not grant every slide of this session")

    async def check_slide(self, slide_id: str, principal: Principal) -> None:
        principal.require_slide(slide_id)
        await self.slides.get(slide_id)

    def record_refusal(self, room: str, principal: Principal | None, reason: str, message: str) -> None:
        """Every refusal is logged, counted and kept in the audit trail."""
        metrics.REFUSALS.labels(reason=reason).inc()
        user = principal.user_id if principal else "-"
        site = principal.site if principal else "-"
        log.warning("refused %s: %s", room, message, extra={"room": room, "user": user, "site": site, "reason": reason})
        self.store.audit(  # type: ignore[attr-defined]
            AuditRecord(
                room, int(time.time() * 1000), user, site, "refused", None, {"reason": reason, "message": message}
            )
        )

    async def register_demo(self) -> None:
        """--demo: generate (once) and register the demo slide, then print two ready links."""
        slide = await asyncio.to_thread(ensure_demo_slide, self.settings.data, report=_print)
        await self.slides.put(
            {
                "id": slide.id,
                "title": slide.title,
                "width": slide.width,
                "height": slide.height,
                "mpp": slide.mpp,
                "path": str(slide.path),
                "tiles": f"/slides/{slide.id}.dzi",
            }
        )
        links = demo_links(self.authenticator, self.settings.base_url, slide.id)
        print("\n".join(["", "collab demo slide ready:", *links, ""]), flush=True)

    async def drain(self) -> None:
        """SIGTERM: close every socket with 1001 and flush every pending update."""
        await self.rooms.shutdown(1001, "server shutting down")

    def routes(self) -> list[Route | Mount | WebSocketRoute]:
        common = {
            "rooms": self.rooms,
            "authenticator": self.authenticator,
            "settings": self.settings,
            "on_refusal": self.record_refusal,
            "connections_per_user": Counter(),
        }
        routes: list[Route | Mount | WebSocketRoute] = [
            Route("/", lambda request: RedirectResponse("/app/"), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            *self.slides_api.routes(),
            *self.annotations_api.routes(),
            WebSocketRoute(
                "/ws/slides/{doc_id:path}",
                RoomEndpoint("slide", check_document=self.check_slide, **common),  # type: ignore[arg-type]
            ),
            WebSocketRoute(
                "/ws/sessions/{doc_id:path}",
                RoomEndpoint("session", check_document=self.check_session, **common),  # type: ignore[arg-type]
            ),
            *self.sessions_api.routes(),
        ]
        if STATIC_APP.is_dir():
            routes.append(Mount("/app", StaticFiles(directory=STATIC_APP, html=True), name="app"))
        return routes


def _print(line: str) -> None:
    """Console lines for whoever started the server (the demo's progress and links)."""
    print(line, flush=True)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics_text(request: Request) -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def demo_links(auth: TokenAuthenticator, base_url: str, slide_id: str, ttl: float = 12 * 3600) -> list[str]:
    """Two browser links: a Roubaix reviewer and a read-only Mouscron trainee."""
    reviewer = auth.mint(
        user="dr-roubaix", name="Dr Martin (Roubaix)", site="Roubaix", role="reviewer", slides=[slide_id], ttl=ttl
    )
    trainee = auth.mint(
        user="trainee-mouscron",
        name="Trainee Dubois (Mouscron)",
        site="Mouscron",
        role="viewer",
        slides=[slide_id],
        ttl=ttl,
    )
    return [
        f"  reviewer (Roubaix):        {base_url}/app/?slide={slide_id}&token={reviewer}",
        f"  trainee, read-only (Mouscron): {base_url}/app/?slide={slide_id}&token={trainee}",
    ]


def create_app(settings: Settings) -> Starlette:
    collab = Collab(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with collab.store:  # type: ignore[attr-defined]
            try:
                if settings.demo:
                    await collab.register_demo()
                yield
            finally:
                await collab.drain()
                collab.images.close()

    async def on_collab_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CollabError)
        return error_response(exc)

    app = Starlette(
        routes=collab.routes(),
        middleware=[Middleware(OriginCheck, allowed=settings.allowed_origins, public_url=settings.base_url)],
        lifespan=lifespan,
        exception_handlers={CollabError: on_collab_error},
    )
    app.state.collab = collab
    return app

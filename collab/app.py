"""create_app(settings) -> Starlette: routes, static web client, and a lifespan owning the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from collab import metrics
from collab.annotations.api import AnnotationsApi
from collab.annotations.catalog import AnnotationCatalog
from collab.annotations.guard import AnnotationGuard
from collab.archive.api import ArchiveApi
from collab.auth import Principal, TokenAuthenticator, signing_secret
from collab.errors import CollabError, Forbidden, StoreError
from collab.http import JSONResponse, OriginCheck, RequestAuth, error_response
from collab.layers.adopt import adopt_sqlite_layers
from collab.layers.api import LayersApi
from collab.layers.postgres import PostgresLayerStore
from collab.layers.registry import LayerRegistry
from collab.layers.store import LayerStore, create_layer_store
from collab.live.bus import Bus, LocalBus
from collab.live.keys import SESSION, SLIDE, RoomKey
from collab.live.policy import RoomPolicy
from collab.live.redis_bus import RedisBus
from collab.live.rooms import RoomManager
from collab.live.ws import RoomEndpoint
from collab.sessions.api import SessionsApi
from collab.sessions.policy import SessionPolicy
from collab.sessions.registry import SessionRegistry, may_join
from collab.settings import Settings
from collab.slides.api import SlidesApi
from collab.slides.demo import ensure_demo_slide
from collab.slides.dicomweb import DicomWebSlides, parse_credentials
from collab.slides.registry import SlideRegistry
from collab.slides.tiles import SlideImages
from collab.store import AuditRecord, create_store
from collab.tickets import RedisRedeemed, Tickets
from collab.tokens import TokensApi

log = logging.getLogger(__name__)

STATIC_APP = Path(__file__).parent / "static" / "app"
HEALTH_TIMEOUT = 2.0  # seconds /healthz waits for the database before answering 503


class Collab:
    """Everything one server process owns, wired together."""

    def __init__(self, settings: Settings) -> None:
        if settings.redis_url and not (settings.database_url or "").startswith(("postgresql://", "postgres://")):
            # Nodes share their rooms' entries through the store; Redis only carries messages.
            raise ValueError("COLLAB_REDIS_URL needs COLLAB_DATABASE_URL=postgresql://... (every node's store)")
        self.settings = settings
        # COLLAB_SECRET wins; a generated secret is read from the store once it is open (lifespan).
        self.authenticator = TokenAuthenticator(settings.secret)
        self.store = create_store(settings)  # opened by the app's lifespan
        self.bus: Bus = RedisBus(settings.redis_url) if settings.redis_url else LocalBus()
        self.rooms = RoomManager(self.store, self.bus, settings, self.policy_for)
        self.slides = SlideRegistry(self.store)
        self.images = SlideImages()
        self.archive = DicomWebSlides(
            parse_credentials(settings.dicomweb_auth),
            timeout=settings.dicomweb_timeout, cache_bytes=settings.dicomweb_cache_bytes,
        )
        self.api = RequestAuth(self.authenticator)
        self.slides_api = SlidesApi(self.api, self.slides, self.images, settings, self.archive)
        self.annotations_api = AnnotationsApi(self.api, self.rooms, self.slides, self.store, settings)
        self.sessions = SessionRegistry(self.store, self.slides)
        self.sessions_api = SessionsApi(
            self.api, self.sessions, self.slides, self.store, self.rooms, settings
        )
        self.tickets = Tickets(
            self.authenticator, settings.ticket_seconds,
            RedisRedeemed(settings.redis_url) if settings.redis_url else None,
        )
        # Detection layers: a store of their own (bulk imports stay out of the live store's log),
        # in the shared database when there is one; other nodes hear of changes on the bus.
        self.layers = LayerRegistry(create_layer_store(settings), announce=self.bus.publish_layers)
        if isinstance(self.bus, RedisBus):
            self.bus.on_reconnect = self.messages_back
            self.bus.on_layers = self.layers.changed_elsewhere
        self.layers_api = LayersApi(self.api, self.layers, self.slides, self.rooms, self.store, settings)
        self.archive_api = ArchiveApi(self.api, self.rooms, self.slides, self.store, settings, self.archive,
                                      self.layers)
        self.tokens_api = TokensApi(self.api, self.authenticator, self.tickets, settings)
        self._drain_lock = asyncio.Lock()
        self._drained = False

    def messages_back(self) -> None:
        """Redis answers again after a loss: rooms read the entries they missed, and every slide
        whose layers this node follows reads its list again (a layers message may be lost)."""
        self.rooms.catch_up_all()
        for slide_id in self.layers.followed():
            self.layers.changed_elsewhere(slide_id)

    async def policy_for(self, key: RoomKey) -> RoomPolicy:
        """Slides are checked and audited (unless checks are off); sessions follow their presenter."""
        if key.kind == SESSION:
            return SessionPolicy(self.store)
        if key.kind == SLIDE and self.settings.geometry_checks:
            record = await self.slides.get(key.id)
            catalog = AnnotationCatalog(
                width=record["width"], height=record["height"], mpp=record.get("mpp"),
                max_vertices=self.settings.max_vertices,
            )
            cells = await self.layers.follow(key.id)  # live counts need the slide's layers in memory
            return AnnotationGuard(self.store, catalog, cells=cells)
        return RoomPolicy()

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
        self.store.audit(
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
                "path": str(slide.path.resolve()),  # --data may be relative to where the server started
                "tiles": f"/slides/{slide.id}.dzi",
            }
        )
        links = demo_links(self.authenticator, self.settings.base_url, slide.id)
        print("\n".join(["", "collab demo slide ready:", *links, ""]), flush=True)

    async def drain(self) -> None:
        """SIGTERM: close every socket with 1001 and flush every pending update, once (the server's
        shutdown and the lifespan both ask), within `flush_timeout`."""
        async with self._drain_lock:
            if self._drained:
                return
            self._drained = True
            started = time.perf_counter()
            committed = self.store.committed_writes
            try:
                async with asyncio.timeout(self.settings.flush_timeout):
                    sockets, rooms = await self.rooms.shutdown(1001, "server shutting down")
            except TimeoutError:
                # What is still queued is committed by the store's close; sockets left open are
                # closed by uvicorn (1012).
                log.error(
                    "drain did not finish within %.1f s (COLLAB_FLUSH_TIMEOUT)",
                    self.settings.flush_timeout,
                    extra={"writes": self.store.committed_writes - committed},
                )
                return
            writes = self.store.committed_writes - committed
            log.info(
                "drained in %.0f ms: closed %d sockets, flushed %d rooms (%d writes)",
                (time.perf_counter() - started) * 1000,
                sockets,
                rooms,
                writes,
                extra={"sockets": sockets, "rooms": rooms, "writes": writes},
            )

    async def open(self) -> None:
        """Open the store, then load the signing secret it keeps unless COLLAB_SECRET is set."""
        await self.store.open()
        if self.settings.secret is None:
            try:
                self.authenticator.set_secret(await signing_secret(None, self.store, create=True))
            except BaseException:
                await self.store.close()
                raise

    async def healthz(self, request: Request) -> Response:
        """200 while serving and the database answers; 503 (degraded) while it does not. With
        several nodes it also says whether Redis answers: without it the node still serves its
        own clients (and catches up from the database), so that alone is no reason for a load
        balancer to take the node out (200, "degraded")."""
        body = {"status": "ok", "store": "ok"}
        if isinstance(self.bus, RedisBus):
            body["redis"] = "ok" if self.bus.connected else "unreachable"
            if not self.bus.connected:
                body["status"] = "degraded"
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await self.store.ping()
        except (StoreError, TimeoutError) as exc:
            body["store"] = str(exc) or f"the database did not answer within {HEALTH_TIMEOUT:g} s"
            body["status"] = "degraded"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    def routes(self) -> list[Route | Mount | WebSocketRoute]:
        common: dict[str, Any] = {
            "rooms": self.rooms,
            "authenticator": self.authenticator,
            "settings": self.settings,
            "on_refusal": self.record_refusal,
            "connections_per_user": Counter(),
            "tickets": self.tickets,
        }
        routes: list[Route | Mount | WebSocketRoute] = [
            Route("/", lambda request: RedirectResponse("/app/"), methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            *self.slides_api.routes(),
            *self.annotations_api.routes(),
            *self.archive_api.routes(),
            *self.layers_api.routes(),
            WebSocketRoute(
                "/ws/slides/{doc_id:path}",
                RoomEndpoint("slide", check_document=self.check_slide, **common),
            ),
            WebSocketRoute(
                "/ws/sessions/{doc_id:path}",
                RoomEndpoint("session", check_document=self.check_session, **common),
            ),
            *self.sessions_api.routes(),
            *self.tokens_api.routes(),
        ]
        if STATIC_APP.is_dir():
            routes.append(Mount("/app", StaticFiles(directory=STATIC_APP, html=True), name="app"))
        return routes


def _print(line: str) -> None:
    """Console lines for whoever started the server (the demo's progress and links)."""
    print(line, flush=True)


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


async def adopt_local_layers(store: LayerStore, settings: Settings) -> None:
    """Layers in PostgreSQL: a node that kept them in `<data>/layers.sqlite3` before copies them
    there first (collab/layers/adopt.py). A copy that fails stops the start: serving without
    those layers would let rooms recount their outlines without them."""
    if not isinstance(store, PostgresLayerStore):
        return
    path = settings.data / "layers.sqlite3"
    try:
        await adopt_sqlite_layers(path, store)
    except (StoreError, sqlite3.Error, OSError) as exc:
        raise StoreError(
            f"the layers of {path} could not be copied into PostgreSQL ({exc}); the server does not start"
            " without them. Fix the cause and start again (layers already copied are skipped), or move the"
            " file aside to start without its layers (docs/layers.md, Upgrading)") from exc


def create_app(settings: Settings) -> Starlette:
    collab = Collab(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collab.open()
        await collab.layers.store.open()
        try:
            await adopt_local_layers(collab.layers.store, settings)
        except BaseException:  # the node does not start: give its connections back
            await collab.layers.store.close()
            await collab.store.close()
            raise
        await collab.bus.start()
        pollers = []
        if isinstance(collab.bus, RedisBus):  # several nodes: rooms also compare with the store
            loop = asyncio.get_running_loop()
            pollers.append(loop.create_task(collab.rooms.poll_store(), name="poll-store"))
            bus = collab.bus  # while Redis is away, layers are read again from the store
            pollers.append(loop.create_task(collab.layers.poll(lambda: bus.connected), name="poll-layers"))
        try:
            if settings.demo:
                await collab.register_demo()
            yield
        finally:
            try:
                for poller in pollers:
                    poller.cancel()
                await collab.drain()  # already done when CollabServer shut down first
                collab.images.close()
                collab.archive.close()
            finally:
                await collab.bus.stop()
                await collab.tickets.close()
                await collab.layers.store.close()
                await collab.store.close()

    async def on_collab_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CollabError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own refusals (an unknown route, a wrong method) in the API's error form.
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=collab.routes(),
        middleware=[Middleware(OriginCheck, allowed=settings.allowed_origins, public_url=settings.base_url)],
        lifespan=lifespan,
        exception_handlers={CollabError: on_collab_error, HTTPException: on_http_error},
    )
    app.state.collab = collab
    return app

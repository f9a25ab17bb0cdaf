"""HTTP routes of the slide registry and of the Deep Zoom tiles of slide files."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab.errors import BadRequest, Forbidden, NotFound
from collab.http import JSONResponse, RequestAuth, read_json
from collab.settings import Settings
from collab.slides.demo import DEMO_FILENAME
from collab.slides.dicomweb import DicomWebSlides, SeriesRef, parse_series_ref
from collab.slides.registry import SlideRegistry, public_slide, validate_slide
from collab.slides.tiles import SlideImageError, SlideImages

log = logging.getLogger(__name__)

# One answer whether the file is missing, unreadable, not a slide or outside the slide
# directories: the API must not tell an admin token which files exist on the server.
UNUSABLE_PATH = "path must name a slide file the server can open in its slide directories"


def confined_path(path: str, directories: Sequence[Path], also: Sequence[Path] = ()) -> str | None:
    """The real path of `path` (relative: to the first directory) when it lies inside one of
    `directories` or is one of the files `also`, with symlinks and `..` resolved before the check
    (a link in a slide directory to /etc/passwd is outside); None otherwise."""
    try:
        real = Path(os.path.realpath(directories[0] / path))  # an absolute `path` replaces the base
        for root in (Path(os.path.realpath(d)) for d in directories):
            if real != root and real.is_relative_to(root):
                return str(real)
        if any(real == Path(os.path.realpath(f)) for f in also):
            return str(real)
    except (ValueError, OSError):  # a NUL byte, a loop of links...
        return None
    return None


class SlidesApi:
    """Slides: list, register, and the tiles of the files the server opens itself."""

    def __init__(self, auth: RequestAuth, slides: SlideRegistry, images: SlideImages, settings: Settings,
                 archive: DicomWebSlides) -> None:
        self._auth = auth
        self._slides = slides
        self._images = images
        self._archive = archive
        self._settings = settings
        # The demo slide (collab serve --demo) is written by the server itself under --data.
        self._also_allowed = (settings.data / DEMO_FILENAME,)

    async def list_slides(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        records = await self._slides.list()
        return JSONResponse([public_slide(r) for r in records if principal.may_open(r["id"])])

    async def register_slide(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        if not principal.is_admin:
            raise Forbidden("only an admin may register slides")
        record = validate_slide(await read_json(request, self._settings.max_body_bytes))
        record = await self.complete_slide(record)
        existed = await self._slides.exists(record["id"])
        await self._slides.put(record)
        log.info("slide registered", extra={"slide": record["id"], "user": principal.user_id})
        return JSONResponse(public_slide(record), status_code=200 if existed else 201)

    async def complete_slide(self, record: dict[str, Any]) -> dict[str, Any]:
        """Fill width, height and mpp of a slide file or DICOMweb series the server opens itself."""
        if "dicomweb" in record:
            return await self._complete_dicomweb(record)
        if "path" not in record:
            return record
        path = confined_path(record["path"], self._settings.slide_directories, self._also_allowed)
        if path is None:
            log.warning("refused a slide path outside the slide directories", extra={"path": record["path"]})
            raise BadRequest(UNUSABLE_PATH)
        try:
            probed = await asyncio.to_thread(self._images.probe, path)
        except SlideImageError as exc:
            log.warning("refused a slide path: %s", exc, extra={"path": record["path"]})
            raise BadRequest(UNUSABLE_PATH) from None
        record["path"] = path
        for key in ("width", "height", "mpp"):
            record.setdefault(key, probed[key])
        if not record.get("mpp"):
            raise BadRequest("the slide file has no microns per pixel: give mpp")
        return record

    async def _complete_dicomweb(self, record: dict[str, Any]) -> dict[str, Any]:
        ref = parse_series_ref(record["dicomweb"], self._settings.dicomweb_archives)
        probed = await self._archive.probe(ref)  # ArchiveError: 502/504, not a slide: 400
        record["dicomweb"] = ref.as_record()
        for key in ("width", "height", "mpp"):
            record.setdefault(key, probed[key])
        if not record.get("mpp"):
            raise BadRequest("the series has no pixel spacing: give mpp")
        return record

    async def _slide_image(self, request: Request) -> str | SeriesRef:
        """The slide file, or the archive series, behind a tile request."""
        slide_id = request.path_params["slide_id"]
        self._auth.image_principal(request).require_slide(slide_id)
        record = await self._slides.get(slide_id)
        if isinstance(record.get("dicomweb"), dict):
            return SeriesRef(**record["dicomweb"])
        return await self._slide_file(request, record)

    async def _slide_file(self, request: Request, record: dict[str, Any]) -> str:
        slide_id = record["id"]
        if not record.get("path"):
            raise NotFound(f"slide {slide_id!r} has no image served by this server")
        # Again at each read: the file may have been replaced by a link to elsewhere since, or
        # registered before the slide directories were confined.
        path = confined_path(str(record["path"]), self._settings.slide_directories, self._also_allowed)
        if path is None:
            log.warning("slide file outside the slide directories", extra={"slide": slide_id})
            raise NotFound(f"slide {slide_id!r} has no image served by this server")
        return path

    async def slide_dzi(self, request: Request) -> Response:
        image = await self._slide_image(request)
        if isinstance(image, SeriesRef):
            xml = await self._archive.dzi(image)  # ArchiveError: 502/504
        else:
            xml = await self._images.dzi(image)  # SlideImageError: 4xx
        return Response(xml, media_type="application/xml")

    async def slide_tile(self, request: Request) -> Response:
        image = await self._slide_image(request)
        p = request.path_params
        if isinstance(image, SeriesRef):
            jpeg = await self._archive.tile(image, p["level"], p["col"], p["row"])  # ArchiveError: 502/504
        else:
            jpeg = await self._images.tile(image, p["level"], p["col"], p["row"])  # SlideImageError: 4xx
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    def routes(self) -> list[Route]:
        return [
            Route("/api/slides", self.list_slides, methods=["GET"]),
            Route("/api/slides", self.register_slide, methods=["POST"]),
            Route("/slides/{slide_id}.dzi", self.slide_dzi, methods=["GET"]),
            Route(
                "/slides/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg",
                self.slide_tile,
                methods=["GET"],
            ),
        ]

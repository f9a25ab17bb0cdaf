"""Slides read from a hospital archive over DICOMweb, served as the same Deep Zoom tiles as files.

A DICOM VL Whole Slide Microscopy series (QIDO-RS, series metadata, WADO-RS frames) is opened
with wsidicom, which reads the pyramid from the instances' total pixel matrices (TILED_FULL and
TILED_SPARSE) and decodes the frames in whatever transfer syntax the archive sends. `_WsiSlide`
presents it to OpenSlide's DeepZoomGenerator as an OpenSlide slide, so the Deep Zoom grid,
tile sizes and JPEG encoding are exactly those of slide files (collab/slides/tiles.py).

Archive credentials come from the server's settings (`dicomweb_auth`), matched on the base
URL, and never leave the server. Every archive request has a timeout; a refused or failed
connection is `ArchiveUnavailable` (502), a timeout `ArchiveTimeout` (504).
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from openslide import AbstractSlide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from urllib3.exceptions import ReadTimeoutError
from wsidicom import WsiDicom, WsiDicomWebClient
from wsidicom.config import Settings as WsiSettings
from wsidicom.errors import (
    WsiDicomError,
    WsiDicomMatchError,
    WsiDicomNoResolutionError,
    WsiDicomNotFoundError,
    WsiDicomNotSupportedError,
    WsiDicomOutOfBoundsError,
    WsiDicomStrictRequirementError,
)

from collab.errors import BadRequest, CollabError
from collab.slides.tiles import TileNotFound

__all__ = [
    "ArchiveError",
    "ArchiveTimeout",
    "ArchiveUnavailable",
    "DicomWebSlides",
    "SeriesRef",
    "archive_client",
    "check_archive_url",
    "parse_credentials",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# wsidicom's errors share no base class.
_NOT_A_SLIDE = (
    WsiDicomError, WsiDicomMatchError, WsiDicomNoResolutionError, WsiDicomNotFoundError,
    WsiDicomNotSupportedError, WsiDicomStrictRequirementError,
)


class ArchiveError(CollabError):
    """The archive answered with an error or something that is not a usable slide."""

    http_status = 502


class ArchiveUnavailable(ArchiveError):
    """The archive could not be reached."""

    http_status = 502


class ArchiveTimeout(ArchiveError):
    """The archive did not answer in time (`dicomweb_timeout`)."""

    http_status = 504


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """Where a slide lives: a DICOMweb base URL, a study and a series."""

    url: str
    study: str
    series: str

    def as_record(self) -> dict[str, str]:
        return {"url": self.url, "study": self.study, "series": self.series}


_UID_CHARS = set("0123456789.")


def check_uid(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not set(value) <= _UID_CHARS:
        raise BadRequest(f"{what} must be a DICOM UID (digits and dots, at most 64)")
    return value


def check_archive_url(value: object, allowed: tuple[str, ...] = ()) -> str:
    """A DICOMweb base URL (http or https, no trailing slash); only the configured archives
    when `allowed` names any, so an admin token cannot point the server anywhere."""
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise BadRequest("dicomweb.url must be an http(s) DICOMweb base URL")
    url = value.rstrip("/")
    if allowed and url not in {a.rstrip("/") for a in allowed}:
        raise BadRequest("dicomweb.url is not one of the archives this server is configured for")
    return url


def parse_series_ref(value: object, allowed: tuple[str, ...] = ()) -> SeriesRef:
    if not isinstance(value, Mapping):
        raise BadRequest('dicomweb must be {"url", "study", "series"}')
    return SeriesRef(
        check_archive_url(value.get("url"), allowed),
        check_uid(value.get("study"), "dicomweb.study"),
        check_uid(value.get("series"), "dicomweb.series"),
    )


# --- credentials and the HTTP client ---------------------------------------------------------


def parse_credentials(entries: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``URL=bearer:TOKEN`` or ``URL=basic:USER:PASSWORD`` per entry -> {url: (kind, ...)}."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        url, sep, secret = entry.partition("=")
        kind, _, rest = secret.partition(":")
        if not sep or kind not in ("bearer", "basic") or not rest or (kind == "basic" and ":" not in rest):
            # Never echo the entry: it holds a secret.
            raise ValueError("COLLAB_DICOMWEB_AUTH entries are URL=bearer:TOKEN or URL=basic:USER:PASSWORD")
        out[url.rstrip("/")] = (kind, *rest.split(":", 1))
    return out


def _session(credentials: tuple[str, ...] | None) -> requests.Session:
    """A requests session carrying the archive's credentials (never sent anywhere else)."""
    session = requests.Session()
    if credentials and credentials[0] == "bearer":
        session.headers["Authorization"] = f"Bearer {credentials[1]}"
    elif credentials and credentials[0] == "basic":
        session.auth = (credentials[1], credentials[2])
    return session


def archive_client(url: str, credentials: Mapping[str, tuple[str, ...]], timeout: float) -> DICOMwebClient:
    # Every request has a timeout (connect and each read): a stalled archive must not hold a
    # tile thread for ever.
    client = DICOMwebClient(url, session=_session(credentials.get(url.rstrip("/"))), timeout=timeout)
    # Its default retries every exception five times with exponential back-off (about 30 s
    # for a stalled archive): a tile request must fail within the timeout instead.
    client.set_http_retry_params(retry=False)
    return client


@contextmanager
def archive_errors(what: str) -> Iterator[None]:
    """Archive failures as ArchiveError subclasses with a message that names no secret."""
    try:
        yield
    except requests.Timeout as exc:
        raise ArchiveTimeout(f"the archive did not answer in time ({what})") from exc
    except requests.ConnectionError as exc:
        if _timed_out(exc):
            raise ArchiveTimeout(f"the archive did not answer in time ({what})") from exc
        raise ArchiveUnavailable(f"the archive cannot be reached ({what})") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ArchiveError(f"the archive answered HTTP {status} ({what})") from exc


def _timed_out(exc: BaseException) -> bool:
    """A read timeout while streaming a body reaches requests as a ConnectionError."""
    return any(isinstance(arg, ReadTimeoutError | TimeoutError) for arg in exc.args)


class _ArchiveWebClient(WsiDicomWebClient):
    """wsidicom's client, told that an archive refusing to transcode a frame with a 5xx means
    "not in this transfer syntax": Orthanc 1.10 answers 500 (Cannot transcode image) where the
    standard says 406, and wsidicom would give up on the series instead of trying the next."""

    def is_transfer_syntax_supported(self, study_uid: Any, series_uid: Any, instance_uid: Any,
                                     transfer_syntax: Any) -> bool:
        try:
            return super().is_transfer_syntax_supported(study_uid, series_uid, instance_uid, transfer_syntax)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code >= 500:
                log.info("the archive cannot send frames as %s (HTTP %s)", transfer_syntax,
                         exc.response.status_code, extra={"instance": str(instance_uid)})
                return False
            raise


# --- a DICOM pyramid as an OpenSlide slide ----------------------------------------------------


class _WsiSlide(AbstractSlide):
    """The subset of OpenSlide's slide interface DeepZoomGenerator uses, over a WsiDicom."""

    def __init__(self, wsi: WsiDicom) -> None:
        super().__init__()
        self._wsi = wsi
        self._levels = list(wsi.levels)
        base = self._levels[0].size
        self._dims = tuple((lv.size.width, lv.size.height) for lv in self._levels)
        self._downsamples = tuple(
            (base.width / w + base.height / h) / 2 for w, h in self._dims
        )
        self._properties = {"openslide.background-color": "ffffff"}

    @classmethod
    def detect_format(cls, filename: Any) -> str | None:
        return None

    def close(self) -> None:
        self._wsi.close()

    @property
    def level_count(self) -> int:
        return len(self._levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._dims

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for index, d in enumerate(self._downsamples):
            if d <= downsample * 1.0001:
                best = index
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGBA like OpenSlide: `location` in level-0 pixels, `size` in `level` pixels,
        transparent outside the image."""
        ds = self._downsamples[level]
        x, y = round(location[0] / ds), round(location[1] / ds)
        w, h = self._dims[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + size[0], w), min(y + size[1], h)
        out = Image.new("RGBA", size, (0, 0, 0, 0))
        if x1 > x0 and y1 > y0:
            region = self._wsi.read_region((x0, y0), self._levels[level].level, (x1 - x0, y1 - y0))
            out.paste(region.convert("RGBA"), (x0 - x, y0 - y))
        return out

    def set_cache(self, cache: Any) -> None:
        pass


class _Open(NamedTuple):
    slide: _WsiSlide
    deepzoom: DeepZoomGenerator
    mpp: float | None


class DicomWebSlides:
    """Open DICOMweb slides (bounded LRU, thread-safe) and their Deep Zoom tiles.

    Each open slide keeps wsidicom's frame caches, sized so all of them together stay under
    `cache_bytes`; reads run in this object's own threads."""

    def __init__(
        self,
        credentials: Mapping[str, tuple[str, ...]] | None = None,
        *,
        timeout: float = 10.0,
        max_open: int = 8,
        cache_bytes: int = 256 * 2**20,
        tile_size: int = 254,
        overlap: int = 1,
        quality: int = 80,
        workers: int | None = None,
    ) -> None:
        self._credentials = dict(credentials or {})
        self.timeout = timeout
        self.max_open, self.tile_size, self.overlap, self.quality = max_open, tile_size, overlap, quality
        per_slide = max(cache_bytes // max_open // 2, 2**20)
        self._wsi_settings = WsiSettings(decoded_frame_cache_size=per_slide, encoded_frame_cache_size=per_slide)
        self._lock = threading.Lock()
        self._open: OrderedDict[SeriesRef, _Open] = OrderedDict()
        self._opening: dict[SeriesRef, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(workers or min(16, 2 * (os.cpu_count() or 2)), thread_name_prefix="dicomweb")
        self._closed = False

    def client(self, url: str) -> DICOMwebClient:
        """A DICOMweb client for `url` with its configured credentials and the timeout."""
        return archive_client(url, self._credentials, self.timeout)

    async def probe(self, ref: SeriesRef) -> dict[str, Any]:
        """``{"width", "height", "mpp"}`` of the series' largest level (mpp from its pixel spacing)."""
        def probe() -> dict[str, Any]:
            entry = self._get(ref)
            width, height = entry.slide.dimensions
            return {"width": width, "height": height, "mpp": entry.mpp}
        return await self._run(probe)

    async def dzi(self, ref: SeriesRef) -> str:
        return await self._run(lambda: self._get(ref).deepzoom.get_dzi("jpeg"))

    async def tile(self, ref: SeriesRef, level: int, col: int, row: int) -> bytes:
        return await self._run(lambda: self._tile(ref, level, col, row))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._open = list(self._open.values()), OrderedDict()
        for entry in opened:
            entry.slide.close()

    # --- in worker threads ----------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("DicomWebSlides is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _tile(self, ref: SeriesRef, level: int, col: int, row: int) -> bytes:
        dz = self._get(ref).deepzoom
        if not 0 <= level < dz.level_count:
            raise TileNotFound(f"no level {level}: the pyramid has levels 0-{dz.level_count - 1}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFound(f"no tile {col}_{row} at level {level}: it is {cols}x{rows} tiles")
        with archive_errors("reading frames"):
            try:
                image = dz.get_tile(level, (col, row))
            except (*_NOT_A_SLIDE, WsiDicomOutOfBoundsError) as exc:
                raise ArchiveError(f"the archive's frames cannot be read: {exc}") from exc
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=self.quality)
        return buf.getvalue()

    def _get(self, ref: SeriesRef) -> _Open:
        """The open slide of `ref`, opened once however many threads ask at the same time."""
        with self._lock:
            entry = self._open.get(ref)
            if entry is not None:
                self._open.move_to_end(ref)
                return entry
            opening = self._opening.setdefault(ref, threading.Lock())
        with opening:
            with self._lock:
                entry = self._open.get(ref)
            if entry is not None:
                return entry
            try:
                entry = self._load(ref)
            finally:
                with self._lock:
                    self._opening.pop(ref, None)
            with self._lock:
                self._open[ref] = entry
                while len(self._open) > self.max_open:
                    self._open.popitem(last=False)  # closed with its last reference
            return entry

    def _load(self, ref: SeriesRef) -> _Open:
        client = _ArchiveWebClient(self.client(ref.url))
        with archive_errors("opening the series"):
            try:
                wsi = WsiDicom.open_web(client, ref.study, ref.series, settings=self._wsi_settings)
            except _NOT_A_SLIDE as exc:
                raise BadRequest(f"the series is not a whole-slide image wsidicom can read: {exc}") from exc
        spacing = wsi.levels.base_level.pixel_spacing  # mm, (column spacing, row spacing)
        mpp = float(f"{float(spacing.width) * 1000:.6g}") if spacing else None
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            mpp = None
        slide = _WsiSlide(wsi)
        log.info("opened a DICOMweb slide", extra={"study": ref.study, "series": ref.series,
                                                    "levels": slide.level_count})
        return _Open(slide, DeepZoomGenerator(slide, self.tile_size, self.overlap, limit_bounds=False), mpp)

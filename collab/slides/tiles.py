"""Deep Zoom (DZI) descriptors and JPEG tiles for slide files, read with OpenSlide.

`SlideImages` keeps a bounded LRU of open slides and runs every OpenSlide call and JPEG
encode in its own worker threads, so the event loop never waits on the disk or the codec.
Deep Zoom coordinates are the slide's level-0 pixels (``limit_bounds`` is off), the frame
annotations are stored in. The routes (``/slides/{id}.dzi`` and its tiles, with Bearer or
``?token=``) are in collab/slides/api.py; `SlideImageError` subclasses carry their HTTP status
(TileNotFound 404, SlideUnreadable 400), and tests/test_tiles.py drives them on a real server.

At registration (``POST /api/slides`` with a ``path``), ``await asyncio.to_thread(
images.probe, path)`` gives width, height and mpp, and raises `SlideUnreadable` (400) for a
file OpenSlide cannot open.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import openslide
from openslide.deepzoom import DeepZoomGenerator

from collab.errors import CollabError

__all__ = ["SlideImageError", "SlideImages", "SlideUnreadable", "TileNotFound"]

StrPath = str | os.PathLike[str]


class SlideImageError(CollabError):
    """Base of the errors below; `http_status` is what the HTTP layer answers."""


class SlideUnreadable(SlideImageError):
    """The file is missing or OpenSlide cannot read it."""

    http_status = 400


class TileNotFound(SlideImageError):
    """The level, column or row is outside the slide's Deep Zoom pyramid."""

    http_status = 404


class _Open(NamedTuple):
    slide: openslide.OpenSlide
    deepzoom: DeepZoomGenerator
    stamp: tuple[int, int]  # (mtime_ns, size): a replaced file is reopened


class SlideImages:
    """Open slides (bounded LRU, thread-safe) and the Deep Zoom tiles made from them."""

    def __init__(
        self,
        *,
        max_open: int = 16,
        tile_size: int = 254,
        overlap: int = 1,
        quality: int = 80,
        workers: int | None = None,
        cache_bytes: int = 128 * 2**20,
    ) -> None:
        self.max_open, self.tile_size, self.overlap, self.quality = (
            max_open, tile_size, overlap, quality,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._opening: dict[str, threading.Lock] = {}
        # One decoded-tile cache shared by all open slides bounds memory however many
        # slides are open (by default each handle would get its own).
        self._cache = openslide.OpenSlideCache(cache_bytes)
        # Our own threads rather than asyncio.to_thread's shared pool: a burst of tile
        # requests (a viewer opening a slide asks for dozens) must not starve other work.
        self._pool = ThreadPoolExecutor(
            workers or min(16, 2 * (os.cpu_count() or 2)), thread_name_prefix="tiles"
        )
        self._closed = False

    async def dzi(self, path: StrPath) -> str:
        """The Deep Zoom descriptor (XML) of the slide at `path`: JPEG tiles, 254 + 1."""
        return await self._run(lambda: self._get(path).deepzoom.get_dzi("jpeg"))

    async def tile(self, path: StrPath, level: int, col: int, row: int) -> bytes:
        """The JPEG bytes of Deep Zoom tile `col`, `row` at `level` (0 = 1x1 pixel)."""
        return await self._run(lambda: self._tile(path, level, col, row))

    def probe(self, path: StrPath) -> dict:
        """``{"width", "height", "mpp"}`` of the slide at `path` (level 0; mpp in µm per
        pixel, None if the file does not say). Blocking: call it in a thread."""
        slide = self._get(path).slide
        width, height = slide.dimensions
        return {"width": width, "height": height, "mpp": _mpp(slide)}

    def close(self) -> None:
        """Wait for the reads in flight, then close every slide. Idempotent."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._open = list(self._open.values()), OrderedDict()
        for entry in opened:
            entry.slide.close()

    # --- in worker threads ----------------------------------------------------------------

    async def _run(self, fn):
        if self._closed:
            raise RuntimeError("SlideImages is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _tile(self, path: StrPath, level: int, col: int, row: int) -> bytes:
        entry = self._get(path)
        dz = entry.deepzoom
        if not 0 <= level < dz.level_count:
            raise TileNotFound(f"no level {level}: the pyramid has levels 0-{dz.level_count - 1}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFound(f"no tile {col}_{row} at level {level}: it is {cols}x{rows} tiles")
        try:
            image = dz.get_tile(level, (col, row))
        except openslide.OpenSlideError as e:
            # OpenSlide handles are unusable after an error: drop it, a retry reopens.
            self._forget(path, entry)
            raise SlideUnreadable(f"cannot read {os.fspath(path)}: {e}") from e
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=self.quality, icc_profile=image.info.get("icc_profile"))
        return buf.getvalue()

    def _get(self, path: StrPath) -> _Open:
        """The open slide at `path`, from the cache or opened now (once, however many
        threads ask at the same time)."""
        key = os.path.realpath(path)
        try:
            st = os.stat(key)
        except OSError as e:
            raise SlideUnreadable(f"cannot open slide {os.fspath(path)}: {e.strerror}") from e
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            entry = self._hit(key, stamp)
            if entry:
                return entry
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                entry = self._hit(key, stamp)
            if entry:
                return entry
            try:
                entry = self._load(key, stamp)
            except BaseException:
                with self._lock:
                    self._opening.pop(key, None)
                raise
            with self._lock:
                self._opening.pop(key, None)  # with the insert, so no one opens it twice
                self._open[key] = entry
                self._open.move_to_end(key)
                while len(self._open) > self.max_open:
                    # Not closed here: a thread may be reading it. The handle closes when
                    # the last reference goes.
                    self._open.popitem(last=False)
            return entry

    def _hit(self, key: str, stamp: tuple[int, int]) -> _Open | None:
        entry = self._open.get(key)
        if entry is None or entry.stamp != stamp:
            return None
        self._open.move_to_end(key)
        return entry

    def _load(self, key: str, stamp: tuple[int, int]) -> _Open:
        try:
            slide = openslide.OpenSlide(key)
        except openslide.OpenSlideUnsupportedFormatError as e:
            raise SlideUnreadable(f"not a slide format OpenSlide reads: {key}") from e
        except (openslide.OpenSlideError, OSError) as e:
            raise SlideUnreadable(f"cannot open slide {key}: {e}") from e
        slide.set_cache(self._cache)
        dz = DeepZoomGenerator(slide, self.tile_size, self.overlap, limit_bounds=False)
        return _Open(slide, dz, stamp)

    def _forget(self, path: StrPath, entry: _Open) -> None:
        key = os.path.realpath(path)
        with self._lock:
            if self._open.get(key) is entry:
                del self._open[key]


def _mpp(slide: openslide.OpenSlide) -> float | None:
    """Microns per pixel, to 6 significant digits: TIFF resolutions reach OpenSlide as
    32-bit floats, so 0.2527 comes back as 0.25270000000000004."""
    try:
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    except (KeyError, ValueError):
        return None
    return float(f"{mpp:.6g}") if math.isfinite(mpp) and mpp > 0 else None

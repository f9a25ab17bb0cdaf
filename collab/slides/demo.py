"""The demo slide: a synthetic H&E-like whole-slide image that OpenSlide opens.

`ensure_demo_slide(data_dir)` writes ``demo-tissue.tiff`` once (a pyramidal, tiled,
JPEG-compressed TIFF read by OpenSlide's generic-tiff driver, with the pixel size in the
resolution tags so OpenSlide reports ``openslide.mpp-x``) and reuses it afterwards.

How it is made, and why it is fast: the tissue is painted with numpy at a quarter of full
resolution (stain concentrations mapped to colour with the Beer-Lambert law, as real
hematoxylin and eosin absorb light). That quarter-resolution image *is* pyramid level 1;
the smaller levels are box-downsampled from it, and every full-resolution tile is that
image's patch upsampled 4x with a periodic fine-grain texture so that zooming in still looks
like tissue. Glass-only tiles are one shared pre-encoded JPEG. Tiles are JPEG-encoded by
Pillow (which releases the GIL, so two threads use two cores) and streamed to the file by a
small TIFF writer below: tifffile cannot store pre-encoded JPEG tiles without the optional
imagecodecs package, and this keeps the dependency list as it is.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEMO_ID = "demo-tissue"
DEMO_TITLE = "Demo tissue (synthetic H&E)"
DEMO_FILENAME = "demo-tissue.tiff"
DEFAULT_WIDTH = 20_480
DEFAULT_HEIGHT = 15_360
DEFAULT_MPP = 0.2527  # µm per pixel, a typical 40x scanner

TILE = 256  # TIFF tile edge; a multiple of 16 as JPEG 4:2:0 needs
SCALE = 4  # the painted image is 1/SCALE of level 0, and each level is 1/4 of the previous
JPEG_QUALITY = 80

# Optical density per unit of stain, [R, G, B]. Hematoxylin close to Ruifrok & Johnston's
# vector; eosin tuned so that stroma comes out the usual pink (about 232, 158, 196).
_HEMATOXYLIN = np.array([0.62, 0.72, 0.31], np.float32)
_EOSIN = np.array([0.17, 0.87, 0.48], np.float32)
_GLASS = np.array([0.03, 0.04, 0.03], np.float32)  # slightly off-white background


@dataclass(frozen=True)
class DemoSlide:
    """The demo slide as the server registers it."""

    id: str
    title: str
    width: int
    height: int
    mpp: float
    path: Path


def ensure_demo_slide(
    data_dir: Path,
    *,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    mpp: float = DEFAULT_MPP,
    seed: int = 7,
    report: Callable[[str], None] | None = None,
) -> DemoSlide:
    """Return the demo slide under `data_dir`, generating the file only if needed.

    An existing file is reused when OpenSlide opens it as a pyramid of the requested size;
    otherwise it is (re)written to a temporary file and renamed into place, so a crash or a
    concurrent start never leaves a half-written slide behind. Takes a few seconds at the
    default size (over ten on a slow machine): call it off the event loop. `report` gets one
    line before generating and one after, with the time taken, so a first start is not silent.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEMO_FILENAME
    if not _usable(path, width, height):
        say = report or (lambda line: None)
        say(f"generating the demo slide ({width} x {height} px, once) in {path} ...")
        log.info("generating the demo slide", extra={"path": str(path), "width": width, "height": height})
        started = time.monotonic()
        fd, tmp = tempfile.mkstemp(prefix=f".{DEMO_FILENAME}.", suffix=".tmp", dir=data_dir)
        os.close(fd)
        try:
            write_demo_tiff(Path(tmp), width, height, mpp=mpp, seed=seed)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if not _usable(path, width, height):
            raise RuntimeError(f"OpenSlide cannot read the demo slide just written: {path}")
        seconds = time.monotonic() - started
        say(f"demo slide generated in {seconds:.1f} s")
        log.info("demo slide generated in %.1f s", seconds, extra={"path": str(path)})
    return DemoSlide(DEMO_ID, DEMO_TITLE, width, height, mpp, path)


def _usable(path: Path, width: int, height: int) -> bool:
    """Whether OpenSlide opens `path` as a pyramid of this size."""
    import openslide  # here, not at the top: only --demo and the tests need it

    if not path.is_file():
        return False
    try:
        with openslide.OpenSlide(path) as slide:
            return slide.dimensions == (width, height) and slide.level_count > 1
    except (openslide.OpenSlideError, OSError):
        return False


def write_demo_tiff(
    path: Path, width: int, height: int, *, mpp: float = DEFAULT_MPP, seed: int = 7
) -> None:
    """Paint a synthetic tissue and write it to `path` as a pyramidal tiled TIFF."""
    if width < TILE or height < TILE:
        raise ValueError(f"the demo slide needs at least {TILE}x{TILE} pixels")
    # Painted to cover whole level-0 tiles, so edge tiles upsample real pixels too.
    step = TILE // SCALE
    rng = np.random.default_rng(seed)
    base = paint_tissue(-(-width // TILE) * step, -(-height // TILE) * step, rng)
    with open(path, "wb") as f:
        writer = _TiffWriter(f, width, mpp)
        description = f"collab synthetic H&E demo slide, mpp={mpp}"
        writer.write_level(width, height, _level0_tiles(base, width, height, rng), description)
        level = base.crop((0, 0, -(-width // SCALE), -(-height // SCALE)))
        while True:  # down to a level that fits in one tile
            writer.write_level(*level.size, _plain_tiles(level))
            if max(level.size) <= TILE:
                break
            level = level.reduce(SCALE)


# --- painting -----------------------------------------------------------------------------


class _Noise:
    """Smooth noise, zero mean and about unit variance, varying over `cell` pixels (`cell_x`
    across, if given: stretched noise looks like collagen fibres). Defined for the whole
    image by one random grid but evaluated band by band, so bands join seamlessly."""

    def __init__(self, rng, h: int, w: int, cell: float, cell_x: float | None = None) -> None:
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / (cell_x or cell)) + 2)
        self.grid = Image.fromarray(rng.standard_normal((gh, gw)).astype(np.float32), "F")
        self.h, self.w = h, w

    def band(self, y0: int, y1: int) -> np.ndarray:
        gw, gh = self.grid.size
        box = (0, y0 * gh / self.h, gw, y1 * gh / self.h)
        out = self.grid.resize((self.w, y1 - y0), Image.Resampling.BICUBIC, box=box)
        return np.asarray(out, np.float32)


def paint_tissue(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Paint a w x h RGB image of H&E-like tissue: islands of stroma, glands, nuclei."""
    # Sizes below are in painted pixels, about 1 µm each (4 level-0 pixels at 40x), and
    # do not depend on the slide size: a small test slide looks like a crop of a big one.
    field = _islands(rng, w, h)
    gland, lumen, epi = _glands(rng, field, w, h)
    nuclei = _nuclei(rng, field, gland, epi)
    ragged = _Noise(rng, h, w, 4)
    direction = _Noise(rng, h, w, 250)
    along_x, along_y = _Noise(rng, h, w, 5, 45), _Noise(rng, h, w, 45, 5)
    fibres = [_Noise(rng, h, w, 20 / 2**i) for i in range(3)]
    rgb = np.empty((h, w, 3), np.uint8)

    def band(y0: int) -> None:
        y1 = min(h, y0 + 256)
        tissue = np.clip((field.band(y0, y1) + 0.04 * ragged.band(y0, y1)) * 25 + 0.5, 0, 1)
        # Collagen: bundles of fibres whose direction drifts slowly across the tissue.
        across = 0.5 + 0.5 * np.tanh(3 * direction.band(y0, y1))
        streak = across * along_x.band(y0, y1) + (1 - across) * along_y.band(y0, y1)
        fib = sum(n.band(y0, y1) / 2**i for i, n in enumerate(fibres))
        eosin = tissue * (0.42 + 0.1 * fib + 0.14 * np.tanh(2 * streak))
        # Clefts: pale retraction spaces between bundles, where the noise crosses zero.
        eosin *= np.clip(np.abs(streak + 0.3 * fib) * 3.0, 0.45, 1.0)
        g, lu = gland[y0:y1] / np.float32(255), lumen[y0:y1] / np.float32(255)
        eosin += g * (0.36 * (1 - lu) + 0.07 * lu - eosin)
        hema = tissue * 0.06 + g * (1 - lu) * 0.2 + nuclei[y0:y1] / np.float32(100)
        # Beer-Lambert: each stain absorbs in proportion to its concentration.
        od = hema[:, :, None] * _HEMATOXYLIN + eosin[:, :, None] * _EOSIN + _GLASS
        rgb[y0:y1] = np.exp(-od) * 255

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:  # numpy releases the GIL
        list(pool.map(band, range(0, h, 256)))
    return Image.fromarray(rgb, "RGB")


class _Field:
    """A coarse (1/8 scale) signed field, > 0 inside tissue, upsampled band by band."""

    def __init__(self, coarse: np.ndarray, h: int, w: int) -> None:
        self.coarse, self.h, self.w = coarse, h, w
        self.image = Image.fromarray(coarse, "F")

    def band(self, y0: int, y1: int) -> np.ndarray:
        ch, cw = self.coarse.shape
        box = (0, y0 * ch / self.h, cw, y1 * ch / self.h)
        out = self.image.resize((self.w, y1 - y0), Image.Resampling.BILINEAR, box=box)
        return np.asarray(out, np.float32)

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        ch, cw = self.coarse.shape
        return self.coarse[
            np.minimum(ys * ch // self.h, ch - 1), np.minimum(xs * cw // self.w, cw - 1)
        ]


def _islands(rng, w: int, h: int) -> _Field:
    """Tissue islands: a big piece, a few medium ones and fragments, as warped ellipses."""
    cw, ch = -(-w // 8), -(-h // 8)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    field = np.full((ch, cw), -1.0, np.float32)
    for cx, cy, rx, ry in (
        (0.36, 0.45, 0.27, 0.33),
        (0.76, 0.3, 0.15, 0.2),
        (0.74, 0.76, 0.17, 0.15),
        (0.12, 0.85, 0.07, 0.06),
        (0.93, 0.55, 0.04, 0.05),
        (0.5, 0.9, 0.05, 0.04),
    ):
        cx, cy = (cx + rng.uniform(-0.03, 0.03)) * cw, (cy + rng.uniform(-0.03, 0.03)) * ch
        t = rng.uniform(0, math.pi)
        u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / (rx * cw)
        v = ((cx - xx) * math.sin(t) + (yy - cy) * math.cos(t)) / (ry * ch)
        field = np.maximum(field, 1.0 - np.sqrt(u * u + v * v))
    for i in range(3):  # ragged outlines: warp by fractal noise
        field += 0.35 / 2**i * _Noise(rng, ch, cw, max(cw, ch) / 16 / 2**i).band(0, ch)
    return _Field(field, h, w)


def _glands(rng, field: _Field, w: int, h: int):
    """Glands well inside the tissue: (gland mask, lumen mask, epithelial nucleus seeds),
    the masks as uint8 (255 = inside) to keep memory small."""
    gland = np.zeros((h, w), np.uint8)
    lumen = np.zeros((h, w), np.uint8)
    seeds: list[tuple[np.ndarray, np.ndarray]] = []
    placed: list[tuple[float, float, float]] = []
    area = w * h / (5120 * 3840)  # 1.0 at the default size
    for _ in range(int(900 * area)):
        r, elong = rng.uniform(16, 48), rng.uniform(1.0, 1.8)
        reach = r * elong * 1.2  # the farthest the wobbly, elongated outline goes
        if 2 * reach >= min(w, h):
            continue
        cx, cy = rng.uniform(reach, w - reach), rng.uniform(reach, h - reach)
        if field.at(np.array([int(cy)]), np.array([int(cx)]))[0] < 0.12:
            continue
        if any((cx - x) ** 2 + (cy - y) ** 2 < (reach + q + 6) ** 2 for x, y, q in placed):
            continue
        placed.append((cx, cy, reach))
        seeds.append(_draw_gland(rng, gland, lumen, cx, cy, r, elong))
        if len(placed) >= 260 * area:
            break
    ys = np.concatenate([s[0] for s in seeds]) if seeds else np.zeros(0, np.int64)
    xs = np.concatenate([s[1] for s in seeds]) if seeds else np.zeros(0, np.int64)
    return gland, lumen, (ys, xs)


def _draw_gland(rng, gland, lumen, cx, cy, r, elong):
    """One gland: a wobbly ring of epithelium round a pale lumen. Returns nucleus seeds."""
    h, w = gland.shape
    reach = r * elong * 1.2 + 2
    x0, x1 = int(max(0, cx - reach)), int(min(w, cx + reach))
    y0, y1 = int(max(0, cy - reach)), int(min(h, cy + reach))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    t, k = rng.uniform(0, math.pi), int(rng.integers(2, 6))
    u = ((xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)) / elong
    v = (cx - xx) * math.sin(t) + (yy - cy) * math.cos(t)
    ang = np.arctan2(v, u)
    p1, p2 = rng.uniform(0, 6.3, 2)
    wobble = 1 + 0.12 * np.sin(k * ang + p1) + 0.06 * np.sin((k + 3) * ang + p2)
    d = np.sqrt(u * u + v * v) / (r * wobble)
    ring = np.clip((1.0 - d) * r / 1.5, 0, 1) * 255
    hole = np.clip((0.62 - d) * r / 1.5, 0, 1) * 255
    np.maximum(gland[y0:y1, x0:x1], ring.astype(np.uint8), out=gland[y0:y1, x0:x1])
    np.maximum(lumen[y0:y1, x0:x1], hole.astype(np.uint8), out=lumen[y0:y1, x0:x1])
    # Nuclei evenly spaced round the ring near its base (ignoring the gentle wobble).
    n = int(math.pi * r * (1 + elong) / 6.5)
    a = np.linspace(0, 2 * math.pi, n, endpoint=False) + rng.uniform(0, 0.3, n)
    rr = r * rng.uniform(0.78, 0.9, n)
    uu, vv = rr * np.cos(a) * elong, rr * np.sin(a)
    return (
        (cy + uu * math.sin(t) + vv * math.cos(t)).astype(np.int64),
        (cx + uu * math.cos(t) - vv * math.sin(t)).astype(np.int64),
    )


def _nuclei(rng, field: _Field, gland: np.ndarray, epi) -> np.ndarray:
    """Hematoxylin of nuclei (uint8, 100 = 1.0): sparse spindly ones in the stroma, dense
    lymphocyte foci, and the epithelial ones at the `epi` seeds."""
    h, w = gland.shape
    out = np.zeros((h, w), np.uint8)

    def in_stroma(ys, xs):
        return (field.at(ys, xs) > 0.03) & (gland[ys, xs] == 0)

    n = int(h * w / 650)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    keep = in_stroma(ys, xs)
    n_foci = int(40 * h * w / (5120 * 3840)) + 1
    foci = [(rng.uniform(0, h), rng.uniform(0, w), rng.uniform(25, 70)) for _ in range(n_foci)]
    counts = [int(0.35 * s * s) for _, _, s in foci]
    ly = np.concatenate([rng.normal(cy, s, c) for (cy, _, s), c in zip(foci, counts, strict=True)])
    lx = np.concatenate([rng.normal(cx, s, c) for (_, cx, s), c in zip(foci, counts, strict=True)])
    ly = np.clip(ly, 0, h - 1).astype(np.int64)
    lx = np.clip(lx, 0, w - 1).astype(np.int64)
    lkeep = in_stroma(ly, lx)

    for (sy, sx), radius, stretch, dark in (
        ((ys[keep], xs[keep]), 3.2, 2.2, 0.95),  # fibroblasts: long, pale
        (epi, 3.2, 1.25, 1.0),  # epithelium: plump ovals
        ((ly[lkeep], lx[lkeep]), 2.5, 1.0, 1.35),  # lymphocytes: small, round, dark
    ):
        variant = rng.integers(0, 6, len(sy))
        for i in range(6):
            stamp = _nucleus_stamp(radius, stretch, i * math.pi / 6) * dark * 100
            sel = variant == i
            _stamp(out, sy[sel], sx[sel], stamp.astype(np.uint8))
    return out


def _nucleus_stamp(radius: float, stretch: float, angle: float) -> np.ndarray:
    """A soft-edged elliptical nucleus, darker at the rim like real chromatin."""
    half = math.ceil(radius * stretch) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / (radius * stretch)
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) / radius
    d = np.sqrt(u * u + v * v)
    return np.clip((1.0 - d) * 2.5, 0, 1) * (0.8 + 0.3 * d)


def _stamp(out: np.ndarray, ys: np.ndarray, xs: np.ndarray, stamp: np.ndarray) -> None:
    """Max-composite `stamp` centred at every (ys, xs), vectorised over the points."""
    h, w = out.shape
    half = stamp.shape[0] // 2
    for dy, dx in zip(*np.nonzero(stamp), strict=True):
        y, x = ys + (dy - half), xs + (dx - half)
        ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        y, x = y[ok], x[ok]
        out[y, x] = np.maximum(out[y, x], stamp[dy, dx])


# --- tiles --------------------------------------------------------------------------------


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=2)  # 4:2:0, as the TIFF says
    return buf.getvalue()


def _plain_tiles(img: Image.Image) -> Iterator[bytes]:
    """Tiles of `img` row by row, the edge ones padded with white to a full tile."""
    w, h = img.size
    padded = Image.new("RGB", (-(-w // TILE) * TILE, -(-h // TILE) * TILE), (255, 255, 255))
    padded.paste(img)
    boxes = [(x, y, x + TILE, y + TILE) for y in range(0, h, TILE) for x in range(0, w, TILE)]
    yield from _parallel(lambda box: _jpeg(padded.crop(box)), boxes)


def _level0_tiles(base: Image.Image, width: int, height: int, rng) -> Iterator[bytes]:
    """Full-resolution tiles: the painted image upsampled, with fine grain added."""
    grain = _grain_texture(rng)
    period = grain.shape[0] // 2
    pixels = np.asarray(base)
    step = TILE // SCALE
    glass = _jpeg(Image.new("RGB", (TILE, TILE), tuple(int(v) for v in 255 * np.exp(-_GLASS))))

    def tile(pos: tuple[int, int]) -> bytes:
        x, y = pos
        bx, by = x // SCALE, y // SCALE
        patch = pixels[max(0, by - 1) : by + step + 1, max(0, bx - 1) : bx + step + 1]
        if patch.min() >= 240:  # bare glass, like most of a real slide: one shared tile
            return glass
        # Bilinear from the whole image (not a cropped patch), so tiles join seamlessly.
        up = base.resize(
            (TILE, TILE), Image.Resampling.BILINEAR, box=(bx, by, bx + step, by + step)
        )
        g = grain[y % period : y % period + TILE, x % period : x % period + TILE, None]
        # Scale the darkness (roughly optical density) by the grain: glass stays clean and
        # darker structures, nuclei above all, get proportionally more texture.
        dark = (255 - np.asarray(up, np.uint16)) * g >> 7
        return _jpeg(Image.fromarray((255 - np.minimum(dark, 255)).astype(np.uint8), "RGB"))

    yield from _parallel(
        tile, [(x, y) for y in range(0, height, TILE) for x in range(0, width, TILE)]
    )


def _grain_texture(rng: np.random.Generator) -> np.ndarray:
    """A periodic 1024 px texture around 1.0 (as uint16, 128 = 1.0), stored twice in each
    direction so any 256 px window at an offset modulo 1024 is one slice (seamless)."""
    n = 1024
    spec = np.fft.rfft2(rng.standard_normal((n, n)))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f2 = fy * fy + fx * fx
    fine = np.fft.irfft2(spec * np.exp(-f2 / (2 * 0.12**2)), s=(n, n))  # chromatin-ish grain
    coarse = np.fft.irfft2(spec * np.exp(-f2 / (2 * 0.02**2)), s=(n, n))  # blotches
    tex = 0.12 * fine / fine.std() + 0.07 * coarse / coarse.std()
    tex = np.clip(128 * (1 + tex), 64, 200).astype(np.uint16)
    return np.tile(tex, (2, 2))


def _parallel(fn: Callable, items: list, window: int = 64) -> Iterator[bytes]:
    """Map `fn` over `items` on all cores, in order, with a bounded look-ahead."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# --- a minimal streaming TIFF writer ------------------------------------------------------


class _TiffWriter:
    """Writes a classic little-endian TIFF, one tiled JPEG (YCbCr 4:2:0) directory per
    pyramid level, largest first: what OpenSlide's generic-tiff driver reads (SubIFDs it
    would not). Tiles are streamed; each directory follows its level's tiles."""

    def __init__(self, f: BinaryIO, width: int, mpp: float) -> None:
        self.f, self.width, self.mpp = f, width, mpp
        f.write(b"II*\x00\x00\x00\x00\x00")
        self.link = 4  # where the offset of the next directory goes

    def _align(self) -> int:
        if self.f.tell() % 2:  # TIFF wants word-aligned offsets
            self.f.write(b"\x00")
        return self.f.tell()

    def write_level(self, w: int, h: int, tiles: Iterator[bytes], description: str = "") -> None:
        offsets, counts = [], []
        for data in tiles:
            offsets.append(self._align())
            counts.append(len(data))
            self.f.write(data)
        if self.f.tell() >= 2**32:
            raise ValueError("demo slide too large for a classic TIFF")
        if len(offsets) != -(-w // TILE) * -(-h // TILE):
            raise RuntimeError("tile count does not match the level size")
        # Pixels per centimetre at this level. (libtiff hands it to OpenSlide as a float,
        # so openslide.mpp-x reads back as 0.25270000000000004 for 0.2527.)
        res = _rational(Fraction(10_000) / (Fraction(str(self.mpp)) * Fraction(self.width, w)))
        tags = [
            (254, 4, [0 if w == self.width else 1]),  # NewSubfileType: 1 = reduced image
            (256, 4, [w]),
            (257, 4, [h]),
            (258, 3, [8, 8, 8]),  # BitsPerSample
            (259, 3, [7]),  # Compression: JPEG
            (262, 3, [6]),  # Photometric: YCbCr, which is what the JPEG tiles hold
            (277, 3, [3]),  # SamplesPerPixel
            (282, 5, res),  # XResolution
            (283, 5, res),  # YResolution
            (284, 3, [1]),  # PlanarConfiguration: chunky
            (296, 3, [3]),  # ResolutionUnit: centimetre
            (305, 2, b"collab\x00"),  # Software
            (322, 4, [TILE]),
            (323, 4, [TILE]),
            (324, 4, offsets),
            (325, 4, counts),
            (530, 3, [2, 2]),  # YCbCrSubSampling 4:2:0
            (532, 5, [0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1]),  # ReferenceBlackWhite
        ]
        if description:
            tags.append((270, 2, description.encode("ascii") + b"\x00"))
        self._write_ifd(sorted(tags))

    def _write_ifd(self, tags: list[tuple[int, int, Any]]) -> None:
        ifd = self._align()
        after = ifd + 2 + 12 * len(tags) + 4  # values over 4 bytes go after the directory
        entries, extra = [], b""
        for code, typ, values in tags:
            count = len(values) // 2 if typ == 5 else len(values)
            raw = (
                values
                if typ == 2
                else struct.pack(f"<{len(values)}{'H' if typ == 3 else 'I'}", *values)
            )
            if len(raw) <= 4:
                entries.append(struct.pack("<HHI", code, typ, count) + raw.ljust(4, b"\x00"))
            else:
                entries.append(struct.pack("<HHII", code, typ, count, after + len(extra)))
                extra += raw + b"\x00" * (len(raw) % 2)
        self.f.write(struct.pack("<H", len(tags)) + b"".join(entries) + b"\x00" * 4 + extra)
        end = self.f.tell()
        self.f.seek(self.link)  # chain this directory to the previous one
        self.f.write(struct.pack("<I", ifd))
        self.f.seek(end)
        self.link = ifd + 2 + 12 * len(tags)


def _rational(x: Fraction) -> list[int]:
    """A TIFF RATIONAL (two 32-bit LONGs) as close to `x` as fits."""
    x = x.limit_denominator(2**32 - 1)
    while x.numerator >= 2**32:
        x = x.limit_denominator(max(1, x.denominator // 2))
    return [x.numerator, x.denominator]

"""Animated PNG frames composed as the APNG specification says, from the file's own chunks.

Each frame control (fcTL) places a sub-image (its IDAT or fdAT data, decoded as a PNG of its own size with the
file's palette and transparency) at an offset on the canvas: ``blend_op`` SOURCE replaces the region, OVER
composes it over what is there (alpha compositing: an opaque pixel over anything is opaque); after the frame is
shown, ``dispose_op`` NONE leaves the canvas, BACKGROUND clears the region to transparent black, PREVIOUS puts the
region back as it was before the frame (on the first frame: as BACKGROUND). An IDAT image that comes before any
fcTL is the still picture shown by viewers without animation (the "default image"), returned first and not part
of the animation. A frame that leaves the canvas, an unknown operation, sequence numbers out of order or a frame
count other than acTL's is refused as damage, by name.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .image_damage import PNG_SIGNATURE, PNGEnded, png_chunk_walk

DISPOSE_NONE, DISPOSE_BACKGROUND, DISPOSE_PREVIOUS = 0, 1, 2
BLEND_SOURCE, BLEND_OVER = 0, 1
DEFAULT_DELAY_DEN = 100  # a delay denominator of 0 means 1/100 s
GRAY_COLOR_TYPES = (0, 4)  # gray, gray + alpha
FRAME_CHUNKS = (b'PLTE', b'tRNS')  # copied into each frame's own PNG (what its pixels need to be decoded)
FCTL = struct.Struct('>IIIIIHHBB')  # sequence, width, height, x, y, delay num, delay den, dispose, blend


class APNGError(ValueError):
    """An animated PNG whose frames cannot be composed: what is wrong, by name."""


@dataclass
class Frame:
    """One frame control and its data (IDAT or fdAT bodies, sequence numbers removed)."""
    width: int
    height: int
    x: int
    y: int
    duration: Optional[float]  # ms; None for the default image
    dispose: int
    blend: int
    data: List[bytes] = field(default_factory=list)


@dataclass
class Composed:
    """A composed frame: ``color`` (H, W, 3) RGB or (H, W) gray, ``alpha`` (H, W), same integer type; duration
    in ms (None: the default image)."""
    color: np.ndarray
    alpha: np.ndarray
    duration: Optional[float]


def _chunks(data: bytes) -> Iterator[Tuple[bytes, bytes]]:
    """``(type, body)`` of the file's chunks (:func:`~asid_arch.image_damage.png_chunk_walk`); data that end inside
    a chunk are an :class:`APNGError` (between two chunks, the frame count names what is missing)."""
    try:
        for chunk in png_chunk_walk(data):
            yield chunk.kind, chunk.body
    except PNGEnded as end:
        if end.kind is not None:
            raise APNGError(f'truncated PNG: the file ends inside its {end.kind.decode("latin-1")} chunk at byte '
                            f'{end.pos}') from None


def _parse(data: bytes) -> Tuple[bytes, List[bytes], Optional[Frame], List[Frame], int]:
    """IHDR body, the chunks each frame needs, the default image (None when IDAT is the first frame), the
    animation frames and acTL's frame count."""
    ihdr, extra, frames, default, expected, sequence = b'', [], [], None, -1, 0
    current: Optional[Frame] = None
    for kind, body in _chunks(data):
        if kind == b'IHDR':
            ihdr = body
        elif kind in FRAME_CHUNKS:
            extra.append(kind + body)
        elif kind == b'acTL':
            expected = struct.unpack('>I', body[:4])[0]
        elif kind in (b'fcTL', b'fdAT'):
            if len(body) < (FCTL.size if kind == b'fcTL' else 4):
                raise APNGError(f'damaged APNG: a {kind.decode()} chunk of {len(body)} bytes')
            if struct.unpack('>I', body[:4])[0] != sequence:
                raise APNGError(f'damaged APNG: chunk {kind.decode()} has sequence number '
                                f'{struct.unpack(">I", body[:4])[0]}, expected {sequence}')
            sequence += 1
            if kind == b'fcTL':
                _, w, h, x, y, num, den, dispose, blend = FCTL.unpack(body[:FCTL.size])
                current = Frame(w, h, x, y, 1000.0 * num / (den or DEFAULT_DELAY_DEN), dispose, blend)
                frames.append(current)
            elif current is None:
                raise APNGError('damaged APNG: fdAT data before any frame control (fcTL)')
            else:
                current.data.append(body[4:])
        elif kind == b'IDAT':
            if current is None:  # image data before any fcTL: the default image, not part of the animation
                if default is None:
                    width, height = struct.unpack('>II', ihdr[:8])
                    default = Frame(width, height, 0, 0, None, DISPOSE_NONE, BLEND_SOURCE)
                default.data.append(body)
            else:
                current.data.append(body)
    return ihdr, extra, default, frames, expected


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def _decode(ihdr: bytes, extra: List[bytes], frame: Frame, gray: bool, sixteen: bool) -> np.ndarray:
    """The frame's sub-image as (h, w, 2) gray + alpha or (h, w, 4) RGBA: uint16 for a 16-bit gray file (its
    depth kept), else uint8 (what animations are written with)."""
    from PIL import Image

    own = PNG_SIGNATURE + _chunk(b'IHDR', struct.pack('>II', frame.width, frame.height) + ihdr[8:])
    own += b''.join(_chunk(c[:4], c[4:]) for c in extra) + _chunk(b'IDAT', b''.join(frame.data)) + _chunk(b'IEND', b'')
    try:
        with Image.open(io.BytesIO(own), formats=('PNG', )) as im:
            im.load()
            if sixteen and gray and im.mode.startswith('I'):
                value = np.asarray(im).astype(np.uint16)
                return np.dstack([value, np.full_like(value, np.iinfo(np.uint16).max)])
            return np.asarray(im.convert('LA' if gray else 'RGBA'))
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise APNGError(f'damaged APNG: the data of a {frame.width}x{frame.height} frame cannot be decoded '
                        f'({str(err).splitlines()[0] if str(err) else type(err).__name__})') from None


def blend_over(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` composed over ``dst`` (both (h, w, C) with alpha last, same integer type): the APNG
    specification's OVER operation (straight alpha: alpha = a_s + a_d (1 - a_s), colour weighted by it)."""
    top = float(np.iinfo(src.dtype).max)
    a_s, a_d = src[..., -1:] / top, dst[..., -1:] / top
    a_o = a_s + a_d * (1 - a_s)
    with np.errstate(invalid='ignore', divide='ignore'):
        color = (src[..., :-1] * a_s + dst[..., :-1] * a_d * (1 - a_s)) / a_o
    out = np.concatenate([np.where(a_o > 0, color, 0), a_o * top], axis=-1)
    out = np.rint(out).astype(src.dtype)
    out = np.where(a_s == 1, src, out)  # exact where nothing is blended
    return np.where(a_s == 0, dst, out)


def compose(data: bytes, count: Optional[int] = None) -> List[Composed]:
    """The frames of the APNG ``data`` as a viewer shows them (the default image first, when the file has one);
    ``count``: only the first ``count``. :class:`APNGError` naming what is wrong."""
    if data[:len(PNG_SIGNATURE)] != PNG_SIGNATURE:
        raise APNGError('not a PNG')
    ihdr, extra, default, frames, expected = _parse(data)
    if len(ihdr) != 13:
        raise APNGError('damaged PNG: no IHDR chunk of 13 bytes')
    width, height, depth, color_type = struct.unpack('>IIBB', ihdr[:10])
    if expected != len(frames):
        raise APNGError(f'damaged APNG: acTL says {expected} frames, the file has {len(frames)} frame controls')
    gray, sixteen = color_type in GRAY_COLOR_TYPES, depth == 16
    out: List[Composed] = []
    wanted = (len(frames) + (default is not None)) if count is None else count

    def add(pixels: np.ndarray, duration: Optional[float]) -> None:
        color = pixels[..., 0] if gray else pixels[..., :3]
        out.append(Composed(np.ascontiguousarray(color), np.ascontiguousarray(pixels[..., -1]), duration))

    if default is not None:
        add(_decode(ihdr, extra, default, gray, sixteen), None)
    canvas = None
    for k, frame in enumerate(frames):
        if len(out) >= wanted:
            break
        if not frame.data:
            raise APNGError(f'damaged APNG: frame {k + 1} has no image data')
        if (frame.width == 0 or frame.height == 0 or frame.x + frame.width > width
                or frame.y + frame.height > height):
            raise APNGError(f'damaged APNG: frame {k + 1} ({frame.width}x{frame.height} at {frame.x},{frame.y}) '
                            f'leaves the {width}x{height} canvas')
        if frame.dispose > DISPOSE_PREVIOUS or frame.blend > BLEND_OVER:
            raise APNGError(f'damaged APNG: frame {k + 1} has dispose_op {frame.dispose} and blend_op {frame.blend} '
                            '(known: 0-2 and 0-1)')
        src = _decode(ihdr, extra, frame, gray, sixteen)
        if canvas is None:  # the canvas starts fully transparent black
            canvas = np.zeros((height, width, src.shape[2]), src.dtype)
        region = (slice(frame.y, frame.y + frame.height), slice(frame.x, frame.x + frame.width))
        before = canvas[region].copy() if frame.dispose == DISPOSE_PREVIOUS else None
        canvas[region] = src if frame.blend == BLEND_SOURCE else blend_over(src, canvas[region])
        add(canvas.copy(), frame.duration)
        if frame.dispose == DISPOSE_BACKGROUND or (frame.dispose == DISPOSE_PREVIOUS and k == 0):
            canvas[region] = 0
        elif frame.dispose == DISPOSE_PREVIOUS:
            canvas[region] = before
    return out

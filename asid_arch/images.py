"""Reading and writing images the way a photo viewer would, and refusing what cannot be done right.

* The size is read from the file header and checked against a pixel limit *before* decoding, so a
  small file that decodes to gigabytes (a 12000 x 12000 all-black PNG is 140 KB) is refused first.
* A damaged file is an error naming it: OpenCV accepts a truncated JPEG (gray block, a libjpeg line
  on stderr); here every format but PNG (whose decoder already fails) is decoded once by Pillow,
  which reports truncation.
* EXIF orientation is applied (a portrait JPEG taken with the camera sideways stays portrait).
* 8- and 16-bit pixels are kept; grayscale, gray + alpha, RGB, RGBA, palette and CMYK images are
  told apart by their mode in the header (OpenCV decodes gray + alpha and CMYK as 4 channels).
* Writing converts to what the format can hold: 16-bit values are scaled (not clipped) to 8 bits
  for JPEG, WebP and BMP; a JPEG or BMP cannot hold alpha and is refused for images that have it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from .fileio import atomic_write

EXIF_ORIENTATION = 0x0112
UINT16_PER_UINT8 = 257  # 65535 / 255
EIGHT_BIT_FORMATS = ('.jpg', '.jpeg', '.webp', '.bmp', '.ppm')  # formats that hold 8 bits per channel only
NO_ALPHA_FORMATS = ('.jpg', '.jpeg', '.bmp', '.ppm', '.pgm')
GRAY_ALPHA_MODES = ('LA', 'La')  # gray + alpha (Pillow modes); 'PA' is a colour palette


class ImageError(ValueError):
    """An image that cannot be read or written, with the reason."""


@dataclass
class Picture:
    """Decoded pixels: ``color`` (H, W, 3) BGR or (H, W) gray, ``alpha`` (H, W) or None, integer type."""
    color: np.ndarray
    alpha: Optional[np.ndarray]

    @property
    def gray(self) -> bool:
        return self.color.ndim == 2

    @property
    def max_value(self) -> int:
        return int(np.iinfo(self.color.dtype).max)

    @property
    def size(self) -> Tuple[int, int]:
        return self.color.shape[0], self.color.shape[1]


def decode_file(path: Union[str, Path], flags: int = cv2.IMREAD_UNCHANGED) -> Optional[np.ndarray]:
    """``cv2.imread`` through Python's file reading: any file name works, also one that is not valid
    UTF-8 (OpenCV's own ``imread`` crashes the process on those). None when OpenCV cannot decode it."""
    with open(path, 'rb') as f:
        data = np.frombuffer(f.read(), np.uint8)
    return cv2.imdecode(data, flags) if data.size else None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def inspect_file(path: Union[str, Path], max_pixels: Optional[int], scale: int, limit_hint: str) -> Tuple[str, int]:
    """``(mode, EXIF orientation)`` of an image file, opened once with Pillow: the size is checked against
    ``max_pixels`` (of the result, ``scale`` times larger per side) from the header alone, then every
    format but PNG is decoded once, which reports truncated or damaged data (OpenCV's JPEG reader
    does not; its PNG reader does)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with our own message
    try:
        with Image.open(path) as im:
            pixels = im.height * im.width * scale * scale
            if max_pixels is not None and pixels > max_pixels:
                size = f'{pixels / 1e6:.1f} M pixels'
                result = f' gives {size} at x{scale}' if scale > 1 else f' is {size}'
                raise ImageError(f'{im.width}x{im.height}{result}, above the limit of {max_pixels / 1e6:.1f} M'
                                 f'{limit_hint}')
            try:
                orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
            except Exception:  # unreadable EXIF: keep the pixels as stored
                orientation = 1
            mode = im.mode
            if im.format != 'PNG':
                try:
                    im.load()
                except (OSError, ValueError, SyntaxError) as err:
                    raise ImageError(f'damaged image: {_short(err)}') from None
            return mode, orientation
    except (OSError, ValueError, SyntaxError) as err:  # PIL's "cannot identify image file", bad headers
        if isinstance(err, ImageError):
            raise
        raise ImageError(f'not a readable image ({_short(err)})') from None


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as a viewer shows them, for EXIF orientation 1..8 (rows, columns, channels)."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:
        return img.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(img, -1)
    if orientation == 7:
        return img.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(img, 1)
    return img


def read_picture(path: Union[str, Path], max_pixels: Optional[int] = None, scale: int = 1,
                 limit_hint: str = '') -> Picture:
    """Read an image (see the module docstring). ``max_pixels`` bounds the result's pixel count (the image's,
    ``scale`` times larger per side) before anything is decoded; ``limit_hint`` ends that error message."""
    path = Path(path)
    if not path.is_file():
        raise ImageError('no such file')
    if path.stat().st_size == 0:
        raise ImageError('empty file (0 bytes)')
    mode, orientation = inspect_file(path, max_pixels, scale, limit_hint)
    img = decode_file(path)
    if img is None or img.size == 0:
        raise ImageError('not a readable image (corrupt, empty or unsupported format)')
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f'unsupported pixel type {img.dtype} (8-bit and 16-bit images are supported)')
    alpha = None
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        if mode in GRAY_ALPHA_MODES:
            img, alpha = img[:, :, 0], img[:, :, 3]
        elif mode == 'CMYK':  # OpenCV gives the converted colours plus an opaque 4th channel
            img = img[:, :, :3]
        else:
            img, alpha = img[:, :, :3], img[:, :, 3]
    img = np.ascontiguousarray(apply_orientation(img, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    return Picture(img, alpha)


def to_depth(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer pixels converted to ``dtype`` by scaling (65535 <-> 255), never by clipping."""
    if img.dtype == dtype:
        return img
    if img.dtype == np.uint16 and dtype == np.uint8:
        return ((img.astype(np.uint32) + UINT16_PER_UINT8 // 2) // UINT16_PER_UINT8).astype(np.uint8)
    if img.dtype == np.uint8 and dtype == np.uint16:
        return img.astype(np.uint16) * UINT16_PER_UINT8
    raise ImageError(f'cannot convert {img.dtype} pixels to {np.dtype(dtype)}')


def encode(color: np.ndarray, alpha: Optional[np.ndarray], suffix: str) -> Tuple[Union[bytes, memoryview], str]:
    """The file bytes for ``suffix`` and a note on any conversion made ('' when none)."""
    suffix = suffix.lower()
    note = ''
    if alpha is not None and suffix in NO_ALPHA_FORMATS:
        raise ImageError(f'{suffix} cannot hold the alpha channel of this image; choose --ext png, webp or tif')
    if suffix in EIGHT_BIT_FORMATS and color.dtype == np.uint16:
        color = to_depth(color, np.uint8)
        alpha = None if alpha is None else to_depth(alpha, np.uint8)
        note = f'16-bit values scaled to 8 bits ({suffix} holds 8 bits per channel)'
    if alpha is not None and color.ndim == 2:  # gray + alpha: OpenCV writes no 2-channel files, Pillow does
        if color.dtype == np.uint16:
            color, alpha = to_depth(color, np.uint8), to_depth(alpha, np.uint8)
            note = '16-bit gray + alpha written as 8-bit gray + alpha (no 16-bit two-channel writer here)'
        return _pillow_gray_alpha(color, alpha, suffix), note
    pixels = color if alpha is None else np.dstack([color, alpha])
    ok, data = cv2.imencode(suffix, pixels)
    if not ok:
        raise ImageError(f'could not encode the result as {suffix}')
    return memoryview(data), note  # the encoder's buffer itself: no second copy of a large file


def _pillow_gray_alpha(gray: np.ndarray, alpha: np.ndarray, suffix: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fmt = {'.png': 'PNG', '.webp': 'WEBP', '.tif': 'TIFF', '.tiff': 'TIFF'}.get(suffix)
    if fmt is None:
        raise ImageError(f'{suffix} cannot hold a gray + alpha image; choose --ext png, webp or tif')
    Image.fromarray(np.dstack([gray, alpha]), 'LA').save(buffer, format=fmt)
    return buffer.getvalue()


def write_picture(path: Union[str, Path], color: np.ndarray, alpha: Optional[np.ndarray] = None) -> str:
    """Encode for the suffix of ``path`` and write atomically; returns the conversion note ('' if none)."""
    data, note = encode(color, alpha, Path(path).suffix)
    atomic_write(path, lambda f: f.write(data))
    return note

"""Reading and writing images the way a photo viewer would, and refusing what cannot be done right.

* A file is read once, through Python's own file reading (any file name works, also one that is not
  valid UTF-8: OpenCV's ``imread`` crashes the process on those), and identified by Pillow among the
  formats below only (no Ghostscript for an EPS renamed ``.png``).
* The size is read from the header and checked against a pixel limit *before* decoding, every frame
  or page counted, so a small file that decodes to gigabytes (a 12000 x 12000 all-black PNG is
  140 KB) is refused first.
* A damaged file is an error naming it: OpenCV accepts a truncated JPEG (gray block, a libjpeg line
  on stderr); here every format but PNG (whose decoder already fails) is decoded once by Pillow,
  which reports truncation.
* EXIF orientation is applied (a portrait JPEG taken with the camera sideways stays portrait).
* 8- and 16-bit pixels are kept; grayscale, gray + alpha, RGB, RGBA, palette and CMYK images are
  told apart by their mode in the header (OpenCV decodes gray + alpha and CMYK as 4 channels).
* Several frames: an animated GIF, WebP or PNG (APNG) gives every frame as the viewer composes it
  (full canvas, frame durations and loop count kept); a multi-page TIFF gives every page (pages may
  differ in size, mode and depth). A JPEG with extra pictures (MPO: previews, a second view) gives
  its main picture, with a note.
* Colour: the ICC profile (and a PNG's gAMA, cHRM and sRGB chunks) is kept on output in every
  format that can hold one: PNG (also 16-bit and animated), JPEG, WebP (also animated), TIFF. Where
  the output cannot hold it (GIF, BMP, PPM/PGM), the writer says so in its note. An sRGB chunk
  alone needs no note: sRGB is what a file without colour information is taken to be.
* Writing converts to what the format can hold: 16-bit values are scaled (not clipped) to 8 bits
  for JPEG, WebP, BMP, GIF and animations; a JPEG or BMP cannot hold alpha and is refused for images
  that have it; a GIF holds 256 colours per frame (colours reduced, with a note) and on/off
  transparency. Consecutive frames that come out identical are merged by the GIF and APNG writers
  (one frame shown for their summed durations: the animation plays the same).
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .utils.asid_files import atomic_write

EXIF_ORIENTATION = 0x0112
TIFF_ORIENTATION = 274  # the same tag in a TIFF page's own directory
TIFF_BITS_PER_SAMPLE = 258
UINT16_PER_UINT8 = 257  # 65535 / 255
EIGHT_BIT_FORMATS = ('.jpg', '.jpeg', '.webp', '.bmp', '.ppm', '.gif')  # formats that hold 8 bits per channel only
NO_ALPHA_FORMATS = ('.jpg', '.jpeg', '.bmp', '.ppm', '.pgm')
GRAY_ALPHA_MODES = ('LA', 'La')  # gray + alpha (Pillow modes); 'PA' is a colour palette
ALPHA_MODES = GRAY_ALPHA_MODES + ('RGBA', 'RGBa', 'PA')
GRAY_MODES = GRAY_ALPHA_MODES + ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')
# The formats Pillow may identify (others, e.g. EPS through Ghostscript, are never opened), and the
# suffixes written here: the suffix of each format's output.
READ_FORMATS = ('PNG', 'JPEG', 'WEBP', 'TIFF', 'GIF', 'BMP', 'DIB', 'PPM')  # JPEG's reader also gives MPO
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.gif')  # read
WRITE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.ppm', '.pgm', '.gif')
# Multi-frame images are written as the same kind of file (the formats here that hold frames).
FRAMES_SUFFIX = {'GIF': '.gif', 'WEBP': '.webp', 'PNG': '.png', 'TIFF': '.tif'}
FRAMES_NAME = {'GIF': 'animated GIF', 'WEBP': 'animated WebP', 'PNG': 'animated PNG', 'TIFF': 'multi-page TIFF'}
ICC_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff')
ICC_HEADER_BYTES = 128
ICC_MAGIC, ICC_MAGIC_AT = b'acsp', slice(36, 40)
ICC_SPACE_AT = slice(16, 20)  # the colour space the profile describes: 'RGB ', 'GRAY', 'CMYK', ...
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_IHDR_END = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR (length, type, 13 bytes, CRC)
PNG_BIT_DEPTH_AT = len(PNG_SIGNATURE) + 8 + 8  # IHDR: width (4), height (4), then the bit depth
PNG_COLOR_CHUNKS = (b'cHRM', b'gAMA', b'sRGB')  # kept from a PNG input, with its iCCP (the ICC profile)
PNG_GAMUT_CHUNKS = (b'cHRM', b'gAMA')  # the ones that say something other than "sRGB"
PNG_ICC_NAME = b'ICC profile'
JPEG_SOI, JPEG_APP0, JPEG_APP2 = b'\xff\xd8', 0xE0, 0xE2
JPEG_ICC_MARKER = b'ICC_PROFILE\0'
JPEG_SEGMENT_MAX = 65535 - 2  # payload of one marker segment (its length field counts itself)
JPEG_ICC_CHUNK = JPEG_SEGMENT_MAX - len(JPEG_ICC_MARKER) - 2  # profile bytes per APP2 segment
JPEG_ICC_MAX_SEGMENTS = 255
WEBP_ICC_FLAG, WEBP_ALPHA_FLAG = 0x20, 0x10  # VP8X flags
VP8L_SIGNATURE = 0x2F
GIF_COLORS = 256


class ImageError(ValueError):
    """An image that cannot be read or written, with the reason."""


@dataclass
class Picture:
    """Decoded pixels: ``color`` (H, W, 3) BGR or (H, W) gray, ``alpha`` (H, W) or None, integer type;
    ``duration`` the frame's display time in ms (animations only); ``interleaved`` the (H, W, C + 1) array
    that ``color`` and ``alpha`` are views of, if they are (the encoder takes it without joining them)."""
    color: np.ndarray
    alpha: Optional[np.ndarray]
    duration: Optional[float] = None
    interleaved: Optional[np.ndarray] = None

    def pixels(self) -> np.ndarray:
        """Colour and alpha as one array (BGRA, gray + alpha), or the colour alone."""
        if self.alpha is None:
            return self.color
        return self.interleaved if self.interleaved is not None else np.dstack([self.color, self.alpha])

    @property
    def gray(self) -> bool:
        return self.color.ndim == 2

    @property
    def max_value(self) -> int:
        return int(np.iinfo(self.color.dtype).max)

    @property
    def size(self) -> Tuple[int, int]:
        return self.color.shape[0], self.color.shape[1]


@dataclass(frozen=True)
class ColorInfo:
    """The colour information of a file: its ICC profile and a PNG's cHRM, gAMA and sRGB chunks (raw)."""
    icc: Optional[bytes] = None
    png_chunks: Tuple[Tuple[bytes, bytes], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.icc) or bool(self.png_chunks)

    @property
    def gamut_chunks(self) -> List[str]:
        """The PNG chunks that only a PNG can hold and that say more than "sRGB"."""
        return [kind.decode() for kind, _ in self.png_chunks if kind in PNG_GAMUT_CHUNKS]

    def icc_problem(self, gray: bool) -> str:
        """Why the ICC profile does not describe a gray (or RGB) result, '' when it does (or there is none): a
        CMYK JPEG's profile is not the RGB result's, and a damaged profile would mislead a viewer."""
        if not self.icc:
            return ''
        if len(self.icc) < ICC_HEADER_BYTES or self.icc[ICC_MAGIC_AT] != ICC_MAGIC:
            return 'the colour profile (ICC) of the input is damaged: not kept'
        space = self.icc[ICC_SPACE_AT]
        if space != (b'GRAY' if gray else b'RGB '):
            name = space.decode('latin-1').strip() or '?'
            return f'the colour profile of the input is for {name} data, not the {"gray" if gray else "RGB"} ' \
                   'result: not kept'
        return ''

    def without_icc(self) -> 'ColorInfo':
        return ColorInfo(None, self.png_chunks)


@dataclass(frozen=True)
class FrameInfo:
    """One frame or page as the header describes it (before decoding)."""
    width: int
    height: int
    color_channels: int  # 1 (gray) or 3
    alpha: bool
    sample_bytes: int  # 1 (8-bit) or 2 (16-bit)


@dataclass
class ImageFile:
    """An opened (not yet decoded) image file: see :func:`open_image`."""
    data: bytes
    format: str  # Pillow's name of the format: 'PNG', 'JPEG', 'GIF', ...
    frames: List[FrameInfo]
    loop: Optional[int] = None  # an animation's loop count (0: for ever); None: play once / not animated
    color: ColorInfo = field(default_factory=ColorInfo)
    extra_pictures: int = 0  # an MPO's pictures besides the main one (not read)
    default_image: bool = False  # an APNG whose first picture is shown by viewers without animation only

    @property
    def multi_frame(self) -> bool:
        return len(self.frames) > 1

    @property
    def kind(self) -> str:
        """'animated GIF (12 frames)', 'multi-page TIFF (3 pages)', or the format's name."""
        if not self.multi_frame:
            return self.format
        unit = 'pages' if self.format == 'TIFF' else 'frames'
        return f'{FRAMES_NAME[self.format]} ({len(self.frames)} {unit})'

    def output_pixels(self, scale: int) -> int:
        """Pixels of the result, every frame counted."""
        return sum(f.width * f.height for f in self.frames) * scale * scale

    def check_size(self, max_pixels: Optional[float], scale: int, limit_hint: str = '') -> None:
        """:class:`ImageError` when the result (``scale`` times larger per side, every frame) exceeds ``max_pixels``."""
        pixels = self.output_pixels(scale)
        if max_pixels is None or pixels <= max_pixels:
            return
        first = self.frames[0]
        frames = f' x {len(self.frames)} frames' if self.multi_frame else ''
        size = f'{pixels / 1e6:.1f} M pixels'
        result = f' give {size} at x{scale}' if scale > 1 else f' are {size}'
        raise ImageError(f'{first.width}x{first.height}{frames}{result}, above the limit of {max_pixels / 1e6:.1f} M'
                         f'{limit_hint}')

    def decode(self, first_only: bool = False) -> List[Picture]:
        """Every frame (or only the first) as :class:`Picture`; :class:`ImageError` if damaged."""
        with _open_pillow(self.data) as im:
            if self.format == 'TIFF' and self.multi_frame and not first_only:
                return _tiff_pages(self.data, im)
            if self.format in FRAMES_SUFFIX and self.format != 'TIFF' and (self.multi_frame or self.format == 'GIF'):
                return _animation_frames(im, self.frames[:1] if first_only else self.frames)
            return [_still(self.data, im)]


def decode_file(path: Union[str, Path], flags: int = cv2.IMREAD_UNCHANGED) -> Optional[np.ndarray]:
    """``cv2.imread`` through Python's file reading: any file name works, also one that is not valid
    UTF-8 (OpenCV's own ``imread`` crashes the process on those). None when OpenCV cannot decode it."""
    with open(path, 'rb') as f:
        data = np.frombuffer(f.read(), np.uint8)
    return cv2.imdecode(data, flags) if data.size else None


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _open_pillow(data: bytes):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with our own message
    try:
        return Image.open(io.BytesIO(data), formats=READ_FORMATS)
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL's "cannot identify image file", bad headers
        raise ImageError(f'not a readable image ({_short(err)})') from None


def _sample_bytes(data: bytes, im) -> int:
    """2 for 16-bit samples (PNG's IHDR, a TIFF page's BitsPerSample), else 1."""
    if im.format == 'PNG' and len(data) > PNG_BIT_DEPTH_AT:
        return 2 if data[PNG_BIT_DEPTH_AT] == 16 else 1
    if im.format == 'TIFF':
        bits = im.tag_v2.get(TIFF_BITS_PER_SAMPLE, (8, ))
        return 2 if max(bits if isinstance(bits, tuple) else (bits, )) > 8 else 1
    return 2 if im.mode.startswith('I;16') else 1


def _frame_info(data: bytes, im, alpha: Optional[bool] = None) -> FrameInfo:
    has_alpha = im.mode in ALPHA_MODES or 'transparency' in im.info if alpha is None else alpha
    return FrameInfo(im.width, im.height, 1 if im.mode in GRAY_MODES else 3, has_alpha, _sample_bytes(data, im))


def png_chunks(data: Union[bytes, memoryview]) -> List[Tuple[bytes, bytes]]:
    """``(type, body)`` of the chunks of a PNG before its image data (IDAT); [] if it is not a PNG."""
    if bytes(data[:len(PNG_SIGNATURE)]) != PNG_SIGNATURE:
        return []
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        if kind in (b'IDAT', b'IEND') or pos + 12 + length > len(data):
            break
        chunks.append((kind, bytes(data[pos + 8:pos + 8 + length])))
        pos += 12 + length
    return chunks


def _color_info(data: bytes, im) -> ColorInfo:
    icc = im.info.get('icc_profile') or None
    chunks = tuple((kind, body) for kind, body in png_chunks(data) if kind in PNG_COLOR_CHUNKS)
    return ColorInfo(icc if isinstance(icc, bytes) else None, chunks)


def open_image(path: Union[str, Path]) -> ImageFile:
    """Read a file and describe it from its header (format, every frame's size and kind, colour
    information); nothing is decoded yet. :class:`ImageError` if it is no readable image."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageError('no such file') from None
    except IsADirectoryError:
        raise ImageError('a folder, not an image file') from None
    if not data:
        raise ImageError('empty file (0 bytes)')
    with _open_pillow(data) as im:
        try:
            count = getattr(im, 'n_frames', 1)
            fmt, loop, extra, default_image = im.format, None, 0, False
            if fmt == 'MPO':  # a JPEG with previews or a second view: the main picture is the photo
                fmt, extra, count = 'JPEG', count - 1, 1
            if count > 1 and fmt == 'TIFF':  # pages differ in size, mode and depth (reading a page's
                frames = []  # directory decodes nothing)
                for k in range(count):
                    im.seek(k)
                    frames.append(_frame_info(data, im))
                im.seek(0)
            elif count > 1 or fmt == 'GIF':  # animation frames share the canvas; whether any of them has
                # transparency is known once they are decoded: counted as RGBA until then (as Pillow holds them)
                first = _frame_info(data, im)
                gray = fmt == 'PNG' and first.color_channels == 1  # an APNG's frames share its colour type
                frames = [FrameInfo(first.width, first.height, 1 if gray else 3, True, first.sample_bytes)] * count
                loop = im.info.get('loop')
                default_image = bool(im.info.get('default_image'))
            else:
                frames = [_frame_info(data, im)]
            color = _color_info(data, im)
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
            raise ImageError(f'damaged image: {_short(err)}') from None
    return ImageFile(data, fmt, frames, loop, color, extra, default_image)


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # unreadable EXIF: keep the pixels as stored
        return 1


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


def _load(im) -> None:
    """Decode the current frame with Pillow, which reports truncated or damaged data."""
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageError(f'damaged image: {_short(err)}') from None


def _picture(img: Optional[np.ndarray], im, orientation: int) -> Picture:
    """A :class:`Picture` from OpenCV's pixels of the frame ``im`` (Pillow, for its mode) is showing."""
    if img is None or img.size == 0:
        raise ImageError('not a readable image (corrupt, empty or unsupported format)')
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f'unsupported pixel type {img.dtype} (8-bit and 16-bit images are supported)')
    mode = im.mode
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
    elif mode in ALPHA_MODES:  # OpenCV dropped the alpha channel (a gray + alpha TIFF): Pillow's 8 bits
        rgba = np.asarray(im.convert('LA' if mode in GRAY_ALPHA_MODES else 'RGBA'))
        img = rgba[:, :, 0] if mode in GRAY_ALPHA_MODES else rgba[:, :, 2::-1]
        alpha = rgba[:, :, -1]
    img = np.ascontiguousarray(apply_orientation(img, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    return Picture(img, alpha)


def _still(data: bytes, im) -> Picture:
    orientation = _orientation(im)
    if im.format != 'PNG':
        _load(im)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    picture = _picture(img, im, orientation)
    im.close()  # Pillow's decoded copy is not needed any more
    return picture


def _tiff_pages(data: bytes, im) -> List[Picture]:
    ok, pages = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    pages = list(pages) if ok else []
    if len(pages) != im.n_frames:
        raise ImageError(f'damaged image: {len(pages)} of {im.n_frames} TIFF pages readable')
    pictures = []
    for k, page in enumerate(pages):
        im.seek(k)
        _load(im)
        pictures.append(_picture(page, im, int(im.tag_v2.get(TIFF_ORIENTATION, 1) or 1)))
        pages[k] = None  # its pixels live on in the picture only
    return pictures


def _animation_frames(im, frames: Sequence[FrameInfo]) -> List[Picture]:
    """The frames of a GIF, WebP or APNG animation, composed on the full canvas as a viewer shows them, all of
    one kind: gray only if the file is (an APNG's colour type), with alpha if any frame has a pixel that is
    not opaque."""
    gray = frames[0].color_channels == 1
    orientation = _orientation(im)
    pictures = []
    for k in range(len(frames)):
        try:
            im.seek(k)
        except (OSError, ValueError, EOFError) as err:
            raise ImageError(f'damaged image: frame {k + 1}: {_short(err)}') from None
        _load(im)
        duration = im.info.get('duration')
        if im.mode.startswith('I'):  # 16-bit gray (Pillow's conversion to 8 bits would clip, not scale)
            color = np.asarray(im).astype(np.uint16)
            alpha = np.full_like(color, np.iinfo(np.uint16).max)
        else:
            pixels = np.asarray(im.convert('LA' if gray else 'RGBA'))
            color, alpha = pixels[:, :, 0] if gray else pixels[:, :, 2::-1], pixels[:, :, -1]
        pictures.append(Picture(np.ascontiguousarray(apply_orientation(color, orientation)),
                                np.ascontiguousarray(apply_orientation(alpha, orientation)),
                                float(duration) if duration is not None else None))
    if all(int(p.alpha.min()) == p.max_value for p in pictures):
        for pic in pictures:
            pic.alpha = None
    return pictures


def read_picture(path: Union[str, Path], max_pixels: Optional[int] = None, scale: int = 1,
                 limit_hint: str = '') -> Picture:
    """Read an image that holds one picture (see the module docstring); an animation or a multi-page file is an
    :class:`ImageError` naming its frame count, never cut to its first frame. ``max_pixels`` bounds the result's
    pixel count (the picture's, ``scale`` times larger per side) before anything is decoded; ``limit_hint`` ends
    that error message."""
    image = open_image(path)
    if image.multi_frame:
        raise ImageError(f'{image.kind}: only single pictures are read here, and keeping one frame would '
                         'silently drop the others')
    image.check_size(max_pixels, scale, limit_hint)
    return image.decode(first_only=True)[0]


def to_depth(img: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer pixels converted to ``dtype`` by scaling (65535 <-> 255), never by clipping."""
    if img.dtype == dtype:
        return img
    if img.dtype == np.uint16 and dtype == np.uint8:
        return ((img.astype(np.uint32) + UINT16_PER_UINT8 // 2) // UINT16_PER_UINT8).astype(np.uint8)
    if img.dtype == np.uint8 and dtype == np.uint16:
        return img.astype(np.uint16) * UINT16_PER_UINT8
    raise ImageError(f'cannot convert {img.dtype} pixels to {np.dtype(dtype)}')


# ----------------------------------------------------------------------------------------------
# Colour information inserted into encoded files
# ----------------------------------------------------------------------------------------------
Pieces = List[Union[bytes, memoryview]]  # a file as consecutive pieces: large encodings are never copied


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def _png_with_color(data: memoryview, color: ColorInfo) -> Pieces:
    chunks = [_png_chunk(kind, body) for kind, body in color.png_chunks]
    if color.icc:
        chunks.append(_png_chunk(b'iCCP', PNG_ICC_NAME + b'\0\0' + zlib.compress(color.icc, 9)))
    return [data[:PNG_IHDR_END], b''.join(chunks), data[PNG_IHDR_END:]]


def _jpeg_with_icc(data: memoryview, icc: bytes) -> Tuple[Pieces, str]:
    parts = [icc[i:i + JPEG_ICC_CHUNK] for i in range(0, len(icc), JPEG_ICC_CHUNK)]
    if len(parts) > JPEG_ICC_MAX_SEGMENTS:
        return [data], f'the ICC profile ({len(icc)} bytes) is too large for a JPEG file: not kept'
    segments = b''.join(struct.pack('>BBH', 0xFF, JPEG_APP2, 2 + len(JPEG_ICC_MARKER) + 2 + len(part))
                        + JPEG_ICC_MARKER + bytes((n, len(parts))) + part for n, part in enumerate(parts, 1))
    pos = len(JPEG_SOI)
    while data[pos] == 0xFF and data[pos + 1] == JPEG_APP0:  # after the JFIF header
        pos += 2 + struct.unpack('>H', data[pos + 2:pos + 4])[0]
    return [data[:pos], segments, data[pos:]], ''


def _webp_size_and_alpha(kind: bytes, payload: memoryview) -> Tuple[int, int, bool]:
    """Canvas width, height and alpha of a simple (VP8 or VP8L) WebP bitstream."""
    if kind == b'VP8L' and payload[0] == VP8L_SIGNATURE:
        bits = int.from_bytes(bytes(payload[1:5]), 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    width, height = struct.unpack('<HH', payload[6:10])  # after the frame tag and the start code
    return width & 0x3FFF, height & 0x3FFF, False


def _webp_with_icc(data: memoryview, icc: bytes) -> Pieces:
    iccp = b'ICCP' + struct.pack('<I', len(icc)) + icc + b'\0' * (len(icc) % 2)
    kind, size = bytes(data[12:16]), struct.unpack('<I', data[16:20])[0]
    if kind == b'VP8X':  # extended already (animation, alpha): set the flag, add the chunk after VP8X
        end = 20 + size + size % 2
        head = bytearray(data[:end])
        head[20] |= WEBP_ICC_FLAG
        rest = data[end:]
    else:
        width, height, alpha = _webp_size_and_alpha(kind, data[20:])
        flags = WEBP_ICC_FLAG | (WEBP_ALPHA_FLAG if alpha else 0)
        head = bytearray(data[:12]) + b'VP8X' + struct.pack('<IB3x', 10, flags)
        head += (width - 1).to_bytes(3, 'little') + (height - 1).to_bytes(3, 'little')
        rest = data[12:]
    head[4:8] = struct.pack('<I', len(head) - 8 + len(iccp) + len(rest))
    return [bytes(head), iccp, rest]


def with_color(data: Union[bytes, memoryview], suffix: str, color: ColorInfo) -> Tuple[Pieces, List[str]]:
    """``data`` (a PNG, JPEG or WebP file) with ``color`` inserted, and notes on what could not be kept."""
    data = memoryview(data).cast('B')
    if not color:
        return [data], []
    notes = []
    if suffix == '.png':
        return _png_with_color(data, color), notes
    if color.gamut_chunks:
        notes.append(f'the PNG colour chunks ({", ".join(color.gamut_chunks)}) cannot be kept in {suffix}'
                     + (' (the ICC profile is)' if color.icc and suffix in ICC_SUFFIXES else ''))
    if not color.icc:
        return [data], notes
    if suffix in ('.jpg', '.jpeg'):
        pieces, note = _jpeg_with_icc(data, color.icc)
        return pieces, notes + ([note] if note else [])
    if suffix == '.webp':
        return _webp_with_icc(data, color.icc), notes
    return [data], notes + [f'{suffix} cannot hold the ICC colour profile of the input: not kept (choose --ext png, '
                            'jpg, webp or tif to keep it)']


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
Writer = Callable[[object], None]  # writes a whole file to a binary file object


def _pieces_writer(pieces: Pieces) -> Writer:
    def write(f) -> None:
        for piece in pieces:
            f.write(piece)
    return write


def _to_8bit(pic: Picture, suffix: str, notes: List[str]) -> Picture:
    if pic.color.dtype != np.uint16:
        return pic
    note = f'16-bit values scaled to 8 bits ({suffix} holds 8 bits per channel)'
    if note not in notes:
        notes.append(note)
    return Picture(to_depth(pic.color, np.uint8), None if pic.alpha is None else to_depth(pic.alpha, np.uint8),
                   pic.duration)


def _rgb_layers(pic: Picture) -> np.ndarray:
    """Pixels in Pillow's and TIFF's order: gray, gray + alpha, RGB or RGBA (a new array for colour)."""
    if pic.gray:
        return np.ascontiguousarray(pic.pixels())
    color = pic.color[:, :, ::-1]
    return np.ascontiguousarray(color) if pic.alpha is None else np.dstack([color, pic.alpha])


def _pillow_image(pic: Picture):
    """An 8-bit picture as a Pillow image: L, LA, RGB or RGBA (the mode follows the layers)."""
    from PIL import Image

    return Image.fromarray(_rgb_layers(pic))


def _tiff_writer(pictures: Sequence[Picture], color: ColorInfo) -> Writer:
    import tifffile

    def write(f) -> None:
        buffer = io.BytesIO()  # (tifffile takes the name of a file object, and os.fdopen's is a number)
        with tifffile.TiffWriter(buffer) as tiff:
            for pic in pictures:
                extra = {} if pic.alpha is None else {'extrasamples': ['unassalpha']}
                icc = None if color.icc_problem(pic.gray) else color.icc
                tiff.write(_rgb_layers(pic), photometric='minisblack' if pic.gray else 'rgb', compression='zlib',
                           iccprofile=icc, metadata=None, **extra)
        f.write(buffer.getbuffer())
    return write


def _gif_writer(pictures: Sequence[Picture], loop: Optional[int], notes: List[str]) -> Writer:
    from PIL import Image

    images = []
    for pic in pictures:
        im = _pillow_image(pic).convert('RGBA' if pic.alpha is not None else 'RGB')
        if pic.alpha is None:
            images.append(im.quantize(GIF_COLORS))
            continue
        # one palette entry for "transparent", below half opacity; the colours share the rest
        paletted = im.convert('RGB').quantize(GIF_COLORS - 1)
        index = np.asarray(paletted).copy()
        index[np.asarray(im)[:, :, 3] < 128] = GIF_COLORS - 1
        frame = Image.fromarray(index, 'P')
        frame.putpalette(paletted.getpalette()[:3 * (GIF_COLORS - 1)] + [0, 0, 0])
        frame.info['transparency'] = GIF_COLORS - 1
        images.append(frame)
    notes.append(f'GIF holds {GIF_COLORS} colours per frame: the result\'s colours were reduced to those'
                 + (', and its alpha to on/off transparency' if pictures[0].alpha is not None else ''))
    params = {'save_all': True, 'append_images': images[1:], 'optimize': False}
    if len(images) > 1 or pictures[0].duration is not None:
        params['duration'] = [round(p.duration or 0) for p in pictures]
        params['disposal'] = 2  # every frame is the whole picture
    if loop is not None:
        params['loop'] = loop
    if pictures[0].alpha is not None:
        params['transparency'] = GIF_COLORS - 1

    def write(f) -> None:
        images[0].save(f, format='GIF', **params)
    return write


def _animation_bytes(pictures: Sequence[Picture], fmt: str, loop: Optional[int],
                     default_image: bool = False) -> memoryview:
    """An animated PNG or WebP of ``pictures`` (8-bit), every frame whole, durations and loop count kept;
    ``default_image``: the first picture is an APNG's still for viewers without animation."""
    images = [_pillow_image(pic) for pic in pictures]
    animated = pictures[1:] if default_image else pictures
    params = {'save_all': True, 'append_images': images[1:], 'duration': [p.duration or 0 for p in animated]}
    if default_image:
        params['default_image'] = True
    if loop is not None:
        params['loop'] = loop
    if fmt == 'WEBP':
        params.update(lossless=True, exact=True)  # as OpenCV's still WebP: lossless, colours under alpha 0 kept
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, **params)
    return buffer.getbuffer()


def encoder(pictures: Sequence[Picture], suffix: str, color: ColorInfo = ColorInfo(), loop: Optional[int] = None,
            default_image: bool = False) -> Tuple[Writer, List[str]]:
    """A function writing ``pictures`` as one file of format ``suffix`` (several pictures: an animation or
    pages, which only GIF, PNG, WebP and TIFF hold), and notes on the conversions made (colours kept or not,
    depth); :class:`ImageError` when the format cannot hold them. ``loop`` and ``default_image``: see
    :class:`ImageFile`."""
    suffix = suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(f'cannot write {suffix or "files without a suffix"} (formats written: '
                         f'{", ".join(WRITE_SUFFIXES)})')
    if len(pictures) > 1 and suffix not in ('.gif', '.png', '.webp', '.tif', '.tiff'):
        raise ImageError(f'{suffix} holds one picture, not {len(pictures)}')
    notes: List[str] = []
    kinds = sorted({p.gray for p in pictures})  # gray, RGB or (TIFF pages) both
    problems = [color.icc_problem(gray) for gray in kinds if color.icc_problem(gray)]
    notes += problems
    if len(problems) == len(kinds):  # it describes none of the pictures (a TIFF keeps it on the pages it does)
        color = color.without_icc()
    if any(p.alpha is not None for p in pictures) and suffix in NO_ALPHA_FORMATS:
        raise ImageError(f'{suffix} cannot hold the alpha channel of this image; choose --ext png, webp or tif')
    if suffix in ('.tif', '.tiff'):
        if color.gamut_chunks:
            notes.append(f'the PNG colour chunks ({", ".join(color.gamut_chunks)}) cannot be kept in {suffix}'
                         + (' (the ICC profile is)' if color.icc else ''))
        return _tiff_writer(pictures, color), notes
    if suffix in EIGHT_BIT_FORMATS or (len(pictures) > 1 and suffix == '.png'):
        pictures = [_to_8bit(p, suffix if len(pictures) == 1 else f'an animated {suffix}', notes) for p in pictures]
    if suffix == '.gif':
        writer = _gif_writer(pictures, loop, notes)
        if color.icc or color.gamut_chunks:
            notes.append('GIF cannot hold the colour profile of the input: not kept')
        return writer, notes
    if len(pictures) > 1:
        data = _animation_bytes(pictures, 'PNG' if suffix == '.png' else 'WEBP', loop, default_image)
    else:
        data = _encode_still(pictures[0], suffix, notes)
    pieces, color_notes = with_color(data, suffix, color)
    return _pieces_writer(pieces), notes + color_notes


def _encode_still(pic: Picture, suffix: str, notes: List[str]) -> memoryview:
    if pic.alpha is not None and pic.gray:  # gray + alpha: OpenCV writes no 2-channel files, Pillow does
        if pic.color.dtype == np.uint16:
            pic = Picture(to_depth(pic.color, np.uint8), to_depth(pic.alpha, np.uint8))
            notes.append('16-bit gray + alpha written as 8-bit gray + alpha (no 16-bit two-channel writer here)')
        fmt = {'.png': 'PNG', '.webp': 'WEBP'}.get(suffix)
        if fmt is None:
            raise ImageError(f'{suffix} cannot hold a gray + alpha image; choose --ext png, webp or tif')
        buffer = io.BytesIO()
        _pillow_image(pic).save(buffer, format=fmt, **({'lossless': True, 'exact': True} if fmt == 'WEBP' else {}))
        return buffer.getbuffer()
    ok, data = cv2.imencode(suffix, pic.pixels())
    if not ok:
        raise ImageError(f'could not encode the result as {suffix}')
    return memoryview(data)  # the encoder's buffer itself: no second copy of a large file


def write_image(path: Union[str, Path], pictures: Sequence[Picture], color: ColorInfo = ColorInfo(),
                loop: Optional[int] = None, default_image: bool = False) -> str:
    """Write ``pictures`` (see :func:`encoder`) atomically to ``path``, in the format of its suffix;
    returns the notes on conversions ('' if none)."""
    writer, notes = encoder(pictures, Path(path).suffix, color, loop, default_image)
    atomic_write(path, writer)
    return '; '.join(notes)


def imwrite_atomic(path: Union[str, Path], img: np.ndarray, params: Sequence[int] = ()) -> memoryview:
    """``cv2.imwrite`` made atomic; the format follows the suffix of ``path``. Returns the bytes written
    (``asid-prepare`` records their hash)."""
    ok, data = cv2.imencode(Path(path).suffix, img, list(params))
    if not ok:
        raise ValueError(f'could not encode an image as {Path(path).suffix}')
    atomic_write(path, lambda f: f.write(data))
    return memoryview(data)

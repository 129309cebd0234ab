"""Reading images the way a photo viewer would, and refusing what cannot be done right (writing them:
:mod:`asid_arch.image_writer`).

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

import contextlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .image_damage import PNG_SIGNATURE, PNGEnded, png_chunk_walk, unreadable_reason
from .utils.asid_errors import first_line

EXIF_ORIENTATION = 0x0112
TIFF_ORIENTATION = 274  # the same tag in a TIFF page's own directory
TIFF_BITS_PER_SAMPLE = 258
UINT16_PER_UINT8 = 257  # 65535 / 255
GRAY_ALPHA_MODES = ('LA', 'La')  # gray + alpha (Pillow modes); 'PA' is a colour palette
ALPHA_MODES = GRAY_ALPHA_MODES + ('RGBA', 'RGBa', 'PA')
GRAY_MODES = GRAY_ALPHA_MODES + ('1', 'L', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')
# The formats Pillow may identify (others, e.g. EPS through Ghostscript, are never opened).
READ_FORMATS = ('PNG', 'JPEG', 'WEBP', 'TIFF', 'GIF', 'BMP', 'DIB', 'PPM')  # JPEG's reader also gives MPO
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.gif')  # read
# Multi-frame images are written as the same kind of file (the formats here that hold frames).
FRAMES_SUFFIX = {'GIF': '.gif', 'WEBP': '.webp', 'PNG': '.png', 'TIFF': '.tif'}
FRAMES_NAME = {'GIF': 'animated GIF', 'WEBP': 'animated WebP', 'PNG': 'animated PNG', 'TIFF': 'multi-page TIFF'}
ICC_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff')
ICC_HEADER_BYTES = 128
ICC_MAX_BYTES = 32 << 20  # a larger profile is refused (real ones are at most a few MB)
ICC_MAGIC, ICC_MAGIC_AT = b'acsp', slice(36, 40)
ICC_SPACE_AT = slice(16, 20)  # the colour space the profile describes: 'RGB ', 'GRAY', 'CMYK', ...
PNG_IHDR_END = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR (length, type, 13 bytes, CRC)
PNG_IHDR_TYPE_AT = slice(len(PNG_SIGNATURE) + 4, len(PNG_SIGNATURE) + 8)  # then width and height
HEADER_PROBE_BYTES = 4096  # read to tell a file's format and sample layout
PNG_BIT_DEPTH_AT = len(PNG_SIGNATURE) + 8 + 8  # IHDR: width (4), height (4), then the bit depth
OPENCV_MAX_PIXELS = 1 << 30  # OpenCV's decoders refuse larger pictures (CV_IO_MAX_IMAGE_PIXELS)
PNG_COLOR_CHUNKS = (b'cHRM', b'gAMA', b'sRGB')  # kept from a PNG input, with its iCCP (the ICC profile)
PNG_GAMUT_CHUNKS = (b'cHRM', b'gAMA')  # the ones that say something other than "sRGB"
PNG_ICC_NAME = b'ICC profile'


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

    def bgr8(self) -> np.ndarray:
        """The colour as 3-channel 8-bit BGR: gray repeated, alpha dropped, 16 bits scaled (not clipped)."""
        img = to_depth(self.color, np.uint8)
        return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img

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

    def check_size(self, max_pixels: Optional[float], scale: int, limit_hint: str = '',
                   need: Optional[Callable[[int], float]] = None) -> None:
        """:class:`ImageError` when the result (``scale`` times larger per side, every frame) exceeds ``max_pixels``;
        ``need(input pixels)``: the bytes the work would take, said in the message."""
        pixels = self.output_pixels(scale)
        if max_pixels is None or pixels <= max_pixels:
            return
        first = self.frames[0]
        frames = f' x {len(self.frames)} frames' if self.multi_frame else ''
        size = f'{pixels / 1e6:.1f} M pixels'
        result = f' give {size} at x{scale}' if scale > 1 else f' are {size}'
        needs = f' (it would need about {need(self.output_pixels(1)) / 1e9:.1f} GB)' if need else ''
        raise ImageError(f'{first.width}x{first.height}{frames}{result}, above the limit of {max_pixels / 1e6:.1f} M'
                         f'{needs}{limit_hint}')

    def decode(self, first_only: bool = False) -> List[Picture]:
        """Every frame (or only the first) as :class:`Picture`; :class:`ImageError` if damaged."""
        with _open_pillow(self.data) as im:
            if self.format == 'TIFF' and self.multi_frame and not first_only:
                return _tiff_pages(self.data, im)
            if self.format == 'PNG' and self.multi_frame:
                return _apng_frames(self.data, im, 1 if first_only else None)
            if self.format in FRAMES_SUFFIX and self.format != 'TIFF' and (self.multi_frame or self.format == 'GIF'):
                return _animation_frames(im, self.frames[:1] if first_only else self.frames)
            return [_still(self.data, im)]


def decode_file(path: Union[str, Path], flags: int = cv2.IMREAD_UNCHANGED) -> Optional[np.ndarray]:
    """``cv2.imread`` through Python's file reading: any file name works, also one that is not valid
    UTF-8 (OpenCV's own ``imread`` crashes the process on those). None when OpenCV cannot decode it."""
    with open(path, 'rb') as f:
        data = np.frombuffer(f.read(), np.uint8)
    try:
        return cv2.imdecode(data, flags) if data.size else None
    except cv2.error:  # OpenCV's own limits (more than 2^30 pixels): an assertion, not None
        return None


def _opencv_decode(data: bytes, im, multi: bool = False):
    """``cv2.imdecode`` (``imdecodemulti``) of ``data``; :class:`ImageError` naming the size when OpenCV
    refuses it by its own limit (it raises an assertion there, where other failures give None)."""
    buffer = np.frombuffer(data, np.uint8)
    try:
        return cv2.imdecodemulti(buffer, cv2.IMREAD_UNCHANGED) if multi else cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        raise ImageError(f'{im.width}x{im.height}: larger than the decoder takes ({OPENCV_MAX_PIXELS / 1e6:.0f} M '
                         'pixels per picture)') from None


@contextlib.contextmanager
def _pillow_unbounded() -> Iterator[None]:
    """Pillow without its pixel limit inside the block (our own limit applies, with our own message), restored
    after it: a library never changes its host's settings for good."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _large_png_icc(data: bytes) -> Tuple[bytes, Optional[bytes]]:
    """A PNG whose ICC profile (iCCP chunk) is larger than Pillow takes (``PngImagePlugin.MAX_TEXT_CHUNK``, its
    limit for compressed text) as ``(the file without that chunk, the profile)``, read here up to
    :data:`ICC_MAX_BYTES`; any other file as ``(data, None)``. :class:`ImageError` beyond that bound."""
    from PIL import PngImagePlugin

    pos = len(PNG_SIGNATURE)
    for kind, body in png_chunks(data):
        if kind == b'iCCP':
            name_end = body.find(b'\0')
            stream = zlib.decompressobj()
            try:
                icc = stream.decompress(body[name_end + 2:], ICC_MAX_BYTES)
            except zlib.error:
                return data, None  # damaged: Pillow drops it (no profile)
            if stream.unconsumed_tail:
                raise ImageError(f'its colour profile (iCCP chunk) is larger than {ICC_MAX_BYTES >> 20} MB '
                                 'decompressed: refused')
            if len(icc) <= PngImagePlugin.MAX_TEXT_CHUNK:
                return data, None
            return data[:pos] + data[pos + 12 + len(body):], icc
        pos += 12 + len(body)
    return data, None


@contextlib.contextmanager
def _open_pillow(data: bytes) -> Iterator[object]:
    """Pillow's image of ``data`` (header read, nothing decoded), closed after the block; its ``info`` has the
    ICC profile also where it is larger than Pillow reads. :class:`ImageError` naming what is wrong."""
    from PIL import Image

    pillow_data, icc = _large_png_icc(data)
    with _pillow_unbounded():
        try:
            im = Image.open(io.BytesIO(pillow_data), formats=READ_FORMATS)
        except (OSError, ValueError, SyntaxError, EOFError):  # PIL's "cannot identify image file", bad headers
            raise ImageError(unreadable_reason(data)) from None
        if icc is not None:
            im.info['icc_profile'] = icc
        with im:
            yield im


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
    """``(type, body)`` of the chunks of a PNG before its image data (IDAT); [] if it is not a PNG (data that end
    early: the whole chunks before that)."""
    if bytes(data[:len(PNG_SIGNATURE)]) != PNG_SIGNATURE:
        return []
    chunks = []
    with contextlib.suppress(PNGEnded):
        for chunk in png_chunk_walk(data):
            if chunk.kind in (b'IDAT', b'IEND'):
                break
            chunks.append((chunk.kind, bytes(chunk.body)))
    return chunks


def _color_info(data: bytes, im) -> ColorInfo:
    icc = im.info.get('icc_profile') or None
    chunks = tuple((kind, body) for kind, body in png_chunks(data) if kind in PNG_COLOR_CHUNKS)
    return ColorInfo(icc if isinstance(icc, bytes) else None, chunks)


def open_image(path: Union[str, Path]) -> ImageFile:
    """Read a file and describe it from its header (format, every frame's size and kind, colour
    information); nothing is decoded yet. :class:`ImageError` if it is no readable image (a FIFO or a device
    is named as such, never opened: it would block, or never end)."""
    from .utils.asid_files import path_kind

    kind = path_kind(path)
    if kind in ('FIFO', 'character device', 'block device', 'socket', 'symbolic link loop', 'special file'):
        raise ImageError(f'a {kind}, not an image file')
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
            raise ImageError(f'damaged image: {first_line(err)}') from None
    return ImageFile(data, fmt, frames, loop, color, extra, default_image)


def header_size(path: Union[str, Path]) -> Tuple[int, int]:
    """``(width, height)`` of an image file (its first picture) from its header, reading no more of it;
    :class:`ImageError` naming what is wrong when it is no image read here."""
    from PIL import Image

    with open(path, 'rb') as f:
        head = f.read(HEADER_PROBE_BYTES)
        if head[:len(PNG_SIGNATURE)] == PNG_SIGNATURE and head[PNG_IHDR_TYPE_AT] == b'IHDR':
            return struct.unpack('>II', head[PNG_IHDR_TYPE_AT.stop:PNG_IHDR_TYPE_AT.stop + 8])
        f.seek(0)
        with _pillow_unbounded():
            try:
                with Image.open(f, formats=READ_FORMATS) as im:
                    return im.width, im.height
            except (OSError, ValueError, SyntaxError, EOFError, struct.error):
                raise ImageError(unreadable_reason(head)) from None


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
        raise ImageError(f'damaged image: {first_line(err)}') from None


def _picture(img: Optional[np.ndarray], im, orientation: int, data: bytes) -> Picture:
    """A :class:`Picture` from OpenCV's pixels of the frame ``im`` (Pillow, for its mode) is showing; ``data``
    the file, to say what is wrong with it when OpenCV could not decode it."""
    if img is None or img.size == 0:
        raise ImageError(unreadable_reason(data))
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
    img = _opencv_decode(data, im)
    picture = _picture(img, im, orientation, data)
    im.close()  # Pillow's decoded copy is not needed any more
    return picture


def _tiff_pages(data: bytes, im) -> List[Picture]:
    ok, pages = _opencv_decode(data, im, multi=True)
    pages = list(pages) if ok else []
    if len(pages) != im.n_frames:
        raise ImageError(f'damaged image: {len(pages)} of {im.n_frames} TIFF pages readable')
    pictures = []
    for k, page in enumerate(pages):
        im.seek(k)
        _load(im)
        pictures.append(_picture(page, im, int(im.tag_v2.get(TIFF_ORIENTATION, 1) or 1), data))
        pages[k] = None  # its pixels live on in the picture only
    return pictures


def _animation_frames(im, frames: Sequence[FrameInfo]) -> List[Picture]:
    """The frames of a GIF or WebP animation (APNGs: :func:`_apng_frames`), composed on the full canvas as a viewer
    shows them, all of one kind: colour (BGR, 8 bits), with alpha if any frame has a pixel that is not opaque."""
    orientation = _orientation(im)
    pictures = []
    for k in range(len(frames)):
        try:
            im.seek(k)
        except (OSError, ValueError, EOFError) as err:
            raise ImageError(f'damaged image: frame {k + 1}: {first_line(err)}') from None
        _load(im)
        duration = im.info.get('duration')
        pixels = np.asarray(im.convert('RGBA'))
        color, alpha = pixels[:, :, 2::-1], pixels[:, :, -1]
        pictures.append(Picture(np.ascontiguousarray(apply_orientation(color, orientation)),
                                np.ascontiguousarray(apply_orientation(alpha, orientation)),
                                float(duration) if duration is not None else None))
    return _opaque_without_alpha(pictures)


def _opaque_without_alpha(pictures: List[Picture]) -> List[Picture]:
    """Frames without their alpha channel when every pixel of every frame is opaque."""
    if all(int(p.alpha.min()) == p.max_value for p in pictures):
        for pic in pictures:
            pic.alpha = None
    return pictures


def _apng_frames(data: bytes, im, count: Optional[int]) -> List[Picture]:
    """The frames of an APNG composed by :func:`asid_arch.apng.compose` (Pillow's own composing blends alpha
    wrongly and does not undo dispose-previous frames)."""
    from .apng import APNGError, compose

    orientation = _orientation(im)
    try:
        frames = compose(data, count)
    except APNGError as err:
        raise ImageError(str(err)) from None
    pictures = []
    for k, frame in enumerate(frames):
        color = frame.color if frame.color.ndim == 2 else frame.color[:, :, ::-1]
        pictures.append(Picture(np.ascontiguousarray(apply_orientation(color, orientation)),
                                np.ascontiguousarray(apply_orientation(frame.alpha, orientation)), frame.duration))
        frames[k] = None
    return _opaque_without_alpha(pictures)


def read_picture(path: Union[str, Path], max_pixels: Optional[int] = None, scale: int = 1,
                 limit_hint: str = '', need: Optional[Callable[[int], float]] = None) -> Picture:
    """Read an image that holds one picture (see the module docstring); an animation or a multi-page file is an
    :class:`ImageError` naming its frame count, never cut to its first frame. ``max_pixels`` bounds the result's
    pixel count (the picture's, ``scale`` times larger per side) before anything is decoded; ``limit_hint`` ends
    that error message, which says what ``need(pixels)`` gives: the bytes the caller's work would take."""
    return single_picture(open_image(path), max_pixels, scale, limit_hint, need)


def single_picture(image: ImageFile, max_pixels: Optional[int] = None, scale: int = 1,
                   limit_hint: str = '', need: Optional[Callable[[int], float]] = None) -> Picture:
    """:func:`read_picture` of an image already read by :func:`open_image` (the caller keeps its bytes)."""
    if image.multi_frame:
        raise ImageError(f'{image.kind}: only single pictures are read here, and keeping one frame would '
                         'silently drop the others')
    image.check_size(max_pixels, scale, limit_hint, need)
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
